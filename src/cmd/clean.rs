//! `sockwarden clean`: a one-off cleanup. Scan, plan with the same engine and guards as the
//! daemon, print the plan, and act only with `--yes` or after a confirmation on a terminal.

use std::collections::HashMap;
use std::io::{self, BufRead, IsTerminal, Write};
use std::sync::Arc;
use std::time::SystemTime;

use crate::actions::{self, ActContext, ActionReport};
use crate::audit::{Actor, ActorKind};
use crate::cli::{exit, CleanArgs};
use crate::decide::{self, Decider, Planned};
use crate::engine::{self, Decision, HeldReason, OwnerKey, Plan, RunOptions};
use crate::filter::SocketFilter;
use crate::model::{Pid, StateSet, TcpState};
use crate::output;
use crate::policy::{self, Action, Mode, PolicySet};
use crate::scan::{self, Observations, Snapshot};
use crate::sys::System;

/// Run `clean`; `full`: print every row of the plan and the results (`-v`).
/// What `clean` says when it was not told what to do.
pub const NO_ACTION: &str = "clean needs to know what to do: --action ACTION (log, destroy, \
signal, restart, exec) with selectors, or --policy FILE for the rules of a policy; e.g. \
`sockwarden clean --state close-wait --older-than 10m --action destroy --dry-run`";

pub fn run(args: &CleanArgs, sys: &dyn System, full: bool) -> anyhow::Result<i32> {
    if args.action.is_none() && args.policy.is_empty() {
        eprintln!("sockwarden: error: {NO_ACTION}");
        return Ok(exit::ERROR);
    }
    let policies = match load_policies(args) {
        Ok(p) => p,
        Err(diagnostics) => {
            eprintln!("{diagnostics}");
            return Ok(exit::CONFIG);
        }
    };
    let mut filter = args.select.filter();
    if !args.policy.is_empty() && args.select.states.is_empty() {
        // With a policy, look at every state some rule is about.
        filter.states = rule_states(&policies);
    }
    let now = SystemTime::now();
    let listed = scan::list_namespaces(sys, &filter.netns)?;
    let observations = Observations::new();
    let decider = Decider {
        sys,
        namespaces: listed.namespaces,
        filter,
        observations: &observations,
        policies: &policies,
        options: RunOptions {
            mode: args.mode.or(args.dry_run.then_some(Mode::Observe)),
            lift_budgets: args.lift_budgets,
            ..RunOptions::new(Pid::own())
        },
        one_shot: true,
    };
    let history = decide::history(&args.audit.path, now, &policies, args.lift_budgets)?;
    let t = std::time::Instant::now();
    let mut planned = decider.decide(&history.history, now)?;
    tracing::debug!(
        peak_rss_kib = crate::sys::procfs::own_peak_rss_kib(),
        took_ms = t.elapsed().as_millis() as u64,
        sockets = planned.snap.sockets.len(),
        "plan-time decision"
    );
    let mut warnings = listed.warnings;
    warnings.append(&mut planned.snap.warnings);
    let mut unseen = listed.unseen;
    unseen.append(&mut planned.snap.unseen);
    for warning in &warnings {
        eprintln!("warning: {}", crate::output::escape(warning));
    }
    let incomplete = |code: i32| {
        if code == exit::OK && !unseen.is_empty() {
            eprintln!(
                "NOT seen: {}: sockets there were neither planned for nor touched",
                crate::output::escape(&unseen.join(", "))
            );
            exit::INCOMPLETE
        } else {
            code
        }
    };
    let Planned { snap, plan } = &planned;

    let mut out = io::stdout().lock();
    print_plan(&mut out, plan, snap, args.json, full, args.dry_run)?;
    let to_act = plan.to_act().count();
    let observed = plan
        .items
        .iter()
        .filter(|i| i.decision == Decision::Held(engine::HeldReason::Observe))
        .count();
    if to_act == 0 && observed == 0 {
        // A script reading --json always gets the summary line last.
        if args.json {
            output::json_line(&mut out, "summary", Summary::default())?;
        }
        if plan.items.is_empty() {
            eprintln!(
                "nothing to do: {} socket(s) matched, no action planned",
                snap.sockets.len()
            );
            return Ok(incomplete(exit::OK));
        }
        // Every planned action was held back by a guard: the operator asked for something
        // that was not done, which a script must be able to tell (the plan says why).
        eprintln!(
            "nothing done: {} planned action(s) held back by guards (see DECISION)",
            plan.items.len()
        );
        return Ok(exit::FOUND);
    }
    if to_act > 0 && !args.dry_run && !args.yes && !confirm(to_act)? {
        eprintln!("nothing done");
        return Ok(exit::OK);
    }

    let mut audit = args.audit.open()?;
    let mut ctx = ActContext {
        sys,
        audit: &mut audit,
        actor: Actor::current(ActorKind::Cli),
        policy_digest: policies.digest().to_string(),
        dry_run: args.dry_run,
        now: SystemTime::now(),
        plan_history: Some(history),
    };
    // Every item is decided again here, on what is true after the confirmation; each
    // result is printed (--json) or kept for the table as it comes.
    let mut results = Results::new(&mut out, args.json, full);
    actions::carry_out(planned, &decider, &mut ctx, &mut results)?;
    let all_succeeded = results.finish()?;
    Ok(incomplete(if all_succeeded {
        exit::OK
    } else {
        exit::FOUND
    }))
}

