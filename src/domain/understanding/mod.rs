//! What a debtor's reply means, read by rules and lexicons in Danish and English: the intent,
//! the words that decided it (quoted from the debtor's own text), and a promised amount and
//! date. Only the debtor's own words count: quoted earlier messages, signatures, disclaimers
//! and auto-replies are set aside first ([`own_words`]). Negation is seen ("I do not
//! dispute the amount" is no dispute). Danish written without æ, ø, å (`ae`, `oe`, `aa`) reads
//! the same: text and lexicons are compared folded to ASCII.
//!
//! Offline, explainable and fast: no model, no I/O; every decision names its rule's words.

use chrono::NaiveDate;

#[cfg(test)]
use figures::number;
use figures::{amount, date};

use super::word_enum;

word_enum!(
    /// What a reply asks for or says, as a case worker acts on it.
    Intent, "intent" {
        Dispute => "dispute",
        PaymentPromise => "payment_promise",
        PaymentPlanRequest => "payment_plan_request",
        PaidAlready => "paid_already",
        WrongPerson => "wrong_person",
        CeaseContact => "cease_contact",
        Question => "question",
        Other => "other",
    }
);

impl Intent {
    /// The intents that hold collection on the case until a person looks.
    pub fn holds(self) -> bool {
        matches!(self, Self::Dispute | Self::WrongPerson | Self::CeaseContact)
    }
}

word_enum!(
    /// Where a case worker's review of a reply that holds collection stands: `pending` until
    /// it is confirmed (`confirmed`) or the reply is read otherwise (`dismissed`).
    Review, "review" {
        Pending => "pending",
        Confirmed => "confirmed",
        Dismissed => "dismissed",
    }
);

/// A reply, understood: kept with its message (sealed: the evidence is the debtor's words).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Understanding {
    pub intent: Intent,
    /// 0 to 1: how sure the rules are.
    pub confidence: f64,
    /// The debtor's own words that decided, as written.
    pub evidence: Vec<String>,
    /// `da` or `en`.
    pub language: String,
    /// A promise's amount, as a decimal with two places (no currency: the case's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub promised_amount: Option<String>,
    /// A promise's date, resolved against the message's date.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, format = Date)]
    pub promised_date: Option<NaiveDate>,
    /// A reply that holds collection (`dispute`, `wrong_person`, `cease_contact`): `pending`
    /// until a case worker confirms it (`confirmed`) or corrects it (`dismissed`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub review: Option<Review>,
    /// A person's correction: `intent` above is then theirs, and `from` what was read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correction: Option<Correction>,
}

/// A case worker's correction of a reading, kept beside it as evidence.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Correction {
    /// The intent parley read.
    pub from: Intent,
    /// Who corrected it (the token's party name).
    pub by: String,
    #[schema(value_type = String, format = DateTime)]
    pub at: chrono::DateTime<chrono::Utc>,
}

mod figures;
mod lexicon;
#[doc(hidden)]
pub mod model;

use lexicon::RULES;

const NEGATIONS: &[&str] = &[
    "not", "don't", "dont", "do not", "never", "no", "isn't", "wasn't", "won't", "cannot", "can't",
    "cant", "ikke", "ik", "ikk", "aldrig", "ingen", "intet",
];

/// A word of the debtor's own text, with where it is.
#[derive(Debug, Clone)]
struct Token {
    /// Folded: lowercase, æ ø å as ae oe aa, apostrophes kept.
    word: String,
    start: usize,
    end: usize,
    /// The index of its sentence.
    sentence: usize,
}

/// Lowercase ASCII folding: æ ø å as `ae`, `oe`, `aa`; accents dropped; the typographic
/// apostrophe as `'`.
fn fold(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars().flat_map(char::to_lowercase) {
        match c {
            'æ' | 'ä' => out.push_str("ae"),
            'ø' | 'ö' => out.push_str("oe"),
            'å' => out.push_str("aa"),
            'é' | 'è' | 'ê' => out.push('e'),
            'ü' => out.push('u'),
            '’' | '`' | '´' => out.push('\''),
            c => out.push(c),
        }
    }
    out
}

