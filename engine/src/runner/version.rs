//! Workflow versions: a case runs to its end on the version it started on. The files of
//! each version a case starts on are kept in the store ([`Store::workflow_versions`], by
//! digest),
//! so a case resumed after the catalog changed (or on another box's copy of the data
//! directory) compiles its own version again.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::{Error, Runner};
use crate::files;
use crate::store::{Batch, WorkflowBundle, WorkflowRef};
use crate::workflow::{Workflow, compile_dir};

impl Runner {
    /// Makes sure the store holds the files of this workflow version.
    pub(super) fn keep_version(&self, wf: &Workflow, batch: &mut Batch) {
        let mut known = self
            .stored_versions
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if known.contains(&wf.digest) {
            return;
        }
        if let Ok(true) = self.store.workflow_versions().contains(&wf.digest) {
            known.insert(wf.digest.clone());
            return;
        }
        // Through the bundle reader, as the compiler read them: confined to the workflow's
        // folder, regular files of bounded size only.
        let mut files = BTreeMap::new();
        if let Ok(dir) = std::fs::read_dir(&wf.dir) {
            for name in dir
                .flatten()
                .filter_map(|e| e.file_name().into_string().ok())
            {
                if let Ok((_, text)) = files::read(&wf.dir, &name) {
                    files.insert(name, text);
                }
            }
        }
        batch.put_workflow_version(&WorkflowBundle {
            id: wf.id.clone(),
            version: wf.version,
            digest: wf.digest.clone(),
            files,
        });
        known.insert(wf.digest.clone());
    }

    /// The workflow version a case runs on: the current one if unchanged, else the stored
    /// files of its version, compiled again.
    pub(super) fn workflow(&self, case_id: &str, r: &WorkflowRef) -> Result<Arc<Workflow>, Error> {
        if let Some(wf) = self.catalog().get(&r.id)
            && wf.digest == r.digest
        {
            return Ok(wf.clone());
        }
        let mut versions = self.versions.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(wf) = versions.get(&r.digest) {
            return Ok(wf.clone());
        }
        let fail = |message: String| Error::WorkflowVersion {
            case_id: case_id.to_string(),
            digest: r.digest.clone(),
            message,
        };
        let bundle = self
            .store
            .workflow_versions()
            .get(&r.digest)?
            .ok_or_else(|| fail("its files are not in the store".into()))?;
        let dir = self.versions_dir.join(&r.digest).join(&bundle.id);
        std::fs::create_dir_all(&dir).map_err(|e| fail(e.to_string()))?;
        for (name, text) in &bundle.files {
            std::fs::write(dir.join(name), text).map_err(|e| fail(e.to_string()))?;
        }
        let wf = compile_dir(&dir, &self.rules).map_err(|d| {
            fail(
                d.iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("; "),
            )
        })?;
        if wf.digest != r.digest {
            return Err(fail(format!("its files compile to version {}", wf.digest)));
        }
        let wf = Arc::new(wf);
        versions.insert(r.digest.clone(), wf.clone());
        Ok(wf)
    }
}
