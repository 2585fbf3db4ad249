//! Reply understanding: the labelled corpus (tests/corpus/replies-*.jsonl, 300 replies in
//! Danish and English, and heldout2-*.jsonl to heldout5-*.jsonl, 300 more each, written
//! after the method was frozen) read by the rules and the model, scored on what was held out
//! from every tuning (the first corpus's ids divisible by 3, and the whole later sets); and
//! what a received reply's view says.

use std::collections::BTreeMap;

use chrono::NaiveDate;
use parley::domain::PartyKind;
use parley::domain::understanding::{Intent, understand};
use serde_json::{Value, json};

use crate::helpers::spawn_app;
use crate::inbound::mail;
use crate::peers::HookReceiver;

#[derive(Debug, Clone)]
pub struct Reply {
    pub id: String,
    pub lang: String,
    pub channel: String,
    pub date: NaiveDate,
    pub intent: Intent,
    pub text: String,
    pub promised_amount: Option<String>,
    pub promised_date: Option<NaiveDate>,
}

impl Reply {
    /// Held out: never looked at while the rules were written or tuned, never trained on.
    pub fn held_out(&self) -> bool {
        self.later_set() || self.id[3..].parse::<u32>().unwrap().is_multiple_of(3)
    }

    /// Of a later held-out set (`heldout2-*.jsonl` to `heldout5-*.jsonl`).
    pub fn later_set(&self) -> bool {
        ["h2", "h3", "h4", "h5"]
            .iter()
            .any(|p| self.id.starts_with(p))
    }
}

pub fn corpus() -> Vec<Reply> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus");
    let mut all = Vec::new();
    for file in [
        "replies-da",
        "replies-en",
        "heldout2-da",
        "heldout2-en",
        "heldout3-da",
        "heldout3-en",
        "heldout4-da",
        "heldout4-en",
        "heldout5-da",
        "heldout5-en",
    ] {
        let text = std::fs::read_to_string(dir.join(format!("{file}.jsonl"))).unwrap();
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            let v: Value = serde_json::from_str(line).unwrap();
            let date = |k: &str| {
                v[k].as_str()
                    .map(|d| NaiveDate::parse_from_str(d, "%Y-%m-%d").unwrap())
            };
            all.push(Reply {
                id: v["id"].as_str().unwrap().into(),
                lang: v["lang"].as_str().unwrap().into(),
                channel: v["channel"].as_str().unwrap().into(),
                date: date("date").unwrap(),
                intent: Intent::parse(v["intent"].as_str().unwrap()).unwrap(),
                text: v["text"].as_str().unwrap().into(),
                promised_amount: v["promisedAmount"].as_str().map(String::from),
                promised_date: date("promisedDate"),
            });
        }
    }
    all
}

/// Per intent: (true positives, false positives, false negatives).
pub fn scores(replies: &[&Reply]) -> BTreeMap<&'static str, (u32, u32, u32)> {
    let mut by: BTreeMap<&'static str, (u32, u32, u32)> = Intent::ALL
        .iter()
        .map(|i| (i.as_str(), (0, 0, 0)))
        .collect();
    for r in replies {
        let got = understand(&r.text, r.date).intent;
        if got == r.intent {
            by.get_mut(got.as_str()).unwrap().0 += 1;
        } else {
            by.get_mut(got.as_str()).unwrap().1 += 1;
            by.get_mut(r.intent.as_str()).unwrap().2 += 1;
        }
    }
    by
}

pub fn f1((tp, fp, fn_): (u32, u32, u32)) -> f64 {
    let p = if tp + fp == 0 {
        0.0
    } else {
        f64::from(tp) / f64::from(tp + fp)
    };
    let r = if tp + fn_ == 0 {
        0.0
    } else {
        f64::from(tp) / f64::from(tp + fn_)
    };
    if p + r == 0.0 {
        0.0
    } else {
        2.0 * p * r / (p + r)
    }
}

#[test]
fn the_corpus_is_300_replies_half_danish_half_english_email_and_sms() {
    let all = corpus();
    assert!(all.len() >= 300, "{}", all.len());
    let danish = all.iter().filter(|r| r.lang == "da").count();
    assert_eq!(danish * 2, all.len());
    assert!(all.iter().any(|r| r.channel == "sms") && all.iter().any(|r| r.channel == "email"));
    for intent in Intent::ALL {
        assert!(
            all.iter()
                .filter(|r| r.intent == *intent && r.held_out())
                .count()
                >= 5,
            "{intent} is held out too thinly"
        );
    }
}

/// What the held-out replies (all five sets, 1,300) must reach: the floors of
/// macro-F1 0.90 (measured 0.913) and dispute recall 0.97 (measured 0.982: 373 of 380; the
/// newest set alone, read once, 84 of 90), the disputes that hold collection whatever they
/// are read as (a dispute, a wrong person or a stop: 378 of 380), and the promised amounts
/// and dates (docs/UNDERSTANDING.md). A change that reads worse than this fails.
const MACRO_F1: f64 = 0.90;
const DISPUTE_RECALL: f64 = 0.97;
const DISPUTES_HELD: f64 = 0.99;
const FIGURES: f64 = 0.75;

