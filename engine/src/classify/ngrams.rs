//! TF-IDF n-gram features, the lexical half of the intent model: the sparse input of the
//! ONNX graph, and the half's own weights ([`LexicalHead`]) for deciding without the encoder.
//!
//! Must match `models/training/ngrams.py` exactly: lower-case; per whitespace-separated
//! word, character n-grams (n = 2..5) of the word padded with one space on either side;
//! word unigrams and bigrams of the `\b\w\w+\b` tokens, marked with a leading U+0001;
//! value = (1 + ln count) · idf; the vector L2-normalized. Grams outside the vocabulary are
//! dropped.

use std::path::Path;
use std::sync::LazyLock;

use regex::Regex;
use serde::Deserialize;

use super::Error;

static WORD: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"\b\w\w+\b").expect("word pattern compiles"));
const MARK: char = '\u{1}';

#[derive(Deserialize)]
struct File {
    grams: Vec<String>,
    idf: Vec<f32>,
}

/// The vocabulary and idf weights of `ngrams.json`, packed: a hundred thousand grams as
/// one string and three arrays take about a third of the memory of a map of strings.
#[derive(Debug)]
pub struct Ngrams {
    /// Every gram, one after another, in vocabulary order.
    text: String,
    /// Where gram `i` ends in `text`; it starts where gram `i - 1` ends.
    ends: Vec<u32>,
    idf: Vec<f32>,
    /// Open-addressing hash table of vocabulary indexes ([`EMPTY`] where free), a power of
    /// two at least twice the vocabulary, so that a probe soon meets a free slot.
    slots: Vec<u32>,
}

/// A free slot of [`Ngrams::slots`].
const EMPTY: u32 = u32::MAX;

/// One text's sparse features: (vocabulary index, value), sorted by index.
pub type Sparse = Vec<(i64, f32)>;

/// Every gram of `text`, repeated as often as it occurs.
pub fn analyze(text: &str) -> Vec<String> {
    let mut grams = Vec::new();
    each_gram(text, |g| grams.push(g.to_string()));
    grams
}

/// Calls `f` with every gram of `text` in [`analyze`]'s order, from one reused buffer.
fn each_gram(text: &str, mut f: impl FnMut(&str)) {
    let low = text.to_lowercase();
    let mut gram = String::new();
    let mut chars: Vec<char> = Vec::new();
    for w in low.split_whitespace() {
        chars.clear();
        chars.push(' ');
        chars.extend(w.chars());
        chars.push(' ');
        for n in 2..=5 {
            if chars.len() < n {
                break;
            }
            for win in chars.windows(n) {
                gram.clear();
                gram.extend(win);
                f(&gram);
            }
        }
    }
    let toks: Vec<&str> = WORD.find_iter(&low).map(|m| m.as_str()).collect();
    for t in &toks {
        gram.clear();
        gram.push(MARK);
        gram.push_str(t);
        f(&gram);
    }
    for p in toks.windows(2) {
        gram.clear();
        gram.push(MARK);
        gram.push_str(p[0]);
        gram.push(' ');
        gram.push_str(p[1]);
        f(&gram);
    }
}

impl Ngrams {
    pub fn load(path: &Path) -> Result<Ngrams, Error> {
        let err = |reason: String| Error::Model {
            dir: path.display().to_string(),
            reason,
        };
        let bytes = std::fs::read(path).map_err(|e| err(e.to_string()))?;
        let file: File = serde_json::from_slice(&bytes).map_err(|e| err(e.to_string()))?;
        Ngrams::new(file.grams, file.idf).map_err(err)
    }

    pub fn new(grams: Vec<String>, idf: Vec<f32>) -> Result<Ngrams, String> {
        if grams.len() != idf.len() {
            return Err(format!(
                "{} grams but {} idf weights",
                grams.len(),
                idf.len()
            ));
        }
        let bytes: usize = grams.iter().map(String::len).sum();
        if u32::try_from(bytes).is_err() || u32::try_from(grams.len()).is_err() {
            return Err(format!(
                "{} grams of {bytes} bytes are more than the index holds",
                grams.len()
            ));
        }
        let mut text = String::with_capacity(bytes);
        let mut ends = Vec::with_capacity(grams.len());
        for g in &grams {
            text.push_str(g);
            ends.push(text.len() as u32);
        }
        let mut ngrams = Ngrams {
            text,
            ends,
            idf,
            slots: vec![EMPTY; (grams.len() * 2).next_power_of_two().max(2)],
        };
        for (i, g) in grams.iter().enumerate() {
            // a gram listed twice keeps its last index, as a map built in order would
            let slot = ngrams.probe(g);
            ngrams.slots[slot] = i as u32;
        }
        Ok(ngrams)
    }

