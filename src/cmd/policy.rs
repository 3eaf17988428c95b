//! `sockwarden policy check|explain`: validate policy files, and show for each stuck socket
//! which rule matches, what it would do, and why not.

use std::io::{self, Write};
use std::time::SystemTime;

use crate::cli::{exit, CheckArgs, ExplainArgs, PolicyCommand};
use crate::decide::{self, Decider};
use crate::engine::RunOptions;
use crate::model::Pid;
use crate::output;
use crate::policy;
use crate::scan::{self, Observations};
use crate::sys::System;

pub fn run(cmd: &PolicyCommand, sys: &dyn System) -> anyhow::Result<i32> {
    match cmd {
        PolicyCommand::Check(args) => check(args),
        PolicyCommand::Explain(args) => explain(args, sys),
    }
}

fn check(args: &CheckArgs) -> anyhow::Result<i32> {
    match policy::load_paths(&args.paths) {
        Ok(set) => {
            println!(
                "ok: {} rule(s) in {} file(s), mode {}, digest {}",
                set.rules.len(),
                set.files.len(),
                set.mode.name(),
                set.digest()
            );
            Ok(exit::OK)
        }
        Err(diagnostics) => {
            eprintln!("{diagnostics}");
            Ok(exit::CONFIG)
        }
    }
}

fn explain(args: &ExplainArgs, sys: &dyn System) -> anyhow::Result<i32> {
    let policies = match policy::load_paths(&args.policy) {
        Ok(p) => p,
        Err(diagnostics) => {
            eprintln!("{diagnostics}");
            return Ok(exit::CONFIG);
        }
    };
    let now = SystemTime::now();
    let filter = args.select.filter();
    let listed = scan::list_namespaces(sys, &filter.netns)?;
    for warning in &listed.warnings {
        eprintln!("warning: {}", output::escape(warning));
    }
    let observations = Observations::new();
    let decider = Decider {
        sys,
        namespaces: listed.namespaces,
        filter,
        observations: &observations,
        policies: &policies,
        options: RunOptions::new(Pid::own()),
        one_shot: true,
    };
    let history = decide::history(&args.audit.path, now, &policies, false)?;
    let snap = decider.scan(now)?;
    for warning in &snap.warnings {
        eprintln!("warning: {}", output::escape(warning));
    }
    let explanations = decider.explain(&snap, &history.history, now);
    let mut out = io::stdout().lock();
    if args.json {
        // The contract's socket object, then what the rules make of it.
        #[derive(serde::Serialize)]
        struct ExplainLine<'a> {
            socket: crate::record::SocketRecord,
            rules: &'a [crate::engine::RuleExplanation],
            summary: &'a str,
        }
        for e in &explanations {
            let Some(stuck) = snap.sockets.get(e.index) else {
                continue;
            };
            let line = ExplainLine {
                socket: snap.socket_record(stuck),
                rules: &e.rules,
                summary: &e.summary,
            };
            output::json_line(&mut out, "explanation", &line)?;
        }
    } else {
        let rows: Vec<Vec<String>> = explanations
            .iter()
            .map(|e| {
                // The rule that decides: the one that fires, else the first that matches.
                let rule = e.rules.iter().find(|r| r.fires).or(e.rules.first());
                vec![
                    e.netns.clone(),
                    e.state.name().to_string(),
                    e.local.to_string(),
                    e.remote.to_string(),
                    e.owners.join(", "),
                    rule.map_or("-".into(), |r| r.rule.clone()),
                    rule.map_or_else(|| output::age_cell(&e.age), |r| r.threshold.clone()),
                    e.summary.clone(),
                ]
            })
            .collect();
        output::table(
            &mut out,
            &[
                "NETNS",
                "STATE",
                "LOCAL",
                "REMOTE",
                "OWNERS",
                "RULE",
                "AGE (EVIDENCE) VS THRESHOLD",
                "VERDICT",
            ],
            &rows,
            None,
        )?;
    }
    out.flush()?;
    Ok(exit::OK)
}
