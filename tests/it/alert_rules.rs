//! The shipped alerting rules (packaging/monitoring/): `promtool check rules` accepts them,
//! their own `promtool test rules` file passes, the PrometheusRule in podmonitor.yaml is the
//! same rules, and `promtool test rules` fires the right alerts, with the right labels, on
//! the series a real daemon exported: its actions failing, its audit trail breaking, a
//! socket stuck for hours, and the agent no longer passing. Needs promtool (Debian's
//! `prometheus`): `.ci/run` installs it; under CI its absence is a failure.

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::support::{
    in_ci, leak_close_wait, poll, repo_root, root_or_skip, sockwarden, tool_works, TestNetns,
};

fn monitoring() -> PathBuf {
    repo_root().join("packaging/monitoring")
}

/// Whether promtool is here; under CI its absence fails the test.
fn promtool_or_skip() -> bool {
    let here = tool_works("promtool", &["--version"]);
    if !here {
        assert!(
            !in_ci(),
            "promtool missing: .ci/run installs Debian's `prometheus` package"
        );
        eprintln!("skipping: promtool missing (apt-get install prometheus)");
    }
    here
}

fn promtool(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("promtool")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run promtool");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "promtool {args:?} failed:\n{text}");
    text
}

#[test]
fn the_shipped_rules_check_and_pass_their_tests_and_the_prometheusrule_is_the_same() {
    if !promtool_or_skip() {
        return;
    }
    let dir = monitoring();
    let checked = promtool(&dir, &["check", "rules", "sockwarden.rules.yml"]);
    assert!(checked.contains("SUCCESS: 7 rules found"), "{checked}");
    let tested = promtool(&dir, &["test", "rules", "sockwarden.rules.test.yml"]);
    assert!(tested.contains("SUCCESS"), "{tested}");

    // The PrometheusRule's spec.groups is the rules file's groups, indented by two.
    let rules = fs::read_to_string(dir.join("sockwarden.rules.yml")).expect("rules");
    let groups = &rules[rules.find("groups:").expect("groups:")..];
    let indented: String = groups
        .lines()
        .map(|l| {
            if l.is_empty() {
                "\n".to_string()
            } else {
                format!("  {l}\n")
            }
        })
        .collect();
    let operator = fs::read_to_string(dir.join("podmonitor.yaml")).expect("podmonitor.yaml");
    assert!(
        operator.contains("kind: PodMonitor") && operator.contains("kind: PrometheusRule"),
        "{operator}"
    );
    assert!(
        operator.contains(&indented),
        "podmonitor.yaml's PrometheusRule differs from sockwarden.rules.yml"
    );

    // The dashboard is JSON and asks for series the daemon exports.
    let dashboard = fs::read_to_string(dir.join("sockwarden-dashboard.json")).expect("dashboard");
    let json: serde_json::Value = serde_json::from_str(&dashboard).expect("dashboard JSON");
    assert!(json["panels"].as_array().is_some_and(|p| !p.is_empty()));
    for series in [
        "sockwarden_stuck_sockets",
        "sockwarden_watched_sockets",
        "sockwarden_actions_total",
    ] {
        assert!(
            dashboard.contains(series),
            "the dashboard never shows {series}"
        );
    }
}

/// One exported sample: its family, its labels as written (`k="v",…`) and its value.
struct Sample {
    family: String,
    labels: String,
    value: f64,
}

impl Sample {
    fn label(&self, name: &str) -> String {
        let key = format!("{name}=\"");
        self.labels
            .split(&key)
            .nth(1)
            .and_then(|rest| rest.split('"').next())
            .unwrap_or_default()
            .to_string()
    }
}

/// The samples of `families` in an exposition (HELP/TYPE lines and histograms skipped).
fn samples(text: &str, families: &[&str]) -> Vec<Sample> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let (family, labels) = match series.split_once('{') {
                Some((f, rest)) => (f, rest.strip_suffix('}')?),
                None => (series, ""),
            };
            let value = value.parse().ok()?;
            families.contains(&family).then(|| Sample {
                family: family.to_string(),
                labels: labels.to_string(),
                value,
            })
        })
        .collect()
}

