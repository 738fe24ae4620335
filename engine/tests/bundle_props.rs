//! Property tests of the compiler against bundles an author could send: mutations of a
//! shipped workflow's YAML, random nesting, and random paths in `script:`. Whatever comes
//! in, `compile_dir` returns (no panic, no stack overflow), and no path leads it to read a
//! file outside the workflow's folder.
//!
//! Each case runs in a temporary tree that holds, beside the workflow's folder, a file the
//! bundle must never reach (`secret.rhai`, a script that would compile) and a symbolic link
//! from inside the folder to outside it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Component, Path, PathBuf};
use std::sync::LazyLock;

use casegraph_engine::rules::Rules;
use casegraph_engine::workflow::{Code, Diagnostic, MAX_DEPTH, compile_dir};
use proptest::prelude::*;

static RULES: LazyLock<Rules> = LazyLock::new(Rules::default);

/// The shipped workflow the mutations start from.
static SHIPPED: LazyLock<PathBuf> = LazyLock::new(|| {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("workflows")
        .join("card_arrival")
});

/// Compiles to this text if it is ever read: a script that compiles and says who it is.
const SECRET: &str = "let secret_outside_the_bundle = 1;\n";

/// A temporary tree: `<tmp>/secret.rhai`, `<tmp>/catalog/card_arrival/` (a copy of the
/// shipped workflow, with `up` linking to `<tmp>`), and `workflow.yaml` replaced by `yaml`.
struct Tree {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
}

impl Tree {
    fn new(yaml: &str) -> Tree {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(tmp.path().join("secret.rhai"), SECRET).unwrap();
        let dir = tmp.path().join("catalog").join("card_arrival");
        std::fs::create_dir_all(&dir).unwrap();
        for entry in std::fs::read_dir(&*SHIPPED).unwrap() {
            let path = entry.unwrap().path();
            if path.is_file() {
                std::fs::copy(&path, dir.join(path.file_name().unwrap())).unwrap();
            }
        }
        std::os::unix::fs::symlink(tmp.path(), dir.join("up")).unwrap();
        std::fs::write(dir.join("workflow.yaml"), yaml).unwrap();
        Tree { _tmp: tmp, dir }
    }

    fn compile(&self) -> Result<(), Vec<Diagnostic>> {
        compile_dir(&self.dir, &RULES).map(drop)
    }
}

fn shipped_yaml() -> String {
    std::fs::read_to_string(SHIPPED.join("workflow.yaml")).unwrap()
}

/// One edit of a text: delete a stretch, repeat one, insert YAML punctuation, swap lines.
#[derive(Debug, Clone)]
enum Edit {
    Delete(usize, usize),
    Repeat(usize, usize, u8),
    Insert(usize, String),
    SwapLines(usize, usize),
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        (any::<usize>(), 1..64usize).prop_map(|(at, n)| Edit::Delete(at, n)),
        (any::<usize>(), 1..64usize, 1..20u8).prop_map(|(at, n, k)| Edit::Repeat(at, n, k)),
        (
            any::<usize>(),
            "[\\[\\]{}:,\\- \n\"'&*!|>#%@`a-z0-9.]{1,12}"
        )
            .prop_map(|(at, s)| Edit::Insert(at, s)),
        (any::<usize>(), any::<usize>()).prop_map(|(a, b)| Edit::SwapLines(a, b)),
    ]
}

/// Applies `e` to `text`, on character boundaries.
fn apply(text: &str, e: &Edit) -> String {
    let chars: Vec<char> = text.chars().collect();
    let n = chars.len().max(1);
    let s = |from: usize, to: usize| {
        chars[from.min(chars.len())..to.min(chars.len())]
            .iter()
            .collect::<String>()
    };
    match e {
        Edit::Delete(at, len) => {
            let at = at % n;
            format!("{}{}", s(0, at), s(at + len, chars.len()))
        }
        Edit::Repeat(at, len, times) => {
            let at = at % n;
            let piece = s(at, at + len);
            format!(
                "{}{}{}",
                s(0, at),
                piece.repeat(usize::from(*times)),
                s(at, chars.len())
            )
        }
        Edit::Insert(at, what) => {
            let at = at % n;
            format!("{}{what}{}", s(0, at), s(at, chars.len()))
        }
        Edit::SwapLines(a, b) => {
            let mut lines: Vec<&str> = text.lines().collect();
            let len = lines.len().max(1);
            lines.swap(a % len, b % len);
            format!("{}\n", lines.join("\n"))
        }
    }
}

