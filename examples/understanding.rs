//! The reply understanding's figures (run by `bench/understanding`): the confusion matrix of
//! the labelled corpus (held out, and in all), macro-F1, dispute recall, and speed against a
//! plain pass over the same text. `--mistakes` lists the tuning part's misreadings (never
//! the held-out third's). `--choose` chooses the model's dispute settings by 5-fold
//! cross-validation on the tuning part alone.

use std::time::Instant;

use chrono::NaiveDate;
use parley::domain::understanding::model::{DISPUTE_WEIGHT, GRAMS, Model};
use parley::domain::understanding::{Intent, SETTINGS, Settings, understand, understand_with};

struct Reply {
    id: String,
    date: NaiveDate,
    intent: Intent,
    text: String,
    amount: Option<String>,
    promised: Option<String>,
}

/// The original corpus's third held out from tuning, and the later held-out sets (the second
/// to the fifth, each written after the method was frozen, by someone who read neither the
/// corpus nor the code, and read only by it); the tuning files hold none.
fn held_out(id: &str) -> bool {
    [
        "h2d-", "h2e-", "h3d-", "h3e-", "h4d-", "h4e-", "h5d-", "h5e-",
    ]
    .iter()
    .any(|p| id.starts_with(p))
        || (id.starts_with("da-") || id.starts_with("en-"))
            && id[3..].parse::<u32>().unwrap() % 3 == 0
}

fn load(dir: &str) -> Vec<Reply> {
    let mut all = Vec::new();
    for file in [
        "replies-da",
        "replies-en",
        "tuning-da",
        "tuning-en",
        "tuning2-da",
        "tuning2-en",
        "tuning3-da",
        "tuning3-en",
        "tuning4-da",
        "tuning4-en",
        "tuning5-da",
        "tuning5-en",
        "tuning6-da",
        "tuning6-en",
        "tuning7-da",
        "tuning7-en",
        "heldout2-da",
        "heldout2-en",
        "heldout3-da",
        "heldout3-en",
        "heldout4-da",
        "heldout4-en",
        "heldout5-da",
        "heldout5-en",
    ] {
        let Ok(text) = std::fs::read_to_string(format!("{dir}/{file}.jsonl")) else {
            continue;
        };
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            all.push(Reply {
                id: v["id"].as_str().unwrap().into(),
                date: NaiveDate::parse_from_str(v["date"].as_str().unwrap(), "%Y-%m-%d").unwrap(),
                intent: Intent::parse(v["intent"].as_str().unwrap()).unwrap(),
                text: v["text"].as_str().unwrap().into(),
                amount: v["promisedAmount"].as_str().map(String::from),
                promised: v["promisedDate"].as_str().map(String::from),
            });
        }
    }
    all
}

fn matrix(title: &str, replies: &[&Reply]) {
    let n = Intent::ALL.len();
    let mut m = vec![vec![0u32; n]; n];
    for r in replies {
        let got = understand(&r.text, r.date).intent;
        m[r.intent as usize][got as usize] += 1;
    }
    println!(
        "\n{title} ({} replies): rows are the labels, columns what was read",
        replies.len()
    );
    let short = |i: &Intent| i.as_str().chars().take(8).collect::<String>();
    print!("{:>22}", "");
    for i in Intent::ALL {
        print!("{:>9}", short(i));
    }
    println!();
    let mut f1s = Vec::new();
    for (a, row) in Intent::ALL.iter().zip(&m) {
        print!("{:>22}", a.as_str());
        for c in row {
            print!("{c:>9}");
        }
        let tp = f64::from(row[*a as usize]);
        let fn_ = f64::from(row.iter().sum::<u32>()) - tp;
        let fp = f64::from((0..n).map(|r| m[r][*a as usize]).sum::<u32>()) - tp;
        let p = if tp + fp > 0.0 { tp / (tp + fp) } else { 0.0 };
        let rc = if tp + fn_ > 0.0 { tp / (tp + fn_) } else { 0.0 };
        let f1 = if p + rc > 0.0 {
            2.0 * p * rc / (p + rc)
        } else {
            0.0
        };
        f1s.push(f1);
        println!("   P {p:.2} R {rc:.2} F1 {f1:.2}");
    }
    println!("macro-F1 {:.3}", f1s.iter().sum::<f64>() / f1s.len() as f64);
}

