//! The model card (`model.toml`): what the model is, how it was calibrated and the sha256 of
//! every shipped file. Files are verified against it before a model is used.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::signals::Tone;
use super::{Calibration, Error, READ_PIECE};

/// The parts of `model.toml` the engine reads (the card carries more for people: metrics,
/// sources, training data).
#[derive(Debug, Clone, Deserialize)]
pub struct ModelCard {
    pub model: Model,
    pub calibration: CalibrationSection,
    /// The lexical cascade, when the model ships its n-gram head on its own.
    #[serde(default)]
    pub cascade: Option<CascadeSection>,
    /// Sentiment and frustration heads, when the graph has them.
    #[serde(default)]
    pub signals: Option<SignalsSection>,
    /// File name → sha256 (hex).
    pub files: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Model {
    pub name: String,
    pub version: String,
    /// Text put before every request (the encoder was trained with it).
    #[serde(default)]
    pub prefix: String,
    /// Longest input in tokens, special tokens included; longer inputs are cut.
    pub max_tokens: usize,
    /// The label of the "not for us" class.
    pub out_of_scope_label: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct CalibrationSection {
    pub temperature: f32,
    pub out_of_scope_threshold: f32,
    /// A temperature fitted on one language's validation requests, by language code
    /// (`de`), for a language the shared one leaves under- or over-confident.
    #[serde(default)]
    pub temperature_by_language: BTreeMap<String, f32>,
}

/// `[cascade]`: the n-gram half decides alone when its own probability for its best class
/// is at least `lexical_exit` (chosen on validation so that it costs no accuracy).
#[derive(Debug, Clone, Deserialize)]
pub struct CascadeSection {
    pub lexical_exit: f32,
}

/// `[signals]`: the graph's sentiment and frustration outputs, how to read them, and their
/// n-gram twin for requests the cascade decides without the encoder.
#[derive(Debug, Clone, Deserialize)]
pub struct SignalsSection {
    /// Output with three sentiment logits per request.
    pub sentiment: String,
    /// Output with one frustration logit per request.
    pub frustration: String,
    /// The tone of each sentiment logit, in order: `negative`, `neutral`, `positive`.
    pub sentiment_labels: Vec<String>,
    /// A frustration score at or above this is flagged.
    pub frustration_flag_at: f32,
    /// The n-gram twin's weights (float16 [grams, 4], float32 [4]); needs `ngrams.json`.
    pub lexical_head: Option<String>,
    /// A lexical exit is taken only below this n-gram frustration score.
    #[serde(default)]
    pub lexical_guard: Option<f32>,
}

impl SignalsSection {
    /// The tones of the sentiment outputs, in output order.
    pub fn tones(&self) -> Result<[Tone; 3], String> {
        let tones: Vec<Tone> = self
            .sentiment_labels
            .iter()
            .map(|l| {
                Tone::parse(l).ok_or_else(|| {
                    format!("signals.sentiment_labels: {l:?} is not negative, neutral or positive")
                })
            })
            .collect::<Result<_, _>>()?;
        let tones: [Tone; 3] = tones.try_into().map_err(|t: Vec<Tone>| {
            format!("signals.sentiment_labels has {} labels, not 3", t.len())
        })?;
        if Tone::ALL.iter().any(|t| !tones.contains(t)) {
            return Err("signals.sentiment_labels must name each tone once".into());
        }
        Ok(tones)
    }
}

/// The n-gram head's weights, needed by `[cascade]`.
pub const LEXICAL_HEAD_FILE: &str = "ngram_head.bin";

/// A model directory whose files match its card.
#[derive(Debug, Clone)]
pub struct Verified {
    pub dir: PathBuf,
    pub card: ModelCard,
    pub labels: Vec<String>,
    /// `name@version+sha256:<first 12 hex of the graph file (model.onnx or model.onnx.zst)>`.
    pub version: String,
    /// The large files the loader reads whole (the graph, the lexical heads): each one's
    /// checksum is checked as it is read ([`Verified::open`]) instead of in a read of its
    /// own before; [`Verified::check_unread`] checks those the loader did not need.
    unread: BTreeMap<String, String>,
}

fn model_err(dir: &Path, reason: impl Into<String>) -> Error {
    Error::Model {
        dir: dir.display().to_string(),
        reason: reason.into(),
    }
}

/// The graph, plain or compressed with zstd (how the repository ships it, to keep the
/// model's files within their size budget; `models/training/pack.py`).
pub const GRAPH_FILES: [&str; 2] = ["model.onnx", "model.onnx.zst"];

impl ModelCard {
    /// The graph file the card lists (checked at parse: exactly one of [`GRAPH_FILES`]).
    pub fn graph_file(&self) -> &'static str {
        GRAPH_FILES
            .into_iter()
            .find(|f| self.files.contains_key(*f))
            .unwrap_or(GRAPH_FILES[0])
    }
}

/// sha256 of a file, hex.
pub fn sha256_file(path: &Path) -> std::io::Result<String> {
    // streamed in pieces: a model file is tens of MB
    let mut hasher = Sha256::new();
    let mut file = std::io::BufReader::with_capacity(READ_PIECE, std::fs::File::open(path)?);
    std::io::copy(&mut file, &mut hasher)?;
    Ok(hex::encode(hasher.finalize()))
}

impl ModelCard {
    pub fn parse(text: &str) -> Result<ModelCard, String> {
        let card: ModelCard = toml::from_str(text).map_err(|e| e.to_string())?;
        let usable = |t: f32| t.is_finite() && t > 0.0;
        if !usable(card.calibration.temperature) {
            return Err("calibration.temperature must be a number > 0".into());
        }
        for (language, &t) in &card.calibration.temperature_by_language {
            let code = (2..=3).contains(&language.len())
                && language.bytes().all(|b| b.is_ascii_lowercase());
            if !code {
                return Err(format!(
                    "calibration.temperature_by_language: `{language}` is not a language code (two or three lower-case letters)"
                ));
            }
            if !usable(t) {
                return Err(format!(
                    "calibration.temperature_by_language.{language} must be a number > 0"
                ));
            }
        }
        if !(0.0..1.0).contains(&card.calibration.out_of_scope_threshold) {
            return Err("calibration.out_of_scope_threshold must be in [0, 1)".into());
        }
        let graphs = GRAPH_FILES
            .iter()
            .filter(|f| card.files.contains_key(**f))
            .count();
        if graphs != 1 {
            return Err(format!(
                "[files] must have a checksum for exactly one of {}",
                GRAPH_FILES.join(", ")
            ));
        }
        for f in ["tokenizer.json", "labels.json"] {
            if !card.files.contains_key(f) {
                return Err(format!("[files] has no checksum for {f}"));
            }
        }
        if let Some(c) = &card.cascade {
            if !(c.lexical_exit > 0.0 && c.lexical_exit <= 1.0) {
                return Err("cascade.lexical_exit must be in (0, 1]".into());
            }
            for f in ["ngrams.json", LEXICAL_HEAD_FILE] {
                if !card.files.contains_key(f) {
                    return Err(format!(
                        "[cascade] needs {f}, but [files] has no checksum for it"
                    ));
                }
            }
        }
        if let Some(s) = &card.signals {
            s.tones()?;
            if !(s.frustration_flag_at > 0.0 && s.frustration_flag_at < 1.0) {
                return Err("signals.frustration_flag_at must be in (0, 1)".into());
            }
            if s.lexical_guard.is_some_and(|g| !(g > 0.0 && g <= 1.0)) {
                return Err("signals.lexical_guard must be in (0, 1]".into());
            }
            if let Some(f) = &s.lexical_head {
                for f in ["ngrams.json", f.as_str()] {
                    if !card.files.contains_key(f) {
                        return Err(format!(
                            "[signals] needs {f}, but [files] has no checksum for it"
                        ));
                    }
                }
            }
        }
        Ok(card)
    }