#[test]
fn held_out_replies_are_read_at_least_as_well_as_measured() {
    let all = corpus();
    let held: Vec<&Reply> = all.iter().filter(|r| r.held_out()).collect();
    let by = scores(&held);
    let macro_f1 = by.values().map(|s| f1(*s)).sum::<f64>() / by.len() as f64;
    let (tp, _, fn_) = by["dispute"];
    let recall = f64::from(tp) / f64::from(tp + fn_);
    let disputes: Vec<&Reply> = held
        .iter()
        .copied()
        .filter(|r| r.intent == Intent::Dispute)
        .collect();
    let holding = disputes
        .iter()
        .filter(|r| understand(&r.text, r.date).intent.holds())
        .count();
    let held_share = holding as f64 / disputes.len() as f64;
    assert!(
        held_share >= DISPUTES_HELD,
        "{holding} of {} held-out disputes hold collection",
        disputes.len()
    );
    assert!(
        macro_f1 >= MACRO_F1,
        "macro-F1 {macro_f1:.3} on {} held-out replies: {by:?}",
        held.len()
    );
    assert!(
        recall >= DISPUTE_RECALL,
        "dispute recall {recall:.3}: {by:?}"
    );
}

#[test]
fn held_out_promises_name_their_amount_and_date() {
    let all = corpus();
    let promises: Vec<&Reply> = all
        .iter()
        .filter(|r| r.held_out() && r.intent == Intent::PaymentPromise)
        .collect();
    let (mut right, mut asked) = (0, 0);
    for r in &promises {
        let u = understand(&r.text, r.date);
        if r.promised_amount.is_some() {
            asked += 1;
            right += u32::from(u.promised_amount == r.promised_amount);
        }
        if r.promised_date.is_some() {
            asked += 1;
            right += u32::from(u.promised_date == r.promised_date);
        }
    }
    assert!(asked >= 10);
    eprintln!("promised figures: {right} of {asked} amounts and dates");
    assert!(
        f64::from(right) / f64::from(asked) >= FIGURES,
        "{right} of {asked} amounts and dates"
    );
}

#[tokio::test]
async fn a_received_reply_says_what_it_means_and_quotes_the_debtor() {
    let app = spawn_app().await;
    let hooks = HookReceiver::start().await;
    let acme = app.party(PartyKind::Creditor, "Acme").await;
    let r = app
        .post(
            &acme.token,
            "/api/webhooks",
            &json!({"url": hooks.url, "events": ["message.understood"]}),
        )
        .await;
    assert_eq!(r.status(), 201);
    let case = app.create_case(&acme, None).await;
    let case_id = case["caseId"].as_str().unwrap();
    let raw = mail(
        &[
            ("From", "debtor@example.com"),
            ("To", &format!("case-{case_id}@localhost")),
            ("Subject", "Re: Your invoice"),
            ("Message-ID", "<u1@example.com>"),
        ],
        "I never ordered this and I dispute the claim.\n\nOn Mon, 30 Nov 2026 at 10:12, Collections <c@agency.example> wrote:\n> Please pay within 10 days.\n",
    );
    let r = app.post_mail(&app.admin.token, &raw).await;
    assert_eq!(r.status(), 201);
    let id = r.json::<Value>().await.unwrap()["messageId"]
        .as_str()
        .unwrap()
        .to_string();
    let m: Value = app
        .get(&acme.token, &format!("/api/messages/{id}"))
        .await
        .json()
        .await
        .unwrap();
    let u = &m["understanding"];
    assert_eq!(u["intent"], "dispute", "{m}");
    assert_eq!(u["language"], "en");
    assert!(
        u["evidence"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e == "never ordered"),
        "{u}"
    );
    assert!(u["confidence"].as_f64().unwrap() > 0.5);

    let r =
        crate::inbound::post_sms(&app, "+4512345678", "Jeg betaler 500 kr paa fredag", "SM1").await;
    assert!(r.status().is_success(), "{}", r.status());
    let list: Value = app
        .get(
            &acme.token,
            &format!("/api/cases/{case_id}/messages?direction=inbound&type=sms"),
        )
        .await
        .json()
        .await
        .unwrap();
    let sms = &list["messages"][0]["understanding"];
    assert_eq!(sms["intent"], "payment_promise", "{list}");
    assert_eq!(sms["promisedAmount"], "500.00");
    assert_eq!(sms["language"], "da");

    // The promise raises message.understood with its figures; the dispute raises none.
    app.dispatch_webhooks().await;
    let got = hooks.requests();
    assert_eq!(got.len(), 1, "{got:?}");
    let body: Value = serde_json::from_str(&got[0].1).unwrap();
    assert_eq!(body["event"], "message.understood");
    assert_eq!(body["intent"], "payment_promise");
    assert_eq!(body["caseId"], case_id);
    assert_eq!(body["promisedAmount"], "500.00");
    assert_eq!(body["promisedDate"], sms["promisedDate"]);
    assert!(body["promisedDate"].is_string(), "{body}");
}
