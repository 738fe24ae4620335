//! The reply sandbox from a template author's side.

use serde_json::json;

use super::*;

fn limits() -> Limits {
    Limits::default()
}

/// Checks, adds and renders `source` the way a workflow does.
fn render_with(source: &str, limits: &Limits) -> Result<String, String> {
    check(source, limits).map_err(|r| format!("line {}: {}", r.line, r.message))?;
    let mut env = environment(limits);
    env.add_template_owned("reply.en", source.to_string())
        .map_err(|e| e.to_string())?;
    let tmpl = env.get_template("reply.en").map_err(|e| e.to_string())?;
    let context =
        json!({ "case": { "name": "Anna", "items": ["a", "b"], "n": 3 }, "case_id": "c1" });
    render(&tmpl, &context, limits).map_err(|e| e.to_string())
}

fn render_ok(source: &str) -> Result<String, String> {
    render_with(source, &limits())
}

#[test]
fn ordinary_letters_render() {
    let out = render_ok(
        "Dear {{ case.name }},{% if case.n > 2 %} many{% endif %} {{ case.items | join(\", \") }}{% for i in case.items %}[{{ loop.index }}{{ i | upper }}]{% endfor %} {{ case.name ~ \"!\" }} {{ case.n + 1 }} {{ \"a-b\" | replace(\"-\", \"+\") }}",
    )
    .expect("renders");
    assert_eq!(out, "Dear Anna, many a, b[1A][2B] Anna! 4 a+b");
}

#[test]
fn a_reply_past_the_output_cap_fails_with_the_limit() {
    let err = render_ok("{% for i in range(100000) %}{% for j in range(100000) %}xxxxxxxxxx{% endfor %}{% endfor %}")
        .expect_err("too long");
    assert!(
        err.contains("max_reply_bytes") || err.contains("template_fuel"),
        "{err}"
    );
    let err = render_ok("{% for i in range(10000) %}0123456789{% endfor %}").expect_err("100 KB");
    assert!(err.contains("65536 bytes (limit max_reply_bytes)"), "{err}");
}

#[test]
fn a_loop_that_writes_nothing_runs_out_of_fuel() {
    let err = render_ok(
        "{% for i in range(100000) %}{% for j in range(100000) %}{% if i == -1 %}x{% endif %}{% endfor %}{% endfor %}",
    )
    .expect_err("out of fuel");
    assert!(
        err.contains("50000 instructions (limit template_fuel)"),
        "{err}"
    );
}

#[test]
fn string_repetition_and_assignment_are_refused_at_compile() {
    for (source, needle) in [
        ("{{ \"x\" * 100000000 }}", "`*`"),
        ("{{ 2 ** 64 }}", "`*`"),
        ("{% set a = case.name ~ case.name %}{{ a }}", "`{% set %}`"),
        ("{% set a %}x{% endset %}", "`{% set %}`"),
        (
            "{% with a = case.name %}{{ a }}{% endwith %}",
            "`{% with %}`",
        ),
        ("{% filter upper %}x{% endfilter %}", "`{% filter %}`"),
        (
            "{% for a in [case.name ~ case.name] %}{% for b in [a ~ a] %}{% endfor %}{% endfor %}",
            "a `for` loop",
        ),
        ("{{ case.name | indent(100000000) }}", "`indent`"),
        ("{{ case.items | batch(100000000000, \"x\") }}", "`batch`"),
        ("{{ case.items | slice(100000000000) }}", "`slice`"),
        ("{{ \"%999999999s\" | format(1) }}", "`format`"),
    ] {
        let err = render_ok(source).expect_err(source);
        assert!(err.contains(needle), "{source}: {err}");
    }
}

#[test]
fn doubling_through_a_namespace_is_not_possible() {
    let err = render_ok(
        "{% set ns = namespace(s=\"x\") %}{% for i in range(64) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}{{ ns.s | length }}",
    )
    .expect_err("refused");
    assert!(err.contains("`{% set %}`"), "{err}");
    let err = render_ok("{{ namespace() }}").expect_err("no namespace");
    assert!(err.contains("namespace"), "{err}");
}

#[test]
fn join_and_replace_stop_at_the_output_cap() {
    let big = "y".repeat(1000);
    let err = render_ok(&format!("{{{{ range(100000) | join(\"{big}\") }}}}")).expect_err("join");
    assert!(err.contains("max_reply_bytes"), "{err}");
    let err =
        render_ok(&format!("{{{{ \"{big}\" | replace(\"\", \"{big}\") }}}}")).expect_err("replace");
    assert!(err.contains("max_reply_bytes"), "{err}");
}

#[test]
fn a_template_over_the_size_cap_is_refused() {
    let source = "x".repeat(limits().max_template_bytes + 1);
    let err = render_ok(&source).expect_err("too big");
    assert!(err.contains("rules.max_template_bytes"), "{err}");
}

#[test]
fn deep_nesting_is_refused_by_the_parser_without_a_crash() {
    let source = format!("{{{{ {}1{} }}}}", "(".repeat(5000), ")".repeat(5000));
    let err = render_ok(&source).expect_err("too deep");
    assert!(err.contains("recursion") || err.contains("nest"), "{err}");
}

#[test]
fn the_deadline_stops_a_rendering() {
    let limits = Limits {
        max_run_ms: 1,
        template_fuel: u64::MAX / 2,
        max_reply_bytes: usize::MAX / 2,
        ..Limits::default()
    };
    let err = render_with(
        "{% for i in range(100000) %}{% for j in range(100000) %}x{% endfor %}{% endfor %}",
        &limits,
    )
    .expect_err("deadline");
    assert!(err.contains("1 ms (limit max_run_ms)"), "{err}");
}
