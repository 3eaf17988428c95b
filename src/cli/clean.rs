//! `sockwarden clean`'s flags.

use std::path::PathBuf;

use clap::Args;

use super::{AuditLogArg, SelectArgs};
use crate::policy::{self, Mode};

const CLEAN_HELP: &str = "\
Either --policy FILE (rules, guards and mode from the file) or selectors with --action
(one ad-hoc rule, mode enforce, default guards). The plan is printed first; nothing is
touched without --yes or a `y` at the prompt. Every action is recorded in the audit log:
an intent (fsynced) before, an outcome after. If the intent cannot be written, nothing is
done.

Examples:
  sockwarden clean --state close-wait --older-than 10m --process java --action destroy
  sockwarden clean --unit api.service --action restart --dry-run
  sockwarden clean --port 8080 --action signal --signal SIGUSR1 --yes
  sockwarden clean --policy /etc/sockwarden/policies --yes

Exit codes: 0 every action succeeded (or nothing to do), 1 some action did not succeed or
was refused, 2 error (nothing or only part done: see the report and the audit log),
78 invalid policy.";

#[derive(Debug, Args)]
#[command(after_help = CLEAN_HELP)]
pub struct CleanArgs {
    #[command(flatten)]
    pub select: SelectArgs,

    /// Policy files or directories to take rules, guards and mode from (instead of --action).
    #[arg(long, value_name = "PATH", conflicts_with_all = ["action", "signal", "command"])]
    pub policy: Vec<PathBuf>,

    /// What to do with the selected sockets (ad-hoc rule).
    /// Either this or --policy is needed (checked by the command, to say which).
    #[arg(long, value_name = "ACTION", value_enum)]
    pub action: Option<policy::ActionKind>,

    /// The signal for --action signal, e.g. SIGHUP, TERM, 15.
    #[arg(long, value_name = "NAME", required_if_eq("action", "signal"))]
    pub signal: Option<String>,

    /// The command for --action exec: an absolute path then its arguments (repeat the flag,
    /// one argument each); {pid}, {comm}, {local}, {remote}, {cookie}, … are filled in.
    #[arg(long, value_name = "ARG", required_if_eq("action", "exec"))]
    pub command: Vec<String>,

    /// Only when one process holds at least N matching sockets (a leak, not a one-off).
    #[arg(long, value_name = "N")]
    pub min_sockets: Option<u32>,

    /// Act without asking.
    #[arg(long, short = 'y')]
    pub yes: bool,

    /// Record the plan as dry-run records in the audit log and touch nothing.
    #[arg(long)]
    pub dry_run: bool,

    /// Lift the rate budgets and per-owner fraction for this run (protection and cooldowns
    /// still apply).
    #[arg(long)]
    pub lift_budgets: bool,

    /// Override the mode: observe plans and records only; enforce acts.
    #[arg(long, value_name = "MODE", value_enum)]
    pub mode: Option<Mode>,

    #[command(flatten)]
    pub audit: AuditLogArg,

    /// JSON Lines: the plan items, then one report per action.
    #[arg(long)]
    pub json: bool,
}
