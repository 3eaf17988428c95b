//! `sockwarden run`: the daemon. Load the configuration and policies (exit 78 when they
//! are invalid), probe what works here, record a start note, then pass after pass until
//! SIGTERM/SIGINT (exit 0).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use tracing::{info, warn};

use crate::audit::NoteEvent;
use crate::cli::exit;
use crate::daemon::config::{self, Settings, DEFAULT_CONFIG};
use crate::daemon::notify::Notifier;
use crate::daemon::signals::Signals;
use crate::daemon::{observations, Capabilities, Daemon, Sources};
use crate::metrics::Metrics;
use crate::policy::Mode;
use crate::sys::System;

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

    /// Serve Prometheus metrics on this address, e.g. 127.0.0.1:9477 [default: off].
    #[arg(long, value_name = "ADDR")]
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

impl RunArgs {
    pub fn sources(&self) -> Sources {
        Sources {
            config: self
                .config
                .clone()
                .unwrap_or_else(|| PathBuf::from(DEFAULT_CONFIG)),
            explicit: self.config.is_some(),
            flags: Settings {
                policy: self.policy.clone(),
                interval: self.interval,
                mode: self.mode,
                audit_log: self.audit_log.clone(),
                audit_key: self.audit_key.clone(),
                audit_retention: None,
                state_dir: self.state_dir.clone(),
                metrics_listen: self.metrics_listen,
                metrics_textfile: self.metrics_textfile.clone(),
                netns: self.netns.clone(),
                namespace_refresh: None,
            },
        }
    }
}

pub fn run(args: &RunArgs, sys: &dyn System) -> anyhow::Result<i32> {
    let sources = args.sources();
    let (config, policies) = match sources.load() {
        Ok(loaded) => loaded,
        Err(e) => {
            eprintln!("{e}");
            return Ok(exit::CONFIG);
        }
    };
    // Before anything slow, so that a stop request during start-up is not lost.
    let signals = Signals::install().context("installing the SIGHUP/SIGTERM/SIGINT handlers")?;
    let notifier = Notifier::from_env().unwrap_or_else(|e| {
        warn!("NOTIFY_SOCKET is unusable ({e}): no systemd notifications");
        Notifier::none()
    });
    let metrics = match (&config.metrics_listen, &config.metrics_textfile) {
        (None, None) => None,
        (listen, _) => {
            let metrics = Metrics::new();
            if let Some(addr) = listen {
                // The operator asked for the endpoint: not having it is a start-up error.
                let (bound, _thread) = metrics.serve(*addr)?;
                info!("metrics on http://{bound}/metrics");
            }
            Some(metrics)
        }
    };
    let mut daemon = Daemon::new(
        sys,
        sources,
        config,
        policies,
        Capabilities::default(),
        &observations::boot_id(),
        std::time::SystemTime::now(),
    );
    if let Some(metrics) = metrics {
        daemon = daemon.with_metrics(metrics);
    }
    daemon.check_capabilities();
    let detail = daemon.start_detail();
    info!("{detail}");
    daemon.note(NoteEvent::Start, detail);
    daemon.serve(&signals, &notifier);
    Ok(exit::OK)
}
