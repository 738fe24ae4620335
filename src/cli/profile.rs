//! `casegraph profile`: list the firmware profiles and check one against this machine.

use std::path::PathBuf;
use std::process::ExitCode;

use casegraph::profile::machine::{self, Demand, Finding, Machine};
use casegraph::profile::{self, Loaded};
use comfy_table::Table;

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Compare a profile with this machine (cores, memory, free disk in the data
    /// directory, CPU features); exit 1 when something does not fit. Without a name (and
    /// without CASEGRAPH_PROFILE) every profile is checked and the exit is 1 only when none
    /// fits.
    Check(CheckArgs),
    /// List the profiles and the box each one is made for.
    List,
}

#[derive(Debug, clap::Args)]
pub struct CheckArgs {
    /// Profile name (looked up in `firmware-profiles/`, or CASEGRAPH_PROFILES_DIR) or path.
    #[arg(env = "CASEGRAPH_PROFILE")]
    pub name: Option<String>,
    /// Data directory whose file system needs the free space.
    #[arg(long, default_value = "data")]
    pub data: PathBuf,
}

pub fn run(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::List => {
            let mut table = Table::new();
            table.set_header(["profile", "box", "memory budget"]);
            for name in profile::names(&profile::dir()) {
                let loaded = Loaded::load(&name)?;
                let p = &loaded.profile;
                let budget = p.memory.as_ref().map_or(0, |m| m.budget_mib);
                table.add_row([
                    name,
                    p.appliance.description.clone(),
                    format!("{budget} MiB"),
                ]);
            }
            println!("{table}");
            Ok(ExitCode::SUCCESS)
        }
        Command::Check(args) => {
            let machine = Machine::probe(&args.data);
            let names = match &args.name {
                Some(n) => vec![n.clone()],
                None => profile::names(&profile::dir()),
            };
            if names.is_empty() {
                anyhow::bail!("no profiles in {}", profile::dir().display());
            }
            let mut fitting = Vec::new();
            for name in &names {
                let loaded = Loaded::load(name)?;
                let findings = check(&loaded, &machine);
                let fits = findings.iter().all(|f| f.fits);
                print_findings(&loaded, &findings, fits);
                if fits {
                    let a = &loaded.profile.appliance;
                    fitting.push((a.memory_mib, a.cores, a.name.clone()));
                }
            }
            if names.len() > 1 {
                fitting.sort();
                let list: Vec<&str> = fitting.iter().map(|f| f.2.as_str()).collect();
                match fitting.last() {
                    Some((_, _, best)) => println!(
                        "profiles that fit this machine: {}; the largest is {best}",
                        list.join(", ")
                    ),
                    None => println!("no profile fits this machine"),
                }
            }
            Ok(if fitting.is_empty() {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            })
        }
    }
}

/// The profile's settings as the server would apply them (defaults for what it leaves
/// out), compared with the machine.
pub fn check(loaded: &Loaded, machine: &Machine) -> Vec<Finding> {
    let p = &loaded.profile;
    let demand = Demand::of(
        p.appliance.cores,
        &p.runtime.clone().unwrap_or_default(),
        &p.inference.clone().unwrap_or_default(),
        &p.memory.clone().unwrap_or_default(),
        p.store.clone().unwrap_or_default().cache_mib,
    );
    machine::check(&p.appliance, &demand, machine)
}

fn print_findings(loaded: &Loaded, findings: &[Finding], fits: bool) {
    let a = &loaded.profile.appliance;
    println!("{} ({}) — {}", a.name, loaded.path.display(), a.description);
    let mut table = Table::new();
    table.set_header(["", "profile needs", "this machine", "fits"]);
    for f in findings {
        table.add_row([
            f.what.to_string(),
            f.needs.clone(),
            f.has.clone(),
            if f.fits { "yes" } else { "NO" }.to_string(),
        ]);
    }
    println!("{table}");
    if fits {
        println!("{}: fits this machine\n", a.name);
    } else {
        let misfits: Vec<&str> = findings
            .iter()
            .filter(|f| !f.fits)
            .map(|f| f.what)
            .collect();
        println!("{}: does not fit: {}\n", a.name, misfits.join(", "));
    }
}
