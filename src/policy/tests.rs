//! Loader tests: what a valid policy becomes, how several files combine, and that every
//! mistake is reported at once. One message per mistake lives in
//! `tests/fixtures/policies/invalid/`.

use std::path::PathBuf;

use super::*;
use crate::model::TcpState;

fn load(text: &str) -> PolicySet {
    match load_str("p.toml", text) {
        Ok(p) => p,
        Err(d) => panic!("policy unexpectedly invalid:\n{d}"),
    }
}

fn errors(text: &str) -> Diagnostics {
    match load_str("p.toml", text) {
        Ok(_) => panic!("policy unexpectedly valid:\n{text}"),
        Err(d) => d,
    }
}

fn files(list: &[(&str, &str)]) -> (tempfile::TempDir, Vec<PathBuf>) {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut paths = Vec::new();
    for (name, text) in list {
        let p = dir.path().join(name);
        std::fs::write(&p, text).expect("write");
        paths.push(p);
    }
    (dir, paths)
}

#[test]
fn a_full_rule_loads_every_key() {
    let p = load(
        r#"
mode = "enforce"

[guards]
max_destroys_per_minute = 50
max_signals_per_minute = 2
max_execs_per_minute = 3
max_restarts_per_unit_per_hour = 2
max_fraction_per_owner = 0.5
protect_ssh = false
never_touch_processes = ["postgres*"]
never_touch_units = "db-*.service"
never_touch_ports = [5432, "6000-6100"]
never_touch_uids = [0]

[[rule]]
name = "api-close-wait-leak"
description = "the API leaks CLOSE_WAIT"
states = ["close-wait", "CLOSE_WAIT", "fin-wait2"]
older_than = "1h30m"
action = "exec"
command = ["/usr/local/bin/notify", "{pid}", "{local}", "{{literal}}"]
cooldown = "5m"
min_sockets = 20
ports = [8080]
local_ports = ["8000-8100"]
remote_ports = [443]
local_cidrs = ["10.0.0.0/8", "::1"]
remote_cidrs = "192.168.0.0/16"
process = ["java", "python3*"]
exe = "/usr/lib/jvm/*/bin/java"
cmdline = "*api.jar*"
unit = "api*.service"
uid = 1000
netns = ["host", "ci-*"]

[rule.escalate]
action = "signal"
signal = "term"
after = "15m"
"#,
    );
    assert_eq!(p.mode, Mode::Enforce);
    let g = &p.guards;
    assert_eq!(
        (
            g.max_destroys_per_minute,
            g.max_signals_per_minute,
            g.max_execs_per_minute,
            g.max_restarts_per_unit_per_hour
        ),
        (50, 2, 3, 2)
    );
    assert_eq!(g.max_fraction_per_owner, 0.5);
    assert!(!g.protect_ssh);
    assert_eq!(g.never_touch_units[0].as_str(), "db-*.service");
    assert_eq!(
        g.never_touch_ports,
        vec![
            PortRange::single(5432),
            PortRange {
                first: 6000,
                last: 6100
            }
        ]
    );
    assert_eq!(g.never_touch_uids, vec![0]);
    let r = &p.rules[0];
    assert_eq!(r.name, "api-close-wait-leak");
    assert_eq!(r.defined_at, "p.toml:16");
    assert_eq!(
        r.states.iter().collect::<Vec<_>>(),
        vec![TcpState::FinWait2, TcpState::CloseWait]
    );
    assert_eq!(r.older_than.as_secs(), 5400);
    assert_eq!(r.cooldown.map(PolicyDuration::as_secs), Some(300));
    assert_eq!(r.min_sockets, Some(20));
    assert!(matches!(&r.action, Action::Exec { command } if command.len() == 4));
    let e = r.escalate.as_ref().expect("escalation");
    assert_eq!(e.action.to_string(), "signal SIGTERM");
    assert_eq!((e.after.as_secs(), e.within.as_secs()), (900, 900));
    let s = &r.selectors;
    assert_eq!(s.local_cidrs.len(), 2);
    assert_eq!(s.remote_cidrs[0].to_string(), "192.168.0.0/16");
    assert_eq!(s.process.len(), 2);
    assert_eq!(s.uid, vec![1000]);
    assert_eq!(s.netns.len(), 2);
    // Serializes for `policy show --json`.
    let json = serde_json::to_value(&p).expect("json");
    assert_eq!(json["rules"][0]["older_than"], "1h30m");
    assert_eq!(json["rules"][0]["action"]["kind"], "exec");
    assert_eq!(json["rules"][0]["states"][1], "close-wait");
}

