//! The service's configuration: one [`Config`] of per-part options.
//!
//! Layers, later ones win: built-in defaults → firmware profile (`--profile NAME` reads
//! `firmware-profiles/NAME.toml`, see `profile::layer`) → TOML file (`--config FILE`) → environment
//! (`CASEGRAPH_<SECTION>__<KEY>=value`, e.g. `CASEGRAPH_SERVER__WORKERS=4`) → command-line
//! flags. Layers are merged as trees and deserialized once, so an unknown key anywhere is
//! an error naming it. [`Config::validate`] runs at start-up. With no file at all the
//! defaults serve the shipped workflows from `./workflows` with data in `./data`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use casegraph_engine::rules::Limits;
use casegraph_engine::store;
use serde::{Deserialize, Serialize};
use serde_json::Value;

mod contact;
mod error;
mod fleet;
mod options;
mod retention;
mod roots;

pub use contact::ContactOptions;
pub use error::Error;
pub use fleet::FleetOptions;
pub use options::{
    ConnectorOptions, InferenceOptions, LimitsOptions, LogOptions, MemoryOptions, RuntimeOptions,
    ServerOptions, StorageOptions, TaskOptions, TlsOptions, Variant, WebhookOptions,
};
pub use retention::RetentionOptions;
pub use roots::Roots;

/// The intent models shipped with the product, relative to the project root.
pub const DEFAULT_MODELS_DIR: &str = "models";

/// Everything `casegraph serve` can be told.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// The data directory: the store, tokens, published workflows.
    pub data_dir: PathBuf,
    /// The shipped workflows (one sub-directory each, plus `routing/`); published versions
    /// in the data directory take precedence over these.
    pub workflows_dir: PathBuf,
    /// The shipped intent models (one sub-directory each; `inference.model` names one).
    pub models_dir: PathBuf,
    pub server: ServerOptions,
    pub limits: LimitsOptions,
    pub store: store::Options,
    pub connectors: ConnectorOptions,
    pub webhooks: WebhookOptions,
    /// The rule and reply-template sandbox: bounds on every script run and every reply
    /// rendering (operations, wall-clock time, value sizes, template fuel and sizes).
    pub rules: Limits,
    /// Threads of the HTTP runtime.
    pub runtime: RuntimeOptions,
    /// How the intent model runs: variant, threads, sessions, batching.
    pub inference: InferenceOptions,
    /// The resident-memory budget and load shedding near it.
    pub memory: MemoryOptions,
    /// Disk watermarks: free space and data-directory size, and what is refused near them.
    pub storage: StorageOptions,
    /// What the service logs.
    pub log: LogOptions,
    /// Which finished cases move to archive files, and when (off by default).
    pub retention: RetentionOptions,
    /// Human tasks: how soon a high-priority case must be looked at.
    pub tasks: TaskOptions,
    /// Rules for contacting customers proactively (quiet hours).
    pub contact: ContactOptions,
    /// The fleet: NATS JetStream relay and signed rollouts (off by default).
    pub fleet: FleetOptions,
    /// The firmware profile this configuration was built on (`--profile`); not a key of
    /// any file, it is reported with the effective settings.
    #[serde(skip)]
    pub profile: Option<String>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            data_dir: PathBuf::from("data"),
            workflows_dir: PathBuf::from("workflows"),
            models_dir: PathBuf::from(DEFAULT_MODELS_DIR),
            server: ServerOptions::default(),
            limits: LimitsOptions::default(),
            store: store::Options::default(),
            connectors: ConnectorOptions::default(),
            webhooks: WebhookOptions::default(),
            rules: Limits::default(),
            runtime: RuntimeOptions::default(),
            inference: InferenceOptions::default(),
            memory: MemoryOptions::default(),
            storage: StorageOptions::default(),
            log: LogOptions::default(),
            retention: RetentionOptions::default(),
            tasks: TaskOptions::default(),
            contact: ContactOptions::default(),
            fleet: FleetOptions::default(),
            profile: None,
        }
    }
}

/// A firmware profile as a configuration layer: read and validated on its own first
/// (`profile::layer`), so a bad key is named with the profile's file.
#[derive(Debug, Clone)]
pub struct ProfileLayer {
    /// The profile's name (`--profile`), reported with the effective settings.
    pub name: String,
    /// Its configuration sections exactly as written (no defaults filled in).
    pub sections: Value,
}

/// Command-line flags that override everything else.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub data_dir: Option<PathBuf>,
    pub listen: Option<SocketAddr>,
    pub workflows_dir: Option<PathBuf>,
    pub models_dir: Option<PathBuf>,
}