/// The results of `clean` as they come: with `--json` each is printed at once, else the
/// table's rows are kept (every one with `-v`; else the first that did not succeed, and
/// the first that did), and all of them counted.
struct Results<'o> {
    out: &'o mut dyn Write,
    json: bool,
    full: bool,
    failed: Vec<ActionReport>,
    succeeded: Vec<ActionReport>,
    summary: Summary,
    /// The first error writing a JSON line (a closed pipe): returned at the end.
    error: Option<io::Error>,
}

impl<'o> Results<'o> {
    fn new(out: &'o mut dyn Write, json: bool, full: bool) -> Results<'o> {
        Results {
            out,
            json,
            full,
            failed: Vec::new(),
            succeeded: Vec::new(),
            summary: Summary::default(),
            error: None,
        }
    }

    /// Print what is left (the table, or the summary line); whether every result
    /// succeeded.
    fn finish(self) -> io::Result<bool> {
        if let Some(e) = self.error {
            return Err(e);
        }
        let all = self.summary.not_succeeded == 0;
        if self.json {
            output::json_line(self.out, "summary", &self.summary)?;
            return Ok(all);
        }
        let mut shown = self.failed;
        shown.extend(self.succeeded);
        print_table(self.out, &shown, &self.summary)?;
        Ok(all)
    }
}

impl actions::Reports for Results<'_> {
    fn report(&mut self, report: ActionReport) {
        self.summary.add(&report);
        if self.json {
            if self.error.is_none() {
                if let Err(e) = output::json_line(self.out, "result", &report) {
                    self.error = Some(e);
                }
            }
            return;
        }
        let (kept, limit) = if report.succeeded() {
            (&mut self.succeeded, FIRST_ROWS)
        } else {
            (&mut self.failed, FULL_TABLE_LIMIT)
        };
        if self.full || kept.len() < limit {
            kept.push(report);
        }
    }
}

fn load_policies(args: &CleanArgs) -> Result<PolicySet, policy::Diagnostics> {
    if !args.policy.is_empty() {
        return policy::load_paths(&args.policy);
    }
    policy::load_str("command line", &ad_hoc_rule(args))
}

/// The ad-hoc rule as policy text, so it goes through the same validation (and its digest
/// into the audit log) as a policy file.
fn ad_hoc_rule(args: &CleanArgs) -> String {
    let filter: SocketFilter = args.select.filter();
    let mut rule = toml::Table::new();
    rule.insert("name".into(), "clean".into());
    let states: Vec<toml::Value> = filter
        .states
        .iter()
        .filter(|s| *s != crate::model::TcpState::Listen)
        .map(|s| s.name().into())
        .collect();
    rule.insert("states".into(), states.into());
    let older = filter
        .older_than
        .map(|d| format!("{}s", d.as_secs()))
        .unwrap_or_else(|| "0s".into());
    rule.insert("older_than".into(), older.into());
    if let Some(action) = args.action {
        rule.insert("action".into(), action.name().into());
    }
    if let Some(signal) = &args.signal {
        rule.insert("signal".into(), signal.clone().into());
    }
    if !args.command.is_empty() {
        rule.insert("command".into(), args.command.clone().into());
    }
    if let Some(n) = args.min_sockets {
        rule.insert("min_sockets".into(), i64::from(n).into());
    }
    if let Some(p) = &filter.process {
        rule.insert("process".into(), p.as_str().into());
    }
    if let Some(u) = &filter.unit {
        rule.insert("unit".into(), u.as_str().into());
    }
    if let Some(port) = filter.port {
        rule.insert("ports".into(), vec![i64::from(port)].into());
    }
    let mut doc = toml::Table::new();
    doc.insert("mode".into(), "enforce".into());
    doc.insert("rule".into(), vec![toml::Value::Table(rule)].into());
    toml::to_string(&doc).unwrap_or_default()
}

fn rule_states(policies: &PolicySet) -> StateSet {
    policies
        .rules
        .iter()
        .flat_map(|r| r.states.iter())
        .collect()
}