    /// Reads `dir/model.toml`, checks the sha256 of every listed file but the large ones
    /// the loader reads whole (those are checked as they are read: [`Verified::open`]) and
    /// reads the labels.
    pub fn load_verified(dir: &Path) -> Result<Verified, Error> {
        let text = std::fs::read_to_string(dir.join("model.toml"))
            .map_err(|e| model_err(dir, format!("cannot read model.toml: {e}")))?;
        let card =
            ModelCard::parse(&text).map_err(|e| model_err(dir, format!("model.toml: {e}")))?;
        let read_whole = card.files_read_whole();
        let mut unread = BTreeMap::new();
        for (file, expected) in &card.files {
            if read_whole.contains(&file.as_str()) {
                unread.insert(file.clone(), expected.clone());
                continue;
            }
            verify_file(dir, file, expected)?;
        }
        // The graph's own checksum names the model; a graph that does not match it is
        // refused when it is read, before the model answers anything.
        let model_sha = card.files[card.graph_file()].to_ascii_lowercase();
        let labels: Vec<String> = serde_json::from_slice(
            &std::fs::read(dir.join("labels.json"))
                .map_err(|e| model_err(dir, format!("cannot read labels.json: {e}")))?,
        )
        .map_err(|e| model_err(dir, format!("labels.json: {e}")))?;
        if labels.is_empty() {
            return Err(model_err(dir, "labels.json is empty"));
        }
        let version = format!(
            "{}@{}+sha256:{}",
            card.model.name,
            card.model.version,
            &model_sha[..12.min(model_sha.len())]
        );
        Ok(Verified {
            dir: dir.to_path_buf(),
            card,
            labels,
            version,
            unread,
        })
    }

