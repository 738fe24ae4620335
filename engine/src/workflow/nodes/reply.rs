//! `reply`: the answer to the customer, rendered from a per-language template of the
//! workflow's `replies` in the language of the request.

use serde_json::{Value, json};

use serde::Serialize;

use super::{Build, Code, Edge, Kind, Outcome, Run, Step, StepDetails};
use crate::case::{Failure, Reply, digest, lookup};
use crate::yaml::line_of;

pub(super) const KIND: Kind = Kind {
    name: "reply",
    fields: &["template", "next"],
    compile,
    waits: false,
    ends: false,
    mermaid: (">", "]"),
    dot: "note",
};

/// `template` names a template under `replies` (which compiled on its own).
fn compile(b: &mut Build<'_, '_>) -> Option<Step> {
    b.next();
    Some(Step::Reply {
        template: template(b)?,
    })
}

/// The node's `template`, which must name a template under `replies` (a `reply`'s text, an
/// `ask`'s question); `None` once a problem was reported.
pub(super) fn template(b: &mut Build<'_, '_>) -> Option<String> {
    let def = b.def;
    let template = b.required("template", &def.template)?;
    if !b.templates.contains(template.as_str()) {
        let msg = format!(
            "reply template `{}` is not defined under `replies`",
            template.as_str()
        );
        b.problem(Code::Template, line_of(template), msg);
        return None;
    }
    Some(template.to_string())
}

/// Renders the reply into `case.reply`; the step record keeps only the text's digest.
pub(super) fn run(run: &mut Run<'_>, template: &str) -> (Outcome, Option<String>) {
    match render(run, template) {
        Ok(detail) => (run.next(Edge::Next, detail), None),
        Err(failure) => {
            let detail = Value::Null;
            (Outcome::Fail { failure, detail }, None)
        }
    }
}

/// Renders `template` in the request's language into `case.reply`, with the case
/// reference printed below it (what the customer quotes when they answer, on any channel).
/// Returns the step detail (template, language, the text's digest), or the failure.
pub(super) fn render(run: &mut Run<'_>, template: &str) -> Result<Value, Failure> {
    let case = &mut *run.case;
    let language = lookup(&case.data, "request.language")
        .and_then(Value::as_str)
        .unwrap_or("en")
        .to_string();
    let reference = crate::reference::of(&case.id);
    let context = json!({ "case": case.data, "case_id": case.id, "reference": reference });
    match run.wf.render_reply(template, &language, &context) {
        Ok((language, text)) => {
            let text = with_reference(text, &language, &reference);
            let detail = json!({ "template": template, "language": language,
                "text_digest": digest(&json!(text)), "reference": reference });
            case.reply = Some(Reply {
                template: template.to_string(),
                language,
                text,
            });
            Ok(detail)
        }
        Err(e) => {
            let at = format!(
                "{}: node `{}`, case `{}`: reply template `{template}` failed",
                run.wf.dir.join("workflow.yaml").display(),
                run.node.id,
                case.id
            );
            // The template engine's message may quote case data; its kind does not.
            Err(Failure {
                message: format!("{at}: {e}"),
                reason: format!("{at}: {}", e.kind()),
            })
        }
    }
}

/// The text with the case reference line below it, unless the template printed it.
fn with_reference(mut text: String, language: &str, reference: &str) -> String {
    if text.contains(reference) {
        return text;
    }
    let line = match language {
        "de" => format!("Vorgangsnummer: {reference} (bitte bei Antworten angeben)"),
        _ => format!("Case reference: {reference} (please quote it when you reply)"),
    };
    if !text.ends_with('\n') {
        text.push('\n');
    }
    text.push_str(&line);
    text.push('\n');
    text
}

pub(super) fn label(template: &str) -> String {
    format!("reply {template}")
}

#[derive(Debug, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ReplyDetails {
    pub template: String,
}

pub(super) fn details(template: &str) -> StepDetails {
    StepDetails::Reply(ReplyDetails {
        template: template.to_owned(),
    })
}
