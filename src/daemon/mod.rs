//! The daemon: `sockwarden run` — every interval scan, observe ages, plan, act, audit.
//! [`Daemon::pass`] is one pass over [`System`] (tested with the fake); [`Daemon::serve`] is
//! the loop with signals, reloads and systemd notification.

pub mod config;
pub mod notify;
pub mod observations;
pub mod signals;

use std::collections::HashSet;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use serde::Serialize;
use tracing::{debug, error, info, warn};

use crate::actions::{self, ActContext, ActionReport};
use crate::audit::{self, Actor, ActorKind, AuditLog, NewRecord, NoteEvent};
use crate::decide::{Decider, Planned};
use crate::engine::{self, Decision, HeldReason, History, Keep, Plan, RunOptions};
use crate::filter::{NetnsSelector, SocketFilter};
use crate::metrics::{ActionTally, Metrics, PassFigures};
use crate::model::{Netns, Pid, StateSet};
use crate::policy::{self, ActionKind, Mode, PolicySet};
use crate::scan;
use crate::sys::{DestroyOutcome, System};

pub use config::{Config, ConfigError, Settings};
use notify::Notifier;
use observations::ObservationStore;
use signals::Signals;

/// Why the daemon cannot start (or reload): both mean exit 78 at start-up.
#[derive(Debug)]
pub enum LoadError {
    Config(ConfigError),
    /// `audit_key` names a file that is not a usable key.
    AuditKey(crate::sys::files::FileError),
    Policy {
        path: PathBuf,
        diagnostics: policy::Diagnostics,
    },
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LoadError::Config(e) => write!(f, "{e}"),
            LoadError::AuditKey(e) => write!(f, "audit_key: {e}"),
            LoadError::Policy { path, diagnostics } => write!(
                f,
                "{diagnostics}\n(policy loaded from {}; check it with `sockwarden policy check {}`)",
                path.display(),
                path.display()
            ),
        }
    }
}

impl std::error::Error for LoadError {}

/// Why a pass stopped before it was done (the loop goes on; the next pass tries again).
#[derive(Debug, thiserror::Error)]
pub enum PassError {
    #[error("listing namespaces: {0}")]
    Namespaces(scan::ScanError),
    #[error("scan: {0}")]
    Scan(scan::ScanError),
    #[error("{0}; no action is taken this pass (cooldowns and budgets cannot be checked)")]
    History(audit::AuditError),
    #[error("audit_key: {0}")]
    AuditKey(crate::sys::files::FileError),
    #[error("{0}")]
    Audit(audit::AuditError),
}

/// Where the settings come from: an optional config file, overridden by flags.
#[derive(Debug, Clone)]
pub struct Sources {
    /// The config file and whether it was named explicitly (a missing default is fine).
    pub config: PathBuf,
    pub explicit: bool,
    pub flags: Settings,
}

impl Sources {
    /// Read the config file and the policies it names.
    pub fn load(&self) -> Result<(Config, PolicySet), LoadError> {
        let file = config::load(&self.config, self.explicit).map_err(LoadError::Config)?;
        let config = self.flags.clone().over(file.unwrap_or_default()).resolve();
        if let Some(key) = &config.audit_key {
            audit::AuditKey::load(key).map_err(LoadError::AuditKey)?;
        }
        let policies = policy::load_paths(std::slice::from_ref(&config.policy)).map_err(|d| {
            LoadError::Policy {
                path: config.policy.clone(),
                diagnostics: d,
            }
        })?;
        Ok((config, policies))
    }
}

/// Whether an action can work on this machine, as probed at start-up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Capability {
    Works,
    /// Cannot work here: the reason, in words. Such actions are recorded as observed only.
    Unavailable(String),
    /// The probe itself could not run; the action is attempted.
    Unknown(String),
}

impl fmt::Display for Capability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Capability::Works => f.write_str("works"),
            Capability::Unavailable(why) => write!(f, "UNAVAILABLE ({why})"),
            Capability::Unknown(why) => write!(f, "not probed ({why})"),
        }
    }
}

/// What the remediations can do here. Probed lazily, for the actions the policies use.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Capabilities {
    pub destroy: Option<Capability>,
    pub signal: Option<Capability>,
    pub restart: Option<Capability>,
}

impl Capabilities {
    /// Everything works (for tests).
    pub fn all() -> Capabilities {
        Capabilities {
            destroy: Some(Capability::Works),
            signal: Some(Capability::Works),
            restart: Some(Capability::Works),
        }
    }

    fn slot(&mut self, kind: ActionKind) -> Option<&mut Option<Capability>> {
        match kind {
            ActionKind::Destroy => Some(&mut self.destroy),
            ActionKind::Signal => Some(&mut self.signal),
            ActionKind::Restart => Some(&mut self.restart),
            ActionKind::Log | ActionKind::Exec => None,
        }
    }

