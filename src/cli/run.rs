//! `sockwarden run`'s flags.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use crate::daemon::config;
use crate::policy::Mode;

const RUN_HELP: &str = "\
Every interval: dump the sockets in the states the rules are about (one filtered netlink
dump per namespace), age them (kernel evidence, else the first time the daemon saw them,
kept in <state-dir>/observations.json across restarts), plan with the policies' guards,
act, and record intents and outcomes in the audit log. The namespace list (a walk of
/proc/*/ns/net) is refreshed every `namespace_refresh` (60s), not every pass.

Settings come from --config (default /etc/sockwarden/sockwarden.toml; a missing default
file is fine); each flag below overrides its key. SIGHUP reloads the file and the
policies (a bad file keeps the last good ones and is recorded as a reload-failed note);
SIGTERM/SIGINT finish the pass in flight, record a shutdown note and exit 0. Under
systemd (Type=notify): READY=1, STATUS= after each pass, WATCHDOG=1 from the loop.

Actions that cannot work on this machine (no SOCK_DESTROY, no pidfd, no systemd) are
recorded as observed (dry-run) instead of being carried out, and said so at start-up.

Examples:
  sockwarden run
  sockwarden run --policy /etc/sockwarden/policies --mode observe --interval 30s
  sockwarden run --config /dev/null --policy ./policy.toml --state-dir /tmp/sw

Exit codes: 0 stopped by SIGTERM/SIGINT, 2 error at start-up, 78 invalid configuration
or policy.";

#[derive(Debug, Args)]
#[command(after_help = RUN_HELP)]
pub struct RunArgs {
    /// The configuration file (TOML; an example ships as packaging/sockwarden.toml)
    /// [default: /etc/sockwarden/sockwarden.toml, which may be absent].
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Policy file, or directory of *.toml policies [default: /etc/sockwarden/policies].
    #[arg(long, value_name = "PATH")]
    pub policy: Option<PathBuf>,

    /// Time between passes, e.g. 10s, 1m [default: 10s].
    #[arg(long, value_name = "DUR", value_parser = parse_interval)]
    pub interval: Option<Duration>,

    /// Override the policies' mode: observe records only, enforce acts.
    #[arg(long, value_name = "MODE", value_enum)]
    pub mode: Option<Mode>,

    /// The audit log [default: /var/lib/sockwarden/audit.jsonl].
    #[arg(long = "audit-log", value_name = "PATH", env = "SOCKWARDEN_AUDIT_LOG")]
    pub audit_log: Option<PathBuf>,

    /// Keyed mode: the key file that seals audit records with an HMAC [default: none].
    #[arg(long = "audit-key", value_name = "PATH", env = "SOCKWARDEN_AUDIT_KEY")]
    pub audit_key: Option<PathBuf>,

    /// Where observed first-seen times are kept [default: /var/lib/sockwarden].
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,

    /// Serve Prometheus metrics (and /healthz, /readyz) on this address, e.g.
    /// 127.0.0.1:9477, or :9477 for every interface [default: off].
    #[arg(long, value_name = "ADDR", value_parser = crate::metrics::parse_listen)]
    pub metrics_listen: Option<SocketAddr>,

    /// Write the metrics to this node_exporter textfile after each pass [default: off].
    #[arg(long, value_name = "PATH")]
    pub metrics_textfile: Option<PathBuf>,

    /// Which namespaces: all, host, a /run/netns name or a namespace file [default: all].
    #[arg(long, value_name = "NETNS")]
    pub netns: Option<String>,
}

fn parse_interval(text: &str) -> Result<Duration, String> {
    let d = crate::duration::parse(text).map_err(|e| e.to_string())?;
    if d < config::MIN_INTERVAL {
        return Err(format!(
            "`{text}` is too short: use at least {}ms",
            config::MIN_INTERVAL.as_millis()
        ));
    }
    Ok(d)
}