    /// Gram `i` of the vocabulary.
    fn gram(&self, i: usize) -> &str {
        let start = if i == 0 { 0 } else { self.ends[i - 1] as usize };
        &self.text[start..self.ends[i] as usize]
    }

    /// The slot that holds `gram`, or the free slot where it would go. Ends: the table
    /// always has free slots (it is at least twice the vocabulary).
    fn probe(&self, gram: &str) -> usize {
        use std::hash::BuildHasher as _;
        // A fast hash with a fixed seed: the table is built from the shipped vocabulary at
        // load and only looked up after, so a text cannot lengthen its probe chains.
        let mask = self.slots.len() - 1;
        let mut slot = foldhash::fast::FixedState::with_seed(0).hash_one(gram) as usize & mask;
        loop {
            match self.slots[slot] {
                EMPTY => return slot,
                i if self.gram(i as usize) == gram => return slot,
                _ => slot = (slot + 1) & mask,
            }
        }
    }

    /// The vocabulary index of `gram`, if it is in the vocabulary.
    fn index(&self, gram: &str) -> Option<u32> {
        match self.slots[self.probe(gram)] {
            EMPTY => None,
            i => Some(i),
        }
    }

    /// The vocabulary index and idf weight of `gram`, if it is in the vocabulary.
    #[cfg(test)]
    fn get(&self, gram: &str) -> Option<(i64, f32)> {
        self.index(gram)
            .map(|i| (i64::from(i), self.idf[i as usize]))
    }

    pub fn len(&self) -> usize {
        self.ends.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// The L2-normalized TF-IDF vector of `text`.
    pub fn features(&self, text: &str) -> Sparse {
        // the vocabulary index of every gram found, counted by sorting
        let mut found: Vec<u32> = Vec::new();
        each_gram(text, |g| found.extend(self.index(g)));
        found.sort_unstable();
        let mut v: Sparse = found
            .chunk_by(|a, b| a == b)
            .map(|run| {
                let i = run[0];
                let tf = 1.0 + (run.len() as f32).ln();
                (i64::from(i), tf * self.idf[i as usize])
            })
            .collect();
        let norm = v.iter().map(|(_, x)| x * x).sum::<f32>().sqrt();
        if norm > 0.0 {
            v.iter_mut().for_each(|(_, x)| *x /= norm);
        }
        v
    }

    /// A batch as the graph's `ngram_ids` / `ngram_values` [rows, width], padded with (0, 0).
    pub fn pad(batch: &[&Sparse]) -> (Vec<i64>, Vec<f32>, usize) {
        let width = batch.iter().map(|row| row.len()).max().unwrap_or(0).max(1);
        let mut ids = vec![0i64; batch.len() * width];
        let mut vals = vec![0f32; batch.len() * width];
        for (r, row) in batch.iter().enumerate() {
            for (j, &(i, x)) in row.iter().enumerate() {
                ids[r * width + j] = i;
                vals[r * width + j] = x;
            }
        }
        (ids, vals, width)
    }
}

/// The lexical half's logistic regression (`ngram_head.bin`: float16 weights
/// [grams, labels] row-major, then float32 bias [labels], little-endian), the same numbers
/// the graph holds, so that a confident request can be decided without the encoder.
#[derive(Debug)]
pub struct LexicalHead {
    weights: Box<dyn Weights>,
    bias: Vec<f32>,
    labels: usize,
}

/// Where a head's float16 weights are held: its own buffer, or one it shares with the
/// model's session (the graph's initializer of the same numbers, so that they are held once).
pub trait Weights: std::fmt::Debug + Send + Sync {
    /// The weights, [grams, labels] row-major.
    fn values(&self) -> &[half::f16];
}

impl Weights for Vec<half::f16> {
    fn values(&self) -> &[half::f16] {
        self
    }
}

impl LexicalHead {
    /// Reads `path`, which must hold exactly `grams × labels` weights and `labels` biases.
    pub fn load(path: &Path, grams: usize, labels: usize) -> Result<LexicalHead, Error> {
        let (weights, bias) = LexicalHead::read_file(path, grams, labels)?;
        LexicalHead::with_weights(Box::new(weights), bias).map_err(|reason| Error::Model {
            dir: path.display().to_string(),
            reason,
        })
    }

