//! `sockwarden policy check|explain`: validate policy files, and show for each stuck socket
//! which rule matches, what it would do, and why not.

use std::io::{self, Write};
use std::path::PathBuf;
use std::time::SystemTime;

use clap::{Args, Subcommand};

use crate::audit;
use crate::cli::{exit, AuditLogArg, SelectArgs};
use crate::engine::{self, EngineInput, RunOptions};
use crate::model::Pid;
use crate::output;
use crate::policy;
use crate::scan::{self, Observations};
use crate::sys::System;

#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Validate policy files and directories; report every error at once with
    /// file:line:col and what to write instead. Exit 0 valid, 78 invalid.
    Check(CheckArgs),
    /// For each stuck socket: which rules match, whether the age threshold is met, and what
    /// would be done or why not (guard, cooldown, budget, protection). Read-only.
    Explain(Box<ExplainArgs>),
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// Policy files or directories (every *.toml inside, sorted).
    #[arg(required = true, value_name = "PATH")]
    pub paths: Vec<PathBuf>,
}

#[derive(Debug, Args)]
pub struct ExplainArgs {
    /// Policy files or directories.
    #[arg(long, value_name = "PATH", default_value = "/etc/sockwarden/policies")]
    pub policy: Vec<PathBuf>,

    #[command(flatten)]
    pub select: SelectArgs,

    /// Read past actions from this audit log, for cooldowns and budgets.
    #[command(flatten)]
    pub audit: AuditLogArg,

    /// JSON Lines: one explanation per socket.
    #[arg(long)]
    pub json: bool,
}

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