/// The sentences (by index) that end in a question mark.
fn asking(text: &str, toks: &[Token]) -> Vec<bool> {
    let count = toks.last().map_or(0, |t| t.sentence + 1);
    let mut asks = vec![false; count];
    for (i, t) in toks.iter().enumerate() {
        let last_of_sentence = toks.get(i + 1).is_none_or(|n| n.sentence != t.sentence);
        if last_of_sentence && text[t.end..].trim_start().starts_with('?') {
            asks[t.sentence] = true;
        }
    }
    asks
}

fn tokens(text: &str) -> Vec<Token> {
    let mut out = Vec::new();
    let mut sentence = 0;
    let mut start = None;
    let push = |out: &mut Vec<Token>, s: usize, e: usize, sentence: usize| {
        let word = fold(&text[s..e]);
        let word = word.trim_matches('\'').to_string();
        if !word.is_empty() {
            out.push(Token {
                word,
                start: s,
                end: e,
                sentence,
            });
        }
    };
    for (i, c) in text.char_indices() {
        let next = text[i + c.len_utf8()..].chars().next();
        let part = c.is_alphanumeric()
            || c == '\''
            || c == '’'
            || c == '-'
            // A dot inside a word or a number ("1.500"), a comma inside a number ("1,500",
            // "750,-") stay in it.
            || c == '.' && start.is_some() && next.is_some_and(char::is_alphanumeric)
            || c == ','
                && start.is_some()
                && text[..i].ends_with(|p: char| p.is_ascii_digit())
                && next.is_some_and(|n| n.is_ascii_digit() || n == '-');
        if part {
            start.get_or_insert(i);
            continue;
        }
        if let Some(s) = start.take() {
            push(&mut out, s, i, sentence);
        }
        if matches!(c, '.' | '!' | '?' | '\n' | ';') {
            sentence += 1;
        }
    }
    if let Some(s) = start {
        push(&mut out, s, text.len(), sentence);
    }
    out
}

/// A pattern's word: itself, a prefix (`word*`), or any word (`?`).
fn word_matches(pattern: &str, word: &str) -> bool {
    match pattern.strip_suffix('*') {
        _ if pattern == "?" => true,
        Some(prefix) => word.starts_with(prefix),
        None => pattern == word,
    }
}

/// A rule found in the text: tokens `from..to`.
#[derive(Debug, Clone, Copy)]
struct Found {
    rule: usize,
    from: usize,
    to: usize,
}

/// Every rule's matches, the longest kept where they overlap.
fn find(tokens: &[Token], rules: &[(Intent, Vec<String>, f64)]) -> Vec<Found> {
    let mut all = Vec::new();
    for (n, (_, words, _)) in rules.iter().enumerate() {
        let Some(first) = words.first() else {
            continue;
        };
        for start in 0..tokens.len() {
            if !word_matches(first, &tokens[start].word) {
                continue;
            }
            // The words in order, in one sentence, at most one other word between two
            // (none in a rule with a negation: "not me" is not "not passed me").
            let gap = if words.iter().any(|w| NEGATIONS.contains(&w.as_str())) {
                2
            } else {
                3
            };
            let mut at = start;
            let fits = words[1..].iter().all(|w| {
                let next = (at + 1..(at + gap).min(tokens.len())).find(|&i| {
                    tokens[i].sentence == tokens[start].sentence && word_matches(w, &tokens[i].word)
                });
                next.map(|i| at = i).is_some()
            });
            if fits {
                all.push((
                    words.len(),
                    Found {
                        rule: n,
                        from: start,
                        to: at + 1,
                    },
                ));
            }
        }
    }
    // The longest rule first, then the tightest.
    all.sort_by_key(|(len, f)| (std::cmp::Reverse(*len), f.to - f.from));
    let mut kept: Vec<Found> = Vec::new();
    for (_, f) in all {
        if kept.iter().all(|k| f.to <= k.from || f.from >= k.to) {
            kept.push(f);
        }
    }
    kept.sort_by_key(|f| f.from);
    kept
}

