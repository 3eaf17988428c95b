//! `sockwarden audit`: verify, show and summarize the audit trail.
//! `show --json` prints the matching records in the stored format (one per line); `summary
//! --json` one [`Summary`] object; `verify --json` one [`VerifyReport`] object.

use std::io::{self, IsTerminal, Write};
use std::path::Path;
use std::time::SystemTime;

use anyhow::Context;

use crate::audit::{
    prune, read_trail, result_of, summarize, verify_with, Actor, ActorKind, AuditRecord, Mode,
    RecordKind, Summary, Tally, Trail, VerifyOptions, VerifyReport,
};
use crate::cli::AuditCommand;
use crate::duration;
use crate::output;

/// Run an audit subcommand; returns the exit code (see each subcommand's help).
pub fn run(cmd: AuditCommand) -> anyhow::Result<i32> {
    let stdout = io::stdout();
    let width = if stdout.is_terminal() {
        terminal_size::terminal_size().map(|(w, _)| usize::from(w.0))
    } else {
        None
    };
    let mut out = stdout.lock();
    run_to(cmd, &mut out, width)
}

/// [`run`], writing to `out` with tables cut to `width`.
pub fn run_to(cmd: AuditCommand, out: &mut dyn Write, width: Option<usize>) -> anyhow::Result<i32> {
    match cmd {
        AuditCommand::Verify(args) => {
            let options = VerifyOptions {
                key: args.log.key()?,
                no_anchor: args.no_anchor,
                from_seq: args.from_seq,
            };
            let report = verify_with(&args.log.path, &options);
            print_verify(out, &report, args.json)?;
            Ok(report.exit_code())
        }
        AuditCommand::Prune(args) => {
            let now = SystemTime::now();
            let before = crate::audit::parse_when(&args.before, now)
                .map_err(|e| anyhow::anyhow!("--before: {e}"))?;
            let mut log = args.log.open()?;
            let report = prune(
                &mut log,
                before,
                Actor::current(ActorKind::Cli),
                Mode::Enforce,
            )?;
            if args.json {
                output::json_line(out, "prune", &report)?;
            } else if report.removed.is_empty() {
                writeln!(
                    out,
                    "nothing to prune: no rotated file holds only records older than {}",
                    args.before
                )?;
            } else {
                writeln!(
                    out,
                    "removed {} file(s) ({} records); the trail now starts at seq {} (prune note seq {})",
                    report.removed.len(),
                    report.removed_records,
                    report.starts_at.unwrap_or(0),
                    report.note_seq.unwrap_or(0)
                )?;
                for f in &report.removed {
                    writeln!(out, "  {}", f.display())?;
                }
            }
            Ok(0)
        }
        AuditCommand::Show(args) => {
            let filter = args.filter.to_filter(SystemTime::now())?;
            let trail = read(&args.log.path)?;
            let kept = filter.apply(&trail.records);
            if args.json {
                // Re-serialized: the same fields in the same order as stored, `hash` included.
                output::json_lines(out, "audit-record", kept.iter())?;
            } else {
                show_table(out, &trail, &kept, width)?;
            }
            if kept.is_empty() {
                eprintln!("no audit records match in {}", args.log.path.display());
            }
            Ok(0)
        }
        AuditCommand::Summary(args) => {
            let filter = args.filter.to_filter(SystemTime::now())?;
            let trail = read(&args.log.path)?;
            let kept = filter.apply(&trail.records);
            let summary = summarize(&kept, &trail.records);
            if args.json {
                output::json_line(out, "audit-summary", &summary)?;
            } else {
                summary_text(out, &args.log.path, &summary, width)?;
            }
            Ok(0)
        }
    }
}

fn read(path: &Path) -> anyhow::Result<Trail> {
    let trail = read_trail(path)?;
    if let Some(first) = trail.skipped.first() {
        eprintln!(
            "warning: skipped {} unreadable line(s) (first: {}:{}: {}); run `sockwarden audit verify --audit-log {}`",
            trail.skipped.len(),
            first.file.display(),
            first.line,
            first.reason,
            path.display()
        );
    }
    Ok(trail)
}

fn print_verify(out: &mut dyn Write, report: &VerifyReport, json: bool) -> anyhow::Result<()> {
    if json {
        output::json_line(out, "verify", report)?;
    } else if report.exit_code() == 2 {
        eprintln!("sockwarden: error: {report}");
    } else {
        writeln!(out, "{report}").context("writing the report")?;
    }
    Ok(())
}

/// `2026-11-23T14:05:09.123Z` → `2026-11-23 14:05:09`.
fn short_time(t: &str) -> String {
    match t.get(..19) {
        Some(s) => s.replacen('T', " ", 1),
        None => t.to_string(),
    }
}