/// Top-level keys an environment variable may address; other `CASEGRAPH_*` variables
/// (`CASEGRAPH_LOG`, `CASEGRAPH_RULES_LIMITS`) belong to other parts and are left alone.
const SECTIONS: &[&str] = &[
    "data_dir",
    "workflows_dir",
    "models_dir",
    "server",
    "limits",
    "store",
    "connectors",
    "webhooks",
    "rules",
    "runtime",
    "inference",
    "memory",
    "storage",
    "retention",
    "tasks",
    "contact",
    "fleet",
    "log",
];

impl Config {
    /// Builds the configuration from every layer, then validates it.
    pub fn load(
        profile: Option<ProfileLayer>,
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
        flags: &Overrides,
    ) -> Result<Config, Error> {
        let mut tree = serde_json::to_value(Config::default()).map_err(|e| Error::Invalid {
            origin: "defaults".into(),
            message: e.to_string(),
        })?;
        let profile = profile.map(|p| {
            merge(&mut tree, p.sections);
            p.name
        });
        if let Some(path) = file {
            merge(&mut tree, read_toml(path)?);
        }
        for (name, value) in env {
            let Some(rest) = name.strip_prefix("CASEGRAPH_") else {
                continue;
            };
            let path: Vec<String> = rest.to_lowercase().split("__").map(String::from).collect();
            if !SECTIONS.contains(&path[0].as_str()) {
                continue;
            }
            // A section is addressed key by key (`CASEGRAPH_LOG__LEVEL`); `CASEGRAPH_LOG`
            // alone is the log filter, not the `[log]` section.
            if path.len() == 1
                && !matches!(
                    path[0].as_str(),
                    "data_dir" | "workflows_dir" | "models_dir"
                )
            {
                continue;
            }
            // Numbers, booleans and arrays are given as JSON; anything else is a string.
            let v = serde_json::from_str(&value).unwrap_or(Value::String(value));
            set(&mut tree, &path, v);
        }
        let mut config: Config = serde_json::from_value(tree).map_err(|e| Error::Invalid {
            origin: "configuration".into(),
            message: e.to_string(),
        })?;
        if let Some(d) = &flags.data_dir {
            config.data_dir = d.clone();
        }
        if let Some(l) = flags.listen {
            config.server.listen = l;
        }
        if let Some(w) = &flags.workflows_dir {
            config.workflows_dir = w.clone();
        }
        if let Some(m) = &flags.models_dir {
            config.models_dir = m.clone();
        }
        config.profile = profile;
        config.validate()?;
        Ok(config)
    }

    /// Checks what serde cannot: bounds, URLs, and that CA bundles can be read.
    pub fn validate(&self) -> Result<(), Error> {
        let bad = |field: &str, message: &str| {
            Err(Error::Invalid {
                origin: field.to_string(),
                message: message.to_string(),
            })
        };
        if self.limits.workers == 0 {
            return bad("limits.workers", "must be at least 1");
        }
        if let Some(q) = &self.contact.quiet_hours
            && let Err(e) = q.check()
        {
            return bad("contact.quiet_hours", &e);
        }
        if let Err((key, message)) = self.fleet.validate() {
            return bad(&key, &message);
        }
        if self.limits.max_compiles == 0 || self.limits.max_classify == 0 {
            return bad("limits", "max_compiles and max_classify must be at least 1");
        }
        if self.limits.queue_depth == 0 || self.limits.max_in_flight == 0 {
            return bad("limits", "queue_depth and max_in_flight must be at least 1");
        }
        if self.limits.body_limit_bytes < 1024 {
            return bad("limits.body_limit_bytes", "must be at least 1024");
        }
        if self.server.request_timeout.is_zero() || self.server.timer_interval.is_zero() {
            return bad(
                "server",
                "request_timeout and timer_interval must be positive",
            );
        }
        if self.limits.queue_wait >= self.server.request_timeout {
            return bad(
                "limits.queue_wait",
                "must be shorter than server.request_timeout (a held request would time out)",
            );
        }
        if self.server.header_read_timeout.is_zero() {
            return bad("server.header_read_timeout", "must be positive");
        }
        if !(1024..=1024 * 1024).contains(&self.server.max_header_bytes) {
            return bad("server.max_header_bytes", "must be 1024 to 1048576");
        }
        if self.server.max_headers == 0 {
            return bad("server.max_headers", "must be at least 1");
        }
        if !(1..=65_536).contains(&self.server.max_connections) {
            return bad("server.max_connections", "must be 1 to 65536");
        }
        if let Some((field, message)) = self.retention.problem() {
            return bad(field, message);
        }
        if self.tasks.priority_sla.is_zero() {
            return bad("tasks.priority_sla", "must be positive");
        }
        if self.store.max_group == 0 {
            return bad("store.max_group", "must be at least 1");
        }
        if let Some(url) = &self.connectors.base_url
            && !(url.starts_with("http://") || url.starts_with("https://"))
        {
            return bad("connectors.base_url", "must be an http:// or https:// URL");
        }
        if self.runtime.blocking_threads == 0 {
            return bad("runtime.blocking_threads", "must be at least 1");
        }
        if self.runtime.background_nice > crate::priority::MAX_NICE {
            return bad("runtime.background_nice", "must be 0 to 19");
        }
        let i = &self.inference;
        if i.threads == 0 || i.sessions == 0 || i.batch_size == 0 {
            return bad(
                "inference",
                "threads, sessions and batch_size must be at least 1",
            );
        }
        if !(10..=100).contains(&self.memory.shed_at_percent) {
            return bad("memory.shed_at_percent", "must be between 10 and 100");
        }
        if self.memory.sample_interval.is_zero() {
            return bad("memory.sample_interval", "must be positive");
        }
        let st = &self.storage;
        if st.soft_free_mib != 0 && st.hard_free_mib >= st.soft_free_mib {
            return bad(
                "storage.hard_free_mib",
                "must be below storage.soft_free_mib (the hard mark comes after the soft one)",
            );
        }
        if !(10..=100).contains(&st.soft_budget_percent) {
            return bad("storage.soft_budget_percent", "must be between 10 and 100");
        }
        if st.sample_interval.is_zero() {
            return bad("storage.sample_interval", "must be positive");
        }
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&self.log.level) {
            return bad("log.level", &format!("is not a log filter: {e}"));
        }
        if let Err(message) = self.rules.validate() {
            return Err(Error::Invalid {
                origin: "rules".into(),
                message,
            });
        }
        if self.webhooks.max_attempts == 0 {
            return bad("webhooks.max_attempts", "must be at least 1");
        }
        // Read here so that a bad bundle stops the start before anything is opened; the
        // agents load it again when they are built.
        Roots::load(self.connectors.ca_file.as_deref(), "connectors.ca_file")?;
        Roots::load(self.webhooks.ca_file.as_deref(), "webhooks.ca_file")?;
        Ok(())
    }
}

