//! The compiler's state and the tools every part of compilation shares: reporting a
//! problem, reading a bundle file into the version's digest, compiling a script or an
//! expression, reading a duration. `compile` walks `workflow.yaml` with it; each node kind
//! (`nodes`) checks its own fields with it.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use marked_yaml::Spanned;

use sha2::Digest as _;

use crate::diagnostic::{Code, Diagnostic};
use crate::files;
use crate::rules::{Origin, Rules, Script};
use crate::yaml::{line_of, pos};

/// One workflow's compilation under way.
pub(super) struct Compiler<'r> {
    pub(super) dir: PathBuf,
    pub(super) file: PathBuf,
    pub(super) rules: &'r Rules,
    pub(super) diags: Vec<Diagnostic>,
    /// Digest over every file read, in a fixed order: the workflow version's identity.
    pub(super) hasher: sha2::Sha256,
    /// Set when a node or a branch condition could not be read, so some edges are
    /// missing: reachability and cycle checks would then report problems that are not there.
    pub(super) edges_incomplete: bool,
}

impl<'r> Compiler<'r> {
    pub(super) fn new(dir: &Path, rules: &'r Rules) -> Self {
        Compiler {
            dir: dir.to_path_buf(),
            file: dir.join("workflow.yaml"),
            rules,
            diags: Vec::new(),
            hasher: sha2::Sha256::new(),
            edges_incomplete: false,
        }
    }

    pub(super) fn diag(
        &mut self,
        code: Code,
        line: usize,
        message: impl Into<String>,
    ) -> &mut Diagnostic {
        self.diags
            .push(Diagnostic::new(code, &self.file, line, message));
        self.diags.last_mut().expect("just pushed")
    }

    /// Reads a file of the bundle (`rel`, relative to the workflow directory, confined to
    /// it by [`files::read`]) and adds it to the digest.
    pub(super) fn read_hashed(&mut self, rel: &str) -> Result<(PathBuf, String), files::Error> {
        let (path, text) = files::read(&self.dir, rel)?;
        self.hasher.update(
            path.file_name()
                .map(|n| n.as_encoded_bytes())
                .unwrap_or_default(),
        );
        self.hasher.update([0]);
        self.hasher.update(text.as_bytes());
        self.hasher.update([0]);
        Ok((path, text))
    }

    /// Reads a file the format implies (`workflow.yaml`, the default schema); a problem is
    /// the file's own.
    pub(super) fn read(&mut self, rel: &str) -> Option<(PathBuf, String)> {
        match self.read_hashed(rel) {
            Ok(read) => Some(read),
            Err(e) => {
                let code = e.code();
                let path = self.dir.join(rel);
                self.diags
                    .push(Diagnostic::new(code, &path, 0, format!("cannot read: {e}")));
                None
            }
        }
    }

    /// Reads a file that `workflow.yaml` names in `field` (`rel`, relative to the workflow
    /// directory). A file that cannot be read is reported where it is named, with its field
    /// and node, since that is where the process owner fixes a wrong name; a path that
    /// leaves the folder is refused before anything on disk is asked.
    pub(super) fn read_named(
        &mut self,
        field: &str,
        rel: &Spanned<String>,
        node: Option<&str>,
    ) -> Option<(PathBuf, String)> {
        match self.read_hashed(rel.as_str()) {
            Ok(read) => Some(read),
            Err(e) => {
                let (line, column) = pos(rel.span());
                let code = e.code();
                let d = self.diag(code, line, format!("`{field}`: {e}"));
                d.column = column;
                d.node = node.map(Into::into);
                None
            }
        }
    }

    pub(super) fn expression(
        &mut self,
        source: &Spanned<String>,
        node: &str,
    ) -> Option<Arc<Script>> {
        let origin = Origin {
            file: self.file.clone(),
            line: line_of(source),
            node: Some(node.into()),
        };
        let compiled = self.rules.compile_expression(source, origin);
        self.script(compiled)
    }

    pub(super) fn script(
        &mut self,
        compiled: Result<Arc<Script>, crate::rules::Error>,
    ) -> Option<Arc<Script>> {
        match compiled {
            Ok(s) => Some(s),
            Err(crate::rules::Error::Compile {
                file,
                line,
                column,
                node,
                message,
            }) => {
                let mut d = Diagnostic::new(
                    Code::Script,
                    &file,
                    line,
                    format!("does not compile: {message}"),
                )
                .at(line, column);
                d.node = node;
                self.diags.push(d);
                None
            }
            Err(other) => {
                self.diag(Code::Script, 0, other.to_string());
                None
            }
        }
    }

    pub(super) fn duration(&mut self, text: &Spanned<String>, node: &str) -> Option<Duration> {
        match humantime::parse_duration(text) {
            Ok(d) => Some(d),
            Err(e) => {
                let msg = format!(
                    "`{}` is not a duration such as `30s`, `4h` or `2d`: {e}",
                    text.as_str()
                );
                self.diag(Code::InvalidValue, line_of(text), msg).node = Some(node.into());
                None
            }
        }
    }
}