/// Whether a match is negated: a negation just before it in its sentence, or (Danish puts
/// it after the verb: "bestrider ikke") right after its first word.
fn negated(tokens: &[Token], f: &Found, words: &[String], danish: bool) -> bool {
    let sentence = tokens[f.from].sentence;
    let is_negation = |t: &Token| t.sentence == sentence && NEGATIONS.contains(&t.word.as_str());
    // A word let in between the rule's words ("nægter ikke at betale").
    let between = tokens[f.from..f.to]
        .iter()
        .any(|t| is_negation(t) && !words.contains(&t.word));
    if between {
        return true;
    }
    if words.iter().any(|w| NEGATIONS.contains(&w.as_str())) {
        // A negation of a negation: "I'm not saying I don't owe it".
        let window = &tokens[f.from.saturating_sub(4)..f.from];
        return window.iter().any(is_negation)
            && window.iter().any(|t| {
                matches!(
                    t.word.as_str(),
                    "saying" | "say" | "claiming" | "siger" | "fordi"
                )
            });
    }
    let before = tokens[f.from.saturating_sub(3)..f.from]
        .iter()
        .any(is_negation);
    // Danish puts it after the verb, or after the verb and its subject: "betaler ikke",
    // "betaler jeg ikke".
    let next = |k: usize| tokens.get(f.to + k).filter(|t| t.sentence == sentence);
    let after = danish
        && (next(0).is_some_and(is_negation)
            || next(0).is_some_and(|t| PRONOUNS.contains(&t.word.as_str()))
                && next(1).is_some_and(is_negation));
    before || after
}

/// The debtor's own words: what comes before a quoted earlier message, a signature, a
/// disclaimer or the phone's line; `>` lines dropped.
pub fn own_words(text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    let mut own = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let t = line.trim();
        let low = fold(t);
        let next_has = |words: &[&str]| {
            lines[i + 1..(i + 5).min(lines.len())]
                .iter()
                .any(|l| words.iter().any(|w| fold(l.trim()).starts_with(w)))
        };
        let next_line = lines.get(i + 1).map(|l| fold(l.trim())).unwrap_or_default();
        let quote_head = (low.starts_with("on ") && next_line.starts_with("wrote:"))
            || (low.starts_with("den ") && low.contains(" skrev "))
            || low.ends_with("skrev:")
            || low.ends_with("wrote:")
            || low.starts_with("-----original")
            || low.starts_with("-----oprindelig")
            || low.starts_with("________________")
            || (low.starts_with("from:") && next_has(&["sent:", "date:", "to:"]))
            || (low.starts_with("fra:") && next_has(&["sendt:", "dato:", "til:"]));
        let signature = t == "--"
            || line.starts_with("-- ")
            || low.starts_with("sent from my")
            || low.starts_with("sendt fra min")
            || low.starts_with("hentet fra")
            || low.starts_with("get outlook for");
        let disclaimer = (low.contains("confidential") || low.contains("fortrolig"))
            && (low.contains("recipient") || low.contains("modtager"));
        if quote_head || signature || disclaimer {
            break;
        }
        if t.starts_with('>') {
            continue;
        }
        own.push(*line);
    }
    own.join("\n").trim().to_string()
}

/// Who a Danish verb's subject may be, before its negation.
const PRONOUNS: &[&str] = &[
    "jeg", "vi", "du", "han", "hun", "de", "i", "man", "den", "det",
];

const AUTO_REPLIES: &[&str] = &[
    "no longer monitored",
    "automated message",
    "automatisk besked",
    "overvaages ikke",
    "out of office",
    "out of the office",
    "automatic reply",
    "auto-reply",
    "autoreply",
    "i am away",
    "i'm away",
    "on leave until",
    "limited access to email",
    "autosvar",
    "automatisk svar",
    "fravaerende",
    "er paa ferie",
    "ikke paa kontoret",
    "holder ferie",
];

