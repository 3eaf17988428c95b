//! The command line: every clap definition (one file per subcommand's flags, the shared
//! selectors here) and the exit codes. `cmd/` runs the commands; nothing here runs them.

mod audit;
mod clean;
mod policy;
mod run;

pub use audit::{AuditCommand, FilterArgs, PruneArgs, ShowArgs, SummaryArgs, VerifyArgs};
pub use clean::CleanArgs;
pub use policy::{CheckArgs, ExplainArgs, PolicyCommand};
pub use run::RunArgs;

use std::path::PathBuf;
use std::time::Duration;

use clap::builder::PossibleValue;
use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::audit::DEFAULT_AUDIT_LOG;
use crate::filter::{NetnsSelector, SocketFilter};
use crate::model::{StateSet, TcpState};
use crate::policy::{ActionKind, Mode, Pattern};

/// Exit codes, the same for every subcommand.
pub mod exit {
    /// Success; for `scan`: nothing matched.
    pub const OK: i32 = 0;
    /// `scan`: stuck sockets found. `doctor`: some remediation cannot work here.
    /// `audit verify`: the chain is broken.
    pub const FOUND: i32 = 1;
    /// An error: bad flag value, missing permission, kernel or I/O failure.
    pub const ERROR: i32 = 2;
    /// `scan`, `clean`: nothing (else) to report, but some network namespace could not be
    /// read, so this is not an all-clear.
    pub const INCOMPLETE: i32 = 3;
    /// A policy or configuration file is invalid (EX_CONFIG).
    pub const CONFIG: i32 = 78;
}

const AFTER_HELP: &str = "\
Exit codes: 0 ok / nothing found, 1 stuck sockets found (scan) or checks failed (doctor,
audit verify), 2 error, 3 incomplete: some network namespace could not be read (scan,
clean), 78 invalid policy or configuration.

Examples:
  sockwarden scan                              every stuck socket in every namespace
  sockwarden scan --summary                    counts per state and owner, oldest first
  sockwarden scan --state close-wait --older-than 10m --unit 'api*.service'
  sockwarden scan --json | jq 'select(.recv_q > 0)'
  sockwarden clean --state close-wait --older-than 10m --process java --action destroy
  sockwarden policy check /etc/sockwarden/policies
  sockwarden audit show --since 2h
  sockwarden doctor                            what can sockwarden do on this machine?";

/// Find TCP connections stuck in teardown, who owns them and how long they have been stuck.
#[derive(Debug, Parser)]
#[command(name = "sockwarden", version, after_help = AFTER_HELP, max_term_width = 100)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,

    /// Log more (-v: debug, -vv: trace). Logs go to stderr.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,

    /// Log format on stderr.
    #[arg(long, value_enum, default_value_t = LogFormat::Auto, global = true)]
    pub log_format: LogFormat,

    /// Colours in the logs: auto (on a terminal, unless NO_COLOR is set), always, never.
    /// Never under the journal.
    #[arg(long, value_enum, default_value_t = Color::Auto, global = true)]
    pub color: Color,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Color {
    Auto,
    Always,
    Never,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Text on a terminal or under systemd (the journal), JSON otherwise.
    Auto,
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// List stuck TCP sockets (read-only) with their owners and ages.
    #[command(after_help = SCAN_HELP)]
    Scan(ScanArgs),
    /// Check what works on this machine: sock_diag, SOCK_DESTROY, capabilities, pidfd,
    /// cgroups, systemd. Exit 0 when remediation can work here, 1 when some cannot.
    Doctor(DoctorArgs),
    /// One-off cleanup: plan, confirm, act (destroy, signal, restart, exec, log) and record
    /// every action in the audit log.
    Clean(CleanArgs),
    /// Validate policies, or explain what they would do to the stuck sockets now.
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// Verify, show and summarize the audit trail.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// The daemon: scan every interval, age sockets by observation, act under the policies
    /// and record everything (SIGHUP reloads, SIGTERM stops; systemd Type=notify).
    Run(RunArgs),
}

const SCAN_HELP: &str = "\
Ages and their evidence (AGE-FROM / age_source):
  kernel-timer  exact, from the kernel's TIME_WAIT / orphaned FIN_WAIT2 timer
  kernel-transition
                exact, when the kernel moved it into its state (the eBPF index a daemon
                pinned; only sockets that changed state since it was loaded)
  tcp-info      time since the peer's last ACK (close-wait, fin-wait-2) or our last data
                (fin-wait-1, last-ack, closing, syn-sent): exact for a silent socket
  observed      first seen by the agent; a one-shot scan cannot observe, so these are 0
A leading ≥ (JSON: age_is_lower_bound) marks an age the socket may exceed.

Exit codes: 0 nothing matched, 1 stuck sockets found, 2 error, 3 nothing matched in what
could be read but some namespace could not be (not an all-clear: see the warnings).";

#[derive(Debug, Args)]
pub struct ScanArgs {
    #[command(flatten)]
    pub select: SelectArgs,

    /// JSON Lines: one socket per line (with --summary: one state × owner group per line).
    #[arg(long)]
    pub json: bool,

    /// Counts per state × owner with the oldest age, instead of one line per socket.
    #[arg(long)]
    pub summary: bool,
}

