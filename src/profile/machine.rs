//! The machine the service runs on, and how a profile fits it: cores available to this
//! process (affinity and CPU quota included), memory (the cgroup limit when lower than
//! the RAM), free disk where the data directory lives, and the CPU features ONNX Runtime
//! needs for the profile's model variant. Read from `/proc` and `/sys`; absent facts (on a
//! system without them) are reported as unknown, not guessed.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use super::Appliance;
use crate::config::{InferenceOptions, MemoryOptions, RuntimeOptions, Variant};

/// What this machine offers.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Machine {
    pub arch: &'static str,
    /// Cores this process may run on (`taskset`, cgroup CPU quota).
    pub cores: usize,
    /// RAM in MiB, or the cgroup memory limit when it is lower.
    pub memory_mib: Option<u64>,
    /// Free space in MiB on the file system of the data directory (or of its nearest
    /// existing parent, before the first start).
    pub free_disk_mib: Option<u64>,
    pub disk_path: PathBuf,
    /// CPU feature flags (`/proc/cpuinfo`: `flags` on x86_64, `Features` on arm).
    pub cpu_features: BTreeSet<String>,
}

impl Machine {
    /// Reads the facts of this machine; `data_dir` is where the store lives.
    pub fn probe(data_dir: &Path) -> Machine {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let ram = std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|t| meminfo_total_kib(&t))
            .map(|kib| kib / 1024);
        let cgroup = std::fs::read_to_string("/sys/fs/cgroup/memory.max")
            .ok()
            .and_then(|t| t.trim().parse::<u64>().ok())
            .map(|bytes| bytes / (1024 * 1024));
        let memory_mib = match (ram, cgroup) {
            (Some(r), Some(c)) => Some(r.min(c)),
            (r, c) => r.or(c),
        };
        let disk_path = existing_ancestor(data_dir);
        let free_disk_mib = rustix::fs::statvfs(&disk_path)
            .ok()
            .map(|s| s.f_bavail.saturating_mul(s.f_frsize) / (1024 * 1024));
        let cpu_features = std::fs::read_to_string("/proc/cpuinfo")
            .map(|t| cpu_flags(&t))
            .unwrap_or_default();
        Machine {
            arch: std::env::consts::ARCH,
            cores,
            memory_mib,
            free_disk_mib,
            disk_path,
            cpu_features,
        }
    }
}

fn existing_ancestor(dir: &Path) -> PathBuf {
    let absolute = std::path::absolute(dir).unwrap_or_else(|_| dir.to_path_buf());
    let mut p = absolute.as_path();
    loop {
        if p.exists() {
            return p.to_path_buf();
        }
        match p.parent() {
            Some(parent) => p = parent,
            None => return absolute,
        }
    }
}

fn meminfo_total_kib(text: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// The flags of the first processor in `/proc/cpuinfo` (all cores share them).
pub fn cpu_flags(cpuinfo: &str) -> BTreeSet<String> {
    cpuinfo
        .lines()
        .find_map(|l| {
            let (key, value) = l.split_once(':')?;
            matches!(key.trim(), "flags" | "Features").then_some(value)
        })
        .map(|v| v.split_whitespace().map(str::to_string).collect())
        .unwrap_or_default()
}

/// What a profile asks of the machine, after configuration layers were applied.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Demand {
    /// Threads that compute without waiting: the HTTP runtime and inference. Case workers
    /// are not counted: they spend most of their time waiting for the disk's sync.
    pub busy_threads: usize,
    pub memory_budget_mib: u64,
    /// The store's cache plus the model sessions' working memory, estimated.
    pub fixed_memory_mib: u64,
}

/// Working memory of one inference session, estimated per variant until the model card
/// states a measured figure.
fn session_mib(variant: Variant) -> u64 {
    match variant {
        Variant::Int8 => 96,
        Variant::Fp32 => 256,
    }
}

impl Demand {
    /// The demand of settings on a box of `cores` cores.
    pub fn of(
        cores: usize,
        runtime: &RuntimeOptions,
        inference: &InferenceOptions,
        memory: &MemoryOptions,
        store_cache_mib: u64,
    ) -> Demand {
        let http = if runtime.http_threads == 0 {
            cores
        } else {
            runtime.http_threads
        };
        Demand {
            busy_threads: http + inference.threads * inference.sessions,
            memory_budget_mib: memory.budget_mib,
            fixed_memory_mib: store_cache_mib
                + session_mib(inference.variant) * inference.sessions as u64,
        }
    }
}

/// One comparison of the profile with the machine.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Finding {
    pub what: &'static str,
    pub needs: String,
    pub has: String,
    pub fits: bool,
}

