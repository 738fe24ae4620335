//! Finding and loading the ONNX Runtime shared library (`ort` with `load-dynamic`).
//!
//! Order: `ORT_DYLIB_PATH` if set; else the project-local install that `scripts/setup.sh`
//! makes (`.local/onnxruntime/lib/libonnxruntime.so`, looked for above the working
//! directory, above the executable and in the source tree this binary was built from);
//! else `libonnxruntime.so` beside the executable. ONNX Runtime allows one environment per
//! process, so it is created once and shared.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use super::Error;

/// File name of the library on this platform.
pub const LIB_NAME: &str = "libonnxruntime.so";
/// Where `scripts/setup.sh` puts it, relative to the project root.
pub const PROJECT_LOCAL: &str = ".local/onnxruntime/lib/libonnxruntime.so";

/// Candidate paths in search order, given the environment variable's value.
pub fn candidates(env: Option<&str>) -> Vec<PathBuf> {
    if let Some(p) = env.filter(|p| !p.is_empty()) {
        // an explicit choice is never silently replaced by another library
        return vec![PathBuf::from(p)];
    }
    let mut out = Vec::new();
    let mut push_ancestors = |start: &Path| {
        for dir in start.ancestors() {
            let c = dir.join(PROJECT_LOCAL);
            if !out.contains(&c) {
                out.push(c);
            }
        }
    };
    if let Ok(cwd) = std::env::current_dir() {
        push_ancestors(&cwd);
    }
    let exe_dir = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(Path::to_path_buf));
    if let Some(dir) = &exe_dir {
        push_ancestors(dir);
    }
    push_ancestors(Path::new(env!("CARGO_MANIFEST_DIR")));
    if let Some(dir) = exe_dir {
        out.push(dir.join(LIB_NAME));
    }
    out
}

/// The first candidate that exists, or the documented "how to install" error.
pub fn locate(env: Option<&str>) -> Result<PathBuf, Error> {
    let cands = candidates(env);
    cands
        .iter()
        .find(|p| p.is_file())
        .cloned()
        .ok_or_else(|| Error::RuntimeMissing {
            looked: cands
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", "),
        })
}

static ENV: OnceLock<Result<ort::environment::Environment, Error>> = OnceLock::new();

/// Loads ONNX Runtime once per process (telemetry off) and returns its environment.
pub fn environment() -> Result<&'static ort::environment::Environment, Error> {
    ENV.get_or_init(|| {
        let path = locate(std::env::var("ORT_DYLIB_PATH").ok().as_deref())?;
        let load = |reason: String| Error::RuntimeLoad {
            path: path.display().to_string(),
            reason,
        };
        ort::init_from(&path)
            .map_err(|e| load(e.to_string()))?
            .with_name("casegraph")
            .with_telemetry(false)
            .build()
            .map_err(|e| load(e.to_string()))
    })
    .as_ref()
    .map_err(Clone::clone)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn explicit_path_is_the_only_candidate() {
        assert_eq!(
            candidates(Some("/opt/ort/libonnxruntime.so")),
            [PathBuf::from("/opt/ort/libonnxruntime.so")]
        );
    }

    #[test]
    fn missing_library_says_how_to_install_it() {
        let err = locate(Some("/nonexistent/libonnxruntime.so")).expect_err("missing");
        let msg = err.to_string();
        assert!(msg.contains("scripts/setup.sh"), "{msg}");
        assert!(msg.contains("onnxruntime==1.31.1"), "{msg}");
        assert!(msg.contains("ORT_DYLIB_PATH"), "{msg}");
        assert!(msg.contains("/nonexistent/libonnxruntime.so"), "{msg}");
    }

    #[test]
    fn default_search_includes_the_project_local_install() {
        let c = candidates(None);
        assert!(c.iter().any(|p| p.ends_with(PROJECT_LOCAL)));
        assert!(c.last().is_some_and(|p| p.ends_with(LIB_NAME)));
    }
}
