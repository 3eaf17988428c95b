//! Actions: carry a plan out precisely — destroy by full id and cookie, signal through a
//! pidfd, restart through systemd, exec without a shell — re-verifying each target right
//! before acting, with an intent record (fsynced) before and an outcome record after.
//! If an intent cannot be recorded, nothing more is done (fail closed).

use std::collections::HashMap;
use std::time::Duration;

use serde::Serialize;

use crate::audit::{self, Actor, AuditError, AuditLog, NewRecord, Outcome, ProcessRecord};
use crate::engine::{Decision, HeldReason, Plan, PlanItem, Target};
use crate::model::{Cookie, KernelSocket, Netns, NetnsId, StateSet, StuckSocket};
use crate::policy::{self, Action};
use crate::record::SocketRecord;
use crate::scan::Snapshot;
use crate::sys::{CommandOutcome, DestroyOutcome, RestartOutcome, SignalOutcome, System};

/// Destroy intents and outcomes are written in batches of this many records, one fsync
/// each (100,000 sockets: 50 fsyncs instead of 200,000).
pub const AUDIT_BATCH: usize = 4096;
/// How long a restart may take before it is reported as timed out (left running).
pub const RESTART_TIMEOUT: Duration = Duration::from_secs(90);
/// How long an `exec` command may run before it is killed.
pub const EXEC_TIMEOUT: Duration = Duration::from_secs(30);

/// Who acts, under which policy, and where it is recorded.
pub struct ActContext<'a> {
    pub sys: &'a dyn System,
    pub audit: &'a mut AuditLog,
    pub actor: Actor,
    pub policy_digest: String,
    /// Record the plan as dry-run records and touch nothing.
    pub dry_run: bool,
}

/// What came of one plan item, for the command's report (the audit log has the same).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ActionReport {
    pub rule: String,
    pub action: String,
    pub target: String,
    /// destroyed, already-gone, tuple-reused, unsupported, not-permitted, not-confirmed,
    /// delivered, exited, pid-reused, restarted, already-in-progress, exited-0, failed,
    /// skipped, logged, dry-run, observed.
    pub result: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub errno: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The intent record's seq, when one was written.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub intent_seq: Option<u64>,
}

impl ActionReport {
    /// Whether the action did what it was meant to (or there was nothing left to do).
    pub fn succeeded(&self) -> bool {
        matches!(
            self.result.as_str(),
            "destroyed"
                | "already-gone"
                | "delivered"
                | "exited"
                | "restarted"
                | "exited-0"
                | "logged"
                | "dry-run"
                | "observed"
        )
    }
}

/// Carry out `plan` (made from `snap`). Items held by observe mode, and every item in a
/// dry run, become `dry-run` records; items held by other guards are only reported by the
/// caller. Returns one report per recorded item. An `Err` means an audit record could not
/// be written: every action before it is recorded, none after it was attempted.
pub fn carry_out(
    plan: &Plan,
    snap: &Snapshot,
    ctx: &mut ActContext<'_>,
) -> Result<Vec<ActionReport>, AuditError> {
    let mut reports = Vec::new();
    let mut plan_only: Vec<(&PlanItem, &str)> = Vec::new();
    let mut destroys: Vec<&PlanItem> = Vec::new();
    for item in &plan.items {
        match (&item.decision, ctx.dry_run) {
            (Decision::Held(HeldReason::Observe), _) => plan_only.push((item, "observed")),
            (Decision::Act, true) => plan_only.push((item, "dry-run")),
            (Decision::Held(_), _) => {}
            (Decision::Act, false) if matches!(item.action, Action::Destroy) => destroys.push(item),
            (Decision::Act, false) => reports.push(act_one(item, snap, ctx)?),
        }
    }
    reports.extend(record_plan_only(&plan_only, snap, ctx)?);
    reports.extend(destroy_all(&destroys, snap, ctx)?);
    Ok(reports)
}

/// Dry-run records for items only planned (observe mode, `--dry-run`), group-committed.
fn record_plan_only(
    items: &[(&PlanItem, &str)],
    snap: &Snapshot,
    ctx: &mut ActContext<'_>,
) -> Result<Vec<ActionReport>, AuditError> {
    let mut reports = Vec::with_capacity(items.len());
    for chunk in items.chunks(AUDIT_BATCH) {
        let records = chunk
            .iter()
            .map(|(item, _)| {
                let record = NewRecord::dry_run(
                    ctx.actor.clone(),
                    mode_of(ctx),
                    audit_action(item),
                    item.why.clone(),
                );
                describe(record, item, snap, ctx)
            })
            .collect();
        let written = ctx.audit.append_batch(records)?;
        for ((item, result), record) in chunk.iter().zip(written) {
            reports.push(report(item, result, None, None, Some(record.seq)));
        }
    }
    Ok(reports)
}

