//! The shipped intent model through the real binary: it loads (checksums verified), it
//! classifies a labelled set of English and German requests above a floor, it flags
//! off-topic requests, bad lines are reported by number without stopping the run, and a
//! missing ONNX Runtime gives the documented error.

use std::io::Write;
use std::process::{Command, Output, Stdio};

use serde_json::Value;

const LABELLED: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/data/classify-labelled.jsonl"
);

fn casegraph(args: &[&str], stdin: Option<&str>, env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_casegraph"));
    cmd.args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("casegraph starts");
    if let Some(input) = stdin {
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(input.as_bytes())
            .expect("write stdin");
    } else {
        drop(child.stdin.take());
    }
    child.wait_with_output().expect("casegraph finishes")
}

fn lines(out: &Output) -> Vec<Value> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("every output line is JSON"))
        .collect()
}

#[test]
fn labelled_requests_are_classified_above_the_floor() {
    let out = casegraph(&["classify", "--input", LABELLED], None, &[]);
    assert!(
        out.status.success(),
        "classify failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let expected: Vec<Value> = std::fs::read_to_string(LABELLED)
        .expect("labelled set")
        .lines()
        .map(|l| serde_json::from_str(l).expect("labelled line"))
        .collect();
    let got = lines(&out);
    assert_eq!(
        got.len(),
        expected.len(),
        "one answer per request, in order"
    );

    let (mut in_scope, mut correct, mut off_topic, mut flagged) = (0, 0, 0, 0);
    let mut by_lang = [(0, 0); 2];
    for (want, p) in expected.iter().zip(&got) {
        let intent = want["intent"].as_str().expect("intent");
        // shape of every answer
        let top = p["top"].as_array().expect("top");
        assert_eq!(top.len(), 5);
        assert_eq!(p["intent"], top[0]["intent"]);
        let conf = p["confidence"].as_f64().expect("confidence");
        assert!((0.0..=1.0).contains(&conf));
        assert!(
            top.windows(2)
                .all(|w| w[0]["confidence"].as_f64() >= w[1]["confidence"].as_f64())
        );
        assert!(
            p["model"]
                .as_str()
                .expect("model")
                .starts_with("intent-e5-de-en@")
        );
        if intent == "oos" {
            off_topic += 1;
            flagged += usize::from(p["out_of_scope"] == true);
            continue;
        }
        in_scope += 1;
        let ok = p["intent"] == intent && p["out_of_scope"] == false;
        correct += usize::from(ok);
        let lang = usize::from(p["language"] == "de");
        by_lang[lang].0 += 1;
        by_lang[lang].1 += usize::from(ok);
    }
    let acc = correct as f64 / in_scope as f64;
    eprintln!(
        "in-scope {correct}/{in_scope}, en {}/{}, de {}/{}, off-topic flagged {flagged}/{off_topic}",
        by_lang[0].1, by_lang[0].0, by_lang[1].1, by_lang[1].0
    );
    assert!(
        acc >= 0.8,
        "in-scope accuracy {acc:.2} is below the floor 0.80"
    );
    assert!(
        by_lang[0].0 >= 15 && by_lang[1].0 >= 15,
        "both languages detected"
    );
    assert!(
        by_lang[1].1 as f64 / by_lang[1].0 as f64 >= 0.75,
        "German accuracy below the floor 0.75"
    );
    assert!(
        flagged * 5 >= off_topic * 4,
        "at least 80% of off-topic requests flagged"
    );
}

#[test]
fn the_lexical_cascade_decides_plain_requests_as_the_whole_model_would() {
    let cascade = casegraph(&["classify", "--input", LABELLED], None, &[]);
    let full = casegraph(
        &["classify", "--input", LABELLED, "--no-cascade"],
        None,
        &[],
    );
    assert!(cascade.status.success() && full.status.success());
    let (cascade, full) = (lines(&cascade), lines(&full));
    assert_eq!(cascade.len(), full.len());
    let decision = |p: &Value| {
        if p["out_of_scope"] == true {
            "oos".to_string()
        } else {
            p["intent"].as_str().expect("intent").to_string()
        }
    };
    let mut lexical = 0;
    for (c, f) in cascade.iter().zip(&full) {
        assert_eq!(f["stage"], "full", "--no-cascade always runs the encoder");
        if c["stage"] == "lexical" {
            lexical += 1;
            // sure of an intent, or sure that it is off topic
            assert!(
                c["out_of_scope"] == true || c["confidence"].as_f64().expect("confidence") >= 0.93
            );
            assert_eq!(decision(c), decision(f), "lexical {c} vs full {f}");
        } else {
            assert_eq!(c["stage"], "full");
        }
    }
    eprintln!("{lexical} of {} decided lexically", cascade.len());
    assert!(
        lexical * 5 >= cascade.len(),
        "the n-gram half decides at least a fifth of plain requests alone ({lexical})"
    );
}

/// One request per line, as `casegraph classify` reads them.
fn requests(texts: &[&str]) -> String {
    texts
        .iter()
        .map(|t| serde_json::json!({"text": t, "channel": "chat"}).to_string() + "\n")
        .collect()
}

const TONES: [(&str, &str, bool); 6] = [
    (
        "This is the third time I'm writing about the same refund and nobody answers. If my money isn't back this week I'm closing my account and going to the ombudsman.",
        "negative",
        true,
    ),
    (
        "Ich warte jetzt seit drei Wochen auf eine Antwort, das ist eine Frechheit. Wenn das so weitergeht, kündige ich und schalte meinen Anwalt ein.",
        "negative",
        true,
    ),
    (
        "My card was stolen on the train this morning. Please block it and send me a new one.",
        "negative",
        false,
    ),
    (
        "Mir wurde gestern die Geldbörse mit meiner Karte gestohlen, bitte sperren Sie die Karte.",
        "negative",
        false,
    ),
    (
        "Thank you so much for the quick help, the new card arrived today!",
        "positive",
        false,
    ),
    (
        "Vielen Dank für die freundliche Hilfe, jetzt funktioniert alles wieder.",
        "positive",
        false,
    ),
];

#[test]
fn every_answer_says_how_the_customer_sounds() {
    let texts: Vec<&str> = TONES.iter().map(|t| t.0).collect();
    for args in [
        &["classify", "--input", "-"][..],
        &["classify", "--input", "-", "--no-cascade"],
    ] {
        let out = casegraph(args, Some(&requests(&texts)), &[]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        for ((text, label, flagged), got) in TONES.iter().zip(lines(&out)) {
            assert_eq!(got["sentiment"]["label"], *label, "{text}: {got}");
            assert_eq!(got["frustration"]["flagged"], *flagged, "{text}: {got}");
            let score = got["frustration"]["score"].as_f64().expect("score");
            assert_eq!(score >= 0.5, *flagged, "{text}: {got}");
        }
    }
    // plain requests the n-gram half decides alone get their signals too
    let plain = ["I lost my card, please block it", "how do I change my PIN"];
    let out = casegraph(&["classify", "--input", "-"], Some(&requests(&plain)), &[]);
    let got = lines(&out);
    assert!(got.iter().any(|g| g["stage"] == "lexical"), "{got:?}");
    for g in got {
        assert!(g["sentiment"]["label"].is_string(), "{g}");
        assert_eq!(g["frustration"]["flagged"], false, "{g}");
    }
}

/// A copy of the shipped model directory whose card went through `edit`.
fn model_copy(edit: impl Fn(String) -> String) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    let shipped = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("models/intent-e5-de-en");
    for f in std::fs::read_dir(&shipped).expect("model dir") {
        let f = f.expect("entry").path();
        std::fs::copy(&f, dir.path().join(f.file_name().expect("name"))).expect("copy");
    }
    let card = dir.path().join("model.toml");
    let text = std::fs::read_to_string(&card).expect("card");
    std::fs::write(&card, edit(text)).expect("write card");
    dir
}

/// The card with `temperature_by_language` set to `by_language` (none when empty).
fn with_language_temperatures(card: String, by_language: &str) -> String {
    let kept: Vec<&str> = card
        .lines()
        .filter(|l| !l.starts_with("temperature_by_language"))
        .collect();
    let card = kept.join("\n") + "\n";
    if by_language.is_empty() {
        return card;
    }
    card.replacen(
        "[calibration]\n",
        &format!("[calibration]\ntemperature_by_language = {by_language}\n"),
        1,
    )
}

#[test]
fn a_language_with_its_own_temperature_is_calibrated_apart_from_the_others() {
    let shared = model_copy(|card| with_language_temperatures(card, ""));
    let german_sharp = model_copy(|card| with_language_temperatures(card, "{ de = 0.5 }"));
    let texts = [
        "Meine Karte ist immer noch nicht angekommen, was ist da los?",
        "I ordered a new card two weeks ago and it still has not arrived.",
    ];
    let answers = |dir: &tempfile::TempDir| {
        let model = dir.path().to_str().expect("utf-8 path");
        // the whole model: the lexical exit reads the n-gram half's own probabilities
        let args = ["classify", "--model", model, "--input", "-", "--no-cascade"];
        let out = casegraph(&args, Some(&requests(&texts)), &[]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        lines(&out)
    };
    let (before, after) = (answers(&shared), answers(&german_sharp));
    assert_eq!(before[0]["language"], "de");
    assert_eq!(
        before[0]["intent"], after[0]["intent"],
        "calibration never changes the ranking"
    );
    let confidence = |v: &Value| v["confidence"].as_f64().expect("confidence");
    assert!(
        confidence(&after[0]) > confidence(&before[0]),
        "a German request is read at German's temperature: {} vs {}",
        after[0],
        before[0]
    );
    // (the last float digits may differ between two runs of the graph)
    assert_eq!(before[1]["intent"], after[1]["intent"]);
    assert!(
        (confidence(&before[1]) - confidence(&after[1])).abs() < 1e-5,
        "an English request keeps the shared temperature: {} vs {}",
        after[1],
        before[1]
    );
}

#[test]
fn a_card_with_a_bad_language_temperature_is_refused_at_load_naming_it() {
    for (by_language, named) in [
        ("{ \"../etc\" = 0.8 }", "`../etc` is not a language code"),
        ("{ de = -1.0 }", "temperature_by_language.de"),
    ] {
        let dir = model_copy(|card| with_language_temperatures(card, by_language));
        let model = dir.path().to_str().expect("utf-8 path");
        let out = casegraph(
            &["classify", "--model", model, "--input", "-"],
            Some(&requests(&["Meine Karte ist nicht angekommen"])),
            &[],
        );
        assert_eq!(out.status.code(), Some(2), "{by_language}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(named), "{by_language}: {stderr}");
        assert!(
            out.stdout.is_empty(),
            "nothing is classified with a refused card"
        );
    }
}

#[test]
fn a_model_without_signal_heads_still_classifies_without_signals() {
    let dir = model_copy(|card| {
        let start = card
            .find("[signals]")
            .expect("the shipped card has [signals]");
        let end = start + card[start..].find("\n\n").expect("section end") + 2;
        format!("{}{}", &card[..start], &card[end..])
    });
    let model = dir.path().to_str().expect("utf-8 path");
    let out = casegraph(
        &["classify", "--model", model, "--input", "-"],
        Some(&requests(&[TONES[0].0, "I lost my card, please block it"])),
        &[],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for got in lines(&out) {
        assert!(got["intent"].is_string(), "{got}");
        assert!(
            got.get("sentiment").is_none() && got.get("frustration").is_none(),
            "{got}"
        );
    }
}

#[test]
fn a_card_naming_a_missing_signal_output_is_refused_at_load() {
    let dir = model_copy(|card| card.replace("\"frustration_logit\"", "\"anger\""));
    let model = dir.path().to_str().expect("utf-8 path");
    let out = casegraph(
        &["classify", "--model", model, "--input", "-"],
        Some(&requests(&["hello"])),
        &[],
    );
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("\"anger\"") && stderr.contains("[signals]"),
        "{stderr}"
    );
    assert!(out.stdout.is_empty());
}

#[test]
fn a_bad_line_is_named_and_the_rest_still_classified() {
    let input = "{\"text\": \"my card is lost\", \"channel\": \"chat\"}\n{\"text\": 42}\n\n{\"text\": \"Wie ändere ich meine PIN?\", \"channel\": \"form\"}\n";
    let out = casegraph(&["classify", "--input", "-"], Some(input), &[]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("line 2"), "{stderr}");
    let got = lines(&out);
    assert_eq!(got.len(), 3);
    assert_eq!(got[0]["intent"], "lost_or_stolen_card");
    assert_eq!(got[1]["line"], 2);
    assert_eq!(got[2]["intent"], "change_pin");
    assert_eq!(got[2]["language"], "de");
}

#[test]
fn missing_onnx_runtime_says_how_to_install_it() {
    let out = casegraph(
        &["classify", "--input", LABELLED],
        None,
        &[("ORT_DYLIB_PATH", "/nonexistent/libonnxruntime.so")],
    );
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("ONNX Runtime"), "{stderr}");
    assert!(stderr.contains("scripts/setup.sh"), "{stderr}");
    assert!(stderr.contains("onnxruntime==1.31.1"), "{stderr}");
    assert!(out.stdout.is_empty());
}

#[test]
fn a_tampered_model_is_refused() {
    // Each file is checked against the card: the small ones before loading, the graph and
    // the lexical heads as they are read, and a head the loader does not read (cascade
    // off) all the same.
    let shipped = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("models/intent-e5-de-en");
    let swap_labels = |path: &std::path::Path| {
        let mut labels: Vec<String> =
            serde_json::from_str(&std::fs::read_to_string(path).expect("labels")).expect("json");
        labels.swap(0, 1);
        std::fs::write(path, serde_json::to_string(&labels).expect("json")).expect("write");
    };
    // one byte changed in the middle: the file still has its size and shape
    let flip_a_byte = |path: &std::path::Path| {
        let mut bytes = std::fs::read(path).expect("read");
        let middle = bytes.len() / 2;
        bytes[middle] ^= 0x01;
        std::fs::write(path, bytes).expect("write");
    };
    type Tamper<'a> = &'a dyn Fn(&std::path::Path);
    let cases: [(&str, Tamper, &[&str]); 4] = [
        ("labels.json", &swap_labels, &[]),
        ("model.onnx.zst", &flip_a_byte, &[]),
        ("ngram_head.bin", &flip_a_byte, &[]),
        ("ngram_head.bin", &flip_a_byte, &["--no-cascade"]),
    ];
    for (file, tamper, flags) in cases {
        let dir = tempfile::tempdir().expect("tempdir");
        for f in std::fs::read_dir(&shipped).expect("model dir") {
            let f = f.expect("entry").path();
            std::fs::copy(&f, dir.path().join(f.file_name().expect("name"))).expect("copy");
        }
        tamper(&dir.path().join(file));
        let model = dir.path().to_str().expect("utf-8 path");
        let mut args = vec!["classify", "--model", model, "--input", LABELLED];
        args.extend(flags);
        let out = casegraph(&args, None, &[]);
        assert_eq!(out.status.code(), Some(2), "{file} {flags:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains(file) && stderr.contains("sha256"),
            "{file} {flags:?}: {stderr}"
        );
        assert!(
            out.stdout.is_empty(),
            "{file} {flags:?}: nothing classified"
        );
    }
}