/// Compares what the profile's box has and what its settings need with this machine.
pub fn check(appliance: &Appliance, demand: &Demand, machine: &Machine) -> Vec<Finding> {
    let unknown = || "unknown".to_string();
    let mut out = vec![Finding {
        what: "cores",
        needs: appliance.cores.to_string(),
        has: machine.cores.to_string(),
        fits: machine.cores >= appliance.cores,
    }];
    out.push(Finding {
        what: "memory",
        needs: format!("{} MiB", appliance.memory_mib),
        has: machine
            .memory_mib
            .map_or_else(unknown, |m| format!("{m} MiB")),
        // A box sold as "1 GB" reports a little less to the kernel: allow 10%.
        fits: machine
            .memory_mib
            .is_some_and(|m| m.saturating_mul(10) >= appliance.memory_mib.saturating_mul(9)),
    });
    out.push(Finding {
        what: "free disk",
        needs: format!(
            "{} MiB in {}",
            appliance.min_free_disk_mib,
            machine.disk_path.display()
        ),
        has: machine
            .free_disk_mib
            .map_or_else(unknown, |m| format!("{m} MiB")),
        fits: machine
            .free_disk_mib
            .is_some_and(|m| m >= appliance.min_free_disk_mib),
    });
    let required = appliance.cpu_features.for_arch(machine.arch);
    let missing: Vec<&str> = required
        .iter()
        .filter(|f| !machine.cpu_features.contains(f.as_str()))
        .map(String::as_str)
        .collect();
    out.push(Finding {
        what: "cpu features",
        needs: if required.is_empty() {
            format!("none listed for {}", machine.arch)
        } else {
            required.join(" ")
        },
        has: if missing.is_empty() {
            "all present".into()
        } else {
            format!("missing {}", missing.join(" "))
        },
        fits: missing.is_empty(),
    });
    // Settings against the profile's own box: computing threads beyond two per core only
    // add switching; a budget beyond the box's memory cannot hold.
    out.push(Finding {
        what: "busy threads",
        needs: demand.busy_threads.to_string(),
        has: format!("at most {} (2 × cores)", 2 * appliance.cores),
        fits: demand.busy_threads <= 2 * appliance.cores,
    });
    if demand.memory_budget_mib > 0 {
        out.push(Finding {
            what: "memory budget",
            needs: format!(
                "{} MiB (store cache and model {} MiB)",
                demand.memory_budget_mib, demand.fixed_memory_mib
            ),
            has: machine
                .memory_mib
                .map_or_else(unknown, |m| format!("{m} MiB")),
            fits: machine
                .memory_mib
                .is_some_and(|m| m >= demand.memory_budget_mib)
                && demand.fixed_memory_mib < demand.memory_budget_mib,
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::CpuFeatures;

    fn appliance() -> Appliance {
        Appliance {
            name: "edge-small".into(),
            description: String::new(),
            cores: 2,
            memory_mib: 1024,
            min_free_disk_mib: 1024,
            cpu_features: CpuFeatures {
                x86_64: vec!["avx2".into()],
                aarch64: vec!["asimd".into()],
            },
        }
    }

    fn machine(cores: usize, memory: u64, disk: u64, flags: &str) -> Machine {
        Machine {
            arch: "x86_64",
            cores,
            memory_mib: Some(memory),
            free_disk_mib: Some(disk),
            disk_path: "/var/lib/casegraph".into(),
            cpu_features: cpu_flags(&format!("processor\t: 0\nflags\t\t: {flags}\n")),
        }
    }

    const DEMAND: Demand = Demand {
        busy_threads: 4,
        memory_budget_mib: 300,
        fixed_memory_mib: 100,
    };

    #[test]
    fn a_big_enough_machine_fits() {
        let f = check(
            &appliance(),
            &DEMAND,
            &machine(2, 1000, 5000, "sse4_1 avx avx2"),
        );
        assert!(f.iter().all(|f| f.fits), "{f:#?}");
    }

    #[test]
    fn every_shortfall_is_named() {
        let f = check(&appliance(), &DEMAND, &machine(1, 512, 10, "sse4_1 avx"));
        let misfits: Vec<&str> = f.iter().filter(|f| !f.fits).map(|f| f.what).collect();
        assert_eq!(misfits, ["cores", "memory", "free disk", "cpu features"]);
        let cpu = f.iter().find(|f| f.what == "cpu features").expect("cpu");
        assert_eq!(cpu.has, "missing avx2");
    }

    #[test]
    fn settings_that_overrun_the_box_do_not_fit() {
        let demand = Demand {
            busy_threads: 7,
            memory_budget_mib: 2048,
            fixed_memory_mib: 100,
        };
        let f = check(&appliance(), &demand, &machine(2, 1024, 5000, "avx2"));
        let misfits: Vec<&str> = f.iter().filter(|f| !f.fits).map(|f| f.what).collect();
        assert_eq!(misfits, ["busy threads", "memory budget"]);
    }

    #[test]
    fn this_machine_can_be_probed() {
        let m = Machine::probe(Path::new("target/no-such-dir/data"));
        assert!(m.cores >= 1);
        if cfg!(target_os = "linux") {
            assert!(m.memory_mib.is_some_and(|m| m > 0));
            assert!(m.free_disk_mib.is_some());
            assert!(!m.cpu_features.is_empty());
        }
    }
}
