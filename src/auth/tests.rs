use std::os::unix::fs::PermissionsExt as _;

use super::*;

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).expect("stat").permissions().mode() & 0o777
}

#[test]
fn tokens_are_stored_hashed_and_survive_reopen() {
    let dir = tempfile::tempdir().expect("tmp");
    let tokens = Tokens::open(dir.path()).expect("open");
    tokens.create(Role::Admin, Some("root")).expect("admin");
    let (entry, secret) = tokens
        .create(Role::Reviewer, Some("alice"))
        .expect("create");
    let file = std::fs::read_to_string(dir.path().join(FILE_NAME)).expect("file");
    assert!(!file.contains(&secret), "the token is not stored in clear");
    assert_eq!(mode(&dir.path().join(FILE_NAME)), 0o600);
    let again = Tokens::open(dir.path()).expect("reopen");
    let who = again.authenticate(&secret).expect("known");
    assert_eq!((who.name.as_str(), who.role), ("alice", Role::Reviewer));
    assert!(again.authenticate("cg_wrong").is_none());
    assert!(matches!(
        again.create(Role::Admin, Some("alice")),
        Err(Error::NameTaken(_))
    ));
    assert_eq!(
        again.revoke(&entry.id).expect("revoke").map(|t| t.name),
        Some("alice".into())
    );
    assert!(again.authenticate(&secret).is_none());
    assert!(again.revoke("nobody").expect("revoke").is_none());
}

#[test]
fn a_revocation_by_another_process_takes_effect_at_once_and_stays() {
    let dir = tempfile::tempdir().expect("tmp");
    // `server` stands for the running server, `cli` for `casegraph token revoke`.
    let server = Tokens::open(dir.path()).expect("open");
    server.create(Role::Admin, Some("root")).expect("admin");
    let (_, secret) = server.create(Role::Submitter, Some("crm")).expect("crm");
    assert!(server.authenticate(&secret).is_some());
    let cli = Tokens::open(dir.path()).expect("open");
    assert!(cli.revoke("crm").expect("revoke").is_some());
    assert!(
        server.authenticate(&secret).is_none(),
        "the server refuses the revoked token at once"
    );
    // The server's next write merges into the file; it does not write its old list back.
    server.create(Role::Reviewer, Some("bob")).expect("bob");
    assert!(server.authenticate(&secret).is_none());
    let names: Vec<String> = Tokens::open(dir.path())
        .expect("reopen")
        .list()
        .into_iter()
        .map(|t| t.name)
        .collect();
    assert_eq!(names, ["root", "bob"]);
}

#[test]
fn concurrent_writers_lose_no_token() {
    let dir = tempfile::tempdir().expect("tmp");
    let writers: Vec<Tokens> = (0..4)
        .map(|_| Tokens::open(dir.path()).expect("open"))
        .collect();
    std::thread::scope(|s| {
        for (w, tokens) in writers.iter().enumerate() {
            s.spawn(move || {
                for i in 0..10 {
                    tokens
                        .create(Role::Submitter, Some(&format!("w{w}-{i}")))
                        .expect("create");
                }
            });
        }
    });
    assert_eq!(Tokens::open(dir.path()).expect("reopen").list().len(), 40);
}

#[test]
fn the_last_admin_token_cannot_be_revoked() {
    let dir = tempfile::tempdir().expect("tmp");
    let tokens = Tokens::open(dir.path()).expect("open");
    let (first, _) = tokens.create(Role::Admin, Some("root")).expect("admin");
    assert!(matches!(tokens.revoke("root"), Err(Error::LastAdmin(_))));
    let (second, _) = tokens.create(Role::Admin, None).expect("admin");
    assert!(tokens.revoke_id(&first.id).expect("revoke").is_some());
    assert!(matches!(
        tokens.revoke_id(&second.id),
        Err(Error::LastAdmin(_))
    ));
    assert_eq!(tokens.list().len(), 1);
}

