//! Prometheus metrics of the daemon: stuck sockets, their ages, actions, guard refusals, scan
//! duration and capabilities, updated once per pass and exposed over HTTP (`GET /metrics`)
//! or written to a node_exporter textfile-collector file.
//!
//! Series (text format 0.0.4; label values escaped; no label per socket or pid):
//! - `sockwarden_stuck_sockets{state,netns,pod_uid,container,unit}` gauge, replaced each
//!   pass: `netns` is the namespace's stable label (`host`, a `/run/netns` name, `node`,
//!   `pod:<uid>`, `container:<id>`, `unit:<unit>`, `other`: never a pid), `container` and
//!   `unit` the first owner's (`""` when unknown);
//! - `sockwarden_stuck_oldest_age_seconds{…the same labels}` gauge: the oldest of each
//!   group of the last pass (a snapshot is a gauge, never a histogram);
//! - `sockwarden_watched_sockets{state,netns}` gauge: every socket in a watched state,
//!   any age (every teardown state is watched, whatever the policies say);
//! - `sockwarden_destroyed_socket_age_seconds` histogram of events: the age at which each
//!   socket the daemon destroyed had been stuck (`rate()` it);
//! - `process_cpu_seconds_total`, `process_resident_memory_bytes`, `process_open_fds`,
//!   `process_max_fds`, `process_start_time_seconds` of the agent itself;
//! - `sockwarden_actions_total{action,rule,outcome}` counter, one per action report;
//! - `sockwarden_guard_refusals_total{guard,rule}` counter, one per held plan item
//!   (`guard` = observe, listening, protected, no-owner, no-unit, cooldown,
//!   `budget:<guard key>`, owner-fraction, already-planned);
//! - `sockwarden_scan_duration_seconds` histogram over all passes;
//! - `sockwarden_passes_total`, `sockwarden_failed_passes_total`,
//!   `sockwarden_audit_write_failures_total` counters,
//!   `sockwarden_last_pass_timestamp_seconds` gauge (absent before the first pass);
//! - `sockwarden_mode{mode}` gauge 1 for the mode of the last plan;
//! - `sockwarden_capability{capability}` gauge 1/0; `sockwarden_build_info{version}` 1;
//! - `sockwarden_watcher{watcher}` gauge 1: `bpf` (eBPF index and owner iterator),
//!   `bpf-owners` (the iterator only), or `sock-diag` (neither; the log says why).

mod http;
#[cfg(test)]
mod tests;
mod text;

use std::collections::BTreeMap;
use std::io;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::actions::ActionReport;
use crate::engine::{Decision, HeldReason, Plan};
use crate::model::TcpState;
use crate::outcome::ActionResult;
use crate::policy::{ActionKind, Mode};
use crate::scan::Snapshot;

pub use text::CONTENT_TYPE;
use text::{Kind, Value};

/// Upper bounds of the age histogram's buckets, in seconds: 10 s … 1 day.
pub const AGE_BUCKETS: [f64; 8] = [10.0, 60.0, 300.0, 600.0, 1800.0, 3600.0, 21600.0, 86400.0];
/// Upper bounds of the scan-duration histogram's buckets, in seconds: 1 ms … 10 s.
pub const SCAN_BUCKETS: [f64; 13] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Everything the exposition shows, behind one lock. Create with [`Metrics::new`], feed with
/// [`Metrics::observe_pass`] once per pass, read with [`Metrics::render`].
#[derive(Debug)]
pub struct Metrics {
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    passes: u64,
    failed_passes: u64,
    last_pass: Option<SystemTime>,
    mode: Option<Mode>,
    /// Per group: sockets old enough for a rule; replaced every pass.
    stuck: BTreeMap<Group, u64>,
    /// Per group: the oldest age in seconds; replaced every pass.
    oldest: BTreeMap<Group, u64>,
    /// (state, netns label) -> every socket the dumps returned, any age; replaced every pass.
    watched: BTreeMap<(TcpState, String), u64>,
    /// Passes that stopped because the audit trail could not be read or written.
    audit_failures: u64,
    /// Events: the age of each socket the daemon destroyed.
    destroyed_ages: Histogram,
    scan: Histogram,
    /// (action, rule, outcome) -> count.
    actions: BTreeMap<(String, String, String), u64>,
    /// (guard, rule) -> count.
    refusals: BTreeMap<(String, String), u64>,
    capabilities: BTreeMap<String, bool>,
    /// Which watcher runs (`Watcher::name`).
    watcher: Option<&'static str>,
    /// Namespaces that exist but could not be read in the last pass.
    unseen_namespaces: u64,
    /// The audit trail's head seq after the daemon's last write.
    audit_head: Option<u64>,
    /// When the metrics (the daemon) started, and when its last pass completed: the
    /// monotonic clock, so that a clock step never makes a stuck loop look alive.
    started: Instant,
    last_completed: Option<Instant>,
    /// The pass interval, for /healthz.
    interval: Duration,
}