#[test]
fn defaults_are_conservative() {
    let p = load("[[rule]]\nname = \"a\"\nstates = [\"close-wait\"]\nolder_than = \"1h\"\naction = \"log\"\n");
    assert_eq!(p.mode, Mode::Observe);
    assert_eq!(p.guards, Guards::default());
    assert!(p.guards.protect_ssh);
    assert_eq!(p.guards.max_restarts_per_unit_per_hour, 1);
    // An empty file is a valid policy that does nothing.
    assert!(load("").rules.is_empty());
}

#[test]
fn every_error_in_a_file_is_reported_in_reading_order() {
    let d = errors(
        r#"mode = "enforced"
[guards]
max_destroys = 3
[[rule]]
name = "a"
states = ["close_wiat"]
older-than = "10m"
action = "kill"
[[rule]]
name = "b"
states = ["fin-wait-2"]
older_than = 600
action = "signal"
"#,
    );
    let lines: Vec<usize> = d.iter().filter_map(|d| d.line).collect();
    assert_eq!(lines, vec![1, 3, 6, 7, 8, 12, 13], "{d}");
    let text = d.to_string();
    assert!(text.contains("help: did you mean `enforce`?"), "{text}");
    assert!(
        text.contains("help: did you mean `max_destroys_per_minute`?"),
        "{text}"
    );
    assert!(text.contains("help: did you mean `older_than`?"), "{text}");
    // The misspelt key is not reported a second time as a missing one.
    assert!(!text.contains("rule has no `older_than`"), "{text}");
    assert!(
        text.ends_with("7 errors in policy; nothing was loaded"),
        "{text}"
    );
    assert_eq!(d.len(), 7);
}

#[test]
fn syntax_errors_are_located() {
    let d = errors("mode = \"observe\"\n[[rule]\nname = \"a\"\n");
    let first = d.iter().next().expect("one");
    assert_eq!(first.line, Some(2));
    assert!(first.message.starts_with("invalid TOML"), "{d}");
}

#[test]
fn files_must_agree_on_mode_and_guards() {
    let (_dir, paths) = files(&[
        ("a.toml", "mode = \"observe\"\n[guards]\nmax_destroys_per_minute = 10\nnever_touch_ports = [22]\n"),
        ("b.toml", "mode = \"enforce\"\n[guards]\nmax_destroys_per_minute = 10\nnever_touch_ports = [22, 80]\n"),
    ]);
    let d = load_paths(&paths).expect_err("conflict");
    let text = d.to_string();
    assert_eq!(d.len(), 2, "{text}");
    assert!(
        text.contains("b.toml:1:8: error: `mode` is \"enforce\" here but \"observe\" in"),
        "{text}"
    );
    assert!(text.contains("a.toml:1:8"), "{text}");
    assert!(
        text.contains("`guards.never_touch_ports` is [22, 80] here but [22] in"),
        "{text}"
    );
    // Equal values in several files are fine.
    let (_dir, paths) = files(&[
        ("a.toml", "mode = \"enforce\"\n[guards]\nmax_destroys_per_minute = 10\n"),
        ("b.toml", "mode = \"enforce\"\n[guards]\nmax_destroys_per_minute = 10\nmax_signals_per_minute = 1\n"),
    ]);
    let p = load_paths(&paths).expect("agreeing files");
    assert_eq!(
        (
            p.mode,
            p.guards.max_destroys_per_minute,
            p.guards.max_signals_per_minute
        ),
        (Mode::Enforce, 10, 1)
    );
}

