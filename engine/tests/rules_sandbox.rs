//! The rules sandbox from a script author's side: hostile scripts are stopped by the limits
//! with a clear error and the process lives on; the standard library works inside rhai.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::time::Duration;

use casegraph_engine::rules::{Context, Error, Limits, Origin, Rules};
use serde_json::{Value, json};

fn origin() -> Origin {
    Origin {
        file: PathBuf::from("workflows/demo/rule.rhai"),
        line: 1,
        node: Some("rule".into()),
    }
}

fn ctx() -> Context<'static> {
    Context {
        case_id: "case-42",
        node: "rule",
        now: "2026-11-20T10:00:00Z".parse().unwrap(),
    }
}

fn run(rules: &Rules, source: &str) -> Result<Value, Error> {
    let script = rules.compile(source, origin())?;
    let mut data = json!({ "request": { "text": "" } });
    rules.run(&script, &ctx(), &mut data)
}

fn runtime_message(result: Result<Value, Error>) -> String {
    match result {
        Err(e @ Error::Runtime { .. }) => {
            let text = e.to_string();
            assert!(text.contains("workflows/demo/rule.rhai:"), "{text}");
            assert!(text.contains("node `rule`"), "{text}");
            assert!(text.contains("case `case-42`"), "{text}");
            text
        }
        other => panic!("expected a runtime error, got {other:?}"),
    }
}

fn compile_message(source: &str) -> String {
    match Rules::default().compile(source, origin()) {
        Err(e @ Error::Compile { .. }) => e.to_string(),
        other => panic!("expected a compile error, got {other:?}"),
    }
}

#[test]
fn an_endless_loop_is_stopped_by_the_operations_limit() {
    let msg = runtime_message(run(&Rules::default(), "loop { }"));
    assert!(
        msg.contains("100000 operations (limit max_operations)"),
        "{msg}"
    );
}

#[test]
fn string_doubling_is_stopped_by_the_string_limit() {
    let msg = runtime_message(run(&Rules::default(), "let s = \"x\"; loop { s += s; }"));
    assert!(msg.contains("max_string_size"), "{msg}");
}

#[test]
fn deep_recursion_is_stopped_by_the_call_depth_limit() {
    let msg = runtime_message(run(&Rules::default(), "fn f(x) { f(x + 1) } f(0)"));
    assert!(msg.contains("max_call_depth"), "{msg}");
}

#[test]
fn huge_arrays_and_maps_are_stopped_by_their_limits() {
    let msg = runtime_message(run(&Rules::default(), "let a = []; loop { a.push(1); }"));
    assert!(msg.contains("max_array_size"), "{msg}");
    let rules = Rules::new(Limits {
        max_map_size: 100,
        ..Limits::default()
    });
    let msg = runtime_message(run(
        &rules,
        "let m = #{}; let i = 0; loop { let x = #{}; x[`k${i}`] = i; m.mixin(x); i += 1; }",
    ));
    assert!(msg.contains("max_map_size"), "{msg}");
}

#[test]
fn import_and_eval_do_not_compile() {
    let msg = compile_message("import \"os\" as os;\ncase.x = 1;");
    assert!(msg.contains("cannot load modules or files"), "{msg}");
    assert!(msg.contains("rule.rhai:1"), "{msg}");
    let msg = compile_message("let x = 1;\neval(\"x + 1\")");
    assert!(msg.contains("`eval` is not available"), "{msg}");
}

#[test]
fn deeply_nested_expressions_are_refused_at_compile_time() {
    let source = format!("{}1{}", "(".repeat(200), ")".repeat(200));
    let msg = compile_message(&source);
    assert!(msg.contains("max_expr_depth"), "{msg}");
}

#[test]
fn limits_are_configurable() {
    let rules = Rules::new(Limits {
        max_operations: 500,
        ..Limits::default()
    });
    let msg = runtime_message(run(&rules, "let i = 0; while i < 1000 { i += 1; }"));
    assert!(msg.contains("500 operations"), "{msg}");
    assert!(run(&Rules::default(), "let i = 0; while i < 1000 { i += 1; }").is_ok());
}

#[test]
fn the_process_survives_many_hostile_runs_and_the_engine_stays_usable() {
    let rules = Rules::default();
    for _ in 0..20 {
        assert!(run(&rules, "loop { }").is_err());
    }
    assert_eq!(run(&rules, "40 + 2").unwrap(), json!(42));
}

#[test]
fn a_failing_script_leaves_the_case_data_untouched() {
    let rules = Rules::default();
    let script = rules
        .compile("case.amount = 1; throw \"no\";", origin())
        .unwrap();
    let mut data = json!({ "amount": 5 });
    assert!(rules.run(&script, &ctx(), &mut data).is_err());
    assert_eq!(data, json!({ "amount": 5 }));
}

