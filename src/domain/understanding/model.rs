//! A small model beside the rules: multinomial logistic regression over the folded words,
//! word pairs and four-letter pieces of words of the debtor's own text, trained when parley
//! starts on the corpus's tuning part (never a held-out set), which ships inside the binary.
//! It reads every reply: where the rules find nothing it decides, where they are weak (a
//! score under 3) and it is sure (0.5) it overrules them, and a dispute it gives 0.35 or more
//! is not lost to a rule's promise or payment (the pieces, the dispute's weight and the
//! threshold chosen by cross-validation). Its evidence is the reply's words that weighed most
//! for what it chose. Chosen over naive Bayes by measurement (docs/UNDERSTANDING.md).

use std::collections::HashMap;
use std::sync::OnceLock;

use super::{Intent, Token};

/// The tuning replies: every line of these files, except the original corpus's held-out
/// third (ids whose number divides by 3).
const TUNING: [&str; 16] = [
    include_str!("../../../tests/corpus/replies-da.jsonl"),
    include_str!("../../../tests/corpus/replies-en.jsonl"),
    include_str!("../../../tests/corpus/tuning-da.jsonl"),
    include_str!("../../../tests/corpus/tuning-en.jsonl"),
    include_str!("../../../tests/corpus/tuning2-da.jsonl"),
    include_str!("../../../tests/corpus/tuning2-en.jsonl"),
    include_str!("../../../tests/corpus/tuning3-da.jsonl"),
    include_str!("../../../tests/corpus/tuning3-en.jsonl"),
    include_str!("../../../tests/corpus/tuning4-da.jsonl"),
    include_str!("../../../tests/corpus/tuning4-en.jsonl"),
    include_str!("../../../tests/corpus/tuning5-da.jsonl"),
    include_str!("../../../tests/corpus/tuning5-en.jsonl"),
    include_str!("../../../tests/corpus/tuning6-da.jsonl"),
    include_str!("../../../tests/corpus/tuning6-en.jsonl"),
    include_str!("../../../tests/corpus/tuning7-da.jsonl"),
    include_str!("../../../tests/corpus/tuning7-en.jsonl"),
];

/// Whether an id is of the held-out third (never trained on, never tuned on).
fn held_out(id: &str) -> bool {
    let (kind, number) = id.split_at(3.min(id.len()));
    matches!(kind, "da-" | "en-") && number.parse::<u32>().is_ok_and(|n| n % 3 == 0)
}

fn features(tokens: &[Token], grams: usize) -> Vec<String> {
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
    // Pieces of `grams` letters of each word (its ends marked): a misspelt or inflected word
    // shares most of them with the word the model has seen.
    if grams > 0 {
        for w in &words {
            let marked: Vec<char> = format!("<{w}>").chars().collect();
            if marked.len() > grams + 1 {
                out.extend(
                    marked
                        .windows(grams)
                        .map(|g| format!("#{}", g.iter().collect::<String>())),
                );
            }
        }
    }
    // Whether a word is there, not how often: a word said a thousand times (a hostile mail)
    // weighs as once.
    out.sort_unstable();
    out.dedup();
    out
}

/// Tuning replies as (intent, feature numbers), each feature numbered in `index` as it is
/// first seen (one reply's words at a time: the whole corpus's strings are never held at
/// once).
fn examples(
    index: &mut HashMap<String, usize>,
    keep: &dyn Fn(&str) -> bool,
    grams: usize,
) -> Vec<(usize, Vec<usize>)> {
    let mut out = Vec::new();
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
        if held_out(id) || !keep(id) {
            continue;
        }
        let own = super::own_words(text);
        let rows = features(&super::tokens(&own), grams)
            .into_iter()
            .map(|f| {
                let next = index.len();
                *index.entry(f).or_insert(next)
            })
            .collect();
        out.push((intent as usize, rows));
    }
    out
}

/// Passes over the tuning replies, the first step's size, and the weight decay: chosen on
/// replies the model was not trained on (docs/UNDERSTANDING.md).
const EPOCHS: u32 = 100;
const RATE: f64 = 0.5;
const L2: f64 = 3e-3;
/// How much more a dispute weighs in training than another reply: chosen by cross-validation
/// on the tuning part (docs/UNDERSTANDING.md).
pub const DISPUTE_WEIGHT: f64 = 3.0;
/// The letters of the word pieces the model reads beside whole words (0: none).
pub const GRAMS: usize = 4;

/// Per feature, its weight for each intent (scaled by 1/sqrt of the reply's feature count),
/// and each intent's bias.
pub struct Model {
    /// A feature's place in `weights`.
    index: HashMap<String, usize>,
    /// The letters of a word's pieces (none: whole words and pairs only).
    grams: usize,
    weights: Vec<[f64; 8]>,
    bias: [f64; 8],
}