/// Signal, restart, exec and log: one at a time, intent → re-verify → act → outcome.
fn act_one(
    item: &PlanItem,
    snap: &Snapshot,
    ctx: &mut ActContext<'_>,
) -> Result<ActionReport, AuditError> {
    let intent = ctx.audit.append(intent_record(item, snap, ctx))?;
    let (result, errno, message) = match (&item.action, &item.target) {
        (Action::Log, _) => ("logged".to_string(), None, None),
        (Action::Signal { signal }, Target::Process { process, .. }) => {
            signal_result(ctx.sys.signal(*process, signal.0))
        }
        (Action::Restart, Target::Unit { unit }) => restart(item, unit, snap, ctx),
        (Action::Exec { .. }, Target::Socket { .. }) => exec(item, snap, ctx),
        (action, target) => (
            "skipped".into(),
            None,
            Some(format!("{action} cannot act on {target}")),
        ),
    };
    let outcome = Outcome {
        result: result.clone(),
        errno,
        message: message.clone(),
    };
    ctx.audit
        .append(NewRecord::outcome_of(&intent, ctx.actor.clone(), outcome))?;
    Ok(report(item, &result, errno, message, Some(intent.seq)))
}

/// Restart only if one of the processes that justified it is still that process and still
/// in that unit (the unit was read from its cgroup at scan time).
fn restart(
    item: &PlanItem,
    unit: &str,
    snap: &Snapshot,
    ctx: &ActContext<'_>,
) -> (String, Option<i32>, Option<String>) {
    let owners = item
        .socket_indices
        .iter()
        .filter_map(|i| snap.sockets.get(*i))
        .flat_map(|s| s.owners.iter().map(|o| o.process.id));
    let still_there = owners
        .clone()
        .any(|p| matches!(ctx.sys.unit_of(p), Ok(Some(u)) if u == unit));
    if !still_there {
        return (
            "skipped".into(),
            None,
            Some(format!(
                "no process that held the sockets is still in {unit}"
            )),
        );
    }
    match ctx.sys.restart_unit(unit, RESTART_TIMEOUT) {
        Ok(RestartOutcome::Restarted {
            old_main_pid,
            new_main_pid,
            ..
        }) => (
            "restarted".into(),
            None,
            Some(format!(
                "main pid {} -> {}",
                pid_text(old_main_pid),
                pid_text(new_main_pid)
            )),
        ),
        Ok(RestartOutcome::AlreadyInProgress { state }) => (
            "already-in-progress".into(),
            None,
            Some(format!(
                "{unit} is {}/{}: not restarted again",
                state.active_state, state.sub_state
            )),
        ),
        Ok(RestartOutcome::Failed { result }) => (
            "failed".into(),
            None,
            Some(format!("restart job ended `{result}`")),
        ),
        Ok(RestartOutcome::TimedOut) => (
            "failed".into(),
            None,
            Some(format!(
                "restart job still running after {}s",
                RESTART_TIMEOUT.as_secs()
            )),
        ),
        Err(e) => ("failed".into(), None, Some(e.to_string())),
    }
}

fn pid_text(pid: Option<u32>) -> String {
    pid.map(|p| p.to_string()).unwrap_or_else(|| "-".into())
}

fn exec(
    item: &PlanItem,
    snap: &Snapshot,
    ctx: &ActContext<'_>,
) -> (String, Option<i32>, Option<String>) {
    let Some(argv) = &item.argv else {
        return (
            "failed".into(),
            None,
            Some("the plan has no rendered command".into()),
        );
    };
    // Re-verify: the socket the command is about must still be there.
    if let Some(s) = item
        .socket_indices
        .first()
        .and_then(|i| snap.sockets.get(*i))
    {
        if let Some(netns) = snap.netns(s.socket.netns) {
            if let Ok(None) = ctx.sys.lookup(netns, &s.socket) {
                return ("skipped".into(), None, Some("the socket is gone".into()));
            }
        }
    }
    match ctx.sys.run_command(argv, &item.env, EXEC_TIMEOUT) {
        CommandOutcome::Exited { code: Some(0), .. } => ("exited-0".into(), None, None),
        CommandOutcome::Exited { code, stderr } => (
            "failed".into(),
            None,
            Some(format!(
                "exit status {}: {}",
                code.map(|c| c.to_string())
                    .unwrap_or_else(|| "killed by a signal".into()),
                stderr.trim()
            )),
        ),
        CommandOutcome::TimedOut => (
            "failed".into(),
            None,
            Some(format!("killed after {}s", EXEC_TIMEOUT.as_secs())),
        ),
        CommandOutcome::NotStarted { error } => ("failed".into(), None, Some(error)),
    }
}