#[test]
fn equal_sources_compile_once() {
    let rules = Rules::default();
    let a = rules.compile_expression("case.x > 1", origin()).unwrap();
    let other = Origin {
        line: 30,
        ..origin()
    };
    let b = rules.compile_expression("case.x > 1", other).unwrap();
    assert_eq!(rules.cached(), 1);
    assert_eq!(a.digest, b.digest);
    assert_eq!(b.origin.line, 30, "each script keeps its own origin");
    // The same text as a program is a different entry.
    rules.compile("case.x > 1", origin()).unwrap();
    assert_eq!(rules.cached(), 2);
}

#[test]
fn an_error_in_an_inline_expression_reports_the_yaml_line() {
    let rules = Rules::default();
    let origin = Origin {
        file: PathBuf::from("workflow.yaml"),
        line: 17,
        node: Some("check".into()),
    };
    let err = rules
        .compile_expression("case.amount >", origin)
        .unwrap_err();
    assert!(err.to_string().starts_with("workflow.yaml:17:"), "{err}");
    let script = rules
        .compile_expression(
            "case.amount.len() > 1",
            Origin {
                file: PathBuf::from("workflow.yaml"),
                line: 17,
                node: Some("check".into()),
            },
        )
        .unwrap();
    let err = rules
        .eval_bool(&script, &ctx(), &json!({"amount": 1}))
        .unwrap_err();
    assert!(err.to_string().starts_with("workflow.yaml:17:"), "{err}");
}

#[test]
fn money_is_decimal_and_round_trips_through_json() {
    let rules = Rules::default();
    let script = rules
        .compile("case.total = case.amount * 3; case.exact = 0.1 + 0.2 == 0.3; case.big = case.total > 30;", origin())
        .unwrap();
    let mut data = json!({ "amount": 12.1 });
    rules.run(&script, &ctx(), &mut data).unwrap();
    assert_eq!(data["total"], json!(36.3));
    assert_eq!(data["exact"], json!(true), "decimal literals are exact");
    assert_eq!(data["big"], json!(true), "decimals compare with integers");
}

#[test]
fn the_standard_library_is_available_to_scripts() {
    let rules = Rules::default();
    let source = r#"
        let t = case.request.text;
        case.amount = extract_amount(t);
        case.iban = extract_iban(t);
        case.customer = extract_customer_number(t);
        case.email = extract_email(t);
        case.card = extract_card_last4(t);
        case.shown = format_money(round_money(case.amount * 1.005), "de");
        case.today = today();
        case.due = add_business_days(today(), 3);
        case.weekday = weekday(today());
        case.cancel = contains_any(t, ["kündigen", "close my account"]);
        case.missing = extract_iban(case.request.nothing);
    "#;
    let script = rules.compile(source, origin()).unwrap();
    let text = "Sehr geehrte Damen und Herren, Kundennummer: C-1002345. Bitte erstatten Sie 1.249,90 € \
                auf DE89 3704 0044 0532 0130 00. Meine Karte endet auf 4821. Ich möchte KÜNDIGEN. max@example.de";
    let mut data = json!({ "request": { "text": text } });
    rules.run(&script, &ctx(), &mut data).unwrap();
    assert_eq!(data["amount"], json!(1249.9));
    assert_eq!(data["iban"], "DE89370400440532013000");
    assert_eq!(data["customer"], "C-1002345");
    assert_eq!(data["email"], "max@example.de");
    assert_eq!(data["card"], "4821");
    assert_eq!(data["shown"], "1.256,15 €");
    assert_eq!(
        data["today"], "2026-11-20",
        "today() is the executor's clock"
    );
    assert_eq!(data["due"], "2026-11-25");
    assert_eq!(data["weekday"], "friday");
    assert_eq!(data["cancel"], true);
    assert_eq!(data["missing"], Value::Null);
}

#[test]
fn the_system_clock_is_not_reachable() {
    let msg = compile_message("let t = timestamp();");
    assert!(msg.contains("function not found: `timestamp`"), "{msg}");
    assert!(msg.contains("now()"), "{msg}");
}

/// Runs `f` on its own thread and fails the test if it takes longer than `bound`: a
/// script that blocks must be caught, not hang the test run.
fn within<T: Send + 'static>(bound: Duration, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(bound)
        .expect("the script held its thread past the bound")
}

#[test]
fn sleep_is_refused_when_the_script_compiles() {
    for source in [
        "sleep(30);",
        "case.x = 1;\nsleep(30)",
        "30.sleep()",
        "fn f() { sleep(1) } f()",
    ] {
        let msg = compile_message(source);
        assert!(
            msg.contains("function not found: `sleep`"),
            "{source}: {msg}"
        );
        assert!(
            msg.contains("cannot block a case worker"),
            "{source}: {msg}"
        );
    }
    let msg = compile_message("case.x = 1;\nsleep(30)");
    assert!(msg.contains("rule.rhai:2:"), "the line of the call: {msg}");
    let rules = Rules::default();
    let err = rules
        .compile_expression("sleep(30) == ()", origin())
        .expect_err("conditions are checked too");
    assert!(err.to_string().contains("`sleep`"), "{err}");
}