/// Socket selectors shared by `scan`, `clean` and `policy explain`.
#[derive(Debug, Clone, Args)]
pub struct SelectArgs {
    /// TCP state to look for (repeatable, kebab-case, e.g. close-wait, fin-wait-2; `all` for
    /// every state). Default: close-wait fin-wait-1 fin-wait-2 last-ack closing syn-sent
    /// syn-recv.
    #[arg(long = "state", value_name = "STATE", value_parser = parse_state_arg)]
    pub states: Vec<StateArg>,

    /// Only sockets at least this old, e.g. 90s, 10m, 2h.
    #[arg(long, value_name = "DUR", value_parser = parse_duration_arg)]
    pub older_than: Option<Duration>,

    /// Only sockets one of whose owners' command name (comm) matches this glob.
    #[arg(long, value_name = "GLOB", value_parser = parse_glob_arg)]
    pub process: Option<Pattern>,

    /// Only sockets one of whose owners runs in a systemd unit matching this glob.
    #[arg(long, value_name = "GLOB", value_parser = parse_glob_arg)]
    pub unit: Option<Pattern>,

    /// Only sockets with this local or remote port.
    #[arg(long, value_name = "N")]
    pub port: Option<u16>,

    /// Which network namespaces: `all` (default), `host` (the one sockwarden runs in), a
    /// /run/netns name, or a namespace file such as `/proc/<pid>/ns/net`.
    #[arg(long, value_name = "NETNS", default_value = "all")]
    pub netns: String,
}

impl SelectArgs {
    pub fn filter(&self) -> SocketFilter {
        let states = if self.states.is_empty() {
            StateSet::default_stuck()
        } else if self.states.contains(&StateArg::All) {
            StateSet::all()
        } else {
            self.states
                .iter()
                .filter_map(|s| match s {
                    StateArg::One(st) => Some(*st),
                    StateArg::All => None,
                })
                .collect()
        };
        SocketFilter {
            states,
            netns: NetnsSelector::parse(&self.netns),
            older_than: self.older_than,
            process: self.process.clone(),
            unit: self.unit.clone(),
            port: self.port,
        }
    }
}

/// `--audit-log PATH`, flattened into every command that reads or writes the trail.
#[derive(Debug, Clone, Args)]
pub struct AuditLogArg {
    /// The audit log (JSON Lines, hash-chained); rotated files next to it (`PATH.<seq>`) are
    /// read too.
    #[arg(
        long = "audit-log",
        value_name = "PATH",
        env = "SOCKWARDEN_AUDIT_LOG",
        default_value = DEFAULT_AUDIT_LOG
    )]
    pub path: PathBuf,

    /// Keyed mode: the file holding the key that seals the trail's records with an HMAC
    /// (root-only, e.g. `head -c 32 /dev/urandom`). Writers of a keyed trail need it; so does
    /// `audit verify`.
    #[arg(long = "audit-key", value_name = "PATH", env = "SOCKWARDEN_AUDIT_KEY")]
    pub key: Option<PathBuf>,
}

impl AuditLogArg {
    /// The key, loaded and checked (owned by root, readable by no one else).
    pub fn key(&self) -> anyhow::Result<Option<crate::audit::AuditKey>> {
        self.key
            .as_deref()
            .map(crate::audit::AuditKey::load)
            .transpose()
            .map_err(Into::into)
    }

    /// The trail opened for appending, with its key.
    pub fn open(&self) -> anyhow::Result<crate::audit::AuditLog> {
        let key = self.key()?;
        Ok(crate::audit::AuditLog::open(&self.path)?.with_key(key))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StateArg {
    All,
    One(TcpState),
}

fn parse_state_arg(text: &str) -> Result<StateArg, String> {
    if text.eq_ignore_ascii_case("all") {
        return Ok(StateArg::All);
    }
    text.parse::<TcpState>()
        .map(StateArg::One)
        .map_err(|e| e.to_string())
}

fn parse_duration_arg(text: &str) -> Result<Duration, String> {
    crate::duration::parse(text).map_err(|e| e.to_string())
}

/// A glob flag value (`--process`, `--unit`, `audit show --rule`, …).
pub fn parse_glob_arg(text: &str) -> Result<Pattern, String> {
    Pattern::new(text).map_err(|e| format!("invalid glob `{text}`: {e}"))
}

#[derive(Debug, Args)]
pub struct DoctorArgs {
    /// JSON Lines: one check per line.
    #[arg(long)]
    pub json: bool,
}

// The policy's own enums as flag values, so `--help` lists them and the names are the
// ones policy files and audit records use.
impl ValueEnum for ActionKind {
    fn value_variants<'a>() -> &'a [Self] {
        &ActionKind::ALL
    }
    fn to_possible_value(&self) -> Option<PossibleValue> {
        Some(PossibleValue::new(self.name()))
    }
}

impl ValueEnum for Mode {
    fn value_variants<'a>() -> &'a [Self] {
        &Mode::ALL
    }
    fn to_possible_value(&self) -> Option<PossibleValue> {
        let help = match self {
            Mode::Observe => "plan and record only, touch nothing",
            Mode::Enforce => "act on what the plan allows",
        };
        Some(PossibleValue::new(self.name()).help(help))
    }
}