/// The labels of a group of stuck sockets: bounded by the node's pods, containers and units
/// (never a pid or a socket).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Group {
    state: TcpState,
    /// The namespace's stable label (`NetnsOrigin::label`).
    netns: String,
    pod_uid: String,
    /// The first owner's container, else the namespace's.
    container: String,
    /// The first owner's systemd unit.
    unit: String,
}

impl Group {
    fn labels(&self) -> [(&'static str, &str); 5] {
        [
            ("state", self.state.name()),
            ("netns", &self.netns),
            ("pod_uid", &self.pod_uid),
            ("container", &self.container),
            ("unit", &self.unit),
        ]
    }
}

/// The standard `process_*` series of the agent itself (what every exporter has).
fn process_metrics(out: &mut String) {
    let Some(p) = crate::sys::procfs::own_process_stats() else {
        return;
    };
    let series: [(&str, &str, Kind, Value); 5] = [
        (
            "process_cpu_seconds_total",
            "Total user and system CPU time spent in seconds.",
            Kind::Counter,
            Value::Float(p.cpu_secs),
        ),
        (
            "process_resident_memory_bytes",
            "Resident memory size in bytes.",
            Kind::Gauge,
            Value::Int(p.rss_bytes),
        ),
        (
            "process_open_fds",
            "Number of open file descriptors.",
            Kind::Gauge,
            Value::Int(p.open_fds),
        ),
        (
            "process_max_fds",
            "Maximum number of open file descriptors.",
            Kind::Gauge,
            Value::Int(p.max_fds),
        ),
        (
            "process_start_time_seconds",
            "Start time of the process since unix epoch in seconds.",
            Kind::Gauge,
            Value::Float(p.start_time_secs),
        ),
    ];
    for (name, help, kind, value) in series {
        text::header(out, name, help, kind);
        text::sample(out, name, &[], value);
    }
}

/// What `/healthz` and `/readyz` answer: (healthy, why).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Health {
    pub ok: bool,
    pub detail: String,
}

/// A listen address as node_exporter takes it: `127.0.0.1:9477`, `[::1]:9477`, or `:9477`
/// for every IPv4 interface.
pub fn parse_listen(text: &str) -> Result<SocketAddr, String> {
    let full = match text.strip_prefix(':') {
        Some(port) => format!("0.0.0.0:{port}"),
        None => text.to_string(),
    };
    full.parse::<SocketAddr>().map_err(|e| {
        format!("invalid listen address `{text}`: {e} (e.g. 127.0.0.1:9477, [::1]:9477, :9477)")
    })
}

/// A loop whose last completed pass is older than this many intervals is not alive.
pub const STALE_INTERVALS: u32 = 3;

/// A fixed-bucket histogram; `counts[i]` is the number of observations in bucket `i` alone
/// (not cumulative), the last entry being the `+Inf` overflow.
#[derive(Debug, Clone)]
struct Histogram {
    bounds: &'static [f64],
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

impl Histogram {
    fn new(bounds: &'static [f64]) -> Histogram {
        Histogram {
            bounds,
            counts: vec![0; bounds.len() + 1],
            sum: 0.0,
            count: 0,
        }
    }

    fn observe(&mut self, v: f64) {
        let i = self
            .bounds
            .iter()
            .position(|&b| v <= b)
            .unwrap_or(self.bounds.len());
        if let Some(c) = self.counts.get_mut(i) {
            *c += 1;
        }
        self.sum += v;
        self.count += 1;
    }