fn signal_result(outcome: SignalOutcome) -> (String, Option<i32>, Option<String>) {
    let (result, errno, message) = match outcome {
        SignalOutcome::Delivered => ("delivered", None, None),
        SignalOutcome::Exited => (
            "exited",
            Some(libc::ESRCH),
            Some("the process had already exited"),
        ),
        SignalOutcome::PidReused => (
            "pid-reused",
            None,
            Some("the pid now belongs to another process (start time differs): nothing was sent"),
        ),
        SignalOutcome::NotPermitted => (
            "not-permitted",
            Some(libc::EPERM),
            Some("needs CAP_KILL or the same uid"),
        ),
        SignalOutcome::Unsupported => (
            "unsupported",
            Some(libc::ENOSYS),
            Some("no pidfd support (Linux < 5.3): refusing to signal by bare pid"),
        ),
        SignalOutcome::Failed(errno) => ("failed", Some(errno), None),
    };
    (result.to_string(), errno, message.map(str::to_string))
}

/// Destroys, per namespace: every intent first (in fsynced batches of [`AUDIT_BATCH`]),
/// then one dump to re-verify that each socket is still there in the same state, then
/// pipelined SOCK_DESTROYs, then one dump to confirm they are gone, then every outcome (in
/// batches too).
fn destroy_all(
    items: &[&PlanItem],
    snap: &Snapshot,
    ctx: &mut ActContext<'_>,
) -> Result<Vec<ActionReport>, AuditError> {
    let mut by_netns: HashMap<NetnsId, Vec<(&PlanItem, &StuckSocket)>> = HashMap::new();
    for item in items {
        if let Some(s) = item
            .socket_indices
            .first()
            .and_then(|i| snap.sockets.get(*i))
        {
            by_netns.entry(s.socket.netns).or_default().push((item, s));
        }
    }
    let mut reports = Vec::new();
    for (netns_id, targets) in by_netns {
        let Some(netns) = snap.netns(netns_id) else {
            continue;
        };
        // Group commit: one fsync per batch of intents, not one per socket.
        let mut intents = Vec::with_capacity(targets.len());
        for batch in targets.chunks(AUDIT_BATCH) {
            let records = batch
                .iter()
                .map(|(item, _)| intent_record(item, snap, ctx))
                .collect();
            intents.extend(ctx.audit.append_batch(records)?);
        }
        let sockets: Vec<&KernelSocket> = targets.iter().map(|(_, s)| &s.socket).collect();
        let results = destroy_verified(ctx.sys, netns, &sockets);
        let done: Vec<_> = targets.iter().zip(&intents).zip(results).collect();
        for batch in done.chunks(AUDIT_BATCH) {
            let records = batch
                .iter()
                .map(|((_, intent), (result, errno, message))| {
                    let outcome = Outcome {
                        result: result.clone(),
                        errno: *errno,
                        message: message.clone(),
                    };
                    NewRecord::outcome_of(intent, ctx.actor.clone(), outcome)
                })
                .collect();
            ctx.audit.append_batch(records)?;
            for (((item, _), intent), (result, errno, message)) in batch {
                reports.push(report(
                    item,
                    result,
                    *errno,
                    message.clone(),
                    Some(intent.seq),
                ));
            }
        }
    }
    Ok(reports)
}