#[test]
fn names_are_short_plain_and_never_another_tokens_id() {
    let dir = tempfile::tempdir().expect("tmp");
    let tokens = Tokens::open(dir.path()).expect("open");
    for bad in ["", "a\nb", "evil\u{1b}[31m", "with space", &"x".repeat(65)] {
        assert!(
            matches!(
                tokens.create(Role::Reviewer, Some(bad)),
                Err(Error::InvalidName)
            ),
            "{bad:?}"
        );
    }
    let (a, _) = tokens.create(Role::Reviewer, None).expect("a");
    assert_eq!(a.name, a.id);
    // A name equal to another token's id would make `revoke <id>` ambiguous.
    assert!(matches!(
        tokens.create(Role::Reviewer, Some(&a.id)),
        Err(Error::NameTaken(_))
    ));
}

#[test]
fn capabilities_are_granted_to_roles_that_submit_only() {
    let dir = tempfile::tempdir().expect("tmp");
    let tokens = Tokens::open(dir.path()).expect("open");
    let grant = |role| NewToken {
        role,
        name: None,
        capabilities: &[Capability::StateIntent, Capability::StateIntent],
    };
    let (entry, secret) = tokens.create_with(&grant(Role::Submitter)).expect("ok");
    assert_eq!(entry.capabilities, [Capability::StateIntent]);
    assert!(
        tokens
            .authenticate(&secret)
            .expect("known")
            .may(Capability::StateIntent)
    );
    assert!(matches!(
        tokens.create_with(&grant(Role::Reviewer)),
        Err(Error::CapabilityNotForRole { .. })
    ));
    let (_, plain) = tokens.create(Role::Submitter, None).expect("plain");
    assert!(
        !tokens
            .authenticate(&plain)
            .expect("known")
            .may(Capability::StateIntent),
        "a submitter has no capability it was not granted"
    );
    let (_, admin) = tokens.create(Role::Admin, None).expect("admin");
    assert!(
        tokens
            .authenticate(&admin)
            .expect("known")
            .may(Capability::StateIntent),
        "an admin may do everything"
    );
    assert!("god".parse::<Capability>().is_err());
}

#[test]
fn a_file_from_before_capabilities_still_reads() {
    let dir = tempfile::tempdir().expect("tmp");
    std::fs::write(
        dir.path().join(FILE_NAME),
        r#"{"tokens": [{"id": "t-1", "name": "a", "role": "admin", "hash": "00", "created_at": "2026-01-01T00:00:00Z"}]}"#,
    )
    .expect("write");
    let list = Tokens::open(dir.path()).expect("open").list();
    assert!(list[0].capabilities.is_empty());
}

#[test]
fn a_broken_file_while_serving_grants_nothing() {
    let dir = tempfile::tempdir().expect("tmp");
    let tokens = Tokens::open(dir.path()).expect("open");
    let (_, secret) = tokens.create(Role::Admin, None).expect("admin");
    let good = std::fs::read(dir.path().join(FILE_NAME)).expect("read");
    std::fs::write(dir.path().join(FILE_NAME), "{ not json").expect("break");
    assert!(tokens.authenticate(&secret).is_none());
    assert!(
        tokens.authenticate(&secret).is_none(),
        "still, without a change"
    );
    std::fs::write(dir.path().join(FILE_NAME), good).expect("repair");
    assert!(
        tokens.authenticate(&secret).is_some(),
        "valid again once repaired"
    );
}

#[test]
fn files_are_private_whatever_was_there_before() {
    let dir = tempfile::tempdir().expect("tmp");
    // A temp file left by a crashed writer, world-readable: the tokens file must not
    // inherit its mode.
    let tmp = dir.path().join("tokens.json.tmp");
    std::fs::write(&tmp, "old").expect("tmp");
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let tokens = Tokens::open(dir.path()).expect("open");
    tokens.create(Role::Admin, None).expect("admin");
    assert_eq!(mode(&dir.path().join(FILE_NAME)), 0o600);
    assert_eq!(mode(&dir.path().join("tokens.json.lock")), 0o600);

    let secret_file = dir.path().join("admin.token");
    std::fs::write(&secret_file, "stale").expect("stale");
    std::fs::set_permissions(&secret_file, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    write_secret(&secret_file, "cg_new").expect("write");
    assert_eq!(mode(&secret_file), 0o600);
    assert_eq!(
        std::fs::read_to_string(&secret_file).expect("read"),
        "cg_new\n"
    );
}