    /// The files the loader reads whole: the graph and the lexical heads.
    fn files_read_whole(&self) -> Vec<&str> {
        let mut files = vec![self.graph_file(), LEXICAL_HEAD_FILE];
        if let Some(head) = self
            .signals
            .as_ref()
            .and_then(|s| s.lexical_head.as_deref())
        {
            files.push(head);
        }
        files
    }
}

/// Hashes `dir/file` in a read of its own and compares it with the card's sum.
fn verify_file(dir: &Path, file: &str, expected: &str) -> Result<(), Error> {
    let path = dir.join(file);
    let actual =
        sha256_file(&path).map_err(|e| model_err(dir, format!("cannot read {file}: {e}")))?;
    check(&path, expected, actual)
}

fn check(path: &Path, expected: &str, actual: String) -> Result<(), Error> {
    if actual.eq_ignore_ascii_case(expected) {
        Ok(())
    } else {
        Err(Error::Checksum {
            file: path.display().to_string(),
            expected: expected.to_string(),
            actual,
        })
    }
}

impl Verified {
    /// One of the large files the card lists, its sha256 checked as it is read: the reader
    /// says whether the bytes matched only at [`Checked::finish`], so nothing read from it
    /// may be used before that returned `Ok`.
    pub fn open(&mut self, file: &str) -> Result<Checked, Error> {
        let path = self.dir.join(file);
        let Some(expected) = self.unread.remove(file) else {
            return Err(model_err(
                &self.dir,
                format!("{file} is not a file of the model card read as it is checked"),
            ));
        };
        let cannot_read =
            |e: std::io::Error| model_err(&self.dir, format!("cannot read {file}: {e}"));
        let opened = std::fs::File::open(&path).map_err(cannot_read)?;
        let len = opened.metadata().map_err(cannot_read)?.len();
        Ok(Checked {
            len,
            file: opened,
            hasher: Sha256::new(),
            path,
            expected,
        })
    }

