//! `sockwarden audit`'s subcommands and flags.

use std::time::SystemTime;

use clap::{Args, Subcommand};

use super::{parse_glob_arg, AuditLogArg};
use crate::audit::{ActionKind, Filter};
use crate::policy::Pattern;

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Check the whole hash chain, across rotated files, and name the first bad record.
    #[command(after_help = VERIFY_HELP)]
    Verify(VerifyArgs),
    /// List audit records (interventions, outcomes, dry runs, notes), filtered.
    #[command(after_help = SHOW_HELP)]
    Show(ShowArgs),
    /// Incident review: actions per rule, per unit and per outcome, and interventions per hour.
    #[command(after_help = SUMMARY_HELP)]
    Summary(SummaryArgs),
    /// Retention: remove whole rotated files older than a time, leaving a checkpoint so
    /// that the rest still verifies.
    #[command(after_help = PRUNE_HELP)]
    Prune(PruneArgs),
}

const VERIFY_HELP: &str = "\
Checks that every line is a sealed record, that seq increases by one and that each record's
prev is the hash of the line before, from the oldest rotated file to the live file, and
that the trail ends where its anchor (PATH.head, rewritten by every writer) says: a trail
cut short, emptied or with its end rewritten fails. A final line cut off by a crash
mid-write is reported as torn, not as tampering, when the anchor agrees; the next write
repairs it. A trail starts at seq 1, or where `audit prune` left a checkpoint that a prune
note in the chain attests. Keep the printed head hash elsewhere (a ticket, the journal):
the daemon also publishes the head seq as a metric.

Exit codes: 0 chain intact, 1 chain broken, tampered or cut short (the first bad record or
the missing part is printed), 2 the trail cannot be read (or is keyed and no key given).

Examples:
  sockwarden audit verify
  sockwarden audit verify --audit-log /srv/audit/audit.jsonl --audit-key /etc/sockwarden/audit.key
  sockwarden audit verify --audit-log copy.jsonl --from-seq 52001 --no-anchor
  sockwarden audit verify --json | jq .head_hash";

const PRUNE_HELP: &str = "\
Removes the rotated files (PATH.<seq>) whose records are all older than --before; the live
file is never removed. First a `prune` note naming the first record kept is written to the
trail, then the checkpoint file PATH.start, then the files go: `audit verify` then checks
the trail from the checkpoint. Removing rotated files by hand instead makes verify fail.

Examples:
  sockwarden audit prune --before 90d
  sockwarden audit prune --before '2026-09-01 00:00'";

const SHOW_HELP: &str = "\
Times are UTC. --since/--until take a duration meaning that long ago (2h, 30m, 1day) or a
time (2026-11-23 14:00, 2026-11-23T14:00:00Z). --outcome keeps the outcome records with that
result and the intents they answer. Globs: * ? [abc].

Examples:
  sockwarden audit show --since 2h
  sockwarden audit show --action destroy --outcome failed
  sockwarden audit show --unit 'api*.service' --since '2026-11-23 14:00' --until '2026-11-23 16:00'
  sockwarden audit show --rule api-close-wait-leak --json | jq .target.local";

const SUMMARY_HELP: &str = "\
Interventions are intent records (one per action attempted); each is counted with the result
of its outcome record, or no-outcome when none was written (a crash, or a failed write).
Takes the same filters as `audit show`.

Examples:
  sockwarden audit summary --since 6h
  sockwarden audit summary --unit api.service --json";

#[derive(Debug, Clone, Args)]
pub struct VerifyArgs {
    #[command(flatten)]
    pub log: AuditLogArg,
    /// Print the report as one JSON object.
    #[arg(long)]
    pub json: bool,
    /// Check the chain alone, without comparing its end with the anchor file (for a copy).
    #[arg(long)]
    pub no_anchor: bool,
    /// Accept a trail that starts at this seq (a copy of the newer part of a trail).
    #[arg(long, value_name = "SEQ")]
    pub from_seq: Option<u64>,
}

