//! One JSON contract: every line every command prints with `--json` carries `type` and
//! `schema` and validates against `docs/schema.json`; a plan item and its result name the
//! same target, and the socket object is the same in scan, explain, the plan and the audit.

use std::collections::BTreeSet;

use serde_json::Value;

use crate::support::{leak_close_wait, root_or_skip, run, TestNetns};

fn validator() -> jsonschema::Validator {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/schema.json");
    let text = std::fs::read_to_string(path).expect("read docs/schema.json");
    let schema: Value = serde_json::from_str(&text).expect("docs/schema.json is JSON");
    jsonschema::validator_for(&schema).expect("docs/schema.json is a valid JSON Schema")
}

/// Run `args`, check every stdout line against the schema, return them.
fn lines_of(validator: &jsonschema::Validator, args: &[&str]) -> Vec<Value> {
    let (code, out, err) = run(args);
    assert!(code == 0 || code == 1, "{args:?} exited {code}: {err}");
    out.lines()
        .map(|line| {
            let value: Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("{args:?}: not JSON ({e}): {line}"));
            let errors: Vec<String> = validator
                .iter_errors(&value)
                .map(|e| format!("{} at {}", e, e.instance_path))
                .collect();
            assert!(errors.is_empty(), "{args:?}: {line}\n{}", errors.join("\n"));
            value
        })
        .collect()
}

fn types(lines: &[Value]) -> BTreeSet<String> {
    lines
        .iter()
        .map(|l| l["type"].as_str().unwrap_or("?").to_string())
        .collect()
}

#[test]
fn the_schema_rejects_what_breaks_the_contract() {
    let v = validator();
    let good = serde_json::json!({"type": "summary", "schema": 1, "total": 1, "succeeded": 1,
        "not_succeeded": 0, "results": {"destroyed": 1}});
    assert!(v.is_valid(&good));
    for bad in [
        serde_json::json!({"schema": 1, "total": 1}),
        serde_json::json!({"type": "summary", "schema": 2, "total": 1, "succeeded": 1,
            "not_succeeded": 0, "results": {}}),
        serde_json::json!({"type": "summary", "schema": 1, "succeeded": 1}),
        serde_json::json!({"type": "result", "schema": 1, "rule": "r", "action": {"kind": "destroy"},
            "target": "socket 0xc1662", "result": "destroyed"}),
    ] {
        assert!(!v.is_valid(&bad), "accepted: {bad}");
    }
}

#[test]
fn every_json_line_of_every_command_follows_the_schema() {
    if !root_or_skip("the JSON contract") {
        return;
    }
    let v = validator();
    let dir = tempfile::tempdir().expect("tempdir");
    let log = dir.path().join("audit.jsonl");
    let log = log.to_str().expect("path");
    let ns = TestNetns::new();
    let server = leak_close_wait(&ns, "127.0.0.1:0", 3);
    let netns = ns.path();
    let netns = netns.to_str().expect("path");
    let port = server.addr().port().to_string();
    let policy = concat!(env!("CARGO_MANIFEST_DIR"), "/policies/default.toml");

    let scan = lines_of(&v, &["scan", "--json", "--netns", netns]);
    assert_eq!(types(&scan), BTreeSet::from(["socket".to_string()]));
    let summary = lines_of(&v, &["scan", "--json", "--summary", "--netns", netns]);
    assert_eq!(
        types(&summary),
        BTreeSet::from(["socket-group".to_string()])
    );
    let explain = lines_of(
        &v,
        &[
            "policy",
            "explain",
            "--json",
            "--policy",
            policy,
            "--netns",
            netns,
            "--audit-log",
            log,
        ],
    );
    assert_eq!(types(&explain), BTreeSet::from(["explanation".to_string()]));

    let clean = |extra: &[&str]| {
        let mut args = vec![
            "clean",
            "--json",
            "--netns",
            netns,
            "--port",
            &port,
            "--state",
            "close-wait",
            "--action",
            "destroy",
            "--audit-log",
            log,
        ];
        args.extend_from_slice(extra);
        lines_of(&v, &args)
    };
    let dry = clean(&["--dry-run"]);
    assert_eq!(
        dry.last().map(|l| &l["type"]),
        Some(&"summary".into()),
        "{dry:?}"
    );
    let done = clean(&["--yes"]);
    assert_eq!(
        types(&done),
        ["plan", "result", "summary"].map(String::from).into(),
        "{done:?}"
    );
    assert_eq!(done.last().expect("summary")["results"]["destroyed"], 3);

    // Joins: a result names its plan item's target; the plan's socket is scan's socket.
    let plans: Vec<&Value> = done.iter().filter(|l| l["type"] == "plan").collect();
    let results: Vec<&Value> = done.iter().filter(|l| l["type"] == "result").collect();
    assert_eq!(plans.len(), 3);
    for r in &results {
        let plan = plans
            .iter()
            .find(|p| p["target"] == r["target"])
            .unwrap_or_else(|| panic!("no plan item with the target of {r}"));
        let cookie = &plan["target"]["cookie"];
        assert_eq!(&plan["socket"]["cookie"], cookie);
        let scanned = scan
            .iter()
            .find(|s| &s["cookie"] == cookie)
            .unwrap_or_else(|| panic!("cookie {cookie} not in scan"));
        for field in ["netns_inode", "netns", "state", "local", "remote", "owners"] {
            assert_eq!(plan["socket"][field], scanned[field], "{field}");
        }
        assert_eq!(r["action"], plan["action"], "the same action object");
    }

    let show = lines_of(&v, &["audit", "show", "--json", "--audit-log", log]);
    assert_eq!(types(&show), BTreeSet::from(["audit-record".to_string()]));
    assert!(show.iter().any(|r| r["kind"] == "outcome"), "{show:?}");
    let audit_summary = lines_of(&v, &["audit", "summary", "--json", "--audit-log", log]);
    assert_eq!(
        types(&audit_summary),
        BTreeSet::from(["audit-summary".to_string()])
    );
    let verify = lines_of(&v, &["audit", "verify", "--json", "--audit-log", log]);
    assert_eq!(types(&verify), BTreeSet::from(["verify".to_string()]));
    let doctor = lines_of(&v, &["doctor", "--json"]);
    assert_eq!(types(&doctor), BTreeSet::from(["check".to_string()]));
}
