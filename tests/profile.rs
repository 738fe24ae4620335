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
