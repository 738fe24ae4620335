//! The tokenizer's Unigram model with its vocabulary packed: the same tokens as
//! `tokenizers`' own `Unigram`, in a twentieth of the memory (ADR 0026).
//!
//! `tokenizers` keeps a Unigram vocabulary as a byte trie with a hash map in every node:
//! for the model's 35,587 pieces that is ~42,000 maps and ~20 MB of the box's idle memory.
//! Here the pieces sit in one string, with their scores and a list of their ids sorted by
//! their bytes; the pieces that start a text at some position (what the trie's
//! common-prefix search gives) are found by narrowing that sorted list one byte at a time.
//! The normalizer, pre-tokenizer, special tokens and post-processor stay `tokenizers`'
//! own, read from the same `tokenizer.json`; only the model is ours, and the best
//! segmentation is the one `tokenizers` computes (sentencepiece's optimized Viterbi),
//! ties broken the same way. The tests compare both token for token.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use tokenizers::models::unigram::UnigramTrainer;
use tokenizers::{
    AddedToken, DecoderWrapper, Model, NormalizerWrapper, PostProcessorWrapper,
    PreTokenizerWrapper, Token, TokenizerImpl,
};

/// What an unknown character scores below the lowest piece (sentencepiece's penalty).
const UNK_PENALTY: f64 = 10.0;

/// A tokenizer whose model is the packed Unigram.
pub type PackedTokenizer = TokenizerImpl<
    PackedUnigram,
    NormalizerWrapper,
    PreTokenizerWrapper,
    PostProcessorWrapper,
    DecoderWrapper,
>;

/// A Unigram vocabulary: pieces, their scores, and their ids in byte order.
#[derive(Debug, Clone)]
pub struct PackedUnigram {
    /// Every piece, one after another, in id order.
    text: String,
    /// Where piece `id` starts in `text`; one more entry for the end of the last.
    starts: Vec<u32>,
    scores: Vec<f64>,
    /// Piece ids ordered by their bytes; of pieces with equal text only the last id (as
    /// `tokenizers` keeps it).
    sorted: Vec<u32>,
    unk_id: u32,
    min_score: f64,
}

#[derive(Deserialize)]
struct UnigramJson {
    #[serde(rename = "type")]
    kind: String,
    unk_id: Option<usize>,
    vocab: Vec<(String, f64)>,
    #[serde(default)]
    byte_fallback: bool,
}

/// An entry of `added_tokens` in `tokenizer.json`.
#[derive(Deserialize)]
struct AddedJson {
    id: u32,
    content: String,
    #[serde(default)]
    single_word: bool,
    #[serde(default)]
    lstrip: bool,
    #[serde(default)]
    rstrip: bool,
    #[serde(default)]
    normalized: bool,
    #[serde(default)]
    special: bool,
}

impl AddedJson {
    fn token(self) -> AddedToken {
        AddedToken {
            content: self.content,
            single_word: self.single_word,
            lstrip: self.lstrip,
            rstrip: self.rstrip,
            normalized: self.normalized,
            special: self.special,
        }
    }
}

impl PackedUnigram {
    /// Packs `vocab` (piece, score), in id order, with the id of the unknown piece.
    pub fn new(vocab: &[(String, f64)], unk_id: usize) -> Result<PackedUnigram, String> {
        if unk_id >= vocab.len() {
            return Err(format!(
                "the unknown piece's id {unk_id} is not in the vocabulary of {}",
                vocab.len()
            ));
        }
        let total: usize = vocab.iter().map(|(p, _)| p.len()).sum();
        let n = u32::try_from(vocab.len()).map_err(|_| "the vocabulary is too large")?;
        u32::try_from(total).map_err(|_| "the vocabulary's pieces are too long")?;
        let mut text = String::with_capacity(total);
        let mut starts = Vec::with_capacity(vocab.len() + 1);
        let mut scores = Vec::with_capacity(vocab.len());
        let mut min_score = f64::INFINITY;
        for (piece, score) in vocab {
            if !score.is_finite() {
                return Err(format!("piece {piece:?} has no finite score ({score})"));
            }
            starts.push(text.len() as u32);
            text.push_str(piece);
            scores.push(*score);
            min_score = min_score.min(*score);
        }
        starts.push(text.len() as u32);
        let mut model = PackedUnigram {
            text,
            starts,
            scores,
            sorted: Vec::new(),
            unk_id: unk_id as u32,
            min_score,
        };
        // by bytes; of equal pieces the highest id first, the one kept (as `tokenizers` does)
        let mut sorted: Vec<u32> = (0..n).collect();
        sorted.sort_by(|a, b| model.piece(*a).cmp(model.piece(*b)).then(b.cmp(a)));
        sorted.dedup_by(|later, kept| model.piece(*later) == model.piece(*kept));
        sorted.shrink_to_fit();
        model.sorted = sorted;
        Ok(model)
    }

