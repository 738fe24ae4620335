//! The hub's side of a rollout (ADR 0019): a workflow folder becomes a [`Rollout`] with a
//! fresh id, signed with the hub's key, published once per branch on `cg.r.<branch>` into
//! `CG_ROLLOUT`, each publish acknowledged by JetStream before the next. Boxes read their
//! subject with their own durable consumer (`fleet::rollout`), so a branch that is offline
//! now gets it when it reconnects.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use async_nats::jetstream::{self, message::PublishMessage, stream};
use jiff::Timestamp;

use super::sign::SecretKey;
use super::wire::{self, Bundle, Rollout};

/// Most files a workflow folder may hold (a box refuses more, `fleet::rollout`).
pub const MAX_FILES: usize = 256;

/// How long a rollout stays in `CG_ROLLOUT` for boxes that are offline (90 days).
pub const KEEP_FOR: Duration = Duration::from_secs(90 * 24 * 3600);

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error("reading the workflow folder {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Folder { path: PathBuf, message: String },
    #[error("no branches named; give at least one with --branches")]
    NoBranches,
    #[error("--branches: {0}")]
    Branch(String),
    #[error("ensuring the rollout stream {stream}: {message}")]
    Stream { stream: String, message: String },
    #[error("publishing the rollout to branch `{branch}` on {subject}: {message}")]
    Publish {
        branch: String,
        subject: String,
        message: String,
    },
}

/// A workflow folder as `POST /v1/workflows` takes it: the folder's name is the id, its
/// files (`workflow.yaml`, `*.rhai`, `input.schema.json`, …) and `tests/*` by name.
pub fn read_workflow(dir: &Path) -> Result<Bundle, Error> {
    let folder = |message: String| Error::Folder {
        path: dir.to_path_buf(),
        message,
    };
    let id = dir
        .canonicalize()
        .ok()
        .and_then(|d| d.file_name().map(|n| n.to_string_lossy().into_owned()))
        .ok_or_else(|| folder("is not a folder with a name".into()))?;
    let mut files = BTreeMap::new();
    read_files(dir, "", &mut files)?;
    let tests = dir.join("tests");
    if tests.is_dir() {
        read_files(&tests, "tests/", &mut files)?;
    }
    if !files.contains_key("workflow.yaml") {
        return Err(folder("has no workflow.yaml".into()));
    }
    if files.len() > MAX_FILES {
        return Err(folder(format!(
            "holds {} files; a rollout takes at most {MAX_FILES}",
            files.len()
        )));
    }
    Ok(Bundle::Workflow { id, files })
}

/// The plain files directly in `dir`, named `<prefix><file name>`.
fn read_files(dir: &Path, prefix: &str, files: &mut BTreeMap<String, String>) -> Result<(), Error> {
    let read = |path: &Path, source| Error::Read {
        path: path.to_path_buf(),
        source,
    };
    for entry in std::fs::read_dir(dir).map_err(|e| read(dir, e))? {
        let path = entry.map_err(|e| read(dir, e))?.path();
        if !path.is_file() {
            continue;
        }
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if name.starts_with('.') {
            continue;
        }
        let text = std::fs::read_to_string(&path).map_err(|e| read(&path, e))?;
        files.insert(format!("{prefix}{name}"), text);
    }
    Ok(())
}

/// A fresh rollout id: `r-<UTC time>-<8 random hex digits>`.
pub fn new_id(now: Timestamp) -> String {
    let mut r = [0u8; 4];
    let _ = getrandom::fill(&mut r);
    format!("r-{}-{}", now.strftime("%Y%m%dT%H%M%SZ"), hex::encode(r))
}

/// `a,b,c` → checked branch names, without repeats.
pub fn parse_branches(list: &str) -> Result<Vec<String>, Error> {
    let mut branches: Vec<String> = Vec::new();
    for b in list.split(',').map(str::trim).filter(|b| !b.is_empty()) {
        wire::check_branch(b).map_err(Error::Branch)?;
        if !branches.iter().any(|x| x == b) {
            branches.push(b.to_string());
        }
    }
    if branches.is_empty() {
        return Err(Error::NoBranches);
    }
    Ok(branches)
}

/// Creates `CG_ROLLOUT` (subjects `cg.r.>`) if it is missing; an existing stream is left
/// as it is.
pub async fn ensure_stream(js: &jetstream::Context) -> Result<(), Error> {
    js.get_or_create_stream(stream::Config {
        name: wire::ROLLOUT_STREAM.into(),
        subjects: vec![wire::ROLLOUT_SUBJECTS.into()],
        max_age: KEEP_FOR,
        ..Default::default()
    })
    .await
    .map(|_| ())
    .map_err(|e| Error::Stream {
        stream: wire::ROLLOUT_STREAM.into(),
        message: e.to_string(),
    })
}

/// Signs `bundle` for `branches` and publishes it to each, waiting for every
/// acknowledgement. Returns the rollout.
pub async fn publish(
    js: &jetstream::Context,
    key: &SecretKey,
    branches: Vec<String>,
    bundle: Bundle,
) -> Result<Rollout, Error> {
    ensure_stream(js).await?;
    let now = Timestamp::now();
    let rollout = Rollout {
        id: new_id(now),
        created_at: now,
        branches,
        bundle,
    };
    let signed = serde_json::to_vec(&key.sign(&rollout)).unwrap_or_default();
    for branch in &rollout.branches {
        let subject = wire::rollout_subject(branch);
        let failed = |message: String| Error::Publish {
            branch: branch.clone(),
            subject: subject.clone(),
            message,
        };
        let ack = js
            .send_publish(
                subject.clone(),
                PublishMessage::build()
                    .payload(signed.clone().into())
                    .message_id(wire::rollout_msg_id(&rollout.id, branch)),
            )
            .await
            .map_err(|e| failed(e.to_string()))?;
        ack.await.map_err(|e| failed(e.to_string()))?;
    }
    Ok(rollout)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_workflow_folder_is_read_like_the_api_takes_it() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("workflows/request_refund");
        let Bundle::Workflow { id, files } = read_workflow(&dir).expect("reads");
        assert_eq!(id, "request_refund");
        assert!(files.contains_key("workflow.yaml"));
        assert!(files.keys().any(|k| k.starts_with("tests/")), "{files:?}");
        let empty = tempfile::tempdir().expect("tmp");
        assert!(matches!(
            read_workflow(empty.path()),
            Err(Error::Folder { .. })
        ));
    }

    #[test]
    fn branch_lists_are_checked() {
        assert_eq!(
            parse_branches("a, b,a").expect("ok"),
            vec!["a".to_string(), "b".to_string()]
        );
        assert!(matches!(parse_branches(" , "), Err(Error::NoBranches)));
        assert!(matches!(parse_branches("a,cg.>"), Err(Error::Branch(_))));
    }
}
