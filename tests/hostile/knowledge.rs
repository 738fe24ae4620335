//! The knowledge base as a hostile author or a non-author edits it: the answers the box
//! gives from `answer_question/knowledge.yaml` change only through an author's publish,
//! and only to answers that are complete, sandboxed and inside the workflow's folder.

use std::collections::BTreeMap;
use std::path::Path;

use casegraph::auth::Role;
use serde_json::{Value, json};

use crate::support::Server;

/// The shipped `answer_question` bundle as version 2, by file name, as a publish sends it.
fn shipped() -> BTreeMap<String, String> {
    let dir = crate::support::workflows().join("answer_question");
    let mut files = BTreeMap::new();
    for name in ["workflow.yaml", "knowledge.yaml", "input.schema.json"] {
        files.insert(name.to_string(), read(&dir.join(name)));
    }
    let yaml = files["workflow.yaml"].replace("\nversion: 1\n", "\nversion: 2\n");
    files.insert("workflow.yaml".into(), yaml);
    for entry in std::fs::read_dir(dir.join("tests")).unwrap() {
        let path = entry.unwrap().path();
        let name = format!("tests/{}", path.file_name().unwrap().to_string_lossy());
        files.insert(name, read(&path));
    }
    files
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap()
}

fn publish(server: &Server, role: Role, files: &BTreeMap<String, String>) -> (u16, Value) {
    let r = server.call(
        "POST",
        "/v1/workflows",
        Some(role),
        Some(&json!({ "id": "answer_question", "files": files })),
    );
    (r.status, r.json)
}

fn with_knowledge(edit: impl Fn(&str) -> String) -> BTreeMap<String, String> {
    let mut files = shipped();
    let k = edit(&files["knowledge.yaml"]);
    files.insert("knowledge.yaml".into(), k);
    files
}

#[test]
fn only_authors_change_the_answers_and_only_to_complete_sandboxed_ones() {
    let server = Server::start();
    let bumped = |k: &str| {
        k.replace("version: 1", "version: 2").replace(
            "Our cards are Mastercard debit cards.",
            "Our cards are Visa cards.",
        )
    };
    let files = with_knowledge(bumped);
    // Nobody but an author publishes an answer.
    for role in [Role::Submitter, Role::Reviewer, Role::Auditor] {
        let (status, body) = publish(&server, role, &files);
        assert_eq!(status, 403, "{role:?}: {body}");
    }

    // An answer removed for an intent the workflow still serves.
    let (status, body) = publish(
        &server,
        Role::Author,
        &with_knowledge(|k| {
            let start = k.find("  visa_or_mastercard:").unwrap();
            let end = k[start..].find("  why_verify_identity:").unwrap() + start;
            format!("{}{}", &k[..start], &k[end..])
        }),
    );
    assert_eq!(status, 422, "{body}");
    assert!(
        body.to_string()
            .contains("intent `visa_or_mastercard` has no answer in the knowledge base"),
        "{body}"
    );

    // An answer that tries to be a program, or to dump the case, is refused like a reply.
    for hostile in [
        "{% set x = case %}{{ x }}",
        "{{ 'x' * 100000000 }}",
        "{{ case | pprint }}",
    ] {
        let (status, body) = publish(
            &server,
            Role::Author,
            &with_knowledge(|k| bumped(k).replace("Our cards are Visa cards.", hostile)),
        );
        assert_eq!(status, 422, "{hostile}: {body}");
        assert!(
            body.to_string()
                .contains("answer for `visa_or_mastercard` (en)"),
            "{body}"
        );
    }

    // A knowledge file named outside the folder is refused by its name alone.
    let mut outside = files.clone();
    let yaml = outside["workflow.yaml"]
        .replace("knowledge: knowledge.yaml", "knowledge: ../../admin.token");
    outside.insert("workflow.yaml".into(), yaml);
    let (status, body) = publish(&server, Role::Author, &outside);
    assert_eq!(status, 422, "{body}");
    assert!(body.to_string().contains("path_outside_workflow"), "{body}");

    // Nothing refused was published; an author's complete edit is.
    let r = server.call(
        "GET",
        "/v1/workflows/answer_question",
        Some(Role::Author),
        None,
    );
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json["version"], 1, "{}", r.text);
    let (status, body) = publish(&server, Role::Author, &files);
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["version"], 2, "{body}");
}