    fn piece(&self, id: u32) -> &str {
        let id = id as usize;
        &self.text[self.starts[id] as usize..self.starts[id + 1] as usize]
    }

    /// The ids of the pieces that `s` starts with, shortest first.
    fn prefixes<'a>(&'a self, s: &'a [u8]) -> impl Iterator<Item = u32> + 'a {
        let (mut lo, mut hi) = (0usize, self.sorted.len());
        let mut depth = 0usize;
        std::iter::from_fn(move || {
            while depth < s.len() && lo < hi {
                let byte = s[depth];
                let range = &self.sorted[lo..hi];
                // every piece in [lo, hi) starts with s[..depth]; those of exactly that
                // length come first, then the rest ordered by their byte at `depth`
                let at = |id: &u32| self.piece(*id).as_bytes().get(depth).copied();
                let from = range.partition_point(|id| at(id).is_none_or(|b| b < byte));
                let to = range.partition_point(|id| at(id).is_none_or(|b| b <= byte));
                (lo, hi) = (lo + from, lo + to);
                depth += 1;
                if lo < hi && self.piece(self.sorted[lo]).len() == depth {
                    return Some(self.sorted[lo]);
                }
            }
            None
        })
    }

    /// The best segmentation of `sentence`: (piece id, byte range); runs of unknown
    /// characters are one piece with the unknown id.
    fn segment(&self, sentence: &str) -> Vec<(u32, usize, usize)> {
        #[derive(Clone, Copy)]
        struct Best {
            id: u32,
            score: f64,
            from: Option<usize>,
        }
        let size = sentence.len();
        let unk_score = self.min_score - UNK_PENALTY;
        let bytes = sentence.as_bytes();
        let mut best = vec![
            Best {
                id: 0,
                score: 0.0,
                from: None,
            };
            size + 1
        ];
        let mut at = 0;
        while at < size {
            let here = best[at].score;
            let char_len = sentence[at..].chars().next().map_or(1, char::len_utf8);
            let mut single = false;
            for id in self.prefixes(&bytes[at..]) {
                let len = self.piece(id).len();
                let node = &mut best[at + len];
                let score = self.scores[id as usize] + here;
                if node.from.is_none() || score > node.score {
                    *node = Best {
                        id,
                        score,
                        from: Some(at),
                    };
                }
                single |= len == char_len;
            }
            if !single {
                let node = &mut best[at + char_len];
                let score = unk_score + here;
                if node.from.is_none() || score > node.score {
                    *node = Best {
                        id: self.unk_id,
                        score,
                        from: Some(at),
                    };
                }
            }
            at += char_len;
        }
        let mut pieces = Vec::new();
        let mut end = size;
        while end > 0 {
            let node = best[end];
            let start = node.from.unwrap_or(0);
            match pieces.last_mut() {
                // unknown characters next to each other are one piece
                Some((id, s, _)) if node.id == self.unk_id && *id == self.unk_id => *s = start,
                _ => pieces.push((node.id, start, end)),
            }
            end = start;
        }
        pieces.reverse();
        pieces
    }