    /// Probe the kinds not probed yet (as `doctor` does); returns the ones newly found
    /// unavailable, for a loud warning.
    pub fn probe(
        &mut self,
        sys: &dyn System,
        kinds: &HashSet<ActionKind>,
    ) -> Vec<(ActionKind, String)> {
        let mut newly = Vec::new();
        let mut sorted: Vec<ActionKind> = kinds.iter().copied().collect();
        sorted.sort();
        for kind in sorted {
            let Some(slot) = self.slot(kind) else {
                continue;
            };
            if slot.is_some() {
                continue;
            }
            let found = probe_one(sys, kind);
            if let Capability::Unavailable(why) = &found {
                newly.push((kind, why.clone()));
            }
            *slot = Some(found);
        }
        newly
    }

    /// Why `kind` cannot work here, if it cannot.
    pub fn unavailable(&self, kind: ActionKind) -> Option<&str> {
        let cap = match kind {
            ActionKind::Destroy => &self.destroy,
            ActionKind::Signal => &self.signal,
            ActionKind::Restart => &self.restart,
            ActionKind::Log | ActionKind::Exec => &None,
        };
        match cap {
            Some(Capability::Unavailable(why)) => Some(why),
            _ => None,
        }
    }

    /// `destroy works, signal UNAVAILABLE (…)`, for the start note and the log.
    pub fn describe(&self) -> String {
        let parts: Vec<String> = [
            ("destroy", &self.destroy),
            ("signal", &self.signal),
            ("restart", &self.restart),
        ]
        .into_iter()
        .filter_map(|(name, cap)| cap.as_ref().map(|c| format!("{name} {c}")))
        .collect();
        if parts.is_empty() {
            "no remediation used".into()
        } else {
            parts.join(", ")
        }
    }
}

fn probe_one(sys: &dyn System, kind: ActionKind) -> Capability {
    match kind {
        ActionKind::Destroy => match sys.probe_destroy() {
            Ok(DestroyOutcome::Destroyed) => Capability::Works,
            Ok(DestroyOutcome::Unsupported) => Capability::Unavailable(
                "SOCK_DESTROY refused with EOPNOTSUPP: kernel built without CONFIG_INET_DIAG_DESTROY".into(),
            ),
            Ok(DestroyOutcome::NotPermitted) => Capability::Unavailable(
                "SOCK_DESTROY not permitted: needs CAP_NET_ADMIN".into(),
            ),
            Ok(other) => Capability::Unknown(format!("the probe destroy answered {other:?}")),
            Err(e) => Capability::Unknown(format!("could not probe SOCK_DESTROY: {e}")),
        },
        ActionKind::Signal if sys.pidfd_supported() => Capability::Works,
        ActionKind::Signal => Capability::Unavailable(
            "no pidfd support (Linux < 5.3): a recycled pid must never be signalled".into(),
        ),
        ActionKind::Restart => match sys.probe_systemd() {
            Ok(_) => Capability::Works,
            Err(e) => Capability::Unavailable(format!("systemd's D-Bus API does not answer: {e}")),
        },
        ActionKind::Log | ActionKind::Exec => Capability::Works,
    }
}

/// The action kinds a policy set can take, escalations included.
pub fn action_kinds(policies: &PolicySet) -> HashSet<ActionKind> {
    let mut kinds = HashSet::new();
    for rule in &policies.rules {
        kinds.insert(rule.action.kind());
        if let Some(esc) = &rule.escalate {
            kinds.insert(esc.action.kind());
        }
    }
    kinds
}

/// With no rules at all, a socket in a watched state counts as stuck (in the metrics) after
/// this long.
pub const STUCK_WITHOUT_RULES: Duration = Duration::from_secs(60);

/// What one pass saw and did: the `STATUS=` line, the pass's log line and the metrics.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct PassSummary {
    pub pass: u64,
    pub namespaces: usize,
    /// Sockets in the rules' states that the dumps returned (any age).
    pub watched: usize,
    /// Of those, old enough for some rule.
    pub stuck: usize,
    /// Plan items (acted on, held or observed).
    pub planned: usize,
    /// Actions carried out (intent and outcome recorded).
    pub acted: usize,
    /// Of those, the ones that did what they were meant to.
    pub succeeded: usize,
    /// Held back by a guard (cooldown, budget, protection, …).
    pub held: usize,
    /// Recorded as dry-run (observe mode, or an action that cannot work here).
    pub observed: usize,
    /// Items turned into observe because the action cannot work here.
    pub degraded: usize,
    /// Namespaces that exist but could not be read this pass: the pass is not an all-clear.
    pub unseen: usize,
    /// The audit trail's head seq after this pass's records (publish it elsewhere to
    /// anchor the trail).
    pub audit_head: Option<u64>,
    #[serde(skip)]
    pub duration: Duration,
    /// Why the pass stopped early, when it did.
    pub error: Option<String>,
    /// It stopped because the audit trail could not be read or written.
    #[serde(skip)]
    pub audit_failed: bool,
    /// Warnings of this pass (namespaces that could not be read, …).
    #[serde(skip)]
    pub warnings: Vec<String>,
}