    /// `_bucket` lines (cumulative, ending with `le="+Inf"` == count), `_sum`, `_count`.
    fn render(&self, out: &mut String, name: &str, labels: &[(&str, &str)]) {
        let bucket = format!("{name}_bucket");
        let mut cumulative = 0;
        let les = self
            .bounds
            .iter()
            .map(|&b| text::float(b))
            .chain(std::iter::once("+Inf".to_string()));
        for (le, n) in les.zip(&self.counts) {
            cumulative += n;
            let mut with_le = labels.to_vec();
            with_le.push(("le", &le));
            text::sample(out, &bucket, &with_le, Value::Int(cumulative));
        }
        text::sample(out, &format!("{name}_sum"), labels, Value::Float(self.sum));
        text::sample(
            out,
            &format!("{name}_count"),
            labels,
            Value::Int(self.count),
        );
    }
}

/// What the metrics keep of one pass's snapshot and plan: the gauges, the ages of the
/// sockets (for the destroyed-age histogram) and the guards' refusals.
#[derive(Debug)]
pub struct PassFigures {
    taken_at: SystemTime,
    mode: Mode,
    stuck: BTreeMap<Group, u64>,
    oldest: BTreeMap<Group, u64>,
    watched: BTreeMap<(TcpState, String), u64>,
    /// (guard, rule) -> held items.
    refusals: BTreeMap<(String, String), u64>,
}

impl PassFigures {
    pub fn of(snap: &Snapshot, plan: &Plan) -> PassFigures {
        let origins: std::collections::HashMap<_, _> =
            snap.namespaces.iter().map(|n| (n.id, &n.origin)).collect();
        let unknown = crate::model::NetnsOrigin {
            label: crate::model::NetnsOrigin::OTHER.to_string(),
            ..Default::default()
        };
        let origin = |id| origins.get(&id).copied().unwrap_or(&unknown);
        let mut watched = BTreeMap::new();
        for (netns, _, state) in snap.seen() {
            *watched
                .entry((state, origin(netns).label.clone()))
                .or_insert(0) += 1;
        }
        let mut stuck = BTreeMap::new();
        let mut oldest: BTreeMap<Group, u64> = BTreeMap::new();
        for s in &snap.sockets {
            let first_owner = |f: fn(&crate::model::Process) -> Option<&str>| {
                s.owners.iter().find_map(|o| f(&o.process))
            };
            let netns = origin(s.socket.netns);
            let key = Group {
                state: s.socket.state,
                netns: netns.label.clone(),
                pod_uid: netns.pod_uid.clone().unwrap_or_default(),
                container: first_owner(|p| p.container.as_deref())
                    .or(netns.container.as_deref())
                    .unwrap_or("")
                    .to_string(),
                unit: first_owner(|p| p.unit.as_deref()).unwrap_or("").to_string(),
            };
            let age = oldest.entry(key.clone()).or_insert(0);
            *age = (*age).max(s.age.secs);
            *stuck.entry(key).or_insert(0) += 1;
        }
        let mut refusals = BTreeMap::new();
        for item in &plan.items {
            if let Decision::Held(reason) = &item.decision {
                *refusals
                    .entry((guard_name(reason), item.rule.to_string()))
                    .or_insert(0) += 1;
            }
        }
        PassFigures {
            taken_at: snap.taken_at,
            mode: plan.mode,
            stuck,
            oldest,
            watched,
            refusals,
        }
    }
}

impl Metrics {
    pub fn new() -> Arc<Metrics> {
        Arc::new(Metrics {
            state: Mutex::new(State {
                passes: 0,
                failed_passes: 0,
                last_pass: None,
                mode: None,
                stuck: BTreeMap::new(),
                oldest: BTreeMap::new(),
                watched: BTreeMap::new(),
                audit_failures: 0,
                destroyed_ages: Histogram::new(&AGE_BUCKETS),
                scan: Histogram::new(&SCAN_BUCKETS),
                actions: BTreeMap::new(),
                refusals: BTreeMap::new(),
                capabilities: BTreeMap::new(),
                watcher: None,
                unseen_namespaces: 0,
                audit_head: None,
                started: Instant::now(),
                last_completed: None,
                interval: Duration::from_secs(30),
            }),
        })
    }