    /// The tokenizer of `tokenizer.json` (a Unigram one) with its model packed.
    pub fn tokenizer_from_file(path: &Path) -> Result<PackedTokenizer, String> {
        let text = std::fs::read_to_string(path).map_err(|e| e.to_string())?;
        let mut json: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| format!("not JSON: {e}"))?;
        drop(text);
        let model = json
            .get_mut("model")
            .map(serde_json::Value::take)
            .ok_or("no `model`")?;
        let model: UnigramJson =
            serde_json::from_value(model).map_err(|e| format!("`model`: {e}"))?;
        if model.kind != "Unigram" {
            return Err(format!("`model` is {}, not Unigram", model.kind));
        }
        if model.byte_fallback {
            return Err("`model.byte_fallback` is not supported".into());
        }
        let unk_id = model.unk_id.ok_or("`model` has no `unk_id`")?;
        let packed = PackedUnigram::new(&model.vocab, unk_id)?;
        // The added (special) tokens must be pieces of the vocabulary under the ids the file
        // gives them, as `tokenizers` would find them.
        let added: Vec<AddedJson> = serde_json::from_value(json["added_tokens"].take())
            .map_err(|e| format!("`added_tokens`: {e}"))?;
        for t in &added {
            if packed.token_to_id(&t.content) != Some(t.id) {
                return Err(format!(
                    "added token {:?} has id {}, not its vocabulary id",
                    t.content, t.id
                ));
            }
        }
        // The rest of the file is read by `tokenizers` itself, around a stand-in model with
        // the first pieces only.
        let stand_in: Vec<_> = model.vocab.iter().take(unk_id + 1).cloned().collect();
        drop(model);
        json["model"] = serde_json::json!({"type": "Unigram", "unk_id": unk_id, "vocab": stand_in});
        json["added_tokens"] = serde_json::json!([]);
        let rest: tokenizers::Tokenizer =
            serde_json::from_value(json).map_err(|e| format!("tokenizer: {e}"))?;
        let mut tokenizer = PackedTokenizer::new(packed);
        tokenizer
            .with_normalizer(rest.get_normalizer().cloned())
            .with_pre_tokenizer(rest.get_pre_tokenizer().cloned())
            .with_post_processor(rest.get_post_processor().cloned())
            .with_decoder(rest.get_decoder().cloned());
        let (special, plain): (Vec<AddedJson>, Vec<AddedJson>) =
            added.into_iter().partition(|t| t.special);
        tokenizer.add_special_tokens(
            &special
                .into_iter()
                .map(AddedJson::token)
                .collect::<Vec<_>>(),
        );
        tokenizer.add_tokens(&plain.into_iter().map(AddedJson::token).collect::<Vec<_>>());
        Ok(tokenizer)
    }
}

impl Model for PackedUnigram {
    type Trainer = UnigramTrainer;

    fn tokenize(&self, sequence: &str) -> tokenizers::Result<Vec<Token>> {
        if sequence.is_empty() {
            return Ok(Vec::new());
        }
        Ok(self
            .segment(sequence)
            .into_iter()
            .map(|(id, start, end)| {
                let piece = &sequence[start..end];
                // as `tokenizers` does: a run of unknown characters that happens to be a
                // piece takes that piece's id
                let id = if id == self.unk_id {
                    self.token_to_id(piece).unwrap_or(id)
                } else {
                    id
                };
                Token::new(id, piece.to_string(), (start, end))
            })
            .collect())
    }

    fn token_to_id(&self, token: &str) -> Option<u32> {
        self.sorted
            .binary_search_by(|id| self.piece(*id).cmp(token))
            .ok()
            .map(|i| self.sorted[i])
    }

    fn id_to_token(&self, id: u32) -> Option<String> {
        ((id as usize) < self.scores.len()).then(|| self.piece(id).to_string())
    }

    fn get_vocab(&self) -> HashMap<String, u32> {
        self.sorted
            .iter()
            .map(|id| (self.piece(*id).to_string(), *id))
            .collect()
    }

    fn get_vocab_size(&self) -> usize {
        self.scores.len()
    }