/// Re-verify, destroy and confirm one namespace's sockets; one result per socket.
fn destroy_verified(
    sys: &dyn System,
    netns: &Netns,
    sockets: &[&KernelSocket],
) -> Vec<(String, Option<i32>, Option<String>)> {
    let states: StateSet = sockets.iter().map(|s| s.state).collect();
    let live = |sys: &dyn System| -> Result<HashMap<Cookie, KernelSocket>, String> {
        sys.dump(netns, states)
            .map(|d| d.sockets.into_iter().map(|s| (s.cookie, s)).collect())
            .map_err(|e| e.to_string())
    };
    let before = match live(sys) {
        Ok(before) => before,
        Err(e) => {
            return sockets
                .iter()
                .map(|_| {
                    (
                        "failed".to_string(),
                        None,
                        Some(format!("re-verify dump: {e}")),
                    )
                })
                .collect()
        }
    };
    // Only sockets still there, in the same state, are destroyed.
    let still: Vec<KernelSocket> = sockets
        .iter()
        .filter(|s| {
            before
                .get(&s.cookie)
                .is_some_and(|now| now.state == s.state)
        })
        .map(|s| (*s).clone())
        .collect();
    let outcomes: HashMap<Cookie, Result<DestroyOutcome, String>> =
        match sys.destroy_many(netns, &still) {
            Ok(outcomes) => still
                .iter()
                .map(|s| s.cookie)
                .zip(outcomes.into_iter().map(Ok))
                .collect(),
            Err(e) => still
                .iter()
                .map(|s| (s.cookie, Err(e.to_string())))
                .collect(),
        };
    let after = live(sys).ok();
    sockets
        .iter()
        .map(|s| match (before.get(&s.cookie), outcomes.get(&s.cookie)) {
            (None, _) => (
                "already-gone".into(),
                Some(libc::ENOENT),
                Some("gone before the destroy (re-verified)".into()),
            ),
            (Some(now), None) => (
                "skipped".into(),
                None,
                Some(format!(
                    "now in state {} (was {}): not destroyed",
                    now.state, s.state
                )),
            ),
            (Some(_), Some(Err(e))) => ("failed".into(), None, Some(e.clone())),
            (Some(_), Some(Ok(outcome))) => {
                destroy_result(*outcome, after.as_ref().map(|a| a.contains_key(&s.cookie)))
            }
        })
        .collect()
}

fn destroy_result(
    outcome: DestroyOutcome,
    still_listed: Option<bool>,
) -> (String, Option<i32>, Option<String>) {
    match outcome {
        DestroyOutcome::Destroyed if still_listed == Some(true) => (
            "not-confirmed".into(),
            None,
            Some("the kernel ACKed the destroy but a re-dump still lists the socket".into()),
        ),
        DestroyOutcome::Destroyed => (
            "destroyed".into(),
            None,
            Some("kernel ACK; gone from a re-dump".into()),
        ),
        DestroyOutcome::AlreadyGone => ("already-gone".into(), Some(libc::ENOENT), None),
        DestroyOutcome::TupleReused => (
            "tuple-reused".into(),
            Some(libc::ESTALE),
            Some("the address now belongs to another socket: nothing touched".into()),
        ),
        DestroyOutcome::Unsupported => (
            "unsupported".into(),
            Some(libc::EOPNOTSUPP),
            Some("kernel without CONFIG_INET_DIAG_DESTROY, or a state it cannot abort".into()),
        ),
        DestroyOutcome::NotPermitted => (
            "not-permitted".into(),
            Some(libc::EPERM),
            Some("needs CAP_NET_ADMIN in the socket's namespace".into()),
        ),
        DestroyOutcome::Failed(errno) => (
            "failed".into(),
            Some(errno),
            Some(std::io::Error::from_raw_os_error(errno).to_string()),
        ),
    }
}

/// The intent record of a plan item, written (and fsynced) before acting on it.
fn intent_record(item: &PlanItem, snap: &Snapshot, ctx: &ActContext<'_>) -> NewRecord {
    let intent = NewRecord::intent(
        ctx.actor.clone(),
        mode_of(ctx),
        audit_action(item),
        item.why.clone(),
    );
    describe(intent, item, snap, ctx)
}

/// Fill in rule, digest and target of a record from a plan item.
fn describe(
    record: NewRecord,
    item: &PlanItem,
    snap: &Snapshot,
    ctx: &ActContext<'_>,
) -> NewRecord {
    let mut record = record
        .rule(item.rule.clone(), ctx.policy_digest.clone())
        .escalated(item.escalated);
    if let Some(s) = item
        .socket_indices
        .first()
        .and_then(|i| snap.sockets.get(*i))
    {
        let fallback;
        let netns = match snap.netns(s.socket.netns) {
            Some(n) => n,
            None => {
                fallback = Netns {
                    id: s.socket.netns,
                    name: s.socket.netns.to_string(),
                    path: Default::default(),
                };
                &fallback
            }
        };
        record = record.target(SocketRecord::new(s, netns));
    }
    match &item.target {
        Target::Unit { unit } => record.unit(unit.clone()),
        Target::Process { process, comm } => {
            let owner = item
                .socket_indices
                .iter()
                .filter_map(|i| snap.sockets.get(*i))
                .flat_map(|s| &s.owners)
                .find(|o| o.process.id == *process);
            record.process(ProcessRecord {
                pid: process.pid.0,
                start_time: process.start_time,
                comm: comm.clone(),
                cmdline: owner.map(|o| o.process.cmdline.clone()),
                unit: owner.and_then(|o| o.process.unit.clone()),
            })
        }
        Target::Socket { .. } => record,
    }
}