    /// After each pass: replace the gauges and the age histogram from `snap`, and add to the
    /// counters from `plan` (held items) and `reports` (what was done).
    pub fn observe_pass(
        &self,
        snap: &Snapshot,
        plan: &Plan,
        reports: &[ActionReport],
        scan_duration: Duration,
    ) {
        // A report without the socket's age (made outside `carry_out`) takes the
        // snapshot's.
        let age_of: std::collections::HashMap<u64, u64> = snap
            .sockets
            .iter()
            .map(|s| (s.socket.cookie.0, s.age.secs))
            .collect();
        let mut tally = ActionTally::default();
        for r in reports {
            let mut r = r.clone();
            if let (None, crate::record::TargetRef::Socket { cookie, .. }) =
                (r.age_secs, &r.target_ref)
            {
                r.age_secs = age_of.get(cookie).copied();
            }
            tally.add(&r);
        }
        self.observe_figures(PassFigures::of(snap, plan), &tally, scan_duration);
    }

    /// [`Metrics::observe_pass`] with what it needs of the snapshot and the plan taken
    /// beforehand, so that they can be freed before the actions run.
    pub fn observe_figures(
        &self,
        figures: PassFigures,
        tally: &ActionTally,
        scan_duration: Duration,
    ) {
        let PassFigures {
            taken_at,
            mode,
            stuck,
            oldest,
            watched,
            refusals,
        } = figures;
        let mut st = self.lock();
        st.stuck = stuck;
        st.oldest = oldest;
        st.watched = watched;
        for age in &tally.destroyed_ages {
            // u64 seconds to f64 is exact below 2^53 s.
            st.destroyed_ages.observe(*age as f64);
        }
        st.scan.observe(scan_duration.as_secs_f64());
        st.passes += 1;
        st.last_pass = Some(taken_at);
        st.last_completed = Some(Instant::now());
        st.mode = Some(mode);
        for (key, n) in refusals {
            *st.refusals.entry(key).or_insert(0) += n;
        }
        for (key, n) in &tally.actions {
            *st.actions.entry(key.clone()).or_insert(0) += *n;
        }
    }

    /// A pass that failed before it could be observed (the scan or the audit log failed):
    /// counts it, keeps the last good pass's gauges.
    /// `audit`: it failed because the audit trail could not be read or written.
    pub fn observe_failed_pass(&self, audit: bool) {
        let mut st = self.lock();
        st.failed_passes += 1;
        if audit {
            st.audit_failures += 1;
        }
    }

    /// Record whether a capability the actions need is there (e.g. `sock_destroy`, `pidfd`,
    /// `systemd`, `cap_net_admin`).
    pub fn set_capability(&self, name: &str, available: bool) {
        self.lock().capabilities.insert(name.to_string(), available);
    }

    /// Record which watcher runs ([`crate::sys::Watcher::name`]).
    pub fn set_watcher(&self, name: &'static str) {
        self.lock().watcher = Some(name);
    }

    /// How many namespaces the last pass could not read (not an all-clear when > 0).
    pub fn set_unseen_namespaces(&self, n: usize) {
        self.lock().unseen_namespaces = u64::try_from(n).unwrap_or(u64::MAX);
    }

    /// The audit trail's head seq after the daemon's last write.
    pub fn set_audit_head(&self, seq: u64) {
        self.lock().audit_head = Some(seq);
    }

    /// The daemon's pass interval (for `/healthz`).
    pub fn set_interval(&self, interval: Duration) {
        self.lock().interval = interval;
    }

    /// `/healthz`: the loop is alive when its last completed pass (or, before the first,
    /// its start) is less than [`STALE_INTERVALS`] intervals old. A pass that hangs (a
    /// stuck netlink dump, a wedged /proc read) fails it even though the port answers.
    pub fn liveness(&self) -> Health {
        let st = self.lock();
        Self::liveness_at(&st, Instant::now())
    }

