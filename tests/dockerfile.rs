//! Docker does not run where casegraph is developed, so the Dockerfile is kept honest here:
//! every path it copies exists, every stage it copies from is defined, ONNX Runtime comes
//! from the PyPI wheel and nothing else is downloaded for it, the runtime stage is
//! non-root with a volume and a health check, and the entrypoint's arguments (and the
//! health check's) parse with the real CLI.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::Command;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The Dockerfile's instructions: continuation lines joined, comments dropped.
fn instructions() -> Vec<(String, String)> {
    let text = std::fs::read_to_string(root().join("Dockerfile")).unwrap();
    let mut out = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let t = line.trim();
        if t.starts_with('#') || (t.is_empty() && current.is_empty()) {
            continue;
        }
        match t.strip_suffix('\\') {
            Some(rest) => {
                current.push_str(rest);
                current.push(' ');
            }
            None => {
                current.push_str(t);
                let (op, args) = current.split_once(' ').unwrap_or((&current, ""));
                out.push((op.to_uppercase(), args.trim().to_string()));
                current.clear();
            }
        }
    }
    out
}

/// The JSON-array form of an instruction's arguments.
fn exec_form(args: &str) -> Vec<String> {
    serde_json::from_str(args).unwrap_or_else(|e| panic!("not an exec-form array: {args}: {e}"))
}

#[test]
fn every_copied_path_exists_and_every_stage_is_defined() {
    let ins = instructions();
    let stages: Vec<String> = ins
        .iter()
        .filter(|(op, _)| op == "FROM")
        .filter_map(|(_, a)| {
            a.split_once(" AS ")
                .map(|(_, name)| name.trim().to_string())
        })
        .collect();
    assert_eq!(stages, ["onnxruntime", "build"]);
    let mut copies = 0;
    for (op, args) in ins.iter().filter(|(op, _)| op == "COPY" || op == "ADD") {
        assert_eq!(op, "COPY", "ADD downloads and unpacks implicitly; use COPY");
        let words: Vec<&str> = args.split_whitespace().collect();
        let from = words.iter().find_map(|w| w.strip_prefix("--from="));
        let paths: Vec<&str> = words
            .iter()
            .copied()
            .filter(|w| !w.starts_with("--"))
            .collect();
        let (sources, _dest) = paths.split_at(paths.len() - 1);
        assert!(!sources.is_empty(), "COPY {args}");
        for src in sources {
            copies += 1;
            match from {
                None => assert!(
                    root().join(src).exists(),
                    "COPY source {src} does not exist"
                ),
                Some("build") => {
                    let rel = src
                        .strip_prefix("/src/")
                        .expect("build stage works in /src");
                    if rel == "target/release/casegraph" {
                        // The binary the build stage builds: `cargo build -p casegraph`.
                        let manifest = std::fs::read_to_string(root().join("Cargo.toml")).unwrap();
                        assert!(manifest.contains("[package]\nname = \"casegraph\""));
                    } else {
                        assert!(
                            root().join(rel).exists(),
                            "{rel} is copied but does not exist"
                        );
                        let ignored =
                            std::fs::read_to_string(root().join(".dockerignore")).unwrap();
                        assert!(
                            !ignored
                                .lines()
                                .any(|l| l.trim().trim_end_matches('/') == rel),
                            "{rel} is excluded by .dockerignore"
                        );
                    }
                }
                Some("onnxruntime") => {
                    assert_eq!(*src, "/out/", "the library the wheel stage collects")
                }
                Some(other) => panic!("COPY --from={other}: no such stage"),
            }
        }
    }
    assert!(copies >= 6, "{copies}");
    // What the image must ship.
    let copied: String = ins
        .iter()
        .filter(|(op, _)| op == "COPY")
        .map(|(_, a)| a.as_str())
        .collect();
    for needed in ["/src/workflows", "/src/models", "/src/firmware-profiles"] {
        assert!(copied.contains(needed), "the image must include {needed}");
    }
}