fn audit_action(item: &PlanItem) -> audit::Action {
    let mut action = audit::Action::new(item.action.kind());
    match (&item.action, &item.target) {
        (Action::Signal { signal }, _) => action.signal = Some(signal.to_string()),
        (Action::Exec { .. }, _) => action.command = item.argv.clone(),
        (Action::Restart, Target::Unit { unit }) => action.unit = Some(unit.clone()),
        _ => {}
    }
    action
}

fn mode_of(ctx: &ActContext<'_>) -> policy::Mode {
    if ctx.dry_run {
        policy::Mode::Observe
    } else {
        policy::Mode::Enforce
    }
}

fn report(
    item: &PlanItem,
    result: &str,
    errno: Option<i32>,
    message: Option<String>,
    intent_seq: Option<u64>,
) -> ActionReport {
    ActionReport {
        rule: item.rule.clone(),
        action: item.action.to_string(),
        target: item.target.to_string(),
        result: result.to_string(),
        errno,
        message,
        intent_seq,
    }
}

#[cfg(test)]
mod tests {
    use std::time::SystemTime;

    use super::*;
    use crate::audit::{read_trail, verify, ActorKind, RecordKind};
    use crate::filter::SocketFilter;
    use crate::model::TcpState;
    use crate::policy::Mode;
    use crate::sys::fake::FakeSystem;

    const NS: NetnsId = NetnsId {
        dev: 4,
        inode: 4026531840,
    };

    fn socket(cookie: u64) -> KernelSocket {
        crate::sys::fake::socket(NS, cookie, TcpState::CloseWait)
    }

    fn item(snap: &Snapshot, index: usize, action: Action, escalated: bool) -> PlanItem {
        let cookie = snap.sockets[index].socket.cookie;
        PlanItem {
            rule: "leak".into(),
            escalated,
            action,
            target: Target::Socket { cookie, index },
            owner: None,
            sockets: vec![cookie],
            socket_indices: vec![index],
            argv: None,
            env: Vec::new(),
            decision: Decision::Act,
            why: "close-wait for 10m".into(),
        }
    }

    /// More destroys than one audit batch, plus an escalated step: every intent is written
    /// before any destroy, every outcome after, the chain verifies, and the escalation
    /// flag reaches the record.
    #[test]
    fn destroys_are_recorded_in_batches_and_escalation_is_marked() {
        let n = AUDIT_BATCH + 10;
        let netns = Netns {
            id: NS,
            name: "host".into(),
            path: "/proc/self/ns/net".into(),
        };
        let sys = FakeSystem {
            namespaces: vec![netns],
            sockets: (0..=n as u64).map(socket).collect(),
            ..FakeSystem::default()
        };
        let snap = crate::scan::scan(
            &sys,
            &SocketFilter::default(),
            &crate::scan::Observations::new(),
            SystemTime::now(),
        )
        .expect("scan");
        assert_eq!(snap.sockets.len(), n + 1);
        let mut items: Vec<PlanItem> = (0..n)
            .map(|i| item(&snap, i, Action::Destroy, false))
            .collect();
        items.push(item(&snap, n, Action::Log, true));
        let plan = Plan {
            mode: Mode::Enforce,
            items,
        };
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("audit.jsonl");
        let mut log = AuditLog::open(&path).expect("open");
        let mut ctx = ActContext {
            sys: &sys,
            audit: &mut log,
            actor: Actor::current(ActorKind::Cli),
            policy_digest: "d".into(),
            dry_run: false,
        };
        let reports = carry_out(&plan, &snap, &mut ctx).expect("carried out");
        assert_eq!(reports.len(), n + 1);
        assert_eq!(
            reports.iter().filter(|r| r.result == "destroyed").count(),
            n
        );
        assert_eq!(sys.destroyed.borrow().len(), n);

        let report = verify(&path);
        assert!(report.is_intact(), "{report}");
        let records = read_trail(&path).expect("read").records;
        // log: intent + outcome; destroys: n intents then n outcomes.
        let kinds: Vec<RecordKind> = records.iter().map(|r| r.kind).collect();
        let mut want = vec![RecordKind::Intent, RecordKind::Outcome];
        want.extend(std::iter::repeat(RecordKind::Intent).take(n));
        want.extend(std::iter::repeat(RecordKind::Outcome).take(n));
        assert!(kinds == want, "intents first, then outcomes");
        assert!(records[0].escalated && records[1].escalated);
        assert!(records[2..].iter().all(|r| !r.escalated));
        let last = records.last().expect("records");
        assert_eq!(last.intent_seq, Some(records[n + 1].seq));
        assert_eq!(last.target.as_ref().map(|t| t.cookie), Some(n as u64 - 1));
    }
}