    fn liveness_at(st: &State, now: Instant) -> Health {
        let limit = st.interval * STALE_INTERVALS;
        let (since, what) = match st.last_completed {
            Some(at) => (now.saturating_duration_since(at), "the last completed pass"),
            None => (
                now.saturating_duration_since(st.started),
                "start-up, no pass yet,",
            ),
        };
        let ok = since < limit;
        Health {
            ok,
            detail: format!(
                "{}: {what} {}s ago ({} {STALE_INTERVALS} intervals of {}s)\n",
                if ok { "ok" } else { "stuck" },
                since.as_secs(),
                if ok { "<" } else { ">=" },
                st.interval.as_secs()
            ),
        }
    }

    /// `/readyz`: ready once a first pass has completed (its figures are in /metrics).
    pub fn readiness(&self) -> Health {
        let st = self.lock();
        match st.last_completed {
            Some(_) => Health {
                ok: true,
                detail: format!("ready: {} pass(es) completed\n", st.passes),
            },
            None => Health {
                ok: false,
                detail: "not ready: no pass has completed yet\n".into(),
            },
        }
    }

    /// What `GET /metrics` serves: [`render`](Self::render) and the agent's own
    /// `process_*` series (not in the textfile: node_exporter reports its own process, and
    /// figures written once a pass would be stale).
    pub fn render_endpoint(&self) -> String {
        let mut out = self.render();
        process_metrics(&mut out);
        out
    }