const QUESTION_STARTS: &[&str] = &[
    "what",
    "whats",
    "what's",
    "why",
    "who",
    "how",
    "when",
    "where",
    "which",
    "can i",
    "could i",
    "could you",
    "can you",
    "is it",
    "is this",
    "do i",
    "does",
    "hvad",
    "hvorfor",
    "hvem",
    "hvordan",
    "hvornaar",
    "hvor",
    "hvilken",
    "hvilket",
    "hvilke",
    "kan jeg",
    "kan i",
    "maa jeg",
    "er det",
    "skal jeg",
];

const DANISH: &[&str] = &[
    "jeg", "ikke", "og", "det", "er", "har", "til", "paa", "kan", "betale", "hej", "mvh", "med",
    "at", "den", "af", "mig", "min", "du", "jer", "vil", "skal", "tak", "ik", "ka", "hvad",
];
const ENGLISH: &[&str] = &[
    "i", "the", "and", "to", "not", "have", "pay", "is", "you", "my", "me", "this", "it", "will",
    "of", "for", "please", "thanks", "hi", "can", "what", "a",
];

fn language(tokens: &[Token], text: &str) -> &'static str {
    let count = |words: &[&str]| {
        tokens
            .iter()
            .filter(|t| words.contains(&t.word.as_str()))
            .count()
    };
    let (da, en) = (count(DANISH), count(ENGLISH));
    if da > en || (da == en && text.chars().any(|c| "æøåÆØÅ".contains(c))) {
        "da"
    } else {
        "en"
    }
}

/// Trains the model and folds the lexicon now (at start), so the first reply does not wait
/// for them inside its transaction.
pub fn warm_up() {
    model::Model::get();
    folded_rules();
}

/// The most of a reply's text that is read.
const MAX_READ: usize = 16 << 10;

/// The first `max` bytes of `text`, cut at a character's edge.
fn head(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// Where the rules and the model meet (docs/UNDERSTANDING.md).
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    /// How sure the model must be of another intent to overrule rules under `rules_firm`
    /// (chosen on 300 replies neither was tuned or trained on).
    pub overrules: f64,
    pub rules_firm: f64,
    /// The model's probability of a dispute (whatever else it finds likelier) from which a
    /// dispute wins over a promise, a payment, a plan or a question the rules read, and over
    /// the model's own other guess (chosen by cross-validation on the tuning part).
    pub sees_dispute: f64,
}

/// The settings parley reads with.
pub const SETTINGS: Settings = Settings {
    overrules: 0.5,
    rules_firm: 3.0,
    sees_dispute: 0.35,
};

/// The lexicon's rules, their words folded, once.
fn folded_rules() -> &'static [(Intent, Vec<String>, f64)] {
    static FOLDED: std::sync::OnceLock<Vec<(Intent, Vec<String>, f64)>> =
        std::sync::OnceLock::new();
    FOLDED.get_or_init(|| {
        RULES
            .iter()
            .map(|r| {
                (
                    r.intent,
                    r.words.split_whitespace().map(fold).collect(),
                    r.weight,
                )
            })
            .collect()
    })
}

/// Reads a reply sent on `sent` (for "next Friday", "i morgen").
pub fn understand(text: &str, sent: NaiveDate) -> Understanding {
    understand_with(text, sent, model::Model::get(), SETTINGS)
}