fn confirm(n: usize) -> anyhow::Result<bool> {
    if !io::stdin().is_terminal() {
        anyhow::bail!("refusing to act on {n} target(s) without confirmation: stdin is not a terminal; pass --yes to act, or --dry-run to record the plan only");
    }
    eprint!("Carry out {n} action(s)? [y/N] ");
    io::stderr().flush()?;
    let mut answer = String::new();
    io::stdin().lock().read_line(&mut answer)?;
    Ok(matches!(answer.trim(), "y" | "Y" | "yes" | "YES"))
}

/// Above this many items a table shows a summary and the first rows; `--json` or `-v`
/// give every row.
const FULL_TABLE_LIMIT: usize = 50;
/// Rows shown under a summary.
const FIRST_ROWS: usize = 10;

fn print_plan(
    out: &mut dyn Write,
    plan: &Plan,
    snap: &Snapshot,
    json: bool,
    full: bool,
    dry_run: bool,
) -> io::Result<()> {
    if json {
        for item in &plan.items {
            output::json_line(out, "plan", PlanLine::of(item, snap, dry_run))?;
        }
        return Ok(());
    }
    if dry_run {
        let would = plan
            .items
            .iter()
            .filter(|i| i.decision == Decision::Held(HeldReason::Observe))
            .count();
        writeln!(
            out,
            "Plan (dry run: nothing is touched): {} item(s), {would} would act",
            plan.items.len()
        )?;
    } else {
        writeln!(
            out,
            "Plan ({} mode): {} item(s), {} to act on",
            plan.mode.name(),
            plan.items.len(),
            plan.to_act().count()
        )?;
    }
    let summarize = !full && plan.items.len() > FULL_TABLE_LIMIT;
    if summarize {
        // Grouped on what the items share (a mass leak has 100,000; the words of each
        // group are written once): (rule, action, state, owner) -> per decision, (items,
        // oldest age, the first item).
        type Group<'p> = (
            &'p str,
            *const Action,
            Option<TcpState>,
            Option<&'p OwnerKey>,
        );
        let mut groups: HashMap<Group<'_>, Vec<(&Decision, usize, u64, usize)>> = HashMap::new();
        for (n, i) in plan.items.iter().enumerate() {
            let socket = i.socket_indices.first().and_then(|x| snap.sockets.get(*x));
            let key = (
                &*i.rule,
                Arc::as_ptr(&i.action),
                socket.map(|s| s.socket.state),
                i.owner.as_ref(),
            );
            let age = socket.map_or(0, |s| s.age.secs);
            let decisions = groups.entry(key).or_default();
            match decisions.iter_mut().find(|d| *d.0 == i.decision) {
                Some(d) => {
                    d.1 += 1;
                    d.2 = d.2.max(age);
                }
                None => decisions.push((&i.decision, 1, age, n)),
            }
        }
        // (items, (rule, action, state, owner, decision), oldest)
        type Row = (usize, [String; 5], u64);
        let mut rows: Vec<Row> = groups
            .into_values()
            .flatten()
            .map(|(decision, n, oldest, first)| {
                let item = &plan.items[first];
                let socket = item
                    .socket_indices
                    .first()
                    .and_then(|x| snap.sockets.get(*x));
                let words = [
                    item.rule.to_string(),
                    item.action.to_string(),
                    socket
                        .map(|s| s.socket.state.to_string())
                        .unwrap_or_default(),
                    owner_text(item, snap),
                    decision_text(decision, dry_run),
                ];
                (n, words, oldest)
            })
            .collect();
        rows.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
        let rows: Vec<Vec<String>> = rows
            .into_iter()
            .map(|(n, [rule, action, state, owner, decision], oldest)| {
                vec![
                    n.to_string(),
                    rule,
                    action,
                    state,
                    owner,
                    crate::duration::format(oldest),
                    decision,
                ]
            })
            .collect();
        output::table(
            out,
            &[
                "ITEMS", "RULE", "ACTION", "STATE", "OWNER", "OLDEST", "DECISION",
            ],
            &rows,
            None,
        )?;
        writeln!(
            out,
            "\nFirst {FIRST_ROWS} of {} (all of them with --json or -v):",
            plan.items.len()
        )?;
    }
    let shown = if summarize {
        FIRST_ROWS
    } else {
        plan.items.len()
    };
    let rows: Vec<Vec<String>> = plan
        .items
        .iter()
        .take(shown)
        .map(|i| {
            let owner = owner_text(i, snap);
            let target = i.target.text(&snap.sockets);
            vec![
                i.rule.to_string(),
                i.action.to_string(),
                target,
                owner,
                decision_text(&i.decision, dry_run),
                i.why(&snap.sockets),
            ]
        })
        .collect();
    output::table(
        out,
        &["RULE", "ACTION", "TARGET", "OWNER", "DECISION", "WHY"],
        &rows,
        None,
    )
}