impl fmt::Display for PassSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "pass {}: {} stuck of {} watched in {} namespace(s); {} acted ({} ok), {} held, {} observed",
            self.pass,
            self.stuck,
            self.watched,
            self.namespaces,
            self.acted,
            self.succeeded,
            self.held,
            self.observed
        )?;
        if self.degraded > 0 {
            write!(f, " ({} degraded to observe)", self.degraded)?;
        }
        if self.unseen > 0 {
            write!(f, "; {} namespace(s) NOT seen", self.unseen)?;
        }
        if let Some(seq) = self.audit_head {
            write!(f, "; audit head {seq}")?;
        }
        if let Some(e) = &self.error {
            write!(f, "; FAILED: {e}")?;
        }
        Ok(())
    }
}

/// The audit trail's history, re-read only when the live file changed.
#[derive(Debug, Default)]
struct HistoryCache {
    /// The live file (inode, size, mtime) and the policy digest and mode it was read for
    /// (what is kept of it depends on them).
    key: Option<(u64, u64, SystemTime, String, bool)>,
    history: History,
    /// Where `history` was read up to.
    mark: Option<audit::TrailMark>,
}

/// The daemon's state between passes.
pub struct Daemon<'a> {
    sys: &'a dyn System,
    sources: Sources,
    config: Config,
    policies: PolicySet,
    observations: ObservationStore,
    /// The namespaces being watched and when they were listed.
    namespaces: Option<(Vec<Netns>, Instant)>,
    namespace_warnings: Vec<String>,
    /// What the last listing could not see (reported with every pass until it can).
    namespace_unseen: Vec<String>,
    relist: bool,
    /// Namespaces (by inode) the eBPF index holds sockets in that the last listing did not
    /// have: a new one among them means a namespace was created since.
    unlisted: std::collections::BTreeSet<u64>,
    caps: Capabilities,
    actor: Actor,
    history: HistoryCache,
    pass_no: u64,
    last_save_error: Option<String>,
    metrics: Option<Arc<Metrics>>,
    last_textfile_error: Option<String>,
    /// When rotated audit files were last pruned (`audit_retention`).
    last_prune: Option<Instant>,
}