fn read_toml(path: &Path) -> Result<Value, Error> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::Read {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    toml::from_str::<Value>(&text).map_err(|e| Error::Invalid {
        origin: path.display().to_string(),
        message: e.to_string(),
    })
}

/// Deep-merges `layer` into `base`: tables merge key by key, anything else replaces.
fn merge(base: &mut Value, layer: Value) {
    match (base, layer) {
        (Value::Object(b), Value::Object(l)) => {
            for (k, v) in l {
                match b.get_mut(&k) {
                    Some(existing) => merge(existing, v),
                    None => {
                        b.insert(k, v);
                    }
                }
            }
        }
        (b, l) => *b = l,
    }
}

fn set(tree: &mut Value, path: &[String], value: Value) {
    let mut node = tree;
    for (i, key) in path.iter().enumerate() {
        if !node.is_object() {
            *node = Value::Object(Default::default());
        }
        let Value::Object(map) = node else { return };
        if i + 1 == path.len() {
            map.insert(key.clone(), value);
            return;
        }
        node = map
            .entry(key.clone())
            .or_insert_with(|| Value::Object(Default::default()));
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults_are_valid_and_round_trip() {
        let c = Config::load(None, None, env(&[]), &Overrides::default()).expect("defaults");
        assert_eq!(c, Config::default());
    }

    #[test]
    fn file_env_and_flags_layer_in_order() {
        let dir = tempfile::tempdir().expect("tmp");
        let file = dir.path().join("c.toml");
        std::fs::write(
            &file,
            "[limits]\nworkers = 3\nqueue_depth = 10\n[server]\nrequest_timeout = \"5s\"\n",
        )
        .expect("write");
        let c = Config::load(
            None,
            Some(&file),
            env(&[
                ("CASEGRAPH_LIMITS__WORKERS", "4"),
                ("CASEGRAPH_LOG", "debug"),
                ("CASEGRAPH_RULES_LIMITS", "{}"),
                ("CASEGRAPH_STORE__BACKEND", "sled"),
            ]),
            &Overrides {
                data_dir: Some("/tmp/x".into()),
                ..Default::default()
            },
        )
        .expect("valid");
        assert_eq!(c.limits.workers, 4);
        assert_eq!(c.limits.queue_depth, 10);
        assert_eq!(c.server.request_timeout, Duration::from_secs(5));
        assert_eq!(c.store.backend, store::Kind::Sled);
        assert_eq!(c.data_dir, PathBuf::from("/tmp/x"));
    }

    #[test]
    fn every_section_can_be_set_from_the_environment() {
        let value = serde_json::to_value(Config::default()).expect("json");
        let mut keys: Vec<&str> = value
            .as_object()
            .expect("object")
            .keys()
            .map(String::as_str)
            .collect();
        keys.sort_unstable();
        let mut sections = SECTIONS.to_vec();
        sections.sort_unstable();
        assert_eq!(
            keys, sections,
            "a section missing from SECTIONS ignores CASEGRAPH_*"
        );
        let c = Config::load(
            None,
            None,
            env(&[("CASEGRAPH_RETENTION__COMPACT", "false")]),
            &Overrides::default(),
        )
        .expect("valid");
        assert!(!c.retention.compact);
    }

    #[test]
    fn unknown_keys_and_bad_values_are_refused() {
        let dir = tempfile::tempdir().expect("tmp");
        let file = dir.path().join("c.toml");
        std::fs::write(&file, "[limits]\nworkerz = 3\n").expect("write");
        let e = Config::load(None, Some(&file), env(&[]), &Overrides::default())
            .expect_err("unknown key");
        assert!(e.to_string().contains("workerz"), "{e}");
        // (settings from the environment, the key the error must name)
        for (vars, key) in [
            (&[("CASEGRAPH_LIMITS__WORKERS", "0")][..], "limits.workers"),
            (
                &[
                    ("CASEGRAPH_STORAGE__SOFT_FREE_MIB", "100"),
                    ("CASEGRAPH_STORAGE__HARD_FREE_MIB", "100"),
                ][..],
                "storage.hard_free_mib",
            ),
            // a hold as long as the request timeout
            (
                &[("CASEGRAPH_LIMITS__QUEUE_WAIT", "30s")][..],
                "limits.queue_wait",
            ),
            // a nice value Linux does not have
            (
                &[("CASEGRAPH_RUNTIME__BACKGROUND_NICE", "20")][..],
                "runtime.background_nice",
            ),
        ] {
            let e = Config::load(None, None, env(vars), &Overrides::default()).expect_err(key);
            assert!(e.to_string().contains(key), "{e}");
        }
        std::fs::write(
            &file,
            "[contact]\nquiet_hours = { from = \"20:00\", until = \"8\", timezone = \"Europe/Berlin\" }\n",
        )
        .expect("write");
        let e = Config::load(None, Some(&file), env(&[]), &Overrides::default())
            .expect_err("bad quiet hours");
        assert!(
            e.to_string().contains("contact.quiet_hours") && e.to_string().contains("until"),
            "{e}"
        );
        std::fs::write(&file, "[fleet]\nnats_url = \"nats://127.0.0.1:4222\"\n").expect("write");
        let e = Config::load(None, Some(&file), env(&[]), &Overrides::default())
            .expect_err("a fleet without a branch");
        assert!(e.to_string().contains("fleet.branch"), "{e}");
    }

    #[test]
    fn the_sandbox_limits_come_from_file_and_env_and_zero_is_refused() {
        let dir = tempfile::tempdir().expect("tmp");
        let file = dir.path().join("c.toml");
        std::fs::write(&file, "[rules]\nmax_run_ms = 250\nmax_reply_bytes = 4096\n")
            .expect("write");
        let c = Config::load(
            None,
            Some(&file),
            env(&[("CASEGRAPH_RULES__TEMPLATE_FUEL", "1000")]),
            &Overrides::default(),
        )
        .expect("valid");
        assert_eq!(c.rules.max_run_ms, 250);
        assert_eq!(c.rules.max_reply_bytes, 4096);
        assert_eq!(c.rules.template_fuel, 1000);
        assert_eq!(c.rules.max_operations, Limits::default().max_operations);
        // 0 is "unlimited" to rhai and minijinja: refused rather than silently unbounded.
        let e = Config::load(
            None,
            None,
            env(&[("CASEGRAPH_RULES__MAX_RUN_MS", "0")]),
            &Overrides::default(),
        )
        .expect_err("zero deadline");
        assert!(e.to_string().contains("rules.max_run_ms"), "{e}");
    }

    #[test]
    fn the_documented_configuration_is_valid() {
        let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/api.md"))
            .expect("docs/api.md");
        let start = doc.find("```toml\n").expect("a toml block") + 8;
        let end = start + doc[start..].find("```").expect("its end");
        let dir = tempfile::tempdir().expect("tmp");
        let file = dir.path().join("c.toml");
        std::fs::write(&file, &doc[start..end]).expect("write");
        let c = Config::load(None, Some(&file), env(&[]), &Overrides::default())
            .expect("the documented example loads");
        assert_eq!(c, Config::default(), "the example shows the defaults");
    }
}
