//! A small model beside the rules: multinomial naive Bayes over the folded words and word
//! pairs of the debtor's own text, trained at first use on the corpus's tuning part (the
//! replies the rules were tuned on, never the held-out third), which ships inside the
//! binary. It speaks only where the rules found nothing, and only when it is sure; its
//! evidence is the reply's words that weighed most for what it chose.

use std::collections::HashMap;
use std::sync::OnceLock;

use super::{Intent, Token};

/// The tuning replies: every line of these files, except the original corpus's held-out
/// third (ids whose number divides by 3).
const TUNING: [&str; 8] = [
    include_str!("../../../tests/corpus/replies-da.jsonl"),
    include_str!("../../../tests/corpus/replies-en.jsonl"),
    include_str!("../../../tests/corpus/tuning-da.jsonl"),
    include_str!("../../../tests/corpus/tuning-en.jsonl"),
    include_str!("../../../tests/corpus/tuning2-da.jsonl"),
    include_str!("../../../tests/corpus/tuning2-en.jsonl"),
    include_str!("../../../tests/corpus/tuning3-da.jsonl"),
    include_str!("../../../tests/corpus/tuning3-en.jsonl"),
];

pub struct Model {
    /// Per intent: log P(intent).
    prior: [f64; 8],
    /// Per feature: log P(feature | intent) for each intent.
    likelihood: HashMap<String, [f64; 8]>,
    /// log P(unseen feature | intent).
    unseen: [f64; 8],
}

/// Whether an id is of the held-out third (never trained on, never tuned on).
pub fn held_out(id: &str) -> bool {
    let (kind, number) = id.split_at(3.min(id.len()));
    matches!(kind, "da-" | "en-") && number.parse::<u32>().is_ok_and(|n| n % 3 == 0)
}

fn features(tokens: &[Token]) -> Vec<String> {
    let words: Vec<&str> = tokens
        .iter()
        .map(|t| t.word.as_str())
        .filter(|w| {
            !w.chars()
                .all(|c| c.is_ascii_digit() || c == '.' || c == ',')
        })
        .collect();
    let mut out: Vec<String> = words.iter().map(|w| (*w).to_string()).collect();
    out.extend(words.windows(2).map(|p| format!("{} {}", p[0], p[1])));
    out
}

impl Model {
    fn train() -> Self {
        let mut docs = [0f64; 8];
        let mut counts: HashMap<String, [f64; 8]> = HashMap::new();
        let mut totals = [0f64; 8];
        for line in TUNING.iter().flat_map(|f| f.lines()) {
            let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
                continue;
            };
            let (Some(id), Some(text), Some(intent)) = (
                v["id"].as_str(),
                v["text"].as_str(),
                v["intent"].as_str().and_then(|i| Intent::parse(i).ok()),
            ) else {
                continue;
            };
            if held_out(id) {
                continue;
            }
            let i = intent as usize;
            docs[i] += 1.0;
            let own = super::own_words(text);
            for f in features(&super::tokens(&own)) {
                counts.entry(f).or_insert([0.0; 8])[i] += 1.0;
                totals[i] += 1.0;
            }
        }
        let vocabulary = counts.len().max(1) as f64;
        let all: f64 = docs.iter().sum::<f64>().max(1.0);
        let prior = docs.map(|d| ((d + 1.0) / (all + 8.0)).ln());
        let unseen = totals.map(|t| (1.0 / (t + vocabulary)).ln());
        let likelihood = counts
            .into_iter()
            .map(|(f, c)| {
                let mut l = [0.0; 8];
                for i in 0..8 {
                    l[i] = ((c[i] + 1.0) / (totals[i] + vocabulary)).ln();
                }
                (f, l)
            })
            .collect();
        Self {
            prior,
            likelihood,
            unseen,
        }
    }

    /// The model, trained once.
    pub fn get() -> &'static Self {
        static MODEL: OnceLock<Model> = OnceLock::new();
        MODEL.get_or_init(Self::train)
    }

    /// The most likely intent, its probability, and the (known) features of the text that
    /// favour it most.
    pub fn read(&self, tokens: &[Token]) -> (Intent, f64, Vec<String>) {
        let feats = features(tokens);
        let mut score = self.prior;
        for f in &feats {
            let l = self.likelihood.get(f).unwrap_or(&self.unseen);
            for i in 0..8 {
                score[i] += l[i];
            }
        }
        let best = (0..8)
            .max_by(|a, b| score[*a].total_cmp(&score[*b]))
            .unwrap_or(7);
        let top = score[best];
        let sum: f64 = score.iter().map(|s| (s - top).exp()).sum();
        let probability = 1.0 / sum;
        let mut weighed: Vec<(f64, &String)> = feats
            .iter()
            .filter(|f| !f.contains(' ') && f.chars().count() > 3)
            .filter_map(|f| {
                let l = self.likelihood.get(f)?;
                let rest = (0..8)
                    .filter(|i| *i != best)
                    .map(|i| l[i])
                    .fold(f64::MIN, f64::max);
                Some((l[best] - rest, f))
            })
            .filter(|(w, _)| *w > 0.5)
            .collect();
        weighed.sort_by(|a, b| b.0.total_cmp(&a.0));
        weighed.dedup_by(|a, b| a.1 == b.1);
        let evidence = weighed
            .into_iter()
            .take(3)
            .map(|(_, f)| f.clone())
            .collect();
        (Intent::ALL[best], probability, evidence)
    }
}
