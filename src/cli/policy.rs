//! `sockwarden policy`'s subcommands and flags.

use std::path::PathBuf;

use clap::{Args, Subcommand};

use super::{AuditLogArg, SelectArgs};

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