    /// The whole exposition in the Prometheus text format 0.0.4.
    pub fn render(&self) -> String {
        let st = self.lock();
        let mut out = String::with_capacity(4096);

        let name = "sockwarden_stuck_sockets";
        text::header(
            &mut out,
            name,
            "Sockets old enough for a rule in the last pass, by state, network namespace (a stable label), pod, container and systemd unit of the first owner (\"\" when unknown).",
            Kind::Gauge,
        );
        for (group, n) in &st.stuck {
            text::sample(&mut out, name, &group.labels(), Value::Int(*n));
        }

        let name = "sockwarden_stuck_oldest_age_seconds";
        text::header(
            &mut out,
            name,
            "Age in its state of the oldest socket of each group of the last pass (the labels of sockwarden_stuck_sockets).",
            Kind::Gauge,
        );
        for (group, age) in &st.oldest {
            text::sample(&mut out, name, &group.labels(), Value::Int(*age));
        }

        let name = "sockwarden_watched_sockets";
        text::header(
            &mut out,
            name,
            "Sockets in each watched state in the last pass, any age, by network namespace. Every teardown state is watched, whatever the policies say.",
            Kind::Gauge,
        );
        for ((state, netns), n) in &st.watched {
            text::sample(
                &mut out,
                name,
                &[("state", state.name()), ("netns", netns)],
                Value::Int(*n),
            );
        }

        let name = "sockwarden_destroyed_socket_age_seconds";
        text::header(
            &mut out,
            name,
            "How long each socket the daemon destroyed had been stuck in its state (events: rate() it).",
            Kind::Histogram,
        );
        st.destroyed_ages.render(&mut out, name, &[]);

        let name = "sockwarden_actions_total";
        text::header(
            &mut out,
            name,
            "Actions carried out or recorded, by action, rule and outcome (destroyed, delivered, restarted, observed, dry-run, failed, ...).",
            Kind::Counter,
        );
        for ((action, rule, outcome), n) in &st.actions {
            text::sample(
                &mut out,
                name,
                &[("action", action), ("rule", rule), ("outcome", outcome)],
                Value::Int(*n),
            );
        }

        let name = "sockwarden_guard_refusals_total";
        text::header(
            &mut out,
            name,
            "Planned actions held back, by guard (observe, listening, protected, no-owner, no-unit, cooldown, budget:<key>, owner-fraction, already-planned) and rule.",
            Kind::Counter,
        );
        for ((guard, rule), n) in &st.refusals {
            text::sample(
                &mut out,
                name,
                &[("guard", guard), ("rule", rule)],
                Value::Int(*n),
            );
        }

        let name = "sockwarden_scan_duration_seconds";
        text::header(
            &mut out,
            name,
            "Time a pass took to scan: namespace dumps, owner lookup and aging.",
            Kind::Histogram,
        );
        st.scan.render(&mut out, name, &[]);

        let name = "sockwarden_passes_total";
        text::header(&mut out, name, "Passes observed.", Kind::Counter);
        text::sample(&mut out, name, &[], Value::Int(st.passes));

        let name = "sockwarden_failed_passes_total";
        text::header(
            &mut out,
            name,
            "Passes that failed (scan or audit error); the gauges keep the last good pass.",
            Kind::Counter,
        );
        text::sample(&mut out, name, &[], Value::Int(st.failed_passes));

        let name = "sockwarden_audit_write_failures_total";
        text::header(
            &mut out,
            name,
            "Passes that stopped because the audit trail could not be read or written: no action is taken then.",
            Kind::Counter,
        );
        text::sample(&mut out, name, &[], Value::Int(st.audit_failures));

        let name = "sockwarden_last_pass_timestamp_seconds";
        text::header(
            &mut out,
            name,
            "When the last observed pass took its snapshot, in seconds since the Unix epoch.",
            Kind::Gauge,
        );
        if let Some(t) = st.last_pass {
            let secs = t.duration_since(UNIX_EPOCH).unwrap_or_default();
            text::sample(&mut out, name, &[], Value::Float(secs.as_secs_f64()));
        }

        let name = "sockwarden_mode";
        text::header(
            &mut out,
            name,
            "The mode the last pass planned in (1 for the current mode).",
            Kind::Gauge,
        );
        if let Some(mode) = st.mode {
            text::sample(&mut out, name, &[("mode", mode.name())], Value::Int(1));
        }

        let name = "sockwarden_capability";
        text::header(
            &mut out,
            name,
            "Whether a capability the actions need is available (1) or not (0).",
            Kind::Gauge,
        );
        for (cap, ok) in &st.capabilities {
            text::sample(
                &mut out,
                name,
                &[("capability", cap)],
                Value::Int(u64::from(*ok)),
            );
        }

        let name = "sockwarden_unseen_namespaces";
        text::header(
            &mut out,
            name,
            "Network namespaces that exist but could not be read in the last pass (not entered, not dumped, or hidden): when above 0 the pass is not an all-clear.",
            Kind::Gauge,
        );
        text::sample(&mut out, name, &[], Value::Int(st.unseen_namespaces));

        let name = "sockwarden_audit_head_seq";
        text::header(
            &mut out,
            name,
            "The seq of the newest audit record the daemon wrote: a trail that verifies shorter than this was cut.",
            Kind::Gauge,
        );
        if let Some(seq) = st.audit_head {
            text::sample(&mut out, name, &[], Value::Int(seq));
        }

        let name = "sockwarden_watcher";
        text::header(
            &mut out,
            name,
            "Which watcher runs (1): bpf (eBPF index of state entries and owner iterator), bpf-owners (the iterator only) or sock-diag (neither; the log says why).",
            Kind::Gauge,
        );
        if let Some(watcher) = st.watcher {
            text::sample(&mut out, name, &[("watcher", watcher)], Value::Int(1));
        }

        let name = "sockwarden_build_info";
        text::header(
            &mut out,
            name,
            "Always 1; the version label says which sockwarden is running.",
            Kind::Gauge,
        );
        text::sample(
            &mut out,
            name,
            &[("version", env!("CARGO_PKG_VERSION"))],
            Value::Int(1),
        );
        out
    }

    /// Serve `GET /metrics` on `addr` from a background thread (one request per connection,
    /// bounded time per request, a few connections at once). Returns the bound address
    /// (useful with port 0) and the thread, which runs for the life of the process.
    pub fn serve(
        self: &Arc<Self>,
        addr: SocketAddr,
    ) -> Result<(SocketAddr, JoinHandle<()>), MetricsError> {
        let listener =
            TcpListener::bind(addr).map_err(|source| MetricsError::Bind { addr, source })?;
        let bound = listener
            .local_addr()
            .map_err(|source| MetricsError::Bind { addr, source })?;
        let metrics = Arc::clone(self);
        let handle = std::thread::Builder::new()
            .name("metrics-http".to_string())
            .spawn(move || http::accept_loop(&listener, &metrics))
            .map_err(|source| MetricsError::Spawn { source })?;
        Ok((bound, handle))
    }

