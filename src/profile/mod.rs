//! Firmware profiles: one TOML file per box class in `firmware-profiles/`, e.g.
//! `edge-small.toml` for a 2-core, 1 GB appliance.
//!
//! A profile has an `[appliance]` table that describes the box it is made for (cores,
//! memory, free disk, CPU features) and configuration sections that size the service for
//! it (`[runtime]`, `[limits]`, `[store]`, `[inference]`, `[memory]`, `[storage]`, `[log]`,
//! `[retention]`). It is
//! validated on its own, so an unknown or misspelt key is reported with the file, the key
//! and its line, before it is merged as the layer between the built-in defaults and the
//! configuration file (see [`crate::config`]). [`machine`] compares a profile with the box
//! it runs on. `firmware-profiles/profile.schema.json` describes the same format for
//! editors; a test keeps the two in step.

pub mod machine;

use std::path::{Path, PathBuf};

use casegraph_engine::store;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::config::{
    self, InferenceOptions, LimitsOptions, LogOptions, MemoryOptions, ProfileLayer,
    RetentionOptions, RuntimeOptions, StorageOptions,
};

/// Where profiles are looked up by name, unless `CASEGRAPH_PROFILES_DIR` says otherwise.
pub const DEFAULT_DIR: &str = "firmware-profiles";

/// The box a profile is made for: what `casegraph profile check` compares with the machine.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Appliance {
    /// The profile's name; the same as its file name without `.toml`.
    pub name: String,
    /// One line for operators.
    pub description: String,
    /// CPU cores the box has (and the service may use).
    pub cores: usize,
    /// Memory of the box in MiB.
    pub memory_mib: u64,
    /// Free space the data directory needs at start, in MiB.
    pub min_free_disk_mib: u64,
    /// CPU features ONNX Runtime's kernels for this profile's model variant need, per
    /// architecture (names as in `/proc/cpuinfo`).
    #[serde(default)]
    pub cpu_features: CpuFeatures,
}

/// Required CPU feature flags per architecture.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CpuFeatures {
    pub x86_64: Vec<String>,
    pub aarch64: Vec<String>,
}

impl CpuFeatures {
    /// The features required on `arch` (`std::env::consts::ARCH`).
    pub fn for_arch(&self, arch: &str) -> &[String] {
        match arch {
            "x86_64" => &self.x86_64,
            "aarch64" => &self.aarch64,
            _ => &[],
        }
    }
}

/// A profile file, typed: every section optional, every key checked.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    pub appliance: Appliance,
    pub runtime: Option<RuntimeOptions>,
    pub limits: Option<LimitsOptions>,
    pub store: Option<store::Options>,
    pub inference: Option<InferenceOptions>,
    pub memory: Option<MemoryOptions>,
    pub storage: Option<StorageOptions>,
    pub log: Option<LogOptions>,
    pub retention: Option<RetentionOptions>,
}

/// A profile read from its file.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub path: PathBuf,
    pub profile: Profile,
    /// The configuration sections exactly as written (no defaults filled in), to be merged
    /// as a configuration layer.
    pub layer: Value,
}

/// A profile that cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error("no firmware profile `{name}`: cannot read {path}: {message}")]
    Missing {
        name: String,
        path: PathBuf,
        message: String,
    },
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
}

/// The directory profiles are looked up in.
pub fn dir() -> PathBuf {
    std::env::var_os("CASEGRAPH_PROFILES_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_DIR))
}

/// The file of a profile: `NAME` is looked up in [`dir`]; a path (with `/` or ending in
/// `.toml`) is taken as it is.
pub fn path_of(name: &str) -> PathBuf {
    if name.contains('/') || name.ends_with(".toml") {
        PathBuf::from(name)
    } else {
        dir().join(format!("{name}.toml"))
    }
}

/// Names of the profiles in `dir`, sorted.
pub fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            name.strip_suffix(".toml").map(str::to_string)
        })
        .collect();
    names.sort();
    names
}

/// The profile `name` as a configuration layer (see [`config::Config::load`]); a profile
/// that cannot be used is a configuration error.
pub fn layer(name: &str) -> Result<ProfileLayer, config::Error> {
    let loaded = Loaded::load(name).map_err(|e| config::Error::Invalid {
        origin: "firmware profile".into(),
        message: e.to_string(),
    })?;
    Ok(ProfileLayer {
        name: name.to_string(),
        sections: loaded.layer,
    })
}

impl Loaded {
    /// Reads and validates the profile `name` (see [`path_of`]).
    pub fn load(name: &str) -> Result<Loaded, Error> {
        let path = path_of(name);
        let text = std::fs::read_to_string(&path).map_err(|e| Error::Missing {
            name: name.to_string(),
            path: path.clone(),
            message: e.to_string(),
        })?;
        Loaded::parse(&path, &text)
    }

    /// Validates a profile's text; `path` names it in errors.
    pub fn parse(path: &Path, text: &str) -> Result<Loaded, Error> {
        let invalid = |message: String| Error::Invalid {
            path: path.to_path_buf(),
            message,
        };
        // Typed first: toml's error names the unknown key and shows its line.
        let profile: Profile = toml::from_str(text).map_err(|e| invalid(e.to_string()))?;
        let mut layer: Value = toml::from_str(text).map_err(|e| invalid(e.to_string()))?;
        if let Value::Object(map) = &mut layer {
            map.remove("appliance");
        }
        let stem = path.file_stem().map(|s| s.to_string_lossy().into_owned());
        if stem.as_deref() != Some(profile.appliance.name.as_str()) {
            return Err(invalid(format!(
                "appliance.name is `{}` but the file is named `{}.toml`; they must agree",
                profile.appliance.name,
                stem.unwrap_or_default()
            )));
        }
        let a = &profile.appliance;
        if a.cores == 0 || a.memory_mib == 0 {
            return Err(invalid(
                "appliance.cores and appliance.memory_mib must be at least 1".into(),
            ));
        }
        if let Some(m) = &profile.memory
            && m.budget_mib > a.memory_mib
        {
            return Err(invalid(format!(
                "memory.budget_mib ({}) is more than the box has (appliance.memory_mib = {})",
                m.budget_mib, a.memory_mib
            )));
        }
        if let Some(st) = &profile.storage
            && st.hard_free_mib.max(st.soft_free_mib) > a.min_free_disk_mib
        {
            return Err(invalid(format!(
                "storage.soft_free_mib ({}) and storage.hard_free_mib ({}) must not exceed the free disk the box starts with (appliance.min_free_disk_mib = {})",
                st.soft_free_mib, st.hard_free_mib, a.min_free_disk_mib
            )));
        }
        Ok(Loaded {
            path: path.to_path_buf(),
            profile,
            layer,
        })
    }
}

#[cfg(test)]
mod tests;
