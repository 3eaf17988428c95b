//! Every shipped policy loads, alone and next to the default; every invalid fixture in
//! `tests/fixtures/policies/invalid/` produces the message in its `.expected` file.

use std::path::{Path, PathBuf};

use sockwarden::policy::{load_paths, load_str, Mode};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn files_in(dir: &Path, ext: &str) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == ext))
        .collect();
    files.sort();
    files
}

#[test]
fn the_shipped_policy_directory_loads_and_is_conservative() {
    let set = load_paths(&[root().join("policies")]).unwrap_or_else(|d| panic!("{d}"));
    assert_eq!(set.mode, Mode::Observe, "the shipped default must not act");
    assert!(!set.rules.is_empty());
    assert!(
        set.rules.iter().all(|r| r.action.kind().name() == "log"),
        "the default only logs"
    );
    assert_eq!(set.digest().len(), 64);
}

#[test]
fn every_example_loads_alone_and_next_to_the_default() {
    let examples = files_in(&root().join("policies/examples"), "toml");
    assert!(examples.len() >= 3, "examples: {examples:?}");
    for example in examples {
        let alone = load_paths(std::slice::from_ref(&example))
            .unwrap_or_else(|d| panic!("{}:\n{d}", example.display()));
        assert!(!alone.rules.is_empty(), "{} has no rule", example.display());
        // The documented way to use an example: copy it next to default.toml.
        let together = load_paths(&[example.clone(), root().join("policies/default.toml")])
            .unwrap_or_else(|d| panic!("{} with default.toml:\n{d}", example.display()));
        assert_eq!(together.rules.len(), alone.rules.len() + 1);
    }
}

#[test]
fn every_invalid_fixture_yields_its_expected_message() {
    let dir = root().join("tests/fixtures/policies/invalid");
    let fixtures = files_in(&dir, "toml");
    assert!(fixtures.len() >= 20, "fixtures: {}", fixtures.len());
    let mut failures = Vec::new();
    for fixture in &fixtures {
        let name = fixture
            .file_name()
            .and_then(|n| n.to_str())
            .expect("utf-8 name");
        let text = std::fs::read_to_string(fixture).expect("read fixture");
        let expected_path = fixture.with_extension("expected");
        let expected = std::fs::read_to_string(&expected_path).unwrap_or_else(|e| {
            panic!(
                "{}: every invalid fixture needs a .expected file: {e}",
                expected_path.display()
            )
        });
        let rendered = match load_str(name, &text) {
            Ok(_) => {
                failures.push(format!("{name}: loaded without error"));
                continue;
            }
            Err(d) => d.to_string(),
        };
        // Each line of the .expected file must appear, in order.
        let mut from = 0;
        for line in expected.lines().filter(|l| !l.trim().is_empty()) {
            match rendered[from..].find(line) {
                Some(at) => from += at + line.len(),
                None => {
                    failures.push(format!(
                        "{name}: missing (in order) `{line}` in:\n{rendered}"
                    ));
                    break;
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn loading_every_invalid_fixture_at_once_reports_each_file() {
    let fixtures = files_in(&root().join("tests/fixtures/policies/invalid"), "toml");
    let d = load_paths(&fixtures).expect_err("invalid");
    for fixture in &fixtures {
        let name = fixture.display().to_string();
        assert!(
            d.iter().any(|diag| diag.file == name),
            "no diagnostic for {name}"
        );
    }
    assert!(d.len() >= fixtures.len());
}