impl<'a> Daemon<'a> {
    /// A daemon on loaded settings, starting at `now`. Warnings (e.g. a state file from
    /// another boot) are logged.
    pub fn new(
        sys: &'a dyn System,
        sources: Sources,
        config: Config,
        policies: PolicySet,
        caps: Capabilities,
        now: SystemTime,
    ) -> Daemon<'a> {
        let boot_id = sys.boot_id();
        let booted_at = now
            .checked_sub(sys.uptime())
            .unwrap_or(SystemTime::UNIX_EPOCH);
        let (observations, warning) =
            ObservationStore::load(&config.state_dir, &boot_id, booted_at, now);
        if let Some(w) = warning {
            warn!("{w}");
        }
        Daemon {
            sys,
            sources,
            config,
            policies,
            observations,
            namespaces: None,
            namespace_warnings: Vec::new(),
            namespace_unseen: Vec::new(),
            relist: true,
            unlisted: Default::default(),
            caps,
            actor: Actor::current(ActorKind::Daemon),
            history: HistoryCache::default(),
            pass_no: 0,
            last_save_error: None,
            metrics: None,
            last_textfile_error: None,
            last_prune: None,
        }
    }

    /// Feed `metrics` after every pass (and write the textfile when one is configured).
    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> Daemon<'a> {
        self.metrics = Some(metrics);
        self.publish_capabilities();
        self
    }

    fn publish_capabilities(&self) {
        let Some(m) = &self.metrics else { return };
        for (name, cap) in [
            ("sock_destroy", &self.caps.destroy),
            ("pidfd", &self.caps.signal),
            ("systemd", &self.caps.restart),
        ] {
            if let Some(cap) = cap {
                m.set_capability(name, !matches!(cap, Capability::Unavailable(_)));
            }
        }
        m.set_watcher(self.sys.watcher().name());
    }

    /// After a pass: count a failed one, and write the textfile (a failure is logged once).
    fn publish(&mut self, summary: &PassSummary) {
        let Some(m) = &self.metrics else { return };
        if summary.error.is_some() {
            m.observe_failed_pass(summary.audit_failed);
        }
        m.set_unseen_namespaces(summary.unseen);
        if let Some(seq) = summary.audit_head {
            m.set_audit_head(seq);
        }
        let Some(path) = &self.config.metrics_textfile else {
            return;
        };
        match m.write_textfile(path) {
            Ok(()) => self.last_textfile_error = None,
            Err(e) => {
                let text = e.to_string();
                if self.last_textfile_error.as_deref() != Some(text.as_str()) {
                    error!("{text}");
                }
                self.last_textfile_error = Some(text);
            }
        }
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    pub fn policies(&self) -> &PolicySet {
        &self.policies
    }

    pub fn observations(&self) -> &ObservationStore {
        &self.observations
    }

    pub fn capabilities(&self) -> &Capabilities {
        &self.caps
    }

    /// The mode in force: the configured override, else the policies'.
    pub fn mode(&self) -> Mode {
        self.config.mode.unwrap_or(self.policies.mode)
    }

    /// Probe the actions the policies use and say loudly which cannot work (enforce mode:
    /// those items are recorded as observed instead). Returns the warnings.
    pub fn check_capabilities(&mut self) -> Vec<String> {
        let kinds = action_kinds(&self.policies);
        let newly = self.caps.probe(self.sys, &kinds);
        self.publish_capabilities();
        let mut warnings = Vec::new();
        for (kind, why) in newly {
            let w = format!(
                "{kind} actions cannot work on this machine: {why}; in enforce mode they are recorded as observed (dry-run) instead of being carried out"
            );
            // Loud when it changes what the daemon does; a note in observe mode.
            if self.mode() == Mode::Enforce {
                error!("{w}");
            } else {
                warn!("{w}");
            }
            warnings.push(w);
        }
        warnings
    }

    /// Write a life-cycle note; a failure is logged (the loop goes on).
    pub fn note(&self, event: NoteEvent, detail: String) {
        let mut record = NewRecord::note(self.actor.clone(), self.mode(), event, detail);
        record.policy_digest = Some(self.policies.digest().to_string());
        let written = self
            .open_audit()
            .and_then(|mut log| log.append(record).map_err(PassError::Audit));
        if let Err(e) = written {
            error!("cannot record the {event:?} note: {e}");
        }
    }

    /// The audit trail, with its key in keyed mode (read again each time: cheap, and a
    /// replaced key file is seen).
    fn open_audit(&self) -> Result<AuditLog, PassError> {
        let key = match &self.config.audit_key {
            Some(path) => Some(audit::AuditKey::load(path).map_err(PassError::AuditKey)?),
            None => None,
        };
        AuditLog::open(&self.config.audit_log)
            .map(|log| log.with_key(key))
            .map_err(PassError::Audit)
    }

    /// The start note's text.
    pub fn start_detail(&self) -> String {
        format!(
            "sockwarden {} started: mode {}, policy {} (digest {}, {} rule(s)), interval {}, netns {}, capabilities: {}",
            env!("CARGO_PKG_VERSION"),
            self.mode(),
            self.config.policy.display(),
            self.policies.digest(),
            self.policies.rules.len(),
            humantime::format_duration(self.config.interval),
            self.config.netns,
            self.caps.describe()
        )
    }

    /// SIGHUP: re-read the config file and the policies. A bad file keeps the last good
    /// settings in force and is recorded as a `reload-failed` note.
    pub fn reload(&mut self) -> Result<(), LoadError> {
        match self.sources.load() {
            Ok((config, policies)) => {
                let old_digest = self.policies.digest().to_string();
                if config.state_dir != self.config.state_dir {
                    self.observations.move_to(&config.state_dir);
                }
                if config.netns != self.config.netns {
                    self.relist = true;
                }
                if config.metrics_listen != self.config.metrics_listen
                    || config.metrics_textfile != self.config.metrics_textfile
                {
                    warn!("metrics settings changed: they take effect when the daemon restarts");
                }
                self.config = config;
                self.policies = policies;
                // A namespace may have been created since the last listing: cheap now.
                self.relist = true;
                self.check_capabilities();
                let detail = format!(
                    "reloaded: mode {}, policy {} (digest {} -> {}, {} rule(s)), interval {}, capabilities: {}",
                    self.mode(),
                    self.config.policy.display(),
                    old_digest,
                    self.policies.digest(),
                    self.policies.rules.len(),
                    humantime::format_duration(self.config.interval),
                    self.caps.describe()
                );
                info!("{detail}");
                self.note(NoteEvent::Reload, detail);
                Ok(())
            }
            Err(e) => {
                let text = e.to_string();
                error!(
                    "reload failed; the last good configuration and policy (digest {}) stay in force:\n{text}",
                    self.policies.digest()
                );
                self.note(
                    NoteEvent::ReloadFailed,
                    format!(
                        "reload failed, keeping policy digest {}: {text}",
                        self.policies.digest()
                    ),
                );
                Err(e)
            }
        }
    }

    /// One pass: scan, observe, plan, act, record. Errors are in the summary; the loop
    /// goes on.
    pub fn pass(&mut self, now: SystemTime) -> PassSummary {
        let started = Instant::now();
        self.pass_no += 1;
        let mut summary = PassSummary {
            pass: self.pass_no,
            ..PassSummary::default()
        };
        if let Err(e) = self.pass_inner(now, &mut summary) {
            // Logged once, with the pass, by the loop.
            summary.error = Some(e.to_string());
            summary.audit_failed = matches!(
                e,
                PassError::History(_) | PassError::AuditKey(_) | PassError::Audit(_)
            );
        }
        summary.duration = started.elapsed();
        self.publish(&summary);
        summary
    }

    fn pass_inner(&mut self, now: SystemTime, summary: &mut PassSummary) -> Result<(), PassError> {
        let namespaces = self.namespaces()?;
        summary.namespaces = namespaces.len();
        // Every teardown state is watched and exported, whatever the policies say (a
        // FIN_WAIT_2 leak shows even under a CLOSE_WAIT-only policy); the rules add theirs.
        let states: StateSet = StateSet::default_stuck()
            .iter()
            .chain(self.policies.rules.iter().flat_map(|r| r.states.iter()))
            .collect();
        // Sockets younger than every rule's threshold need no owner: keep them out of the
        // snapshot (and so out of the /proc walk), but observe them all.
        let youngest = self
            .policies
            .rules
            .iter()
            .map(|r| r.older_than.as_secs())
            .min()
            .unwrap_or(STUCK_WITHOUT_RULES.as_secs());
        let filter = SocketFilter {
            states,
            older_than: (youngest > 0).then(|| Duration::from_secs(youngest)),
            ..SocketFilter::default()
        };
        let scan_started = Instant::now();
        let snap = {
            let decider = self.decider(namespaces.clone(), filter.clone());
            decider.scan(now)
        };
        let snap = match snap {
            Ok(snap) => snap,
            Err(e) => {
                self.relist = true;
                return Err(PassError::Scan(e));
            }
        };
        if !snap.warnings.is_empty() {
            // A namespace that could not be dumped may be gone: list them again next pass.
            self.relist = true;
            for w in &snap.warnings {
                warn!("{w}");
            }
            summary.warnings.extend(snap.warnings.iter().cloned());
        }
        // The index holds sockets in a namespace that is not listed: one created since is
        // listed at the next pass, not at the next `namespace_refresh`.
        if snap
            .unlisted
            .iter()
            .any(|inode| !self.unlisted.contains(inode))
            && NetnsSelector::parse(&self.config.netns) == NetnsSelector::All
        {
            debug!(namespaces = ?snap.unlisted, "the eBPF index names namespaces not listed");
            self.relist = true;
        }
        self.unlisted = snap.unlisted.iter().copied().collect();
        let dumped: Vec<_> = snap.namespaces.iter().map(|n| n.id).collect();
        self.observations.update(snap.seen(), &dumped, now);
        for s in &snap.sockets {
            let since = now - Duration::from_secs(s.age.secs);
            let key = (s.socket.netns, s.socket.cookie, s.socket.state);
            self.observations.backdate(key, since);
        }
        match self.observations.save() {
            Ok(_) => self.last_save_error = None,
            Err(e) => {
                let text = e.to_string();
                if self.last_save_error.as_deref() != Some(text.as_str()) {
                    error!("{text}");
                }
                self.last_save_error = Some(text);
            }
        }
        let scan_took = scan_started.elapsed();
        summary.watched = snap.seen_count();
        summary.stuck = snap.sockets.len();
        summary.unseen = self.namespace_unseen.len() + snap.unseen.len();
        let (figures, tally) = self.decide_and_act(snap, namespaces, filter, now, summary)?;
        if let (Some(m), Some(figures)) = (&self.metrics, figures) {
            m.observe_figures(figures, &tally, scan_took);
        }
        Ok(())
    }

    /// How this daemon decides: its policies, its observations, its mode.
    fn decider(&self, namespaces: Vec<Netns>, filter: SocketFilter) -> Decider<'_> {
        decider_of(
            self.sys,
            &self.observations,
            &self.policies,
            &self.config,
            namespaces,
            filter,
        )
    }

    /// Plan for the sockets of `snap` and carry the plan out (deciding again at act time).
    /// With nothing stuck, neither the audit log nor the owners are read. Returns what the
    /// metrics need of the snapshot and plan (taken before they are freed), if any.
    fn decide_and_act(
        &mut self,
        snap: scan::Snapshot,
        namespaces: Vec<Netns>,
        filter: SocketFilter,
        now: SystemTime,
        summary: &mut PassSummary,
    ) -> Result<(Option<PassFigures>, ActionTally), PassError> {
        let figures_of = |metrics: &Option<Arc<Metrics>>, snap: &scan::Snapshot, plan: &Plan| {
            metrics.as_ref().map(|_| PassFigures::of(snap, plan))
        };
        if snap.sockets.is_empty() {
            let plan = engine::Plan {
                mode: self.mode(),
                items: Vec::new(),
            };
            return Ok((
                figures_of(&self.metrics, &snap, &plan),
                ActionTally::default(),
            ));
        }
        let observe = self.mode() == Mode::Observe;
        let history = cached_history(
            &mut self.history,
            &self.config.audit_log,
            now,
            &self.policies,
            observe,
        )
        .map_err(PassError::History)?;
        let decider = decider_of(
            self.sys,
            &self.observations,
            &self.policies,
            &self.config,
            namespaces,
            filter,
        );
        let mut plan = decider.plan(&snap, history, now);
        summary.degraded = degrade(&mut plan, &self.caps);
        drop_recorded_observations(&mut plan, history);
        summary.planned = plan.items.len();
        summary.held = plan
            .items
            .iter()
            .filter(|i| matches!(&i.decision, Decision::Held(r) if *r != HeldReason::Observe))
            .count();
        let to_record = plan
            .items
            .iter()
            .filter(|i| {
                matches!(
                    i.decision,
                    Decision::Act | Decision::Held(HeldReason::Observe)
                )
            })
            .count();
        for item in plan.items.iter().filter(|i| i.decision != Decision::Act) {
            debug!(rule = %item.rule, target = %item.target, decision = %item.decision, "{}", item.why(&snap.sockets));
        }
        let figures = figures_of(&self.metrics, &snap, &plan);
        if to_record == 0 {
            return Ok((figures, ActionTally::default()));
        }
        let planned = Planned { snap, plan };

        let mut log = self.open_audit()?;
        let mut ctx = ActContext {
            sys: self.sys,
            audit: &mut log,
            actor: self.actor.clone(),
            policy_digest: self.policies.digest().to_string(),
            dry_run: planned.plan.mode == Mode::Observe,
            now,
            plan_history: Some(audit::MarkedHistory {
                history: self.history.history.clone(),
                mark: self.history.mark,
            }),
        };
        let mut reports = PassReports::default();
        let result = actions::carry_out(planned, &decider, &mut ctx, &mut reports);
        summary.audit_head = log.head().map(|(seq, _)| seq);
        drop(decider);
        // Our own records changed the trail: the next pass reads it again.
        self.history.key = None;
        // What was done before a record failed is counted and logged all the same.
        reports.log();
        summary.observed += reports.observed;
        summary.acted += reports.acted;
        summary.succeeded += reports.succeeded;
        result.map_err(PassError::Audit)?;
        Ok((figures, reports.tally))
    }

    /// With `audit_retention` set: once an hour, prune the rotated audit files whose records
    /// are all older than the retention (as `sockwarden audit prune`).
    pub fn prune_if_due(&mut self, now: SystemTime) {
        let Some(retention) = self.config.audit_retention else {
            return;
        };
        if self
            .last_prune
            .is_some_and(|at| at.elapsed() < Duration::from_secs(3600))
        {
            return;
        }
        self.last_prune = Some(Instant::now());
        let before = now.checked_sub(retention).unwrap_or(SystemTime::UNIX_EPOCH);
        let result = self.open_audit().and_then(|mut log| {
            audit::prune(&mut log, before, self.actor.clone(), self.mode())
                .map_err(PassError::Audit)
        });
        match result {
            Ok(r) if r.removed.is_empty() => debug!("audit retention: nothing to prune"),
            Ok(r) => info!(
                "audit retention: pruned {} rotated file(s) ({} records); the trail starts at seq {}",
                r.removed.len(),
                r.removed_records,
                r.starts_at.unwrap_or(0)
            ),
            Err(e) => error!("audit retention: {e}"),
        }
    }

    /// The namespaces to scan: listed at start, every `namespace_refresh`, and after a
    /// namespace could not be dumped; in between, the last list (no `/proc` walk).
    fn namespaces(&mut self) -> Result<Vec<Netns>, PassError> {
        let fresh = match &self.namespaces {
            Some((list, at)) if !self.relist && at.elapsed() < self.config.namespace_refresh => {
                return Ok(list.clone());
            }
            _ => scan::list_namespaces(self.sys, &NetnsSelector::parse(&self.config.netns)),
        };
        let listed = fresh.map_err(PassError::Namespaces)?;
        let list = listed.namespaces;
        if listed.warnings != self.namespace_warnings {
            for w in &listed.warnings {
                warn!("{w}");
            }
            self.namespace_warnings = listed.warnings;
        }
        self.namespace_unseen = listed.unseen;
        debug!(count = list.len(), "listed network namespaces");
        self.relist = false;
        self.namespaces = Some((list.clone(), Instant::now()));
        Ok(list)
    }

    /// The loop: a pass every interval, reloads on SIGHUP, watchdog pings between passes,
    /// and on SIGTERM/SIGINT the pass in flight finishes, a shutdown note is written.
    pub fn serve(&mut self, signals: &Signals, notifier: &Notifier) {
        let mut next_pass = Instant::now();
        let mut ready = false;
        let watchdog = notifier.watchdog_interval();
        let mut next_ping = Instant::now();
        let stop = loop {
            if let Some(sig) = signals.stop_requested() {
                break sig;
            }
            if signals.take_reload() {
                if let Err(e) = notifier.reloading() {
                    warn!("sd_notify RELOADING=1: {e}");
                }
                let status = match self.reload() {
                    Ok(()) => "reloaded".to_string(),
                    Err(e) => format!("reload failed, the last good configuration stays: {e}"),
                };
                if let Err(e) = notifier.ready(&status) {
                    warn!("sd_notify: {e}");
                }
                next_pass = Instant::now();
            }
            if Instant::now() >= next_pass {
                let summary = self.pass(SystemTime::now());
                log_pass(&summary);
                self.prune_if_due(SystemTime::now());
                let status = summary.to_string();
                let sent = if ready {
                    notifier.status(&status)
                } else {
                    ready = true;
                    notifier.ready(&status)
                };
                if let Err(e) = sent {
                    warn!("sd_notify: {e}");
                }
                // Start to start; after a pass longer than the interval, start again now.
                next_pass += self.config.interval;
                if next_pass < Instant::now() {
                    next_pass = Instant::now();
                }
            }
            if let Some(every) = watchdog {
                if Instant::now() >= next_ping {
                    // From the loop itself: a hung pass stops the pings, and systemd acts.
                    if let Err(e) = notifier.watchdog() {
                        warn!("sd_notify WATCHDOG=1: {e}");
                    }
                    next_ping = Instant::now() + every;
                }
            }
            let mut wake = next_pass;
            if watchdog.is_some() {
                wake = wake.min(next_ping);
            }
            signals.wait(wake.saturating_duration_since(Instant::now()));
        };
        let detail = format!(
            "stopping on {stop} after {} pass(es); {} socket(s) observed, kept in {}",
            self.pass_no,
            self.observations.len(),
            self.observations.path().display()
        );
        if let Err(e) = notifier.stopping(&detail) {
            warn!("sd_notify STOPPING=1: {e}");
        }
        info!("{detail}");
        self.note(NoteEvent::Shutdown, detail);
    }
}