/// [`understand`] with a given model and settings (to choose them by cross-validation).
#[doc(hidden)]
pub fn understand_with(
    text: &str,
    sent: NaiveDate,
    model: &model::Model,
    settings: Settings,
) -> Understanding {
    // A reply says what it means at its start; a mail of megabytes is read no further than
    // this (the rules' work grows with the words), whatever a sender puts in it.
    let own = own_words(head(text, MAX_READ));
    let toks = tokens(&own);
    let asks = asking(&own, &toks);
    let folded = fold(&own);
    let lang = language(&toks, &own);
    let plain = |intent, confidence, evidence: Vec<String>| Understanding {
        intent,
        confidence,
        evidence,
        language: lang.to_string(),
        promised_amount: None,
        promised_date: None,
        review: None,
        correction: None,
    };
    if let Some(auto) = AUTO_REPLIES.iter().find(|a| folded.contains(*a)) {
        return plain(Intent::Other, 0.9, vec![quote(&own, &toks, auto)]);
    }
    let rules = folded_rules();
    let mut score = [0.0f64; 8];
    let mut decided: [Vec<Found>; 8] = Default::default();
    for f in find(&toks, rules) {
        let (intent, words, weight) = &rules[f.rule];
        if negated(&toks, &f, words, lang == "da") || set_aside((&toks, &asks), &f, *intent, words)
        {
            continue;
        }
        // The strongest word counts, each other one a little.
        let i = *intent as usize;
        score[i] = if score[i] == 0.0 {
            *weight
        } else {
            score[i].max(*weight) + 0.1
        };
        decided[i].push(f);
    }
    if let Some(f) = not_the_name(&own, &toks) {
        score[Intent::WrongPerson as usize] += 2.5;
        decided[Intent::WrongPerson as usize].push(f);
    }
    // A message that is the word "stop" (an SMS's opt-out) stops contact.
    if toks.len() <= 2 && toks.first().is_some_and(|t| t.word == "stop") {
        return plain(Intent::CeaseContact, 0.95, vec![own.clone()]);
    }
    let (p, feats) = model.read(&toks);
    // A dispute the model finds likely enough is not lost to a promise or a payment the
    // rules read, nor to the model's own other guess.
    let sure_dispute = p[Intent::Dispute as usize] >= settings.sees_dispute;
    let guess = if sure_dispute {
        Intent::Dispute
    } else {
        Intent::ALL[(0..8).max_by(|a, b| p[*a].total_cmp(&p[*b])).unwrap_or(7)]
    };
    let probability = p[guess as usize];
    // The model's reading, its words quoted from the reply as written.
    let by_model = || {
        let evidence = model
            .evidence(&feats, guess)
            .iter()
            .filter_map(|w| toks.iter().find(|t| &t.word == w))
            .map(|t| own[t.start..t.end].to_string())
            .collect();
        let mut u = plain(guess, (probability * 0.8 * 100.0).round() / 100.0, evidence);
        if guess == Intent::PaymentPromise {
            u.promised_amount = amount(&own, &toks);
            u.promised_date = date(&own, &toks, sent);
        }
        u
    };
    let Some(intent) = decide(&score, &own, &toks) else {
        // No rule spoke: a reply that asks is a question; else the model.
        if is_question(&own, &toks) && !sure_dispute {
            return plain(Intent::Question, 0.6, question_evidence(&own));
        }
        return by_model();
    };
    let at = |i: Intent| score[i as usize];
    // Weak rules give way to a sure model: it has seen phrasings no rule names.
    if guess != intent && probability >= settings.overrules && at(intent) < settings.rules_firm
        || sure_dispute && !intent.holds()
    {
        return by_model();
    }
    let evidence = decided[intent as usize]
        .iter()
        .map(|f| own[toks[f.from].start..toks[f.to - 1].end].to_string())
        .fold(Vec::new(), |mut v, e| {
            if !v.contains(&e) {
                v.push(e);
            }
            v
        });
    let confidence = ((0.55 + 0.1 * at(intent)).min(0.95) * 100.0).round() / 100.0;
    let mut u = plain(intent, confidence, evidence);
    if intent == Intent::PaymentPromise {
        // The figures after the promise's words first ("paid half today, will pay the
        // rest Friday"), else anywhere.
        let from = decided[intent as usize].first().map_or(0, |f| f.from);
        u.promised_amount = amount(&own, &toks[from..]).or_else(|| amount(&own, &toks));
        u.promised_date = date(&own, &toks[from..], sent).or_else(|| date(&own, &toks, sent));
    }
    u
}