fn action_cell(r: &AuditRecord) -> String {
    if let Some(n) = &r.note {
        return format!(
            "note:{}",
            serde_json::to_value(n.event)
                .ok()
                .and_then(|v| v.as_str().map(String::from))
                .unwrap_or_default()
        );
    }
    let Some(a) = &r.action else {
        return String::new();
    };
    let mut cell = a.kind.name().to_string();
    for extra in [a.signal.as_deref(), a.unit.as_deref()]
        .into_iter()
        .flatten()
    {
        cell.push(' ');
        cell.push_str(extra);
    }
    if let Some(cmd) = &a.command {
        cell.push(' ');
        cell.push_str(&cmd.join(" "));
    }
    cell
}

fn target_cell(r: &AuditRecord) -> String {
    if let Some(t) = &r.target {
        let ns = if t.netns == "host" {
            String::new()
        } else {
            format!(" [{}]", t.netns)
        };
        let bound = if t.age_is_lower_bound { "≥" } else { "" };
        return format!(
            "{} → {} {} {bound}{} ({}){ns}",
            t.local,
            t.remote,
            t.state,
            duration::format(t.age_secs),
            t.age_source.name()
        );
    }
    if let Some(p) = &r.process {
        return format!("pid {} ({})", p.pid, p.comm);
    }
    r.unit.clone().unwrap_or_default()
}

fn owner_cell(r: &AuditRecord) -> String {
    if let Some(t) = &r.target {
        let Some(first) = t.owners.first() else {
            return "(no owner)".into();
        };
        let mut cell = format!("{}({})", first.comm, first.pid);
        if let Some(u) = first.unit.as_deref().or(first.container.as_deref()) {
            cell.push(' ');
            cell.push_str(u);
        }
        if t.owners.len() > 1 {
            cell.push_str(&format!(" +{} more", t.owners.len() - 1));
        }
        return cell;
    }
    if let Some(p) = &r.process {
        return format!(
            "{}({}){}",
            p.comm,
            p.pid,
            p.unit
                .as_deref()
                .map(|u| format!(" {u}"))
                .unwrap_or_default()
        );
    }
    String::new()
}

fn outcome_cell(
    r: &AuditRecord,
    results: &std::collections::HashMap<crate::audit::AnswerKey, &str>,
) -> String {
    match r.kind {
        RecordKind::Outcome => match &r.outcome {
            Some(o) => {
                let mut cell = o.result.name().to_string();
                if let Some(e) = o.errno {
                    cell.push_str(&format!(" (errno {e})"));
                }
                if let Some(m) = &o.message {
                    cell.push_str(": ");
                    cell.push_str(m);
                }
                cell
            }
            None => String::new(),
        },
        RecordKind::Intent => match result_of(r, results) {
            Some(result) => format!("→ {result}"),
            None => "(no outcome recorded)".into(),
        },
        RecordKind::DryRun => "(dry run)".into(),
        RecordKind::Note => r
            .note
            .as_ref()
            .and_then(|n| n.detail.clone())
            .unwrap_or_default(),
    }
}

fn show_table(
    out: &mut dyn Write,
    trail: &Trail,
    kept: &[&AuditRecord],
    width: Option<usize>,
) -> io::Result<()> {
    let results = crate::audit::outcome_results(&trail.records);
    let rows: Vec<Vec<String>> = kept
        .iter()
        .map(|r| {
            vec![
                short_time(&r.time),
                r.seq.to_string(),
                r.kind.name().to_string(),
                r.rule.clone().unwrap_or_else(|| "-".into()),
                action_cell(r),
                target_cell(r),
                owner_cell(r),
                outcome_cell(r, &results),
            ]
        })
        .collect();
    output::table(
        out,
        &[
            "TIME (UTC)",
            "SEQ",
            "KIND",
            "RULE",
            "ACTION",
            "TARGET",
            "OWNER",
            "OUTCOME",
        ],
        &rows,
        width,
    )
}