/// Items whose action cannot work here become observe (recorded as dry-run), saying why.
fn degrade(plan: &mut engine::Plan, caps: &Capabilities) -> usize {
    let mut n = 0;
    for item in &mut plan.items {
        if item.decision != Decision::Act {
            continue;
        }
        if let Some(why) = caps.unavailable(item.action.kind()) {
            item.decision = Decision::Held(HeldReason::Observe);
            item.note(format!("not carried out: {why}"));
            n += 1;
        }
    }
    n
}

/// A daemon's [`Decider`] from its parts (so that the history cache can be borrowed beside).
fn decider_of<'a>(
    sys: &'a dyn System,
    observations: &'a ObservationStore,
    policies: &'a PolicySet,
    config: &Config,
    namespaces: Vec<Netns>,
    filter: SocketFilter,
) -> Decider<'a> {
    Decider {
        sys,
        namespaces,
        filter,
        observations: observations.observations(),
        policies,
        options: RunOptions {
            mode: config.mode,
            ..RunOptions::new(Pid::own())
        },
        one_shot: false,
    }
}

/// An observed (dry-run) item is recorded once per rule and target, not every pass.
fn drop_recorded_observations(plan: &mut engine::Plan, history: &History) {
    plan.items.retain(|i| {
        i.decision != Decision::Held(HeldReason::Observe)
            || !history.recorded(&i.rule, &i.target.key())
    });
}