/// The intent the scores decide, if any: a hold (dispute, wrong person, cease contact) when
/// its words are strong (2 or more) or stronger than any other's, except a weak dispute in
/// a reply that asks (a question about the bill); else the strongest of plan, promise and
/// paid (on a tie in that order).
fn decide(score: &[f64; 8], own: &str, toks: &[Token]) -> Option<Intent> {
    let at = |i: Intent| score[i as usize];
    let others = [
        Intent::PaymentPlanRequest,
        Intent::PaymentPromise,
        Intent::PaidAlready,
    ];
    let best_other = others
        .into_iter()
        .filter(|i| at(*i) > 0.0)
        .fold(None::<Intent>, |best, i| match best {
            Some(b) if at(b) >= at(i) => Some(b),
            _ => Some(i),
        });
    let other_score = best_other.map_or(0.0, at);
    let hold = [Intent::CeaseContact, Intent::Dispute, Intent::WrongPerson]
        .into_iter()
        .filter(|i| at(*i) > 0.0)
        .fold(None::<Intent>, |best, i| match best {
            Some(b) if at(b) >= at(i) => Some(b),
            _ => Some(i),
        })
        .filter(|h| {
            let strong = at(*h) >= 2.0 || at(*h) > other_score;
            let asking = *h == Intent::Dispute && at(*h) < 2.0 && is_question(own, toks);
            strong && !asking
        });
    hold.or(best_other)
}

/// Words that count elsewhere but not here: a payment in a condition ("if I paid today,
/// would…", "hvis jeg betaler…"), a bill (not goods) that did not arrive.
fn set_aside(
    (tokens, asks): (&[Token], &[bool]),
    f: &Found,
    intent: Intent,
    words: &[String],
) -> bool {
    let sentence = tokens[f.from].sentence;
    let same = |t: &&Token| t.sentence == sentence;
    let conditional = || {
        tokens[f.from.saturating_sub(4)..f.from]
            .iter()
            .filter(same)
            .any(|t| {
                matches!(t.word.as_str(), "if" | "hvis" | "whether" | "om")
                    || intent == Intent::PaidAlready
                        && matches!(
                            t.word.as_str(),
                            "when" | "naar" | "until" | "till" | "indtil"
                        )
            })
    };
    match intent {
        Intent::PaymentPromise | Intent::PaidAlready if conditional() => true,
        // "Can I pay 100 now and 100 in January?" asks; it promises nothing. "Can you
        // send what I have paid so far?" says nothing paid either.
        Intent::PaymentPromise | Intent::PaidAlready
            if asks.get(sentence).copied().unwrap_or(false) =>
        {
            let opening = tokens.iter().find(|t| t.sentence == sentence);
            let request = opening.is_some_and(|t| {
                matches!(
                    t.word.as_str(),
                    "kan"
                        | "can"
                        | "could"
                        | "will"
                        | "would"
                        | "hvad"
                        | "what"
                        | "how"
                        | "hvor"
                        | "maa"
                        | "may"
                )
            });
            match intent {
                // "Kan I sende, hvad jeg har indbetalt?" asks; "Er jo betalt??" says it.
                Intent::PaidAlready => request,
                _ => tokens[f.from..(f.from + 2).min(tokens.len())]
                    .iter()
                    .any(|t| {
                        matches!(
                            t.word.as_str(),
                            "i" | "we" | "jeg" | "vi" | "man" | "you" | "one"
                        )
                    }),
            }
        }
        Intent::Dispute
            if words.iter().any(|w| {
                ["modtaget", "received", "receive", "faaet", "got"].contains(&w.as_str())
            }) =>
        {
            tokens.iter().filter(same).any(|t| {
                [
                    "faktura",
                    "fakturaen",
                    "invoice",
                    "bill",
                    "brev",
                    "letter",
                    "regning",
                    "rykker",
                ]
                .contains(&t.word.as_str())
            })
        }
        _ => false,
    }
}

/// "I am not Jonathan Reed", "Jeg er ikke Anne-Mette Holm", "my name is X, not Y": the
/// debtor's name said not to be the writer's.
fn not_the_name(own: &str, toks: &[Token]) -> Option<Found> {
    let capital = |t: &Token| {
        own[t.start..t.end]
            .chars()
            .next()
            .is_some_and(char::is_uppercase)
            && t.word != "i"
    };
    let names = toks
        .iter()
        .any(|t| matches!(t.word.as_str(), "hedder" | "name" | "navn"));
    for i in 0..toks.len() {
        let w = |k: usize| toks.get(i + k).map(|t| t.word.as_str()).unwrap_or_default();
        let lead = match (w(0), w(1), w(2)) {
            ("i", "am", "not") | ("jeg", "er", "ikke") => 3,
            ("i'm", "not", _) | ("who", "is", _) | ("hvem", "er", _) => 2,
            ("not" | "ikke", _, _) if names => 1,
            _ => continue,
        };
        if toks
            .get(i + lead)
            .is_some_and(|t| capital(t) && t.sentence == toks[i].sentence)
        {
            return Some(Found {
                rule: usize::MAX,
                from: i,
                to: i + lead + 1,
            });
        }
    }
    None
}