impl Model {
    /// Stochastic gradient descent on the cross-entropy, the replies in an order shuffled
    /// the same way every time (a fixed xorshift seed): the same model at every start. The
    /// features are numbered once, so a step is arithmetic on a few dozen rows. A dispute
    /// weighs `dispute_weight` times another reply in the loss (a missed dispute costs more
    /// than a false one). `keep` chooses the tuning replies by id (all of them in parley;
    /// folds of them when the settings are chosen by cross-validation).
    pub fn train_on(keep: &dyn Fn(&str) -> bool, dispute_weight: f64, grams: usize) -> Self {
        let mut index: HashMap<String, usize> = HashMap::new();
        let data = examples(&mut index, keep, grams);
        index.shrink_to_fit();
        let mut weights = vec![[0.0; 8]; index.len()];
        let mut bias = [0.0; 8];
        let mut order: Vec<usize> = (0..data.len()).collect();
        let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
        for epoch in 0..EPOCHS {
            for k in (1..order.len()).rev() {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                order.swap(k, (seed % (k as u64 + 1)) as usize);
            }
            let rate = RATE / (1.0 + f64::from(epoch) * 0.2);
            for &n in &order {
                let (label, rows) = &data[n];
                let norm = 1.0 / (rows.len().max(1) as f64).sqrt();
                let p = softmax(rows.iter().map(|r| &weights[*r]), &bias, norm);
                let weight = if *label == Intent::Dispute as usize {
                    dispute_weight
                } else {
                    1.0
                };
                let g: [f64; 8] =
                    std::array::from_fn(|i| weight * (p[i] - f64::from(u8::from(i == *label))));
                for i in 0..8 {
                    bias[i] -= rate * g[i];
                }
                for r in rows {
                    let w = &mut weights[*r];
                    for i in 0..8 {
                        w[i] -= rate * (g[i] * norm + L2 * w[i]);
                    }
                }
            }
        }
        Self {
            index,
            grams,
            weights,
            bias,
        }
    }

    /// P(intent) for a reply's features.
    fn probabilities(&self, feats: &[String]) -> [f64; 8] {
        let norm = 1.0 / (feats.len().max(1) as f64).sqrt();
        let rows = feats
            .iter()
            .filter_map(|f| self.index.get(f))
            .map(|r| &self.weights[*r]);
        softmax(rows, &self.bias, norm)
    }

    /// The model, trained once.
    pub fn get() -> &'static Self {
        static MODEL: OnceLock<Model> = OnceLock::new();
        MODEL.get_or_init(|| Self::train_on(&|_| true, DISPUTE_WEIGHT, GRAMS))
    }

    /// The bytes its weights take (without the feature strings).
    pub fn size(&self) -> usize {
        self.weights.len() * std::mem::size_of::<[f64; 8]>()
    }

    /// P(intent) for a reply, and its features (for [`Model::evidence`]).
    pub(super) fn read(&self, tokens: &[Token]) -> ([f64; 8], Vec<String>) {
        let feats = features(tokens, self.grams);
        (self.probabilities(&feats), feats)
    }

    /// The (known) words of a reply that weigh most for `intent`.
    pub(super) fn evidence(&self, feats: &[String], intent: Intent) -> Vec<String> {
        let best = intent as usize;
        let mut weighed: Vec<(f64, &String)> = feats
            .iter()
            .filter(|f| !f.contains(' ') && !f.starts_with('#') && f.chars().count() > 3)
            .filter_map(|f| Some((self.weights[*self.index.get(f)?][best], f)))
            .filter(|(w, _)| *w > 0.0)
            .collect();
        weighed.sort_by(|a, b| b.0.total_cmp(&a.0));
        weighed.dedup_by(|a, b| a.1 == b.1);
        weighed
            .into_iter()
            .take(3)
            .map(|(_, f)| f.clone())
            .collect()
    }
}

/// The softmax of the bias plus the rows' weights, each scaled by `norm`.
fn softmax<'a>(rows: impl Iterator<Item = &'a [f64; 8]>, bias: &[f64; 8], norm: f64) -> [f64; 8] {
    let mut z = *bias;
    for w in rows {
        for i in 0..8 {
            z[i] += w[i] * norm;
        }
    }
    let top = z.iter().copied().fold(f64::MIN, f64::max);
    let mut p = z.map(|v| (v - top).exp());
    let sum: f64 = p.iter().sum();
    for v in &mut p {
        *v /= sum;
    }
    p
}