fn counts(map: &std::collections::BTreeMap<String, u64>) -> String {
    let mut v: Vec<(&String, &u64)> = map.iter().collect();
    v.sort_by(|a, b| b.1.cmp(a.1).then_with(|| a.0.cmp(b.0)));
    v.iter()
        .map(|(k, n)| format!("{k} {n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn tally_table(
    out: &mut dyn Write,
    title: &str,
    tallies: &[Tally],
    width: Option<usize>,
) -> io::Result<()> {
    let rows: Vec<Vec<String>> = tallies
        .iter()
        .map(|t| {
            vec![
                t.key.clone(),
                t.actions.to_string(),
                counts(&t.by_action),
                counts(&t.by_outcome),
            ]
        })
        .collect();
    output::table(
        out,
        &[title, "ACTIONS", "BY ACTION", "BY OUTCOME"],
        &rows,
        width,
    )
}

fn summary_text(
    out: &mut dyn Write,
    path: &Path,
    s: &Summary,
    width: Option<usize>,
) -> io::Result<()> {
    let span = match (&s.first_time, &s.last_time) {
        (Some(a), Some(b)) => format!(", {} .. {} UTC", short_time(a), short_time(b)),
        _ => String::new(),
    };
    writeln!(
        out,
        "audit trail {}: {} matching records{span}",
        path.display(),
        s.records
    )?;
    writeln!(
        out,
        "{} interventions (intents), {} outcomes, {} dry-run records, {} notes",
        s.intents, s.outcomes, s.dry_runs, s.notes
    )?;
    writeln!(out)?;
    tally_table(out, "RULE", &s.per_rule, width)?;
    writeln!(out)?;
    tally_table(out, "UNIT", &s.per_unit, width)?;
    writeln!(out)?;
    let rows: Vec<Vec<String>> = s
        .per_outcome
        .iter()
        .map(|(k, n)| vec![k.clone(), n.to_string()])
        .collect();
    output::table(out, &["OUTCOME", "COUNT"], &rows, width)?;
    if !s.dry_runs_per_rule.is_empty() {
        writeln!(out)?;
        let rows: Vec<Vec<String>> = s
            .dry_runs_per_rule
            .iter()
            .map(|(k, n)| vec![k.clone(), n.to_string()])
            .collect();
        output::table(out, &["DRY-RUN RULE", "WOULD ACT"], &rows, width)?;
    }
    writeln!(out)?;
    let peak = s
        .timeline
        .iter()
        .map(|h| h.actions)
        .max()
        .unwrap_or(0)
        .max(1);
    let rows: Vec<Vec<String>> = s
        .timeline
        .iter()
        .map(|h| {
            let bar = "#".repeat(((h.actions * 30).div_ceil(peak)) as usize);
            vec![
                short_time(&h.hour)[..16].to_string(),
                h.actions.to_string(),
                h.dry_runs.to_string(),
                counts(&h.by_outcome),
                bar,
            ]
        })
        .collect();
    output::table(
        out,
        &["HOUR (UTC)", "ACTIONS", "DRY-RUNS", "OUTCOMES", ""],
        &rows,
        width,
    )
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;
    use crate::audit::{ActionKind, DEFAULT_AUDIT_LOG};
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(subcommand)]
        cmd: AuditCommand,
    }

    #[test]
    fn flags_parse_into_a_filter() {
        let cli = Cli::try_parse_from([
            "audit",
            "show",
            "--audit-log",
            "/tmp/x.jsonl",
            "--since",
            "2h",
            "--action",
            "destroy",
            "--action",
            "restart",
            "--unit",
            "api*",
            "--json",
        ])
        .expect("parses");
        let AuditCommand::Show(args) = cli.cmd else {
            panic!("show")
        };
        assert_eq!(args.log.path, PathBuf::from("/tmp/x.jsonl"));
        assert!(args.json);
        let now = SystemTime::now();
        let f = args.filter.to_filter(now).expect("filter");
        assert_eq!(
            f.since,
            now.checked_sub(std::time::Duration::from_secs(7200))
        );
        assert_eq!(f.actions, [ActionKind::Destroy, ActionKind::Restart]);
        assert!(f.unit.is_some_and(|g| g.matches("api.service")));

        let err =
            Cli::try_parse_from(["audit", "show", "--action", "nuke"]).expect_err("bad action");
        assert!(
            err.to_string()
                .contains("[possible values: log, destroy, signal, restart, exec]"),
            "{err}"
        );
        let err =
            Cli::try_parse_from(["audit", "show", "--unit", "api[.service"]).expect_err("bad glob");
        assert!(
            err.to_string().contains("invalid glob `api[.service`"),
            "{err}"
        );
        let cli =
            Cli::try_parse_from(["audit", "summary", "--since", "last tuesday"]).expect("parses");
        let AuditCommand::Summary(args) = cli.cmd else {
            panic!("summary")
        };
        let err = args
            .filter
            .to_filter(SystemTime::now())
            .expect_err("bad time");
        assert!(
            err.to_string()
                .starts_with("--since: cannot read `last tuesday`"),
            "{err}"
        );
    }

    #[test]
    fn the_default_path_is_the_documented_one() {
        let cli = Cli::try_parse_from(["audit", "verify"]).expect("parses");
        let AuditCommand::Verify(args) = cli.cmd else {
            panic!("verify")
        };
        if std::env::var_os("SOCKWARDEN_AUDIT_LOG").is_none() {
            assert_eq!(args.log.path, PathBuf::from(DEFAULT_AUDIT_LOG));
        }
    }
}