/// The sentence around a folded phrase, as written.
fn quote(own: &str, toks: &[Token], phrase: &str) -> String {
    let first = fold(phrase)
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string();
    match toks.iter().find(|t| t.word.starts_with(&first)) {
        Some(t) => sentence_of(own, toks, t.sentence),
        None => own.lines().next().unwrap_or_default().trim().to_string(),
    }
}

fn sentence_of(own: &str, toks: &[Token], sentence: usize) -> String {
    let in_it: Vec<&Token> = toks.iter().filter(|t| t.sentence == sentence).collect();
    match (in_it.first(), in_it.last()) {
        (Some(a), Some(b)) => own[a.start..b.end].to_string(),
        _ => String::new(),
    }
}

fn is_question(own: &str, toks: &[Token]) -> bool {
    if own.contains('?') && toks.len() >= 2 {
        return true;
    }
    let folded = fold(own);
    if [
        "like to know",
        "vil gerne vide",
        "please tell me",
        "please explain",
        "let me know",
        "please send",
        "send me",
        "send us",
        "kan i sende",
        "send mig",
    ]
    .iter()
    .any(|q| folded.contains(q))
    {
        return true;
    }
    let first_two = toks
        .iter()
        .take(2)
        .map(|t| t.word.as_str())
        .collect::<Vec<_>>()
        .join(" ");
    QUESTION_STARTS
        .iter()
        .any(|q| first_two == *q || first_two.starts_with(&format!("{q} ")))
}