#[test]
fn rule_names_are_unique_across_files_and_errors_span_files() {
    let rule = "[[rule]]\nname = \"leak\"\nstates = [\"close-wait\"]\nolder_than = \"1h\"\naction = \"log\"\n";
    let (_dir, paths) = files(&[
        ("a.toml", rule),
        ("b.toml", &format!("{rule}[[rule]]\nname = 7\n")),
    ]);
    let d = load_paths(&paths).expect_err("duplicate");
    let text = d.to_string();
    assert!(
        text.contains("b.toml:2:8: error: rule name `leak` is already used in"),
        "{text}"
    );
    assert!(text.contains("a.toml:2:8"), "{text}");
    assert!(
        text.contains("b.toml:7:8: error: `name` must be a string, found integer"),
        "{text}"
    );
}

#[test]
fn a_directory_loads_its_toml_files_sorted_and_the_digest_follows_the_bytes() {
    let rule = |n: &str| {
        format!("[[rule]]\nname = \"{n}\"\nstates = [\"close-wait\"]\nolder_than = \"1h\"\naction = \"log\"\n")
    };
    let (dir, _) = files(&[
        ("20-b.toml", &rule("b")),
        ("10-a.toml", &rule("a")),
        ("notes.txt", "not a policy"),
    ]);
    let p = load_paths(&[dir.path().to_path_buf()]).expect("dir");
    assert_eq!(
        p.rules.iter().map(|r| r.name.as_str()).collect::<Vec<_>>(),
        vec!["a", "b"]
    );
    assert_eq!(p.files.len(), 2);
    assert_eq!(p.digest().len(), 64);
    let again = load_paths(&[dir.path().to_path_buf()]).expect("dir");
    assert_eq!(p.digest(), again.digest());
    std::fs::write(dir.path().join("20-b.toml"), rule("b") + "# changed\n").expect("write");
    let changed = load_paths(&[dir.path().to_path_buf()]).expect("dir");
    assert_ne!(p.digest(), changed.digest());

    let empty = tempfile::tempdir().expect("tempdir");
    let d = load_paths(&[
        empty.path().to_path_buf(),
        empty.path().join("missing.toml"),
    ])
    .expect_err("empty");
    assert_eq!(d.len(), 2);
    assert!(
        d.to_string()
            .contains("directory holds no *.toml policy file"),
        "{d}"
    );
    assert!(d.to_string().contains("cannot read policy file"), "{d}");
}

#[test]
fn exec_arguments_render_placeholders_and_braces() {
    let field = |n: &str| (n == "pid").then(|| "42".to_string());
    assert_eq!(render_arg("pid={pid}", &field), Ok("pid=42".to_string()));
    assert_eq!(render_arg("{{x}}", &field), Ok("{x}".to_string()));
    assert!(render_arg("{nope}", &field).is_err());
    assert!(render_arg("{pid", &field).is_err());
    assert!(render_arg("}", &field).is_err());
}

#[test]
fn action_and_mode_names_parse_back() {
    for a in ActionKind::ALL {
        assert_eq!(a.name().parse::<ActionKind>(), Ok(a));
        assert_eq!(serde_json::to_value(a).expect("json"), a.name());
    }
    for m in Mode::ALL {
        assert_eq!(m.name().parse::<Mode>(), Ok(m));
        assert_eq!(serde_json::to_value(m).expect("json"), m.name());
    }
    assert_eq!(" Destroy ".parse::<ActionKind>(), Ok(ActionKind::Destroy));
    let err = "nuke".parse::<ActionKind>().expect_err("unknown");
    assert_eq!(
        err.to_string(),
        "unknown action `nuke`; expected one of: log, destroy, signal, restart, exec"
    );
    let err = "act".parse::<Mode>().expect_err("unknown");
    assert_eq!(
        err.to_string(),
        "unknown mode `act`; expected one of: observe, enforce"
    );
}