/// The rules without their annotations (prose, checked by the shipped test file): this test
/// is about which alerts fire, on which label sets.
fn rules_without_annotations(rules: &str) -> String {
    let mut out = String::new();
    let mut skip_deeper_than: Option<usize> = None;
    for line in rules.lines() {
        let indent = line.len() - line.trim_start().len();
        if let Some(depth) = skip_deeper_than {
            if line.trim().is_empty() || indent > depth {
                continue;
            }
            skip_deeper_than = None;
        }
        if line.trim() == "annotations:" {
            skip_deeper_than = Some(indent);
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

const FAILING_EXEC: &str = r#"
mode = "enforce"
[[rule]]
name = "notify"
states = ["close-wait"]
older_than = "0s"
action = "exec"
command = ["/bin/false"]
cooldown = "1s"
"#;

#[test]
fn alerts_fire_on_series_a_real_daemon_exported() {
    if !root_or_skip("alert rules on real series") || !promtool_or_skip() {
        return;
    }
    let work = tempfile::tempdir().expect("tempdir");
    let at = |name: &str| work.path().join(name);
    fs::write(at("policy.toml"), FAILING_EXEC).expect("policy");
    fs::write(at("sockwarden.toml"), "").expect("config");
    let audit_dir = at("audit");
    fs::create_dir(&audit_dir).expect("audit dir");
    let prom = at("sockwarden.prom");
    let ns = TestNetns::new();
    let _leak = leak_close_wait(&ns, "127.0.0.1:0", 1);
    let mut daemon = sockwarden()
        .args(["run", "--mode", "enforce", "--interval", "1s", "--config"])
        .arg(at("sockwarden.toml"))
        .arg("--policy")
        .arg(at("policy.toml"))
        .arg("--netns")
        .arg(ns.path())
        .arg("--audit-log")
        .arg(audit_dir.join("audit.jsonl"))
        .arg("--state-dir")
        .arg(at("state"))
        .arg("--metrics-textfile")
        .arg(&prom)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(File::create(at("daemon.log")).expect("log")))
        .spawn()
        .expect("spawn sockwarden run");
    let wait_for = |what: &str, check: &dyn Fn(&str) -> bool| -> String {
        let log = || {
            let daemon = fs::read_to_string(at("daemon.log")).unwrap_or_default();
            let metrics = fs::read_to_string(&prom).unwrap_or_default();
            format!("{daemon}\nmetrics:\n{metrics}")
        };
        poll(30, Duration::from_millis(100), what, log, || {
            let text = fs::read_to_string(&prom).unwrap_or_default();
            check(&text).then_some(text)
        })
    };
    // Its exec action fails (exit 1) ...
    wait_for("a failed exec action", &|t| {
        t.contains("outcome=\"failed\"")
    });
    // ... then its audit trail's directory is replaced by a file: the trail cannot be read.
    fs::rename(&audit_dir, at("audit.moved")).expect("move the audit dir away");
    fs::write(&audit_dir, "").expect("a file where the directory was");
    let text = wait_for("an audit write failure", &|t| {
        samples(t, &["sockwarden_audit_write_failures_total"])
            .first()
            .is_some_and(|s| s.value >= 1.0)
    });
    let _ = daemon.kill();
    let _ = daemon.wait();

    let families = [
        "sockwarden_stuck_sockets",
        "sockwarden_stuck_oldest_age_seconds",
        "sockwarden_actions_total",
        "sockwarden_passes_total",
        "sockwarden_failed_passes_total",
        "sockwarden_audit_write_failures_total",
        "sockwarden_last_pass_timestamp_seconds",
        "sockwarden_unseen_namespaces",
    ];
    let exported = samples(&text, &families);
    for family in families {
        assert!(
            exported.iter().any(|s| s.family == family),
            "the daemon exported no {family}:\n{text}"
        );
    }
    let failed = exported
        .iter()
        .find(|s| s.family == "sockwarden_actions_total" && s.label("outcome") == "failed")
        .expect("a failed action");
    let oldest: Vec<&Sample> = exported
        .iter()
        .filter(|s| s.family == "sockwarden_stuck_oldest_age_seconds")
        .collect();

    // Two scenarios on 1-minute samples, each series named exactly as exported plus the
    // labels a scrape adds. The values are the exported ones, carried forward in time as
    // the daemon would carry them: counters keep counting, the age keeps growing.
    let scrape = "instance=\"node-a\",job=\"sockwarden\"";
    let series = |s: &Sample, values: String| {
        let sep = if s.labels.is_empty() { "" } else { "," };
        format!(
            "      - series: '{}{{{}{sep}{scrape}}}'\n        values: '{values}'\n",
            s.family, s.labels
        )
    };
    let mut healthy = String::new();
    let mut stopped = String::new();
    for s in &exported {
        let v = s.value;
        let (running, dead) = match s.family.as_str() {
            // A pass a second; then the agent stops.
            "sockwarden_passes_total" => (format!("{v}+60x420"), format!("{v}x60")),
            // Rebased to the test's clock: the last pass is always now; then minute 0.
            "sockwarden_last_pass_timestamp_seconds" => ("0+60x420".into(), "0x60".into()),
            // Stuck since the daemon saw it, a minute older every minute.
            "sockwarden_stuck_oldest_age_seconds" => (format!("{v}+60x420"), format!("{v}x60")),
            // Failures start at minute 30 (the agent has been scraped for a while), as
            // exported, and recur.
            "sockwarden_actions_total" if s.label("outcome") == "failed" => {
                (format!("_x30 {v}+1x390"), "_x60".into())
            }
            "sockwarden_audit_write_failures_total" | "sockwarden_failed_passes_total" => {
                (format!("0x30 {v}+1x390"), "0x60".into())
            }
            _ => (format!("{v}x420"), format!("{v}x60")),
        };
        healthy.push_str(&series(s, running));
        stopped.push_str(&series(s, dead));
    }
    // The alerts `name` must have at `at`, each as its labels.
    let alerts = |at: &str, name: &str, each: &[Vec<(&str, String)>]| {
        let mut text = format!("      - eval_time: {at}\n        alertname: {name}\n");
        if each.is_empty() {
            text.push_str("        exp_alerts: []\n");
        } else {
            text.push_str("        exp_alerts:\n");
            for labels in each {
                text.push_str("          - exp_labels:\n");
                // An empty label is no label (`unit=""` groups carry none).
                for (k, v) in labels.iter().filter(|(_, v)| !v.is_empty()) {
                    text.push_str(&format!("              {k}: '{v}'\n"));
                }
            }
        }
        text
    };
    let alert = |at: &str, name: &str, labels: &[(&str, String)]| {
        if labels.is_empty() {
            alerts(at, name, &[])
        } else {
            alerts(at, name, &[labels.to_vec()])
        }
    };
    let node = ("instance", "node-a".to_string());
    let job = ("job", "sockwarden".to_string());
    let mut checks = String::new();
    for name in [
        "SockwardenActionsFailing",
        "SockwardenAuditWriteFailing",
        "SockwardenStuckSocketOld",
        "SockwardenNotPassing",
        "SockwardenNamespacesUnseen",
        "SockwardenStuckSocketsGrowing",
    ] {
        checks.push_str(&alert("20m", name, &[]));
    }
    checks.push_str(&alert(
        "40m",
        "SockwardenActionsFailing",
        &[
            ("severity", "warning".into()),
            node.clone(),
            ("action", failed.label("action")),
            ("rule", failed.label("rule")),
        ],
    ));
    checks.push_str(&alert(
        "40m",
        "SockwardenAuditWriteFailing",
        &[("severity", "critical".into()), node.clone(), job.clone()],
    ));
    checks.push_str(&alert("40m", "SockwardenNotPassing", &[]));
    // Each group's oldest socket crosses 6 h a little before minute 360 (plus `for: 10m`).
    let old_groups: Vec<Vec<(&str, String)>> = oldest
        .iter()
        .map(|o| {
            vec![
                ("severity", "warning".into()),
                node.clone(),
                ("state", o.label("state")),
                ("netns", o.label("netns")),
                ("unit", o.label("unit")),
            ]
        })
        .collect();
    checks.push_str(&alerts("380m", "SockwardenStuckSocketOld", &old_groups));
    checks.push_str(&alert("380m", "SockwardenNamespacesUnseen", &[]));
    let stopped_checks = alert("3m", "SockwardenNotPassing", &[])
        + &alert(
            "20m",
            "SockwardenNotPassing",
            &[("severity", "critical".into()), node, job],
        );

    let rules = fs::read_to_string(monitoring().join("sockwarden.rules.yml")).expect("rules");
    fs::write(at("rules.yml"), rules_without_annotations(&rules)).expect("write rules");
    let test = format!(
        "rule_files:\n  - rules.yml\nevaluation_interval: 1m\ntests:\n  \
         - interval: 1m\n    input_series:\n{healthy}    alert_rule_test:\n{checks}  \
         - interval: 1m\n    input_series:\n{stopped}    alert_rule_test:\n{stopped_checks}"
    );
    fs::write(at("test.yml"), &test).expect("write the promtool test");
    let out = Command::new("promtool")
        .args(["test", "rules", "test.yml"])
        .current_dir(work.path())
        .output()
        .expect("promtool");
    assert!(
        out.status.success(),
        "promtool test rules on the exported series failed:\n{}{}\n--- test.yml\n{test}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