    /// The weights and biases in `path`, which must hold exactly `grams × labels` weights
    /// and `labels` biases.
    pub fn read_file(
        path: &Path,
        grams: usize,
        labels: usize,
    ) -> Result<(Vec<half::f16>, Vec<f32>), Error> {
        let err = |reason: String| Error::Model {
            dir: path.display().to_string(),
            reason,
        };
        let file = std::fs::File::open(path).map_err(|e| err(e.to_string()))?;
        let len = file.metadata().map_err(|e| err(e.to_string()))?.len();
        read_head(file, len, grams, labels).map_err(err)
    }

    pub fn from_bytes(bytes: &[u8], grams: usize, labels: usize) -> Result<LexicalHead, String> {
        let (weights, bias) = read_head(bytes, bytes.len() as u64, grams, labels)?;
        LexicalHead::with_weights(Box::new(weights), bias)
    }

    /// The head with its weights held by `weights` (its own buffer, or the model's session,
    /// which has the same numbers): [grams, labels] row-major, and one bias per label.
    pub fn with_weights(weights: Box<dyn Weights>, bias: Vec<f32>) -> Result<LexicalHead, String> {
        let labels = bias.len();
        if labels == 0 || !weights.values().len().is_multiple_of(labels) {
            return Err(format!(
                "{} weights do not make rows of {labels} labels",
                weights.values().len()
            ));
        }
        Ok(LexicalHead {
            weights,
            bias,
            labels,
        })
    }