/// The trail's history, read again only when the live file changed (a rotation or any
/// append changes its inode, size or mtime).
fn cached_history<'c>(
    cache: &'c mut HistoryCache,
    path: &Path,
    now: SystemTime,
    policies: &PolicySet,
    observe: bool,
) -> Result<&'c History, audit::AuditError> {
    let key = live_file_key(path)
        .map(|(ino, len, mtime)| (ino, len, mtime, policies.digest().to_string(), observe));
    if key.is_none() || key != cache.key {
        let keep = Keep::for_policies(policies, observe);
        let read = audit::history_marked(path, now - audit::HISTORY_LOOKBACK, keep)?;
        cache.history = read.history;
        cache.mark = read.mark;
        cache.key = key;
    }
    Ok(&cache.history)
}

fn live_file_key(path: &Path) -> Option<(u64, u64, SystemTime)> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path).ok()?;
    Some((m.ino(), m.len(), m.modified().ok()?))
}

/// Above this many actions in a pass, the log counts them instead of naming each.
const LOG_EACH_ACTION_UP_TO: usize = 50;

/// What a pass keeps of its reports as they come: its summary's counts, the metrics'
/// tally, and the first few for the log (a mass leak's 100,000 are counted, not kept).
#[derive(Default)]
struct PassReports {
    tally: ActionTally,
    observed: usize,
    acted: usize,
    succeeded: usize,
    /// The first reports, logged each when there are no more than
    /// [`LOG_EACH_ACTION_UP_TO`]; the later ones go to the debug log as they come.
    first: Vec<ActionReport>,
    total: usize,
    /// Per rule, action and result: how many.
    counts: Vec<ActionCount>,
}

