//! `casegraph profile check` and `list` on the real binary.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

fn casegraph() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_casegraph"));
    c.current_dir(env!("CARGO_MANIFEST_DIR"));
    c.env_remove("CASEGRAPH_PROFILE");
    c.env_remove("CASEGRAPH_PROFILES_DIR");
    c
}

#[test]
fn check_names_what_does_not_fit_and_says_so_in_the_exit_code() {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let data = tempfile::tempdir().unwrap();
    let out = casegraph()
        .args(["profile", "check", "server", "--data"])
        .arg(data.path())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("cpu features"), "{text}");
    assert!(text.contains("free disk"), "{text}");
    if cores < 8 {
        assert_eq!(out.status.code(), Some(1), "{text}");
        assert!(text.contains("server: does not fit: cores"), "{text}");
    }
    // Without a name every profile is checked; the exit is 0 when one fits.
    let out = casegraph()
        .args(["profile", "check", "--data"])
        .arg(data.path())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    for name in ["edge-small", "edge-standard", "server"] {
        assert!(text.contains(&format!("{name} (")), "{text}");
    }
}

#[test]
fn a_profile_with_an_unknown_key_is_refused_by_check_and_serve() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("edge-typo.toml");
    std::fs::write(
        &path,
        "[appliance]\nname = \"edge-typo\"\ndescription = \"\"\ncores = 1\nmemory_mib = 512\nmin_free_disk_mib = 1\n[memory]\nbudget_mb = 100\n",
    )
    .unwrap();
    let by_path = path.to_str().unwrap();
    for args in [
        vec!["profile", "check", "edge-typo"],
        vec!["profile", "check", by_path],
        vec!["serve", "--profile", "edge-typo"],
    ] {
        let out = casegraph()
            .args(&args)
            .env("CASEGRAPH_PROFILES_DIR", dir.path())
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains("edge-typo.toml"), "{args:?}: {err}");
        assert!(err.contains("budget_mb"), "{args:?}: {err}");
    }
}

#[test]
fn list_shows_every_profile() {
    let out = casegraph().args(["profile", "list"]).output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for name in ["edge-small", "edge-standard", "server"] {
        assert!(text.contains(name), "{text}");
    }
}

fn serve(
    profile: &str,
    data: &std::path::Path,
    env: &[(&str, &str)],
) -> (std::process::Child, String) {
    use std::io::BufRead;
    let mut child = casegraph()
        .args([
            "serve",
            "--profile",
            profile,
            "--listen",
            "127.0.0.1:0",
            "--data",
        ])
        .arg(data)
        .env("CASEGRAPH_LOG", "warn")
        .envs(env.iter().copied())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let base = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap()
        .to_string();
    (child, base)
}

fn get(base: &str, path: &str, token: &str) -> (u16, serde_json::Value) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let r = casegraph::connector::agent(std::time::Duration::from_secs(10))
            .get(&format!("{base}{path}"))
            .header("Authorization", &format!("Bearer {token}"))
            .call();
        if let Ok(mut r) = r {
            let status = r.status().as_u16();
            if status != 503 || std::time::Instant::now() > deadline {
                let text = r.body_mut().read_to_string().unwrap();
                return (status, serde_json::from_str(&text).unwrap_or_default());
            }
        }
        assert!(std::time::Instant::now() < deadline, "no answer");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// Every shipped profile starts, and its values are what the server runs with; a
/// variable overrides the profile.
#[test]
fn each_profile_starts_and_its_settings_are_the_effective_ones() {
    for name in ["edge-small", "edge-standard", "server"] {
        let tmp = tempfile::tempdir().unwrap();
        let data = tmp.path().join("data");
        let (mut child, base) = serve(name, &data, &[("CASEGRAPH_LIMITS__RETRY_AFTER_SECS", "2")]);
        let (status, _) = get(&base, "/readyz", "");
        assert_eq!(status, 200, "{name}");
        let token = std::fs::read_to_string(data.join("admin.token")).unwrap();
        let (status, v) = get(&base, "/v1/admin/settings", token.trim());
        assert_eq!(status, 200, "{name}: {v}");
        let text = std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join(format!("firmware-profiles/{name}.toml")),
        )
        .unwrap();
        let profile: serde_json::Value = toml::from_str(&text).unwrap();
        let config = &v["config"];
        for (section, key) in [
            ("limits", "workers"),
            ("limits", "queue_depth"),
            ("limits", "max_in_flight"),
            ("limits", "body_limit_bytes"),
            ("store", "cache_mib"),
            ("runtime", "http_threads"),
            ("runtime", "blocking_threads"),
            ("inference", "variant"),
            ("inference", "threads"),
            ("inference", "sessions"),
            ("inference", "batch_size"),
            ("inference", "batch_window"),
            ("memory", "budget_mib"),
            ("log", "level"),
        ] {
            assert_eq!(
                config[section][key], profile[section][key],
                "{name}: {section}.{key}"
            );
        }
        assert_eq!(
            config["limits"]["retry_after_secs"], 2,
            "{name}: the variable wins"
        );
        assert_eq!(v["profile"]["name"], name);
        assert!(
            v["profile"]["findings"]
                .as_array()
                .is_some_and(|f| f.len() >= 4)
        );
        assert_eq!(
            v["memory"]["budget_bytes"],
            profile["memory"]["budget_mib"].as_u64().unwrap() * 1024 * 1024
        );
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        assert!(child.wait().unwrap().success(), "{name}");
    }
}