/// The owner an item is about, as every table writes a process: its unit, else
/// `comm(pid)` (the command name as read from the process, so escaped when printed).
fn owner_text(item: &engine::PlanItem, snap: &Snapshot) -> String {
    match &item.owner {
        None => "-".into(),
        Some(engine::OwnerKey::Unit(unit)) => unit.clone(),
        Some(engine::OwnerKey::Process(id)) => item
            .socket_indices
            .iter()
            .filter_map(|&x| snap.sockets.get(x))
            .flat_map(|s| &s.owners)
            .find(|o| o.process.id == *id)
            .map(|o| format!("{}({})", o.process.comm, id.pid))
            .unwrap_or_else(|| format!("pid {}", id.pid)),
    }
}

/// A decision as the plan table says it: in a dry run, what passed every guard "would act"
/// (the engine holds it back as observe mode, which is not what the operator asked).
fn decision_text(decision: &Decision, dry_run: bool) -> String {
    match decision {
        Decision::Held(HeldReason::Observe) if dry_run => "dry run: would act".to_string(),
        other => other.to_string(),
    }
}

/// The results table: `shown` (all of them, or the kept ones when there are more than
/// [`FULL_TABLE_LIMIT`]), then the counts.
fn print_table(out: &mut dyn Write, shown: &[ActionReport], summary: &Summary) -> io::Result<()> {
    writeln!(out)?;
    let rows: Vec<Vec<String>> = shown
        .iter()
        .map(|r| {
            vec![
                r.rule.to_string(),
                r.action.to_string(),
                r.target.to_string(),
                r.result.to_string(),
                r.message.as_deref().unwrap_or_default().to_string(),
            ]
        })
        .collect();
    output::table(
        out,
        &["RULE", "ACTION", "TARGET", "RESULT", "DETAIL"],
        &rows,
        None,
    )?;
    if shown.len() < summary.total {
        writeln!(
            out,
            "({} of {} results shown; all of them with --json or -v)",
            shown.len(),
            summary.total
        )?;
    }
    writeln!(out, "{}", summary.line())
}

/// One plan item as `clean --json` prints it: the target as every line names it, and for
/// a socket target the socket object of `scan --json`.
#[derive(serde::Serialize)]
struct PlanLine<'a> {
    rule: &'a str,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    escalated: bool,
    action: &'a policy::Action,
    target: crate::record::TargetRef,
    #[serde(skip_serializing_if = "Option::is_none")]
    socket: Option<crate::record::SocketRecord>,
    /// The cookies of every socket behind the item.
    sockets: Vec<u64>,
    #[serde(flatten)]
    decision: &'a Decision,
    /// True in a dry run: nothing is touched, whatever the decision.
    dry_run: bool,
    why: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    argv: Option<&'a [String]>,
}

impl<'a> PlanLine<'a> {
    fn of(item: &'a engine::PlanItem, snap: &Snapshot, dry_run: bool) -> PlanLine<'a> {
        let behind: Vec<&crate::model::StuckSocket> = item
            .socket_indices
            .iter()
            .filter_map(|&i| snap.sockets.get(i))
            .collect();
        let socket = match item.target {
            engine::Target::Socket { .. } => behind.first().map(|s| snap.socket_record(s)),
            _ => None,
        };
        PlanLine {
            rule: &item.rule,
            escalated: item.escalated,
            action: &item.action,
            target: item.target.reference(&snap.sockets),
            socket,
            sockets: behind.iter().map(|s| s.socket.cookie.0).collect(),
            decision: &item.decision,
            dry_run,
            why: item.why(&snap.sockets),
            argv: item.exec.as_ref().map(|e| e.argv.as_slice()),
        }
    }
}

/// The last line of `clean --json`: how many of each result, and whether all succeeded.
#[derive(Default, serde::Serialize)]
struct Summary {
    total: usize,
    succeeded: usize,
    not_succeeded: usize,
    results: std::collections::BTreeMap<String, usize>,
}

impl Summary {
    fn add(&mut self, report: &ActionReport) {
        let name = report.result.name();
        match self.results.get_mut(name) {
            Some(n) => *n += 1,
            None => {
                self.results.insert(name.to_string(), 1);
            }
        }
        self.total += 1;
        if report.succeeded() {
            self.succeeded += 1;
        } else {
            self.not_succeeded += 1;
        }
    }

    /// The table's last line: the counts, most frequent first.
    fn line(&self) -> String {
        let mut parts: Vec<(usize, &String)> = self.results.iter().map(|(k, n)| (*n, k)).collect();
        parts.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(b.1)));
        parts
            .into_iter()
            .map(|(n, k)| format!("{n} {k}"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}
