//! `casegraph run --report`: how much of a labelled batch the box finished on its own.
//!
//! Each input line carries the intent a person gave it (`label`). Per label and overall the
//! report counts what became of the requests: finished without a person, handed to a person
//! (a queue, a reviewer's task, an escalation, a failure or a refusal), waiting for the
//! customer, and, among the finished ones, those a workflow of a *different* intent
//! finished. It also counts the worst mistake on its own: an irreversible back-office call
//! (one not marked `effect: read` or `reversible`) made by an
//! `irreversible` workflow that does not serve the request's intent.

use std::collections::BTreeMap;

use casegraph_engine::exec::{Case, Effect, Status, Waiting};
use casegraph_engine::workflow::{Risk, Step, Workflow};
use comfy_table::{Table, presets::UTF8_FULL_CONDENSED};

/// What became of one labelled request, for the report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fate {
    /// The case completed; nobody worked on it.
    Finished,
    /// A queue, a reviewer's task, an escalation, a failure or a refusal.
    Person,
    /// The case waits for something only the customer can give.
    Customer,
}

/// One labelled request's result.
#[derive(Debug, Clone)]
pub struct Entry {
    pub label: String,
    pub language: String,
    pub fate: Fate,
    /// Finished by a workflow that does not serve `label`.
    pub wrong_workflow: bool,
    /// An irreversible workflow that does not serve `label` made an irreversible call.
    pub irreversible_wrong: bool,
}

impl Entry {
    /// A request routing sent to a queue, or that did not start.
    pub fn handed_over(label: &str, language: &str) -> Entry {
        Entry {
            label: label.into(),
            language: language.into(),
            fate: Fate::Person,
            wrong_workflow: false,
            irreversible_wrong: false,
        }
    }

    /// A request a workflow ran, as the case stands after the run.
    pub fn from_case(label: &str, language: &str, workflow: &Workflow, case: &Case) -> Entry {
        let fate = match (case.status, &case.waiting) {
            (Status::Completed, _) => Fate::Finished,
            (Status::Waiting, Some(Waiting::Task { .. })) => Fate::Person,
            (Status::Waiting, Some(_)) => Fate::Customer,
            _ => Fate::Person,
        };
        // A workflow that answers per intent from its knowledge base answered the
        // classified intent, which must be the label; any other serves the label or not.
        let classified = casegraph_engine::case::lookup(&case.data, "classification.intent")
            .and_then(serde_json::Value::as_str);
        let other_intent = !workflow.intents.iter().any(|i| i == label)
            || (workflow.knowledge.is_some() && classified != Some(label));
        let acted = case.path.iter().any(|id| {
            workflow.node(id).is_some_and(|n| {
                matches!(
                    n.step,
                    Step::Call {
                        effect: Effect::Irreversible,
                        ..
                    }
                )
            })
        });
        Entry {
            label: label.into(),
            language: language.into(),
            fate,
            wrong_workflow: other_intent && fate == Fate::Finished,
            irreversible_wrong: other_intent && acted && workflow.risk == Risk::Irreversible,
        }
    }
}

#[derive(Default)]
struct Tally {
    total: usize,
    finished: usize,
    person: usize,
    customer: usize,
    wrong: usize,
    irreversible_wrong: usize,
}

impl Tally {
    fn add(&mut self, e: &Entry) {
        self.total += 1;
        match e.fate {
            Fate::Finished => self.finished += 1,
            Fate::Person => self.person += 1,
            Fate::Customer => self.customer += 1,
        }
        self.wrong += usize::from(e.wrong_workflow);
        self.irreversible_wrong += usize::from(e.irreversible_wrong);
    }

    fn row(&self, name: &str) -> Vec<String> {
        let pct = |n: usize, of: usize| {
            if of == 0 {
                "–".to_string()
            } else {
                format!("{:.1} %", 100.0 * n as f64 / of as f64)
            }
        };
        vec![
            name.to_string(),
            self.total.to_string(),
            pct(self.finished, self.total),
            pct(self.person, self.total),
            pct(self.customer, self.total),
            format!("{} ({})", pct(self.wrong, self.finished), self.wrong),
            self.irreversible_wrong.to_string(),
        ]
    }
}

/// Prints the per-intent table, then one row per language and the overall row.
pub fn print(entries: &[Entry]) {
    let mut by_label: BTreeMap<&str, Tally> = BTreeMap::new();
    let mut by_language: BTreeMap<&str, Tally> = BTreeMap::new();
    let mut overall = Tally::default();
    for e in entries {
        by_label.entry(&e.label).or_default().add(e);
        by_language.entry(&e.language).or_default().add(e);
        overall.add(e);
    }
    let mut table = Table::new();
    table.load_preset(UTF8_FULL_CONDENSED);
    table.set_header([
        "intent (label)",
        "requests",
        "finished without a person",
        "handed to a person",
        "waiting for the customer",
        "finished by another intent's workflow (of finished)",
        "irreversible action on a wrong intent",
    ]);
    for (label, tally) in &by_label {
        table.add_row(tally.row(label));
    }
    for (language, tally) in &by_language {
        table.add_row(tally.row(&format!("all, language {language}")));
    }
    table.add_row(overall.row("all"));
    println!("{table}");
    println!(
        "{} labelled request(s): {} finished without a person ({:.1} %), {} of them by another intent's workflow; {} irreversible action(s) on a wrong intent",
        overall.total,
        overall.finished,
        if overall.total == 0 {
            0.0
        } else {
            100.0 * overall.finished as f64 / overall.total as f64
        },
        overall.wrong,
        overall.irreversible_wrong,
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(label: &str, fate: Fate, wrong: bool) -> Entry {
        Entry {
            label: label.into(),
            language: "en".into(),
            fate,
            wrong_workflow: wrong,
            irreversible_wrong: false,
        }
    }

    #[test]
    fn the_wrong_share_is_of_the_finished_cases() {
        let mut t = Tally::default();
        t.add(&entry("a", Fate::Finished, true));
        t.add(&entry("a", Fate::Finished, false));
        t.add(&entry("a", Fate::Person, false));
        t.add(&entry("a", Fate::Customer, false));
        let row = t.row("a");
        assert_eq!(row[1], "4");
        assert_eq!(row[2], "50.0 %");
        assert_eq!(row[3], "25.0 %");
        assert_eq!(row[4], "25.0 %");
        assert_eq!(row[5], "50.0 % (1)");
    }
}