    fn save(&self, _folder: &Path, _prefix: Option<&str>) -> tokenizers::Result<Vec<PathBuf>> {
        Err("the packed Unigram model is read from tokenizer.json, never saved".into())
    }

    fn get_trainer(&self) -> UnigramTrainer {
        UnigramTrainer::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn model_file() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/intent-e5-de-en/tokenizer.json")
    }

    fn both() -> &'static (tokenizers::Tokenizer, PackedTokenizer) {
        static BOTH: std::sync::OnceLock<(tokenizers::Tokenizer, PackedTokenizer)> =
            std::sync::OnceLock::new();
        BOTH.get_or_init(|| {
            (
                tokenizers::Tokenizer::from_file(model_file()).expect("tokenizers reads it"),
                PackedUnigram::tokenizer_from_file(&model_file()).expect("packed reads it"),
            )
        })
    }

    fn same(text: &str) {
        let (theirs, ours) = both();
        let a = theirs.encode(text, true).expect("theirs");
        let b = ours.encode(text, true).expect("ours");
        assert_eq!(a.get_ids(), b.get_ids(), "ids of {text:?}");
        assert_eq!(a.get_tokens(), b.get_tokens(), "tokens of {text:?}");
        assert_eq!(a.get_offsets(), b.get_offsets(), "offsets of {text:?}");
    }

    #[test]
    fn the_shipped_samples_tokenize_as_tokenizers_does() {
        let mut dirs = vec![Path::new(env!("CARGO_MANIFEST_DIR")).join("../workflows/samples")];
        let mut n = 0;
        while let Some(dir) = dirs.pop() {
            for entry in std::fs::read_dir(dir).expect("samples") {
                let path = entry.expect("entry").path();
                if path.is_dir() {
                    dirs.push(path);
                    continue;
                }
                if path.extension().is_none_or(|e| e != "jsonl") {
                    continue;
                }
                for line in std::fs::read_to_string(&path).expect("read").lines() {
                    if let Ok(v) = serde_json::from_str::<serde_json::Value>(line)
                        && let Some(text) = v["text"].as_str()
                    {
                        same(&format!("query: {text}"));
                        n += 1;
                    }
                }
            }
        }
        assert!(n > 1000, "only {n} samples");
    }

    #[test]
    fn edge_cases_tokenize_as_tokenizers_does() {
        for text in [
            "",
            " ",
            "query: ",
            "<s>",
            "a<s>b</s><unk><pad>",
            "Überweisung rückgängig machen, bitte!!!",
            "☃☃☃ 漢字かな交じり 🙂🙂 \u{0}\u{7f}\u{200b}",
            "ＦＵＬＬＷＩＤＴＨ ｶﾀｶﾅ ﬁ ½ ™",
            "IBAN DE89 3704 0044 0532 0130 00, €1.234,56",
            "a\tb\nc\r\nd",
            "x".repeat(3000).as_str(),
        ] {
            same(text);
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]
        #[test]
        fn any_text_tokenizes_as_tokenizers_does(
            text in "[a-zA-ZäöüÄÖÜß0-9 .,!?€@<>/:;'\"\\-–—_\t\n☃漢字🙂\u{301}\u{200b}ﬁ½]{0,80}"
        ) {
            same(&text);
        }
    }

    #[test]
    fn a_vocabulary_without_its_unknown_piece_is_refused() {
        let e = PackedUnigram::new(&[("a".into(), -1.0)], 3).expect_err("unk id");
        assert!(e.contains("unknown piece"), "{e}");
        let e = PackedUnigram::new(&[("a".into(), f64::NAN)], 0).expect_err("nan");
        assert!(e.contains("finite"), "{e}");
    }

    #[test]
    fn equal_pieces_keep_the_last_id_as_tokenizers_does() {
        let m = PackedUnigram::new(
            &[
                ("<unk>".into(), 0.0),
                ("ab".into(), -1.0),
                ("ab".into(), -2.0),
            ],
            0,
        )
        .expect("packed");
        assert_eq!(m.token_to_id("ab"), Some(2));
        assert_eq!(m.get_vocab_size(), 3);
    }
}