/// How many actions of one rule and kind had one result.
struct ActionCount {
    rule: Arc<str>,
    action: Arc<str>,
    result: String,
    n: usize,
    /// The first one's target.
    example: String,
    /// Whether it went as meant (recorded, or succeeded).
    ok: bool,
}

impl actions::Reports for PassReports {
    fn report(&mut self, r: ActionReport) {
        self.tally.add(&r);
        self.total += 1;
        let ok = r.result.only_recorded() || r.succeeded();
        if r.result.only_recorded() {
            self.observed += 1;
        } else {
            self.acted += 1;
            if r.succeeded() {
                self.succeeded += 1;
            }
        }
        let result = r.result.to_string();
        let same =
            |c: &&mut ActionCount| c.rule == r.rule && c.action == r.action && c.result == result;
        match self.counts.iter_mut().find(same) {
            Some(c) => c.n += 1,
            None => self.counts.push(ActionCount {
                rule: r.rule.clone(),
                action: r.action.clone(),
                result,
                n: 1,
                example: r.target.to_string(),
                ok,
            }),
        }
        if self.first.len() <= LOG_EACH_ACTION_UP_TO {
            self.first.push(r);
        } else {
            debug!(rule = %r.rule, action = %r.action, target = %r.target, result = %r.result, message = r.message.as_deref().unwrap_or(""), "action");
        }
    }
}