    /// Write the exposition to `path` for node_exporter's textfile collector: to a temporary
    /// file in the same directory (not ending in `.prom`, so the collector never reads it half
    /// written), fsynced, then renamed over `path`.
    pub fn write_textfile(&self, path: &Path) -> Result<(), MetricsError> {
        let err = |step: &'static str, source: io::Error| MetricsError::Textfile {
            step,
            path: path.to_path_buf(),
            source,
        };
        let (dir, name) = crate::sys::files::split(path).map_err(|e| {
            err(
                "name",
                io::Error::new(io::ErrorKind::InvalidInput, e.to_string()),
            )
        })?;
        // The one way root writes a file: relative to the directory, never through a link,
        // replaced whole (a collector never reads half a file).
        let dir = crate::sys::files::SafeDir::open(dir)
            .map_err(|e| err("open directory", io::Error::other(e.to_string())))?;
        dir.replace(name, self.render().as_bytes(), 0o644)
            .map_err(|e| err("replace", e))
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave the counters half updated in a way
        // worth losing the endpoint over: keep serving.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The `guard` label of a held item.
fn guard_name(reason: &HeldReason) -> String {
    match reason {
        HeldReason::Observe => "observe".into(),
        HeldReason::Listening => "listening".into(),
        HeldReason::Protected { .. } => "protected".into(),
        HeldReason::NoOwner => "no-owner".into(),
        HeldReason::NoUnit => "no-unit".into(),
        HeldReason::Cooldown { .. } => "cooldown".into(),
        HeldReason::Budget { budget, .. } => format!("budget:{budget}"),
        HeldReason::OwnerFraction { .. } => "owner-fraction".into(),
        HeldReason::AlreadyPlanned { .. } => "already-planned".into(),
    }
}

/// The `action` label of a report: the action kind only. The report's text also carries the
/// signal name or the exec command line, which must not become a label value.
fn action_name(action: &str) -> &'static str {
    let first = action.split_whitespace().next().unwrap_or("");
    match first.parse::<ActionKind>() {
        Ok(kind) => kind.name(),
        Err(_) => "other",
    }
}

/// What the metrics keep of a pass's reports, added up as they come: the actions per kind,
/// rule and result, and the cookies of the sockets destroyed (their ages, from the pass's
/// figures, fill the destroyed-age histogram).
#[derive(Debug, Default)]
pub struct ActionTally {
    /// (action, rule, result) and how many: few distinct ones, however many actions.
    actions: Vec<((String, String, String), u64)>,
    /// The ages of the sockets destroyed (when their reports say).
    destroyed_ages: Vec<u64>,
}

impl ActionTally {
    pub fn add(&mut self, r: &ActionReport) {
        if let (ActionResult::Destroyed, Some(age)) = (&r.result, r.age_secs) {
            self.destroyed_ages.push(age);
        }
        let action = action_name(&r.action);
        let result = r.result.to_string();
        let same = |(a, rule, res): &(String, String, String)| {
            *a == action && **rule == *r.rule && *res == result
        };
        match self.actions.iter_mut().find(|(key, _)| same(key)) {
            Some((_, n)) => *n += 1,
            None => self
                .actions
                .push(((action.to_string(), r.rule.to_string(), result), 1)),
        }
    }
}

/// Why the metrics endpoint or textfile could not be set up or written.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    #[error("metrics: bind {addr}: {source} (is another process listening there? set another address with --metrics-listen or `metrics_listen` in the config)")]
    Bind { addr: SocketAddr, source: io::Error },
    #[error("metrics: start the HTTP thread: {source}")]
    Spawn { source: io::Error },
    #[error("metrics textfile: {step} {path}: {source} (the directory must exist and be writable, e.g. node_exporter's --collector.textfile.directory)", path = .path.display())]
    Textfile {
        step: &'static str,
        path: PathBuf,
        source: io::Error,
    },
}

impl From<MetricsError> for io::Error {
    fn from(e: MetricsError) -> io::Error {
        let kind = match &e {
            MetricsError::Bind { source, .. }
            | MetricsError::Spawn { source }
            | MetricsError::Textfile { source, .. } => source.kind(),
        };
        io::Error::new(kind, e)
    }
}
