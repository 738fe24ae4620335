use std::path::Path;

use super::*;

fn shipped() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(DEFAULT_DIR)
}

fn schema() -> Value {
    let text = std::fs::read_to_string(shipped().join("profile.schema.json")).expect("schema");
    serde_json::from_str(&text).expect("schema is JSON")
}

#[test]
fn the_three_box_classes_ship_and_load() {
    let names = names(&shipped());
    assert_eq!(names, ["edge-small", "edge-standard", "server"]);
    for name in &names {
        let p = shipped().join(format!("{name}.toml"));
        let loaded = Loaded::load(p.to_str().expect("utf-8")).expect("loads");
        let profile = &loaded.profile;
        // Every profile sets every part it is responsible for.
        assert!(profile.runtime.is_some(), "{name}: runtime");
        assert!(profile.limits.is_some(), "{name}: limits");
        assert!(profile.store.is_some(), "{name}: store");
        assert!(profile.inference.is_some(), "{name}: inference");
        assert!(
            profile.memory.as_ref().is_some_and(|m| m.budget_mib > 0),
            "{name}: memory"
        );
        assert!(
            profile
                .storage
                .as_ref()
                .is_some_and(|s| s.hard_free_mib > 0 && s.hard_free_mib < s.soft_free_mib),
            "{name}: storage"
        );
        assert!(profile.log.is_some(), "{name}: log");
        assert!(loaded.layer.get("appliance").is_none());
    }
}

#[test]
fn unknown_keys_are_refused_with_file_key_and_line() {
    let path = Path::new("firmware-profiles/edge-tiny.toml");
    let text = "[appliance]\nname = \"edge-tiny\"\ndescription = \"\"\ncores = 1\nmemory_mib = 512\nmin_free_disk_mib = 10\n\n[limits]\nworkerz = 2\n";
    let e = Loaded::parse(path, text).expect_err("unknown key");
    let m = e.to_string();
    assert!(m.contains("firmware-profiles/edge-tiny.toml"), "{m}");
    assert!(m.contains("workerz"), "{m}");
    assert!(m.contains("line 9"), "{m}");

    let e = Loaded::parse(
        path,
        &text.replace("[limits]\nworkerz", "[limitz]\nworkers"),
    )
    .expect_err("unknown section");
    assert!(e.to_string().contains("limitz"), "{e}");
}

#[test]
fn name_and_budget_must_agree_with_the_box() {
    let path = Path::new("p/edge-tiny.toml");
    let base = "[appliance]\nname = \"edge-tiny\"\ndescription = \"\"\ncores = 1\nmemory_mib = 512\nmin_free_disk_mib = 10\n";
    Loaded::parse(path, base).expect("minimal profile");
    let e = Loaded::parse(Path::new("p/other.toml"), base).expect_err("name");
    assert!(e.to_string().contains("appliance.name"), "{e}");
    let e =
        Loaded::parse(path, &format!("{base}[memory]\nbudget_mib = 600\n")).expect_err("budget");
    assert!(e.to_string().contains("memory.budget_mib"), "{e}");
    let e = Loaded::parse(
        path,
        &format!("{base}[storage]\nsoft_free_mib = 8\nhard_free_mib = 20\n"),
    )
    .expect_err("a disk mark above the disk the box starts with");
    assert!(e.to_string().contains("storage.hard_free_mib"), "{e}");
}

#[test]
fn the_schema_accepts_every_shipped_profile_and_refuses_unknown_keys() {
    let validator = jsonschema::validator_for(&schema()).expect("schema compiles");
    for name in names(&shipped()) {
        let text = std::fs::read_to_string(shipped().join(format!("{name}.toml"))).expect("read");
        let doc: Value = toml::from_str(&text).expect("toml");
        let errors: Vec<String> = validator.iter_errors(&doc).map(|e| e.to_string()).collect();
        assert!(errors.is_empty(), "{name}: {errors:?}");
        let mut bad = doc.clone();
        bad["limits"]["workerz"] = Value::from(1);
        assert!(!validator.is_valid(&bad), "{name}: unknown key accepted");
    }
}

/// The schema names exactly the keys the Rust types accept, section by section.
#[test]
fn the_schema_and_the_types_agree() {
    let schema = schema();
    let keys = |v: &Value| -> Vec<String> {
        let mut k: Vec<String> = v.as_object().expect("object").keys().cloned().collect();
        k.sort();
        k
    };
    let sections: [(&str, Value); 8] = [
        (
            "runtime",
            serde_json::to_value(RuntimeOptions::default()).expect("json"),
        ),
        (
            "limits",
            serde_json::to_value(LimitsOptions::default()).expect("json"),
        ),
        (
            "store",
            serde_json::to_value(store::Options::default()).expect("json"),
        ),
        (
            "inference",
            serde_json::to_value(InferenceOptions::default()).expect("json"),
        ),
        (
            "memory",
            serde_json::to_value(MemoryOptions::default()).expect("json"),
        ),
        (
            "storage",
            serde_json::to_value(StorageOptions::default()).expect("json"),
        ),
        (
            "log",
            serde_json::to_value(LogOptions::default()).expect("json"),
        ),
        (
            "retention",
            serde_json::to_value(RetentionOptions::default()).expect("json"),
        ),
    ];
    let props = &schema["properties"];
    let mut top: Vec<String> = sections.iter().map(|(n, _)| n.to_string()).collect();
    top.push("appliance".into());
    top.sort();
    assert_eq!(keys(props), top);
    for (name, value) in &sections {
        assert_eq!(
            keys(&props[*name]["properties"]),
            keys(value),
            "section {name}"
        );
    }
}
