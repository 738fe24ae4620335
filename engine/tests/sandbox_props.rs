//! Property tests of the sandbox: random rhai sources and random minijinja templates,
//! built from pieces an attacker would reach for (loops, growth, recursion, padding,
//! replacement, blocking), go through compile and run with a small context. Whatever
//! they are, the sandbox never panics and every run ends within its limits.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use casegraph_engine::rules::{Context, Limits, Origin, Rules, template};
use proptest::prelude::*;
use serde_json::json;

/// Limits small enough that the cases finish fast; the deadline is what a run may take.
fn limits() -> Limits {
    Limits {
        max_run_ms: 200,
        ..Limits::default()
    }
}

fn rules() -> Arc<Rules> {
    static RULES: OnceLock<Arc<Rules>> = OnceLock::new();
    RULES.get_or_init(|| Arc::new(Rules::new(limits()))).clone()
}

/// Far beyond the 200 ms deadline: a run still going by then is a hang.
const BOUND: Duration = Duration::from_secs(15);

/// Runs `f` on its own thread; fails if it panics or outlives [`BOUND`].
fn within(f: impl FnOnce() + Send + 'static) -> Result<(), TestCaseError> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
        let _ = tx.send(outcome.is_ok());
    });
    match rx.recv_timeout(BOUND) {
        Ok(true) => Ok(()),
        Ok(false) => Err(TestCaseError::fail("the sandbox panicked")),
        Err(_) => Err(TestCaseError::fail("the run outlived its bound")),
    }
}

const SCRIPT_PIECES: &[&str] = &[
    "let s = \"xy\";",
    "s += s;",
    "s.pad(60000, 'z');",
    "loop { s += \"a\"; }",
    "fn f(n) { f(n + 1) }",
    "f(1);",
    "let a = [];",
    "a.push(s);",
    "a.pad(9000, s);",
    "s.replace(\"\", s);",
    "case.v = s;",
    "for i in range(0, 1000000000, 7) { a.push(i); }",
    "while true { }",
    "let m = #{};",
    "m[s] = s;",
    "print(s);",
    "s = s.to_upper();",
    "let w = case.request.text.split(\" \");",
    "throw \"no\";",
    "sleep(1);",
    "let g = Fn(\"sle\" + \"ep\"); g.call(1);",
    "case = 5;",
    "contains_any(s, a);",
    "let t = extract_amount(s);",
    "a.map(|x| x.pad(60000, 'q'));",
    "s.sub_string(1, 1000000000);",
    "let b = a + a;",
    "}",
    "{",
    "(",
    "1 / 0;",
    "9223372036854775807 + 1;",
];

const TEMPLATE_PIECES: &[&str] = &[
    "Dear {{ case.name }}, ",
    "{% for i in range(100000) %}",
    "{% for j in case.items %}",
    "{% endfor %}",
    "{% if case.n > 1 %}",
    "{% else %}",
    "{% endif %}",
    "{{ case.items | join(case.name) }}",
    "{{ range(100000) | join(\"abcdef\") }}",
    "{{ case.name ~ case.name ~ case.name }}",
    "{% set x = 1 %}",
    "{{ \"x\" * 10 }}",
    "{{ case.name | replace(\"\", case.name) }}",
    "{{ loop.index }}",
    "{{ case.missing }}",
    "{{ case.name | upper | title }}",
    "{{ case.items | batch(3) }}",
    "{{ (((((1))))) }}",
    "{{ case.n + 1 }}",
    "{{ case.n / 0 }}",
    "{{ 9223372036854775807 + 1 }}",
    "{{ range(-5, 5, -1) | list }}",
    "{{",
    "}}",
    "{%",
    "%}",
    "plain text ",
];

fn pieces(from: &'static [&'static str]) -> impl Strategy<Value = String> {
    prop::collection::vec(prop::sample::select(from), 0..10).prop_map(|p| p.join("\n"))
}

fn run_script(source: String) {
    let rules = rules();
    let origin = Origin {
        file: PathBuf::from("prop.rhai"),
        line: 1,
        node: Some("prop".into()),
    };
    let ctx = Context {
        case_id: "prop",
        node: "prop",
        now: "2026-11-20T10:00:00Z".parse().unwrap(),
    };
    let mut data = json!({ "request": { "text": "refund 12,50 € please" } });
    // Most pieces work on `s`, `a` and `m`: declared first so that they get to run.
    let program = format!("let s = \"xy\"; let a = [s]; let m = #{{}};\n{source}");
    if let Ok(script) = rules.compile(&program, origin.clone()) {
        let _ = rules.run(&script, &ctx, &mut data);
    }
    if let Ok(expr) = rules.compile_expression(&source, origin) {
        let _ = rules.eval_bool(&expr, &ctx, &data);
    }
}

fn render_template(source: String) {
    let limits = limits();
    if template::check(&source, &limits).is_err() {
        return;
    }
    let mut env = template::environment(&limits);
    if env.add_template_owned("prop.en", source).is_err() {
        return;
    }
    let tmpl = env.get_template("prop.en").unwrap();
    let context =
        json!({ "case": { "name": "Anna", "items": ["a", "b", "c"], "n": 3 }, "case_id": "prop" });
    if let Ok(text) = template::render(&tmpl, &context, &limits) {
        assert!(text.len() <= limits.max_reply_bytes);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn random_scripts_never_panic_and_end_within_the_deadline(source in pieces(SCRIPT_PIECES)) {
        within(move || run_script(source))?;
    }

    #[test]
    fn arbitrary_text_as_a_script_never_panics(source in "\\PC{0,200}") {
        within(move || run_script(source))?;
    }

    #[test]
    fn random_templates_never_panic_and_end_within_their_limits(source in pieces(TEMPLATE_PIECES)) {
        within(move || render_template(source))?;
    }

    #[test]
    fn arbitrary_text_as_a_template_never_panics(source in "\\PC{0,200}") {
        within(move || render_template(source))?;
    }
}
