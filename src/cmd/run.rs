//! `sockwarden run`: the daemon. Load the configuration and policies (exit 78 when they
//! are invalid), probe what works here, record a start note, then pass after pass until
//! SIGTERM/SIGINT (exit 0).

use std::path::PathBuf;

use anyhow::Context;
use tracing::{info, warn};

use crate::audit::NoteEvent;
use crate::cli::{exit, RunArgs};
use crate::daemon::config::{Settings, DEFAULT_CONFIG};
use crate::daemon::notify::Notifier;
use crate::daemon::signals::Signals;
use crate::daemon::{Capabilities, Daemon, Sources};
use crate::metrics::Metrics;
use crate::sys::System;

/// Where the daemon's settings come from: the config file, overridden by the flags.
pub fn sources(args: &RunArgs) -> Sources {
    Sources {
        config: args
            .config
            .clone()
            .unwrap_or_else(|| PathBuf::from(DEFAULT_CONFIG)),
        explicit: args.config.is_some(),
        flags: Settings {
            policy: args.policy.clone(),
            interval: args.interval,
            mode: args.mode,
            audit_log: args.audit_log.clone(),
            audit_key: args.audit_key.clone(),
            audit_retention: None,
            state_dir: args.state_dir.clone(),
            metrics_listen: args.metrics_listen,
            metrics_textfile: args.metrics_textfile.clone(),
            netns: args.netns.clone(),
            namespace_refresh: None,
        },
    }
}

pub fn run(args: &RunArgs, sys: &dyn System) -> anyhow::Result<i32> {
    let sources = sources(args);
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
            metrics.set_interval(config.interval);
            if let Some(addr) = listen {
                // The operator asked for the endpoint: not having it is a start-up error.
                let (bound, _thread) = metrics.serve(*addr)?;
                info!("metrics on http://{bound}/metrics, health on /healthz and /readyz");
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
        std::time::SystemTime::now(),
    );
    if let Some(metrics) = metrics {
        daemon = daemon.with_metrics(metrics);
    }
    daemon.check_capabilities();
    let watcher = sys.watcher();
    if watcher.name() == "bpf" {
        info!("watcher {}: {}", watcher.name(), watcher.describe());
    } else {
        warn!("watcher {}: {}", watcher.name(), watcher.describe());
    }
    let detail = daemon.start_detail();
    info!("{detail}");
    daemon.note(NoteEvent::Start, detail);
    daemon.serve(&signals, &notifier);
    Ok(exit::OK)
}
