//! The effective settings: the configuration after every layer (defaults, firmware
//! profile, file, environment, flags), the profile it was built on and how that profile
//! fits this machine. Logged in one line at start and shown to admins at
//! `GET /v1/admin/settings`, so an operator sees what the box actually runs with.

use serde::Serialize;
use serde_json::Value;

use crate::config::Config;
use crate::profile::machine::{self, Demand, Finding, Machine};
use crate::profile::{Appliance, Loaded};

/// What the service runs with.
#[derive(Debug, Clone, Serialize)]
pub struct Effective {
    /// The firmware profile, when one was chosen.
    pub profile: Option<ProfileFit>,
    /// The whole configuration, secrets left out.
    pub config: Value,
    /// What this machine offers.
    pub machine: Machine,
}

/// A profile and how it fits this machine.
#[derive(Debug, Clone, Serialize)]
pub struct ProfileFit {
    pub name: String,
    pub path: String,
    pub appliance: Appliance,
    pub fits: bool,
    pub findings: Vec<Finding>,
}

impl Effective {
    /// The settings of `config`; `profile` is the profile it was built on.
    pub fn new(config: &Config, profile: Option<&Loaded>) -> Effective {
        let machine = Machine::probe(&config.data_dir);
        let profile = profile.map(|p| {
            let a = &p.profile.appliance;
            let demand = Demand::of(
                a.cores,
                &config.runtime,
                &config.inference,
                &config.memory,
                config.store.cache_mib,
            );
            let findings = machine::check(a, &demand, &machine);
            ProfileFit {
                name: a.name.clone(),
                path: p.path.display().to_string(),
                appliance: a.clone(),
                fits: findings.iter().all(|f| f.fits),
                findings,
            }
        });
        let mut config = serde_json::to_value(config).unwrap_or(Value::Null);
        redact(&mut config);
        Effective {
            profile,
            config,
            machine,
        }
    }

    /// Logs the profile's fit (a warning per misfit) and the settings in one line.
    pub fn log(&self) {
        match &self.profile {
            Some(p) => {
                for f in p.findings.iter().filter(|f| !f.fits) {
                    tracing::warn!(
                        profile = %p.name,
                        what = f.what,
                        needs = %f.needs,
                        has = %f.has,
                        "this machine does not fit the firmware profile"
                    );
                }
                tracing::info!(profile = %p.name, path = %p.path, fits = p.fits, "firmware profile");
            }
            None => tracing::info!("no firmware profile: built-in defaults and configuration"),
        }
        tracing::info!(settings = %self.config, "effective settings");
    }
}

/// Credentials in URLs (`https://user:secret@host/`) never leave the box's configuration.
fn redact(v: &mut Value) {
    match v {
        Value::Object(m) => m.values_mut().for_each(redact),
        Value::Array(a) => a.iter_mut().for_each(redact),
        Value::String(s) => {
            if let Some((scheme, rest)) = s.split_once("://")
                && let Some((userinfo, host)) = rest.split_once('@')
                && !userinfo.contains('/')
            {
                *s = format!("{scheme}://***@{host}");
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_in_urls_are_redacted() {
        let mut v = serde_json::json!({"a": "https://u:p@gw.example/x", "b": ["http://gw/x@y"]});
        redact(&mut v);
        assert_eq!(v["a"], "https://***@gw.example/x");
        assert_eq!(v["b"][0], "http://gw/x@y");
    }
}