/// Whether `rel` in `dir` names a file outside `dir`: by its text, by where it resolves,
/// or, when it does not resolve, by passing the link `up` that leads out on the way. A
/// path through `up` that comes back into the folder (`up/catalog/card_arrival/…`)
/// resolves inside and does not leave.
fn leaves(dir: &Path, rel: &str) -> bool {
    let by_text = rel.is_empty()
        || Path::new(rel)
            .components()
            .any(|c| matches!(c, Component::ParentDir | Component::RootDir));
    by_text
        || match dir.join(rel).canonicalize() {
            Ok(real) => !real.starts_with(dir.canonicalize().unwrap()),
            Err(_) => {
                Path::new(rel)
                    .components()
                    .find(|c| *c != Component::CurDir)
                    == Some(Component::Normal("up".as_ref()))
            }
        }
}

/// Path pieces an author might combine to get out.
fn path() -> impl Strategy<Value = String> {
    let part = prop_oneof![
        Just(".."),
        Just("."),
        Just("up"),
        Just("secret.rhai"),
        Just("extract.rhai"),
        Just("estimate.rhai"),
        Just("catalog"),
        Just("card_arrival"),
        Just("tests"),
        Just(""),
        Just("nope"),
    ];
    (any::<bool>(), proptest::collection::vec(part, 1..7)).prop_map(|(absolute, parts)| {
        let joined = parts.join("/");
        if absolute {
            format!("/{joined}")
        } else {
            joined
        }
    })
}

/// YAML for a value nested `depth` levels deep in one of YAML's ways of nesting.
fn nested(depth: usize, shape: u8) -> String {
    match shape % 4 {
        0 => format!("x:\n{}1\n", "- ".repeat(depth)),
        1 => format!("x: {}{}\n", "[".repeat(depth), "]".repeat(depth)),
        2 => format!("x: {}1{}\n", "{a: ".repeat(depth), "}".repeat(depth)),
        // Each level indents one more space: keep the text within reason.
        _ => (0..depth.min(1_200)).fold(String::new(), |mut s, i| {
            s.push_str(&" ".repeat(i));
            s.push_str("a:\n");
            s
        }),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn mutated_workflows_compile_or_are_refused_without_panicking(
        edits in proptest::collection::vec(edit(), 1..6),
    ) {
        let yaml = edits.iter().fold(shipped_yaml(), |t, e| apply(&t, e));
        let tree = Tree::new(&yaml);
        if let Err(diags) = tree.compile() {
            prop_assert!(!diags.is_empty());
            for d in &diags {
                prop_assert!(!d.message.contains("secret_outside"), "{d}");
            }
        }
    }

    #[test]
    fn deep_nesting_is_refused_and_never_overflows(
        depth in prop_oneof![1..80usize, 60..70usize, 1_000..30_000usize],
        shape in any::<u8>(),
        top in any::<bool>(),
    ) {
        // Deep text appended at the top level, or in place of a node's description.
        let yaml = if top {
            format!("{}{}", shipped_yaml(), nested(depth, shape))
        } else {
            let text = nested(depth, shape).replacen("x:", "description:", 1);
            let indented: String = text.lines().map(|l| format!("    {l}\n")).collect();
            shipped_yaml().replacen(
                "    description: Order date from the form, else from the text, else ten days ago.\n",
                &indented,
                1,
            )
        };
        let tree = Tree::new(&yaml);
        let result = tree.compile();
        if depth > MAX_DEPTH {
            let diags = result.expect_err("too deep");
            prop_assert!(
                diags.iter().any(|d| d.code == Code::Limit && d.file.ends_with("workflow.yaml")),
                "{diags:?}"
            );
        }
    }

    #[test]
    fn script_paths_never_leave_the_folder(script in path()) {
        let yaml = shipped_yaml().replacen("script: extract.rhai", &format!("script: \"{script}\""), 1);
        let tree = Tree::new(&yaml);
        let result = tree.compile();
        if leaves(&tree.dir, &script) {
            let diags = result.expect_err("a path out of the folder compiles");
            prop_assert!(
                diags.iter().any(|d| d.code == Code::OutsideBundle
                    && d.node.as_deref() == Some("extract")
                    && d.message.contains("`script`")),
                "{script}: {diags:?}"
            );
        }
        if let Err(diags) = tree.compile() {
            for d in &diags {
                prop_assert!(!d.message.contains("secret_outside"), "{d}");
                prop_assert!(!d.message.contains("os error"), "{d}");
            }
        }
    }
}