    /// Checks the large files the loader did not read (a lexical head when the cascade is
    /// switched off): every file the card lists is checked before the model answers.
    pub fn check_unread(&mut self) -> Result<(), Error> {
        for (file, expected) in std::mem::take(&mut self.unread) {
            verify_file(&self.dir, &file, &expected)?;
        }
        Ok(())
    }
}

/// A model file being read, hashed as it goes ([`Verified::open`]).
#[derive(Debug)]
pub struct Checked {
    /// The file's length when it was opened.
    pub len: u64,
    file: std::fs::File,
    hasher: Sha256,
    path: PathBuf,
    expected: String,
}

impl std::io::Read for Checked {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.file.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

impl Checked {
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reads what the loader left unread and compares the file's sha256 with the card's.
    pub fn finish(mut self) -> Result<(), Error> {
        std::io::copy(
            &mut std::io::BufReader::with_capacity(READ_PIECE, &mut self),
            &mut std::io::sink(),
        )
        .map_err(|e| Error::Model {
            dir: self.path.display().to_string(),
            reason: e.to_string(),
        })?;
        let actual = hex::encode(self.hasher.finalize());
        check(&self.path, &self.expected, actual)
    }
}

impl Verified {
    pub fn calibration(&self, top_k: usize) -> Calibration {
        Calibration {
            temperature: self.card.calibration.temperature,
            by_language: self.card.calibration.temperature_by_language.clone(),
            threshold: self.card.calibration.out_of_scope_threshold,
            oos_index: self
                .labels
                .iter()
                .position(|l| *l == self.card.model.out_of_scope_label),
            top_k,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CARD: &str = r#"
[model]
name = "tiny"
version = "0.1.0"
prefix = "query: "
max_tokens = 64
out_of_scope_label = "oos"

[calibration]
temperature = 1.5
out_of_scope_threshold = 0.3

[files]
"model.onnx" = "MODEL"
"tokenizer.json" = "TOK"
"labels.json" = "LABELS"
"#;

    fn write(dir: &Path, name: &str, body: &[u8]) -> String {
        std::fs::write(dir.join(name), body).expect("write");
        hex::encode(Sha256::digest(body))
    }

    fn model_dir() -> tempfile::TempDir {
        let d = tempfile::tempdir().expect("tempdir");
        let m = write(d.path(), "model.onnx", b"not really onnx");
        let t = write(d.path(), "tokenizer.json", b"{}");
        let l = write(d.path(), "labels.json", br#"["a","b","oos"]"#);
        let card = CARD
            .replace("MODEL", &m)
            .replace("TOK", &t)
            .replace("LABELS", &l);
        std::fs::write(d.path().join("model.toml"), card).expect("write card");
        d
    }

    #[test]
    fn verified_card_gives_labels_version_and_calibration() {
        let d = model_dir();
        let v = ModelCard::load_verified(d.path()).expect("verifies");
        assert_eq!(v.labels, ["a", "b", "oos"]);
        assert!(v.version.starts_with("tiny@0.1.0+sha256:"));
        let c = v.calibration(5);
        assert_eq!(c.oos_index, Some(2));
        assert_eq!(c.temperature, 1.5);
        assert!(
            c.by_language.is_empty(),
            "a card without the field keeps one temperature"
        );
        let german = ModelCard::parse(&CARD.replace(
            "out_of_scope_threshold = 0.3",
            "out_of_scope_threshold = 0.3\ntemperature_by_language = { de = 0.8 }",
        ))
        .expect("parses");
        assert_eq!(german.calibration.temperature_by_language["de"], 0.8);
    }

    #[test]
    fn a_changed_file_fails_verification() {
        let d = model_dir();
        std::fs::write(d.path().join("labels.json"), br#"["a","b","c"]"#).expect("write");
        match ModelCard::load_verified(d.path()) {
            Err(Error::Checksum { file, .. }) => assert!(file.ends_with("labels.json")),
            other => panic!("expected a checksum error, got {other:?}"),
        }
    }

    #[test]
    fn nonsense_calibration_is_rejected() {
        let bad = CARD.replace("temperature = 1.5", "temperature = 0.0");
        assert!(ModelCard::parse(&bad).is_err());
        let infinite = CARD.replace("temperature = 1.5", "temperature = inf");
        assert!(ModelCard::parse(&infinite).is_err());
        for (by_language, names) in [
            ("{ de = 0.0 }", "temperature_by_language.de"),
            ("{ de = nan }", "temperature_by_language.de"),
            ("{ \"../x\" = 0.8 }", "`../x` is not a language code"),
            ("{ German = 0.8 }", "`German` is not a language code"),
        ] {
            let card = CARD.replace(
                "out_of_scope_threshold = 0.3",
                &format!("out_of_scope_threshold = 0.3\ntemperature_by_language = {by_language}"),
            );
            let err = ModelCard::parse(&card).expect_err(by_language);
            assert!(err.contains(names), "{by_language}: {err}");
        }
        let cascade = CARD.replace("[files]", "[cascade]\nlexical_exit = 0.9\n\n[files]");
        let err = ModelCard::parse(&cascade).expect_err("no head file");
        assert!(err.contains("ngrams.json"), "{err}");
        let exit = cascade.replace("0.9", "1.5");
        assert!(
            ModelCard::parse(&exit)
                .expect_err("exit")
                .contains("lexical_exit")
        );
        let signals = CARD.replace(
            "[files]",
            "[signals]\nsentiment = \"s\"\nfrustration = \"f\"\n\
             sentiment_labels = [\"negative\", \"neutral\", \"positive\"]\n\
             frustration_flag_at = 0.5\n\n[files]",
        );
        let card = ModelCard::parse(&signals).expect("heads without a lexical twin");
        assert_eq!(
            card.signals.expect("signals").tones().expect("tones"),
            Tone::ALL
        );
        for (from, to, says) in [
            ("\"neutral\", ", "\"neutral\", \"neutral\", ", "not 3"),
            ("\"positive\"", "\"happy\"", "\"happy\""),
            ("\"negative\"", "\"positive\"", "each tone once"),
            ("flag_at = 0.5", "flag_at = 1.0", "frustration_flag_at"),
            (
                "flag_at = 0.5",
                "flag_at = 0.5\nlexical_head = \"x.bin\"",
                "ngrams.json",
            ),
            (
                "flag_at = 0.5",
                "flag_at = 0.5\nlexical_guard = 0.0",
                "lexical_guard",
            ),
        ] {
            let err = ModelCard::parse(&signals.replace(from, to)).expect_err(says);
            assert!(err.contains(says), "{err}");
        }
        let missing = CARD.replace("\"labels.json\" = \"LABELS\"\n", "");
        assert!(
            ModelCard::parse(&missing)
                .expect_err("missing checksum")
                .contains("labels.json")
        );
    }
    #[test]
    fn a_card_lists_exactly_one_graph_plain_or_compressed() {
        let none = CARD.replace("\"model.onnx\" = \"MODEL\"\n", "");
        let both = CARD.replace(
            "\"model.onnx\" = \"MODEL\"\n",
            "\"model.onnx\" = \"MODEL\"\n\"model.onnx.zst\" = \"PACKED\"\n",
        );
        for card in [none, both] {
            let err = ModelCard::parse(&card).expect_err("refused");
            assert!(
                err.contains("exactly one of model.onnx, model.onnx.zst"),
                "{err}"
            );
        }
        let packed = CARD.replace("\"model.onnx\" = ", "\"model.onnx.zst\" = ");
        let card = ModelCard::parse(&packed).expect("a compressed graph is a graph");
        assert_eq!(card.graph_file(), "model.onnx.zst");
    }
}