#[test]
fn onnx_runtime_comes_from_the_pypi_wheel_only() {
    let ins = instructions();
    let runs: Vec<&str> = ins
        .iter()
        .filter(|(op, _)| op == "RUN")
        .map(|(_, a)| a.as_str())
        .collect();
    let pip: Vec<&&str> = runs.iter().filter(|r| r.contains("pip install")).collect();
    assert_eq!(pip.len(), 1, "{runs:?}");
    assert!(
        pip[0].contains("onnxruntime==${ONNXRUNTIME_VERSION}"),
        "{}",
        pip[0]
    );
    let version = ins
        .iter()
        .find_map(|(op, a)| {
            (op == "ARG")
                .then(|| a.strip_prefix("ONNXRUNTIME_VERSION="))
                .flatten()
        })
        .expect("ARG ONNXRUNTIME_VERSION");
    // The same ONNX Runtime as the project's own set-up installs.
    let setup = std::fs::read_to_string(root().join("scripts/setup.sh")).unwrap();
    assert!(
        setup
            .lines()
            .any(|l| l.trim() == format!("ORT_VERSION={version}")),
        "scripts/setup.sh installs another ONNX Runtime than {version}"
    );
    for r in &runs {
        for tool in ["curl ", "wget ", "git clone", "apt-get install"] {
            assert!(!r.contains(tool), "no other downloads: {r}");
        }
    }
}

#[test]
fn the_runtime_stage_is_non_root_with_a_volume_a_health_check_and_a_profile() {
    let ins = instructions();
    let last_from = ins.iter().rposition(|(op, _)| op == "FROM").unwrap();
    let runtime = &ins[last_from..];
    let get = |name: &str| {
        runtime
            .iter()
            .filter(|(op, _)| op == name)
            .map(|(_, a)| a.clone())
            .collect::<Vec<_>>()
    };
    let user = get("USER");
    assert_eq!(user.len(), 1);
    assert!(
        !user[0].starts_with("root") && !user[0].starts_with('0'),
        "{user:?}"
    );
    assert_eq!(get("VOLUME"), [r#"["/var/lib/casegraph"]"#]);
    let env = get("ENV").join(" ");
    let profile = env
        .split_whitespace()
        .find_map(|w| w.strip_prefix("CASEGRAPH_PROFILE="))
        .expect("the profile comes from CASEGRAPH_PROFILE");
    assert!(
        root()
            .join("firmware-profiles")
            .join(format!("{profile}.toml"))
            .exists()
    );
    assert_eq!(get("HEALTHCHECK").len(), 1);
}

fn casegraph(args: &[String]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_casegraph"))
        .args(args)
        .current_dir(root())
        .output()
        .unwrap()
}

/// `ENTRYPOINT` + `CMD` and the health check's command are accepted by the real CLI
/// (`--help` after them: clap rejects an unknown argument before it reaches `--help`).
#[test]
fn the_entrypoint_and_the_health_check_parse_with_the_real_cli() {
    let ins = instructions();
    let exec = |name: &str| exec_form(&ins.iter().rev().find(|(op, _)| op == name).expect(name).1);
    let entry = exec("ENTRYPOINT");
    assert_eq!(entry, ["casegraph"]);
    let cmd = exec("CMD");
    assert_eq!(cmd[0], "serve");
    let health = ins
        .iter()
        .find(|(op, _)| op == "HEALTHCHECK")
        .unwrap()
        .1
        .clone();
    let health = exec_form(health.split_once("CMD ").expect("CMD form").1);
    assert_eq!(health[0], "casegraph");
    for args in [cmd, health[1..].to_vec()] {
        let mut with_help = args.clone();
        with_help.push("--help".into());
        let out = casegraph(&with_help);
        assert!(
            out.status.success(),
            "{args:?} does not parse: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        // And a typo would have been caught.
        let mut typo = args.clone();
        typo.insert(1, "--no-such-flag".into());
        typo.push("--help".into());
        assert!(!casegraph(&typo).status.success(), "{typo:?}");
    }
}

#[test]
fn the_systemd_unit_is_hardened_and_writes_only_the_data_directory() {
    let unit = std::fs::read_to_string(root().join("packaging/casegraph.service")).unwrap();
    for line in [
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "ReadWritePaths=/var/lib/casegraph",
        "PrivateTmp=yes",
        "ProtectHome=yes",
        "User=casegraph",
        "ExecStart=/usr/local/bin/casegraph serve --data /var/lib/casegraph",
    ] {
        assert!(unit.lines().any(|l| l.trim() == line), "missing {line}");
    }
    // The unit's commands parse with the real CLI.
    for l in unit.lines().filter_map(|l| {
        l.strip_prefix("ExecStart=")
            .or_else(|| l.strip_prefix("ExecStartPre=-"))
    }) {
        let mut args: Vec<String> = l.split_whitespace().skip(1).map(String::from).collect();
        args.push("--help".into());
        let out = casegraph(&args);
        assert!(
            out.status.success(),
            "{l}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