fn question_evidence(own: &str) -> Vec<String> {
    own.split_inclusive(['?', '\n'])
        .map(str::trim)
        .filter(|s| s.ends_with('?'))
        .map(|s| s.chars().take(200).collect())
        .take(2)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> NaiveDate {
        NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap()
    }

    #[test]
    fn negation_is_seen_in_both_languages() {
        let u = understand(
            "I do not dispute the amount, but could I pay in three instalments?",
            d("2026-12-01"),
        );
        assert_eq!(u.intent, Intent::PaymentPlanRequest, "{u:?}");
        let u = understand(
            "Jeg bestrider ikke kravet, men kan jeg betale i rater?",
            d("2026-12-01"),
        );
        assert_eq!(u.intent, Intent::PaymentPlanRequest, "{u:?}");
        assert_eq!(u.language, "da");
    }

    #[test]
    fn the_quoted_letter_does_not_count() {
        let text = "Thanks, I will pay on Friday.\n\nOn Mon, 30 Nov 2026 at 10:12, Collections <c@agency.example> wrote:\n> If you dispute this claim, reply to this email.\n";
        let u = understand(text, d("2026-12-01"));
        assert_eq!(u.intent, Intent::PaymentPromise, "{u:?}");
        assert_eq!(u.promised_date, Some(d("2026-12-04")));
        assert_eq!(u.evidence, vec!["will pay".to_string()]);
    }

    #[test]
    fn danish_without_its_letters_reads_the_same() {
        let u = understand("jeg har allerede betalt beloebet i gaar", d("2026-12-01"));
        assert_eq!(u.intent, Intent::PaidAlready, "{u:?}");
        let u = understand("Jeg betaler 1.500,00 kr. paa fredag", d("2026-12-01"));
        assert_eq!(u.intent, Intent::PaymentPromise, "{u:?}");
        assert_eq!(u.promised_amount.as_deref(), Some("1500.00"));
        assert_eq!(u.promised_date, Some(d("2026-12-04")));
    }

    #[test]
    fn amounts_and_dates_in_both_notations() {
        assert_eq!(number("1.500,00").as_deref(), Some("1500.00"));
        assert_eq!(number("1,500.00").as_deref(), Some("1500.00"));
        assert_eq!(number("1,500").as_deref(), Some("1500.00"));
        assert_eq!(number("750,-").as_deref(), Some("750.00"));
        assert_eq!(number("99,5").as_deref(), Some("99.50"));
        let u = understand("I will pay DKK 1,500 on the 15th", d("2026-12-01"));
        assert_eq!(u.promised_amount.as_deref(), Some("1500.00"));
        assert_eq!(u.promised_date, Some(d("2026-12-15")));
        let u = understand("Jeg betaler den 15. januar", d("2026-12-01"));
        assert_eq!(u.promised_date, Some(d("2027-01-15")));
    }

    #[test]
    fn dates_said_in_words_and_spans() {
        // 2026-07-09 is a Thursday.
        let sent = d("2026-07-09");
        for (text, amount, date) in [
            (
                "jeg betaler 1500 kr d. 1/8, kan ik foer",
                Some("1500.00"),
                "2026-08-01",
            ),
            (
                "can pay 2000kr on 1/9 if thats ok",
                Some("2000.00"),
                "2026-09-01",
            ),
            (
                "overforer de 750,- paa fredag",
                Some("750.00"),
                "2026-07-10",
            ),
            ("I'll pay it in full a week on Monday", None, "2026-07-20"),
            (
                "Paid by Friday 30 October at the latest, I will pay",
                None,
                "2026-10-30",
            ),
            (
                "Beløbet betales senest fredag den 1. maj",
                None,
                "2027-05-01",
            ),
            (
                "Beløbet bliver betalt inden for 14 dage",
                None,
                "2026-07-23",
            ),
            ("will pay it in 2 weeks when im back", None, "2026-07-23"),
            ("Jeg betaler i aften", None, "2026-07-09"),
            ("I'll pay before Christmas", None, "2026-12-24"),
            (
                "I får de 400 kr den første, jeg betaler",
                Some("400.00"),
                "2026-08-01",
            ),
            ("jeg betaler i overmorgen", None, "2026-07-11"),
            ("jeg betaler den første rate på fredag", None, "2026-07-10"),
            ("I'll pay the first of August", None, "2026-08-01"),
            (
                "Заплачу 500 kr в piątek, I will pay on Friday",
                Some("500.00"),
                "2026-07-10",
            ),
            (
                "since Christmas it was hard, I will pay on Friday",
                None,
                "2026-07-10",
            ),
            ("I'll pay next week on Monday", None, "2026-07-13"),
        ] {
            let u = understand(text, sent);
            assert_eq!(u.promised_amount.as_deref(), amount, "{text}: {u:?}");
            assert_eq!(u.promised_date, Some(d(date)), "{text}: {u:?}");
        }
        // A day and month after "betaler" is no amount.
        let u = understand("jeg betaler 1/8", sent);
        assert_eq!(u.promised_amount, None, "{u:?}");
        assert_eq!(u.promised_date, Some(d("2026-08-01")), "{u:?}");
    }

    #[test]
    fn a_huge_reply_is_read_only_at_its_start() {
        // A megabyte of words (a hostile mail) is read no further than its start: what
        // follows changes nothing.
        let filler = "hello there æ ".repeat(80_000);
        let u = understand(&format!("{filler}\nI dispute this claim."), d("2026-12-01"));
        assert_ne!(u.intent, Intent::Dispute, "{u:?}");
        let u = understand(&format!("I dispute this claim.\n{filler}"), d("2026-12-01"));
        assert_eq!(u.intent, Intent::Dispute);
        assert_eq!(head("aæb", 2), "a");
    }

    #[test]
    fn an_auto_reply_is_other_and_stop_stops() {
        let u = understand(
            "I am out of the office until 7 December. If you dispute, call me.",
            d("2026-12-01"),
        );
        assert_eq!(u.intent, Intent::Other);
        assert_eq!(
            understand("STOP", d("2026-12-01")).intent,
            Intent::CeaseContact
        );
    }
}
