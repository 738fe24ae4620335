//! Loading the box's classification service ([`casegraph_engine::classify::service::Model`]:
//! the metadata rule, the cascade, the micro-batcher over the model's sessions) from the
//! configuration, and finding the shipped models.

use std::path::{Path, PathBuf};

use casegraph_engine::classify::service::Model;

use crate::config::{DEFAULT_MODELS_DIR, InferenceOptions, Variant};

/// Loads `<models_dir>/<options.model>` with the sessions and batching `options` ask for.
/// The files are verified against the model card first.
pub fn load(models_dir: &Path, options: &InferenceOptions) -> anyhow::Result<Model> {
    let dir = options.model_dir(models_dir);
    if options.variant != Variant::Int8 {
        anyhow::bail!(
            "inference.variant = \"{}\": the model {} ships int8 weights only (model.onnx); \
             set inference.variant = \"int8\"",
            options.variant.as_str(),
            dir.display()
        );
    }
    Ok(Model::load(
        &dir,
        &options.session_options(),
        &options.batch_options(),
    )?)
}

/// Where the models are: `models/` under the working directory or one of its parents,
/// beside the executable's project, or in the source tree this binary was built from.
pub fn default_models_dir() -> PathBuf {
    let mut roots: Vec<PathBuf> = Vec::new();
    if let Ok(cwd) = std::env::current_dir() {
        roots.extend(cwd.ancestors().map(Path::to_path_buf));
    }
    if let Ok(exe) = std::env::current_exe() {
        roots.extend(exe.ancestors().skip(1).map(Path::to_path_buf));
    }
    roots.push(PathBuf::from(env!("CARGO_MANIFEST_DIR")));
    let default = InferenceOptions::default().model;
    roots
        .iter()
        .map(|r| r.join(DEFAULT_MODELS_DIR))
        .find(|d| d.join(&default).join("model.toml").is_file())
        .unwrap_or_else(|| PathBuf::from(DEFAULT_MODELS_DIR))
}