/// Macro-F1 and dispute recall of a confusion matrix (rows the labels).
fn figures(m: &[Vec<u32>]) -> (f64, f64) {
    let n = m.len();
    let mut f1s = 0.0;
    let mut recall = 0.0;
    for (a, row) in m.iter().enumerate() {
        let tp = f64::from(row[a]);
        let fn_ = f64::from(row.iter().sum::<u32>()) - tp;
        let fp = f64::from((0..n).map(|r| m[r][a]).sum::<u32>()) - tp;
        let p = if tp + fp > 0.0 { tp / (tp + fp) } else { 0.0 };
        let rc = if tp + fn_ > 0.0 { tp / (tp + fn_) } else { 0.0 };
        f1s += if p + rc > 0.0 {
            2.0 * p * rc / (p + rc)
        } else {
            0.0
        };
        if a == Intent::Dispute as usize {
            recall = rc;
        }
    }
    (f1s / n as f64, recall)
}

/// The fold of a reply: a hash of its id, so folds never depend on the files' order.
fn fold(id: &str) -> u64 {
    id.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    }) % 5
}

/// 5-fold cross-validation on the tuning part (never the held-out third): for each weight
/// of a dispute in training and each probability from which the model's dispute wins, the
/// out-of-fold macro-F1 and dispute recall of the whole reading.
fn choose(tuning: &[&Reply]) {
    // (dispute weight, letters of a word's pieces; 0: whole words only)
    let weights = [
        (1.0, 0),
        (1.5, 0),
        (1.0, 3),
        (1.5, 3),
        (2.0, 3),
        (1.0, 4),
        (1.25, 4),
        (1.5, 4),
        (2.0, 4),
        (2.5, 4),
        (3.0, 4),
        (1.0, 5),
    ];
    let thresholds = [0.25, 0.3, 0.35, 0.4, 0.45, 0.5, 0.55, 0.6, 0.7, 0.75, 0.8];
    // The sets the rules were never tuned on (the model only): out of fold, an honest
    // reading of both.
    let unseen = |id: &str| {
        [
            "dz-", "ez-", "t4d-", "t4e-", "t5d-", "t5e-", "t6d-", "t6e-", "t7d-", "t7e-",
        ]
        .iter()
        .any(|p| id.starts_with(p))
    };
    let n = Intent::ALL.len();
    println!(
        "5-fold cross-validation on the tuning part ({} replies)",
        tuning.len()
    );
    println!(
        "{:>8} {:>10} {:>9} {:>15} | {:>9} {:>15} (the {} replies the rules were not tuned on)",
        "weight",
        "threshold",
        "macro-F1",
        "dispute recall",
        "macro-F1",
        "dispute recall",
        tuning.iter().filter(|r| unseen(&r.id)).count()
    );
    for (w, grams) in weights {
        let mut m = vec![vec![vec![0u32; n]; n]; thresholds.len()];
        let mut u = m.clone();
        for k in 0..5 {
            let model = Model::train_on(&|id| fold(id) != k, w, grams);
            for r in tuning.iter().filter(|r| fold(&r.id) == k) {
                for (t, sees_dispute) in thresholds.iter().enumerate() {
                    let settings = Settings {
                        sees_dispute: *sees_dispute,
                        ..SETTINGS
                    };
                    let got = understand_with(&r.text, r.date, &model, settings).intent;
                    m[t][r.intent as usize][got as usize] += 1;
                    if unseen(&r.id) {
                        u[t][r.intent as usize][got as usize] += 1;
                    }
                }
            }
        }
        for (t, threshold) in thresholds.iter().enumerate() {
            let (f1, recall) = figures(&m[t]);
            let (uf1, urecall) = figures(&u[t]);
            println!(
                "{w:>5.2}/{grams} {threshold:>10.2} {f1:>9.3} {recall:>15.3} | {uf1:>9.3} {urecall:>15.3}"
            );
        }
    }
    println!(
        "in use: weight {DISPUTE_WEIGHT}, pieces of {GRAMS} letters, threshold {}",
        SETTINGS.sees_dispute
    );
}