impl PassReports {
    /// A line per action, unless there were many (a mass leak): then a line per rule,
    /// action and result (how many, an example target), and each action at debug level.
    fn log(&self) {
        if self.total <= LOG_EACH_ACTION_UP_TO {
            for r in &self.first {
                if r.result.only_recorded() {
                    info!(rule = %r.rule, action = %r.action, target = %r.target, "observed (not acted on)");
                } else if r.succeeded() {
                    info!(rule = %r.rule, action = %r.action, target = %r.target, result = %r.result, "acted");
                } else {
                    warn!(rule = %r.rule, action = %r.action, target = %r.target, result = %r.result, message = r.message.as_deref().unwrap_or(""), "action did not succeed");
                }
            }
            return;
        }
        for r in &self.first {
            debug!(rule = %r.rule, action = %r.action, target = %r.target, result = %r.result, message = r.message.as_deref().unwrap_or(""), "action");
        }
        for c in &self.counts {
            let (rule, action, result, example, n) = (
                &*c.rule,
                &*c.action,
                c.result.as_str(),
                c.example.as_str(),
                c.n,
            );
            if c.ok {
                info!(rule, action, result, count = n, example, "{n} actions");
            } else {
                warn!(
                    rule,
                    action,
                    result,
                    count = n,
                    example,
                    "{n} actions did not succeed"
                );
            }
        }
    }
}

fn log_pass(s: &PassSummary) {
    let ms = u64::try_from(s.duration.as_millis()).unwrap_or(u64::MAX);
    if let Some(e) = &s.error {
        error!(
            pass = s.pass,
            duration_ms = ms,
            "pass failed (retried next interval): {e}"
        );
    } else {
        info!(
            pass = s.pass,
            namespaces = s.namespaces,
            watched = s.watched,
            stuck = s.stuck,
            planned = s.planned,
            acted = s.acted,
            succeeded = s.succeeded,
            held = s.held,
            observed = s.observed,
            degraded = s.degraded,
            duration_ms = ms,
            "pass"
        );
    }
}

#[cfg(test)]
mod tests;
