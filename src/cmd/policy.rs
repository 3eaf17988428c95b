//! `sockwarden policy check|explain`: validate policy files, and show for each stuck socket
//! which rule matches, what it would do, and why not.

use std::io::{self, Write};
use std::time::SystemTime;

use crate::audit;
use crate::cli::{exit, CheckArgs, ExplainArgs, PolicyCommand};
use crate::engine::{self, EngineInput, RunOptions};
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
    let snap = scan::scan(sys, &args.select.filter(), &Observations::new(), now)?;
    let history =
        audit::history(&args.audit.path, now - audit::HISTORY_LOOKBACK).unwrap_or_else(|e| {
            eprintln!("warning: no history for cooldowns and budgets: {e}");
            engine::History::default()
        });
    let names = snap.netns_names();
    let input = EngineInput {
        sockets: &snap.sockets,
        netns_names: &names,
        policies: &policies,
        history: &history,
        now,
        options: RunOptions::new(Pid::own()),
    };
    let explanations = engine::explain(&input);
    let mut out = io::stdout().lock();
    if args.json {
        output::json_lines(&mut out, &explanations)?;
    } else {
        let rows: Vec<Vec<String>> = explanations
            .iter()
            .map(|e| {
                vec![
                    e.state.name().to_string(),
                    e.local.to_string(),
                    e.remote.to_string(),
                    output::age_cell(&e.age),
                    e.owners.join(", "),
                    e.summary.clone(),
                ]
            })
            .collect();
        output::table(
            &mut out,
            &["STATE", "LOCAL", "REMOTE", "AGE", "OWNERS", "VERDICT"],
            &rows,
            None,
        )?;
    }
    out.flush()?;
    Ok(exit::OK)
}