/// The model is trained when parley starts (on a thread of its own): how long that takes.
fn training_time() {
    let started = Instant::now();
    let trained = Model::train_on(&|_| true, DISPUTE_WEIGHT, GRAMS);
    println!(
        "model trained in {:.0} ms ({} bytes of weights)",
        started.elapsed().as_secs_f64() * 1e3,
        trained.size()
    );
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let dir = args.get(1).map_or("tests/corpus", String::as_str);
    let all = load(dir);
    if args.iter().any(|a| a == "--choose") {
        let tuning: Vec<&Reply> = all.iter().filter(|r| !held_out(&r.id)).collect();
        choose(&tuning);
        return;
    }
    training_time();
    if args.iter().any(|a| a == "--train") {
        return;
    }
    if args.iter().any(|a| a == "--figures") {
        for r in all
            .iter()
            .filter(|r| !held_out(&r.id) && r.intent == Intent::PaymentPromise)
        {
            let u = understand(&r.text, r.date);
            let date = u.promised_date.map(|d| d.to_string());
            if (r.amount.is_some() && u.promised_amount != r.amount)
                || (r.promised.is_some() && date != r.promised)
            {
                let own = parley::domain::understanding::own_words(&r.text);
                println!(
                    "{} {} want {:?} {:?} got {:?} {:?}\n   {}",
                    r.id,
                    r.date,
                    r.amount,
                    r.promised,
                    u.promised_amount,
                    date,
                    own.replace('\n', " / ")
                );
            }
        }
        return;
    }
    // `--set t6`: one tuning set's matrix alone (read first by a model trained without it).
    if let Some(prefix) = args
        .iter()
        .position(|a| a == "--set")
        .and_then(|i| args.get(i + 1))
    {
        let set: Vec<&Reply> = all
            .iter()
            .filter(|r| !held_out(&r.id) && r.id.starts_with(prefix.as_str()))
            .collect();
        matrix(&format!("the tuning replies {prefix}*"), &set);
        return;
    }
    if args.iter().any(|a| a == "--mistakes") {
        for r in all.iter().filter(|r| !held_out(&r.id)) {
            let u = understand(&r.text, r.date);
            if u.intent != r.intent {
                let own = parley::domain::understanding::own_words(&r.text);
                println!(
                    "{} want {} got {} {:?}\n   {}",
                    r.id,
                    r.intent,
                    u.intent,
                    u.evidence,
                    own.replace('\n', " / ")
                );
            }
        }
        return;
    }
    let held: Vec<&Reply> = all.iter().filter(|r| held_out(&r.id)).collect();
    let tuning: Vec<&Reply> = all.iter().filter(|r| !held_out(&r.id)).collect();
    let first: Vec<&Reply> = held
        .iter()
        .copied()
        .filter(|r| !r.id.starts_with('h'))
        .collect();
    let set = |prefix: &'static str| -> Vec<&Reply> {
        held.iter()
            .copied()
            .filter(|r| r.id.starts_with(prefix))
            .collect()
    };
    let (second, third, fourth, fifth) = (set("h2"), set("h3"), set("h4"), set("h5"));
    let first_four: Vec<&Reply> = held
        .iter()
        .copied()
        .filter(|r| !r.id.starts_with("h5"))
        .collect();
    matrix("held out: the original corpus's third", &first);
    matrix("held out: the second set", &second);
    matrix("held out: the third set", &third);
    matrix("held out: the fourth set", &fourth);
    matrix("held out: the fifth set", &fifth);
    matrix("held out: the first four sets", &first_four);
    matrix("held out, all five sets", &held);
    matrix("tuning part", &tuning);
    // Speed: every reply read over and over, against lowercasing the same text (a plain
    // pass over the bytes: the limit of any reading of them).
    let rounds = 200;
    let bytes: usize = all.iter().map(|r| r.text.len()).sum();
    let started = Instant::now();
    let mut sink = 0usize;
    for _ in 0..rounds {
        for r in &all {
            sink += r.text.to_lowercase().len();
        }
    }
    let plain = started.elapsed().as_secs_f64();
    let started = Instant::now();
    for _ in 0..rounds {
        for r in &all {
            sink += understand(&r.text, r.date).evidence.len();
        }
    }
    let read = started.elapsed().as_secs_f64();
    let n = (rounds * all.len()) as f64;
    println!(
        "\nspeed: {:.0} replies/s ({:.1} µs a reply, {:.0} bytes on average); lowercasing the same: {:.0} replies/s; ratio {:.3}x (checksum {sink})",
        n / read,
        read / n * 1e6,
        bytes as f64 / all.len() as f64,
        n / plain,
        plain / read
    );
}