#[test]
fn sleep_reached_at_run_time_is_not_found_and_does_not_block() {
    // A function pointer is resolved only when it is called: the compile check cannot see it.
    let msg = within(Duration::from_secs(10), || {
        runtime_message(run(
            &Rules::default(),
            "let f = Fn(\"sl\" + \"eep\"); f.call(30)",
        ))
    });
    assert!(msg.contains("function not found"), "{msg}");
    assert!(msg.contains("sleep"), "{msg}");
}

#[test]
fn an_unknown_function_is_refused_at_compile_and_script_functions_are_known() {
    let msg = compile_message("extract_amuont(case.request.text)");
    assert!(
        msg.contains("function not found: `extract_amuont`"),
        "{msg}"
    );
    let rules = Rules::default();
    rules
        .compile("fn helper(x) { x + 1 } case.y = helper(1); case.z = [3, 1].len(); case.w = \"a\".to_upper();", origin())
        .expect("script-defined functions, methods and the library compile");
}

#[test]
fn a_run_past_its_deadline_is_stopped_with_the_limit_named() {
    let rules = Rules::new(Limits {
        max_operations: u64::MAX / 2,
        max_run_ms: 200,
        ..Limits::default()
    });
    let msg = within(Duration::from_secs(20), move || {
        runtime_message(run(&rules, "loop { let s = \"x\"; s.pad(60000, 'y'); }"))
    });
    assert!(msg.contains("200 ms (limit max_run_ms)"), "{msg}");
}

#[test]
fn the_deadline_applies_to_conditions_and_expressions_too() {
    let rules = Rules::new(Limits {
        max_operations: u64::MAX / 2,
        max_run_ms: 100,
        ..Limits::default()
    });
    let script = rules
        .compile_expression("case.items.map(|x| x.pad(60000, 'y')).len() > 0", origin())
        .unwrap();
    let items = vec![json!("x"); 10_000];
    let err = within(Duration::from_secs(20), move || {
        rules
            .eval_bool(&script, &ctx(), &json!({ "items": items }))
            .unwrap_err()
    });
    assert!(err.to_string().contains("limit max_run_ms"), "{err}");
}

#[test]
fn replace_cannot_build_gigabytes_in_one_call() {
    let msg = within(Duration::from_secs(20), || {
        runtime_message(run(
            &Rules::default(),
            "let s = \"\"; s.pad(60000, 'x'); let t = s; t.replace(\"\", s); t.len()",
        ))
    });
    assert!(msg.contains("max_string_size"), "{msg}");
}

#[test]
fn print_in_a_loop_does_not_flood_the_log() {
    // The run ends by the operations limit; what matters is that it ends and stays usable.
    let rules = Rules::default();
    let msg = runtime_message(run(
        &rules,
        "let s = \"\"; s.pad(60000, 'x'); loop { print(s); }",
    ));
    assert!(msg.contains("max_operations"), "{msg}");
}

#[test]
fn a_decision_takes_the_first_condition_that_holds_and_names_the_one_that_failed() {
    let rules = Rules::default();
    let compile = |s: &str| rules.compile_expression(s, origin()).unwrap();
    let (small, big, broken, text) = (
        compile("case.amount < 10"),
        compile("case.amount >= 10"),
        compile("case.missing.len() > 1"),
        compile("case.amount + 1"),
    );
    let data = json!({"amount": 12, "customer": {"consents": {}}});
    let first = |conditions: &[&casegraph_engine::rules::Script]| {
        rules.first_holding(conditions, &ctx(), &data)
    };
    // in order; what follows the one that holds is never run (the broken one would fail)
    assert_eq!(first(&[&small, &big, &broken]).unwrap(), Some(1));
    assert_eq!(first(&[&small]).unwrap(), None);
    assert_eq!(first(&[]).unwrap(), None);
    let (at, e) = first(&[&small, &broken, &big]).unwrap_err();
    assert_eq!(at, 1);
    assert!(matches!(e, Error::Runtime { .. }), "{e}");
    let (at, e) = first(&[&text]).unwrap_err();
    assert_eq!(at, 0);
    assert!(e.to_string().contains("must be true or false"), "{e}");
    // the same answers as one condition at a time
    for c in [&small, &big] {
        assert_eq!(
            rules.eval_bool(c, &ctx(), &data).unwrap(),
            first(&[c]).unwrap() == Some(0)
        );
    }
}