    /// The head's logits for one text's features (grams outside the head are ignored).
    pub fn logits(&self, features: &Sparse) -> Vec<f32> {
        use half::slice::HalfFloatSliceExt as _;
        let mut z = self.bias.clone();
        let weights = self.weights.values();
        // one row at a time widened to f32 (with the CPU's conversion instructions where it
        // has them), then added: a conversion per weight costs more than the sum
        let mut row32 = vec![0f32; self.labels];
        for &(i, x) in features {
            let Ok(i) = usize::try_from(i) else { continue };
            let Some(row) = weights.get(i * self.labels..(i + 1) * self.labels) else {
                continue;
            };
            row.convert_to_f32_slice(&mut row32);
            for (zj, w) in z.iter_mut().zip(&row32) {
                *zj += x * w;
            }
        }
        z
    }
}

/// A lexical head's file, `len` bytes from `from`: float16 weights [grams, labels], then
/// float32 biases [labels], little-endian.
pub(super) fn read_head(
    mut from: impl std::io::Read,
    len: u64,
    grams: usize,
    labels: usize,
) -> Result<(Vec<half::f16>, Vec<f32>), String> {
    let expected = grams * labels * 2 + labels * 4;
    if labels == 0 || len != expected as u64 {
        return Err(format!(
            "{len} bytes, expected {expected} ({grams} grams × {labels} labels as float16, \
             then {labels} float32 biases)"
        ));
    }
    // read in pieces: a 15 MB read buffer would stay resident beside the weights
    let mut piece = vec![0u8; super::READ_PIECE];
    let mut weights = Vec::with_capacity(grams * labels);
    while weights.len() < grams * labels {
        let n = (grams * labels - weights.len()).min(piece.len() / 2);
        let bytes = &mut piece[..n * 2];
        from.read_exact(bytes).map_err(|e| e.to_string())?;
        weights.extend(
            bytes
                .chunks_exact(2)
                .map(|b| half::f16::from_le_bytes([b[0], b[1]])),
        );
    }
    let mut bias = Vec::with_capacity(labels);
    let mut four = [0u8; 4];
    for _ in 0..labels {
        from.read_exact(&mut four).map_err(|e| e.to_string())?;
        bias.push(f32::from_le_bytes(four));
    }
    Ok((weights, bias))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grams_of_a_short_text() {
        let g = analyze("Hi PIN");
        // " hi " gives " h", "hi", "i ", " hi", "hi ", " hi " ; words are marked
        assert!(g.contains(&" h".to_string()));
        assert!(g.contains(&" hi ".to_string()));
        assert!(g.contains(&" pin ".to_string()));
        assert!(g.contains(&"\u{1}hi".to_string()));
        assert!(g.contains(&"\u{1}hi pin".to_string()));
        // 4-char padded word: 3 + 2 + 1 grams; 5-char: 4 + 3 + 2 + 1
        assert_eq!(g.len(), 6 + 10 + 3);
    }

    #[test]
    fn sublinear_tfidf_is_unit_length() {
        let n = Ngrams::new(
            vec!["\u{1}karte".into(), "\u{1}pin".into(), "\u{1}weg".into()],
            vec![2.0, 1.0, 5.0],
        )
        .expect("vocabulary");
        let f = n.features("Karte karte PIN");
        assert_eq!(f.len(), 2);
        let norm: f32 = f.iter().map(|(_, x)| x * x).sum();
        assert!((norm - 1.0).abs() < 1e-5);
        // karte: (1 + ln 2) * 2, pin: 1 * 1
        let ratio = f[0].1 / f[1].1;
        assert!((ratio - (1.0 + 2f32.ln()) * 2.0).abs() < 1e-4);
        let (ids, vals, w) = Ngrams::pad(&[&f, &vec![]]);
        assert_eq!(w, 2);
        assert_eq!(ids, [0, 1, 0, 0]);
        assert_eq!(vals[2..], [0.0, 0.0]);
    }

    #[test]
    fn every_gram_of_the_shipped_vocabulary_is_found_at_its_index() {
        let path =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/intent-e5-de-en/ngrams.json");
        let file: File =
            serde_json::from_slice(&std::fs::read(&path).expect("shipped ngrams.json"))
                .expect("ngrams.json");
        let n = Ngrams::new(file.grams.clone(), file.idf.clone()).expect("vocabulary");
        assert_eq!(n.len(), file.grams.len());
        for (i, g) in file.grams.iter().enumerate() {
            assert_eq!(n.get(g), Some((i as i64, file.idf[i])), "{g:?}");
        }
        for absent in ["", "\u{1}no such word here", "zzzzz", "\u{1}"] {
            if !file.grams.iter().any(|g| g == absent) {
                assert_eq!(n.get(absent), None, "{absent:?}");
            }
        }
    }

    #[test]
    fn a_gram_listed_twice_keeps_its_last_index_and_an_empty_vocabulary_finds_nothing() {
        let n = Ngrams::new(
            vec!["ab".into(), "cd".into(), "ab".into()],
            vec![1.0, 2.0, 3.0],
        )
        .expect("vocabulary");
        assert_eq!(n.get("ab"), Some((2, 3.0)));
        assert_eq!(n.get("cd"), Some((1, 2.0)));
        assert_eq!(n.get("abcd"), None);
        let empty = Ngrams::new(Vec::new(), Vec::new()).expect("empty");
        assert!(empty.is_empty());
        assert_eq!(empty.get("ab"), None);
        assert!(empty.features("any text at all").is_empty());
    }

    #[test]
    fn lexical_head_is_a_sparse_linear_layer() {
        // 3 grams × 2 labels: rows [1, 0], [0, 2], [0.5, 0.5]; bias [0.25, -0.25]
        let mut bytes = Vec::new();
        for w in [1.0f32, 0.0, 0.0, 2.0, 0.5, 0.5] {
            bytes.extend(half::f16::from_f32(w).to_le_bytes());
        }
        for b in [0.25f32, -0.25] {
            bytes.extend(b.to_le_bytes());
        }
        let head = LexicalHead::from_bytes(&bytes, 3, 2).expect("head");
        assert_eq!(head.logits(&vec![(1, 0.5), (2, 1.0)]), [0.75, 1.25]);
        assert_eq!(head.logits(&vec![]), [0.25, -0.25]);
        let short = LexicalHead::from_bytes(&bytes[..10], 3, 2).expect_err("too short");
        assert!(short.contains("expected 20"), "{short}");
    }
}