#[derive(Debug, Clone, Args)]
pub struct PruneArgs {
    #[command(flatten)]
    pub log: AuditLogArg,
    /// Remove rotated files whose every record is older than this: a duration ago (90d) or
    /// a UTC time (2026-09-01 00:00).
    #[arg(long, value_name = "WHEN")]
    pub before: String,
    /// Print what was removed as one JSON object.
    #[arg(long)]
    pub json: bool,
}

/// Record filters shared by `show` and `summary`.
#[derive(Debug, Clone, Default, Args)]
pub struct FilterArgs {
    /// Only records at or after this time: a duration ago (2h) or a UTC time (2026-11-23 14:00).
    #[arg(long, value_name = "WHEN")]
    pub since: Option<String>,
    /// Only records at or before this time: a duration ago (30m) or a UTC time.
    #[arg(long, value_name = "WHEN")]
    pub until: Option<String>,
    /// Only these actions (repeatable).
    #[arg(long = "action", value_name = "ACTION", value_enum)]
    pub actions: Vec<ActionKind>,
    /// Only outcomes with this result (destroyed, already-gone, failed, …) and their
    /// intents; no-outcome: intents never answered (a crash, or a failed outcome write).
    #[arg(long, value_name = "RESULT", value_parser = parse_outcome_arg)]
    pub outcome: Option<String>,
    /// Only records about a process whose command name (comm) matches this glob.
    #[arg(long, value_name = "GLOB", value_parser = parse_glob_arg)]
    pub process: Option<Pattern>,
    /// Only records about a systemd unit matching this glob.
    #[arg(long, value_name = "GLOB", value_parser = parse_glob_arg)]
    pub unit: Option<Pattern>,
    /// Only records of rules whose name matches this glob.
    #[arg(long, value_name = "GLOB", value_parser = parse_glob_arg)]
    pub rule: Option<Pattern>,
}

#[derive(Debug, Clone, Args)]
pub struct ShowArgs {
    #[command(flatten)]
    pub log: AuditLogArg,
    #[command(flatten)]
    pub filter: FilterArgs,
    /// JSON Lines: the matching records, one per line, in the stored format.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Clone, Args)]
pub struct SummaryArgs {
    #[command(flatten)]
    pub log: AuditLogArg,
    #[command(flatten)]
    pub filter: FilterArgs,
    /// Print the summary as one JSON object.
    #[arg(long)]
    pub json: bool,
}

impl FilterArgs {
    /// The filter these flags describe, with durations counted back from `now`.
    pub fn to_filter(&self, now: SystemTime) -> anyhow::Result<Filter> {
        let when = |flag: &str, v: &Option<String>| -> anyhow::Result<Option<SystemTime>> {
            v.as_deref()
                .map(|s| {
                    crate::audit::parse_when(s, now).map_err(|e| anyhow::anyhow!("--{flag}: {e}"))
                })
                .transpose()
        };
        Ok(Filter {
            since: when("since", &self.since)?,
            until: when("until", &self.until)?,
            actions: self.actions.clone(),
            outcome: self.outcome.clone(),
            process: self.process.clone(),
            unit: self.unit.clone(),
            rule: self.rule.clone(),
        })
    }
}

/// The name an unanswered intent goes by in `--outcome` and in summaries.
pub const NO_OUTCOME: &str = "no-outcome";

/// `--outcome`: a result this version writes, or `no-outcome`; anything else would match
/// nothing, silently.
fn parse_outcome_arg(text: &str) -> Result<String, String> {
    let known: Vec<&str> = crate::outcome::ALL.iter().map(|r| r.name()).collect();
    if known.contains(&text) || text == NO_OUTCOME {
        return Ok(text.to_string());
    }
    Err(format!(
        "unknown result `{text}`; one of: {}, {NO_OUTCOME}",
        known.join(", ")
    ))
}
