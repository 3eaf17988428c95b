//! Actions: carry a plan out precisely — destroy by full id and cookie, signal through the
//! pidfd taken at scan time, restart through systemd, exec without a shell — after deciding
//! again, at act time, on freshly read facts: one re-scan and one re-plan for the whole
//! plan (is the socket there, who holds it now, do the guards still allow it). An item the
//! fresh decision does not confirm is skipped, with the reason, in the audit log. An intent
//! record (fsynced) comes before every action and an outcome after; if an intent cannot be
//! recorded, nothing more is done (fail closed).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde::Serialize;

use crate::audit::{
    self, Actor, AuditError, AuditLog, Batch, BatchEntry, NewRecord, Outcome, ProcessRecord,
    RecordKind,
};
use crate::decide::{Decider, Planned};
use crate::engine::{Decision, HeldReason, PlanItem, Target, TargetKey};
use crate::model::{
    Cookie, Inode, InodeSet, KernelSocket, Netns, NetnsId, NumberHash, Process, StateSet,
    StuckSocket, TcpState,
};
use crate::outcome::ActionResult;
use crate::policy::{self, Action, ActionKind};
use crate::scan::{Snapshot, SocketKey};
use crate::sys::{
    CommandOutcome, DestroyOutcome, HolderCheck, RestartOutcome, SignalOutcome, System,
};

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
    /// The time of the act-time decision (after any confirmation): the clock's now.
    pub now: SystemTime,
    /// The history the plan was made with and where in the trail it was read up to: the
    /// act-time decision reads on from there. `None`: the trail is read again whole.
    pub plan_history: Option<audit::MarkedHistory>,
}

/// A report's target in words, put into words only when shown: a mass destroy reports
/// 100,000 sockets and a table shows a few.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TargetText {
    /// "close-wait 10.0.0.1:8080→10.0.0.2:41000"
    Socket {
        state: TcpState,
        local: std::net::SocketAddr,
        remote: std::net::SocketAddr,
    },
    /// "close-wait socket 1234": a socket no longer there, by its cookie.
    Gone {
        state: TcpState,
        cookie: Cookie,
    },
    Words(String),
}

impl std::fmt::Display for TargetText {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TargetText::Socket {
                state,
                local,
                remote,
            } => write!(f, "{state} {local}\u{2192}{remote}"),
            TargetText::Gone { state, cookie } => write!(f, "{state} socket {cookie}"),
            TargetText::Words(words) => f.write_str(words),
        }
    }
}

/// What came of one plan item, for the command's report (the audit log has the same).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ActionReport {
    pub rule: std::sync::Arc<str>,
    /// The action in words, for tables and logs (shared by a mass destroy's reports).
    #[serde(skip)]
    pub action: Arc<str>,
    /// The same object as the audit record's `action` (kind, signal, unit, command).
    #[serde(rename = "action")]
    pub action_ref: audit::Action,
    /// The target in words, for tables and logs.
    #[serde(skip)]
    pub target: TargetText,
    /// The same object as the plan's item (`clean --json` joins on it).
    #[serde(rename = "target")]
    pub target_ref: crate::record::TargetRef,
    pub result: ActionResult,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub errno: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<Message>,
    /// The intent record's seq, when one was written.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub intent_seq: Option<u64>,
    /// A socket's age in its state when it was acted on (the metrics' destroyed-age
    /// histogram).
    #[serde(skip)]
    pub age_secs: Option<u64>,
}

impl ActionReport {
    /// Whether the action did what it was meant to (or there was nothing left to do).
    pub fn succeeded(&self) -> bool {
        self.result.succeeded()
    }
}

/// (result, errno, message) of one action.
type Result3 = (ActionResult, Option<i32>, Option<Message>);

/// What an action's outcome says: most often the same words for every socket (a mass
/// destroy's 100,000), which are then not copied.
pub type Message = std::borrow::Cow<'static, str>;

/// Carry out `planned.plan` (made from `planned.snap` by `decider`). Items held by observe
/// mode, and every item in a dry run, become `dry-run` records; items held by other guards
/// are only reported by the caller. Items to act on are decided again first, on a fresh
/// scan; only what that decision confirms is done, and what it does not is recorded as
/// skipped, with the reason. Each recorded item's report goes to `reports` as soon as it is
/// known. An `Err` means an audit record could not be written: every action before it is
/// recorded, none after it was attempted.
///
/// The intents of socket items (destroy, log: a mass leak has 100,000) are recorded first,
/// as the plan saw them; then the plan is freed, each item kept as a few words
/// (`PendingSocket`), before the fresh decision is made: the two decisions are never in memory
/// together. Other items (signal, restart, exec) record their intent just before acting, on
/// the fresh facts they act on.
pub fn carry_out(
    planned: Planned,
    decider: &Decider<'_>,
    ctx: &mut ActContext<'_>,
    reports: &mut dyn Reports,
) -> Result<(), AuditError> {
    let Planned { snap, plan } = planned;
    let mut plan_only: Vec<(&PlanItem, ActionResult)> = Vec::new();
    let mut to_act: Vec<&PlanItem> = Vec::new();
    for item in &plan.items {
        match (&item.decision, ctx.dry_run) {
            // A dry run is observe mode by override: its records say dry-run.
            (Decision::Held(HeldReason::Observe), true) => {
                plan_only.push((item, ActionResult::DryRun))
            }
            (Decision::Held(HeldReason::Observe), false) => {
                plan_only.push((item, ActionResult::Observed))
            }
            (Decision::Act, true) => plan_only.push((item, ActionResult::DryRun)),
            (Decision::Held(_), _) => {}
            (Decision::Act, false) => to_act.push(item),
        }
    }
    record_plan_only(&plan_only, &snap, ctx, reports)?;
    drop(plan_only);
    if to_act.is_empty() {
        return Ok(());
    }
    let started = std::time::Instant::now();
    // The trail as it is now (another writer may have acted meanwhile), for the decision
    // taken again below: read before this run's own intents join it.
    let now = ctx.now;
    let since = now - audit::HISTORY_LOOKBACK;
    let history = match ctx.plan_history.take() {
        Some(read) => audit::catch_up(ctx.audit.path(), since, read),
        None => {
            let keep = crate::engine::Keep::for_policies(decider.policies, false)
                .budgets_lifted(decider.options.lift_budgets);
            audit::history(ctx.audit.path(), since, keep)
        }
    }
    .map_err(|e| format!("re-reading the audit history: {e}"));
    // The socket items' intents, as planned, in fsynced batches.
    let (batched, singles): (Vec<&PlanItem>, Vec<&PlanItem>) =
        to_act.iter().partition(|item| batchable(item));
    let written = record_items(&batched, &snap, ctx, RecordKind::Intent)?;
    tracing::debug!(
        peak_rss_kib = crate::sys::procfs::own_peak_rss_kib(),
        took_ms = started.elapsed().as_millis() as u64,
        "intents written"
    );
    let mut kinds = Kinds::default();
    let sockets: Vec<PendingSocket> = batched
        .iter()
        .zip(written)
        .filter_map(|(item, written)| PendingSocket::of(item, &snap, written, &mut kinds))
        .collect();
    let others: Vec<PendingOther> = singles
        .iter()
        .map(|item| PendingOther::of(item, &snap, ctx))
        .collect();
    // The sockets the plan acts on: their owners are read again while they are dumped.
    let expected: InodeSet = to_act
        .iter()
        .flat_map(|item| item.socket_indices.iter())
        .filter_map(|&i| snap.sockets.get(i))
        .map(|s| s.socket.inode)
        .filter(|inode| inode.0 != 0)
        .collect();
    // Everything from here on is about the fresh decision.
    drop(batched);
    drop(singles);
    drop(to_act);
    drop(plan);
    drop(snap);
    tracing::debug!(
        peak_rss_kib = crate::sys::procfs::own_peak_rss_kib(),
        took_ms = started.elapsed().as_millis() as u64,
        "plan freed"
    );

    // Decide again on what is true now.
    let fresh = history.and_then(|history| {
        decider
            .decide_again(&history, now, &expected)
            .map_err(|e| format!("re-scanning: {e}"))
    });
    drop(expected);
    let mut fresh = match fresh {
        Ok(fresh) => fresh,
        Err(why) => {
            let failed = || {
                let message = format!("act-time re-check failed ({why}): nothing was done");
                (ActionResult::Failed, None, Some(message.into()))
            };
            for other in others {
                reports.report(other.not_acted(failed(), ctx)?);
            }
            let results: Vec<Result3> = sockets.iter().map(|_| failed()).collect();
            record_outcomes_of(&sockets, &results, ctx)?;
            for (p, r) in sockets.iter().zip(results) {
                reports.report(p.report(&kinds, None, None, r));
            }
            return Ok(());
        }
    };
    tracing::debug!(
        peak_rss_kib = crate::sys::procfs::own_peak_rss_kib(),
        took_ms = started.elapsed().as_millis() as u64,
        items = fresh.plan.items.len(),
        "act-time decision"
    );
    fresh.snap.passed_over.sort_unstable();
    let recheck = Recheck::new(&fresh, &decider.namespaces);

    // Signal, restart, exec: one at a time, as the fresh decision says.
    for other in others {
        let key = other.key();
        match recheck.verdict(key, &other.what()) {
            Ok(now) => reports.report(act_one(other.process.as_ref(), now, &fresh.snap, ctx)?),
            Err((result, message)) => {
                reports.report(other.not_acted((result, None, Some(message.into())), ctx)?)
            }
        }
    }

    // Socket items: confirmed (each then kept as its socket's place in the fresh snapshot,
    // the fresh plan freed) or not acted on, with the reason (few: kept by item).
    let mut confirmed: Vec<u32> = vec![NOT_CONFIRMED; sockets.len()];
    let mut not_acted: HashMap<usize, Result3, NumberHash> = HashMap::default();
    // The reports of the skipped name the socket as it is now, when it is still there.
    let mut skipped_now: HashMap<usize, KernelSocket, NumberHash> = HashMap::default();
    for (n, p) in sockets.iter().enumerate() {
        let verdict = recheck.verdict(p.key(&kinds), &p.what());
        match verdict.map(|now| now.socket_indices.first().copied()) {
            Ok(Some(at)) => confirmed[n] = u32::try_from(at).unwrap_or(NOT_CONFIRMED),
            Ok(None) => {
                not_acted.insert(n, (ActionResult::Skipped, None, Some("no socket".into())));
            }
            Err((result, message)) => {
                not_acted.insert(n, (result, None, Some(message.into())));
                if let Some(s) = recheck.fresh_socket(p.netns, p.cookie) {
                    skipped_now.insert(n, s.socket.clone());
                }
            }
        }
    }
    drop(recheck);
    let Planned {
        snap: fresh,
        plan: fresh_plan,
    } = fresh;
    drop(fresh_plan);
    tracing::debug!(
        peak_rss_kib = crate::sys::procfs::own_peak_rss_kib(),
        took_ms = started.elapsed().as_millis() as u64,
        "paired; destroying"
    );
    // Every item's result, in order: the confirmed destroys' from the kernel, a confirmed
    // log's "logged", the others' reason.
    let mut results: Vec<Option<Result3>> = vec![None; sockets.len()];
    let mut destroys: Vec<(usize, &KernelSocket)> = Vec::new();
    for (n, p) in sockets.iter().enumerate() {
        if let Some(result) = not_acted.remove(&n) {
            results[n] = Some(result);
            continue;
        }
        let Some(now) = fresh.sockets.get(confirmed[n] as usize) else {
            continue;
        };
        match kinds.0[p.kind as usize].action.kind() {
            ActionKind::Destroy => destroys.push((n, &now.socket)),
            _ => results[n] = Some((ActionResult::Logged, None, None)),
        }
    }
    drop(not_acted);
    destroy_all(&destroys, &fresh, ctx.sys, &mut results);
    drop(destroys);
    tracing::debug!(
        peak_rss_kib = crate::sys::procfs::own_peak_rss_kib(),
        took_ms = started.elapsed().as_millis() as u64,
        "destroyed and confirmed"
    );
    let results: Vec<Result3> = results
        .into_iter()
        .map(|r| r.unwrap_or((ActionResult::Failed, None, Some("no outcome".into()))))
        .collect();
    record_outcomes_of(&sockets, &results, ctx)?;
    for (n, (p, result)) in sockets.iter().zip(results).enumerate() {
        let now = fresh.sockets.get(confirmed[n] as usize);
        reports.report(match now {
            Some(now) => p.report(&kinds, Some(&now.socket), Some(now.age.secs), result),
            None => p.report(&kinds, skipped_now.get(&n), None, result),
        });
    }
    tracing::debug!(
        peak_rss_kib = crate::sys::procfs::own_peak_rss_kib(),
        took_ms = started.elapsed().as_millis() as u64,
        "done"
    );
    Ok(())
}

/// Where [`carry_out`] sends what came of each recorded item, as soon as it is known: a
/// mass leak has 100,000, which a command prints, and a daemon counts, as they come.
pub trait Reports {
    fn report(&mut self, report: ActionReport);
}

impl Reports for Vec<ActionReport> {
    fn report(&mut self, report: ActionReport) {
        self.push(report);
    }
}

/// What pending socket items share: their rule, action (and its words) and escalation.
struct Kind {
    rule: Arc<str>,
    action: Arc<Action>,
    escalated: bool,
    words: Arc<str>,
}

/// The [`Kind`]s of pending socket items, each kept once.
#[derive(Default)]
struct Kinds(Vec<Kind>);

impl Kinds {
    fn index_of(&mut self, item: &PlanItem) -> u32 {
        let found = self
            .0
            .iter()
            .position(|k| {
                k.rule == item.rule && k.action == item.action && k.escalated == item.escalated
            })
            .unwrap_or_else(|| {
                self.0.push(Kind {
                    rule: item.rule.clone(),
                    action: item.action.clone(),
                    escalated: item.escalated,
                    words: item.action.to_string().into(),
                });
                self.0.len() - 1
            });
        u32::try_from(found).unwrap_or(u32::MAX)
    }
}

/// A socket item (destroy, log) to act on, once the plan is freed: its intent is recorded,
/// and this is enough to find the fresh decision on the same socket and to report it.
struct PendingSocket {
    /// Index into [`Kinds`].
    kind: u32,
    netns: NetnsId,
    cookie: Cookie,
    state: TcpState,
    written: Written,
}

impl PendingSocket {
    fn of(item: &PlanItem, snap: &Snapshot, written: Written, kinds: &mut Kinds) -> Option<Self> {
        let s = first_socket(item, snap)?;
        Some(PendingSocket {
            kind: kinds.index_of(item),
            netns: s.socket.netns,
            cookie: s.socket.cookie,
            state: s.socket.state,
            written,
        })
    }

    fn key<'k>(&self, kinds: &'k Kinds) -> ItemKey<'k> {
        let Kind { rule, action, .. } = &kinds.0[self.kind as usize];
        (
            rule,
            action.kind(),
            TargetKey::Socket(self.cookie),
            Some(self.netns),
        )
    }

    fn what(&self) -> What<'_> {
        What::Socket {
            netns: self.netns,
            cookie: self.cookie,
            state: self.state,
        }
    }

    /// Its report: the socket as it is now (`now`, when it is still there), else as the
    /// plan named it.
    /// `age`: the socket's age now, when it is still there.
    fn report(
        &self,
        kinds: &Kinds,
        now: Option<&KernelSocket>,
        age: Option<u64>,
        result: Result3,
    ) -> ActionReport {
        let Kind {
            rule,
            action,
            words,
            ..
        } = &kinds.0[self.kind as usize];
        let (result, errno, message) = result;
        let target = match now {
            Some(s) => TargetText::Socket {
                state: s.state,
                local: s.local,
                remote: s.remote,
            },
            None => TargetText::Gone {
                state: self.state,
                cookie: self.cookie,
            },
        };
        ActionReport {
            rule: rule.clone(),
            action: words.clone(),
            action_ref: audit::Action::new(action.kind()),
            target,
            target_ref: crate::record::TargetRef::Socket {
                netns_inode: self.netns.inode,
                cookie: self.cookie.0,
            },
            result,
            errno,
            message,
            intent_seq: Some(self.written.seq),
            age_secs: age,
        }
    }
}

/// Any other item (signal, restart, exec), kept whole: they are few.
struct PendingOther {
    item: PlanItem,
    netns: Option<NetnsId>,
    /// The intent as planned: recorded if the item is not carried out (when it is, the
    /// intent records the fresh facts it is carried out on).
    intent: NewRecord,
    /// The owner as the plan saw it, with the handle taken then (a signal goes through it).
    process: Option<Arc<Process>>,
    target: TargetText,
    target_ref: crate::record::TargetRef,
}

impl PendingOther {
    fn of(item: &PlanItem, snap: &Snapshot, ctx: &ActContext<'_>) -> PendingOther {
        let process = match &item.target {
            Target::Process(target) => item
                .socket_indices
                .iter()
                .filter_map(|i| snap.sockets.get(*i))
                .flat_map(|s| &s.owners)
                .find(|o| o.process.id == target.process)
                .map(|o| Arc::clone(&o.process)),
            _ => None,
        };
        PendingOther {
            netns: item_key(item, snap).3,
            intent: intent_record(item, snap, ctx),
            process,
            target: TargetText::Words(item.target.text(&snap.sockets)),
            target_ref: item.target.reference(&snap.sockets),
            item: PlanItem {
                socket_indices: Vec::new().into(),
                ..item.clone()
            },
        }
    }

    fn key(&self) -> ItemKey<'_> {
        let item = &self.item;
        (
            &item.rule,
            item.action.kind(),
            item.target.key(),
            self.netns,
        )
    }

    fn what(&self) -> What<'_> {
        What::Other(&self.item.target)
    }

    /// Record the planned intent and its outcome: not carried out.
    fn not_acted(
        self,
        result: Result3,
        ctx: &mut ActContext<'_>,
    ) -> Result<ActionReport, AuditError> {
        let intent = ctx.audit.append(self.intent)?;
        let (result, errno, message) = result;
        let outcome = Outcome {
            result: result.clone(),
            errno,
            message: message.clone(),
        };
        ctx.audit
            .append(NewRecord::outcome_of(&intent, ctx.actor.clone(), outcome))?;
        Ok(ActionReport {
            rule: self.item.rule.clone(),
            action: self.item.action.to_string().into(),
            action_ref: audit_action(&self.item),
            target: self.target,
            target_ref: self.target_ref,
            result,
            errno,
            message,
            intent_seq: Some(intent.seq),
            age_secs: None,
        })
    }
}

/// A pending socket item the act-time decision did not confirm.
const NOT_CONFIRMED: u32 = u32::MAX;

/// The outcomes of the pending socket items' intents: `results` in their order.
fn record_outcomes_of(
    sockets: &[PendingSocket],
    results: &[Result3],
    ctx: &mut ActContext<'_>,
) -> Result<(), AuditError> {
    let written: Vec<Written> = sockets.iter().map(|p| p.written).collect();
    record_outcomes(&written, results, ctx)
}

/// What an item was planned on, for the reason it is not carried out.
enum What<'a> {
    Socket {
        netns: NetnsId,
        cookie: Cookie,
        state: TcpState,
    },
    Other(&'a Target),
}

/// The act-time decision, indexed by what each item does to what. Sorted vectors, not
/// hash maps of whole keys: a mass leak has 100,000 items.
struct Recheck<'f> {
    fresh: &'f Planned,
    /// The namespaces' names, for the reasons.
    names: &'f [Netns],
    /// Fresh items with a socket target, by (namespace, cookie) of that socket. A socket
    /// is won by one rule and makes at most one such item.
    by_socket: HashMap<(NetnsId, Cookie), u32, NumberHash>,
    /// The other fresh items (a process or a unit: few).
    others: HashMap<ItemKey<'f>, &'f PlanItem>,
    /// (namespace, cookie, state) of the sockets the fresh dumps returned that the fresh
    /// snapshot left out, sorted.
    passed_over: &'f [SocketKey],
    /// (namespace, cookie) -> index in the fresh snapshot, sorted, built on first need
    /// (whether a skipped socket is still there, and its owners now).
    fresh_index: std::cell::OnceCell<Vec<((NetnsId, Cookie), u32)>>,
}

/// An item is the same decision when the same rule does the same kind of action to the
/// same target (a socket also in the same namespace).
type ItemKey<'a> = (&'a str, ActionKind, TargetKey, Option<NetnsId>);

fn item_key<'a>(item: &'a PlanItem, snap: &Snapshot) -> ItemKey<'a> {
    let netns = match item.target {
        Target::Socket { .. } => first_socket(item, snap).map(|s| s.socket.netns),
        _ => None,
    };
    (&item.rule, item.action.kind(), item.target.key(), netns)
}

/// The entries of a sorted `(key, index)` vector whose key is `key`.
fn entries_of<K: Ord + Copy>(sorted: &[(K, u32)], key: K) -> impl Iterator<Item = u32> + '_ {
    let from = sorted.partition_point(|(k, _)| *k < key);
    sorted[from..]
        .iter()
        .take_while(move |(k, _)| *k == key)
        .map(|(_, i)| *i)
}

impl<'f> Recheck<'f> {
    /// The index of `fresh`, whose `snap.passed_over` is sorted.
    fn new(fresh: &'f Planned, names: &'f [Netns]) -> Recheck<'f> {
        let mut by_socket: HashMap<_, u32, NumberHash> =
            HashMap::with_capacity_and_hasher(fresh.plan.items.len(), NumberHash::default());
        let mut others = HashMap::new();
        for (n, item) in fresh.plan.items.iter().enumerate() {
            match (&item.target, first_socket(item, &fresh.snap)) {
                (Target::Socket { .. }, Some(s)) => {
                    // Were there a second, the first is kept: the other's planned item
                    // would then not be confirmed, and be skipped, never acted on wrongly.
                    by_socket
                        .entry((s.socket.netns, s.socket.cookie))
                        .or_insert(n as u32);
                }
                _ => {
                    others.insert(item_key(item, &fresh.snap), item);
                }
            }
        }
        debug_assert!(
            fresh.snap.passed_over.windows(2).all(|w| w[0] <= w[1]),
            "Recheck::new wants the passed-over keys sorted"
        );
        Recheck {
            fresh,
            names,
            by_socket,
            others,
            passed_over: &fresh.snap.passed_over,
            fresh_index: std::cell::OnceCell::new(),
        }
    }

    /// The fresh item that is the same decision as the one `key` names, if any.
    fn same(&self, key: ItemKey<'_>) -> Option<&'f PlanItem> {
        match (&key.2, key.3) {
            (TargetKey::Socket(cookie), Some(netns)) => {
                let n = *self.by_socket.get(&(netns, *cookie))?;
                let now = self.fresh.plan.items.get(n as usize)?;
                (item_key(now, &self.fresh.snap) == key).then_some(now)
            }
            _ => self.others.get(&key).copied(),
        }
    }

    /// The fresh snapshot's socket `cookie` of namespace `netns`.
    fn fresh_socket(&self, netns: NetnsId, cookie: Cookie) -> Option<&'f StuckSocket> {
        let sockets = &self.fresh.snap.sockets;
        let index = self.fresh_index.get_or_init(|| {
            let mut index: Vec<_> = sockets
                .iter()
                .enumerate()
                .map(|(i, s)| ((s.socket.netns, s.socket.cookie), i as u32))
                .collect();
            index.sort_unstable();
            index
        });
        entries_of(index, (netns, cookie))
            .next()
            .and_then(|i| sockets.get(i as usize))
    }

    /// Whether the fresh dumps returned socket `cookie` of `netns` in `state`.
    fn seen(&self, netns: NetnsId, cookie: Cookie, state: TcpState) -> bool {
        self.fresh_socket(netns, cookie)
            .is_some_and(|s| s.socket.state == state)
            || self
                .passed_over
                .binary_search(&(netns, cookie, state))
                .is_ok()
    }

    fn netns_name(&self, id: NetnsId) -> String {
        self.names
            .iter()
            .find(|n| n.id == id)
            .map(|n| n.name.clone())
            .unwrap_or_else(|| id.to_string())
    }

    /// The fresh item that confirms the planned one (`key`, on `what`), or why there is
    /// none: (result, message).
    fn verdict(
        &self,
        key: ItemKey<'_>,
        what: &What<'_>,
    ) -> Result<&'f PlanItem, (ActionResult, String)> {
        let rule = key.0;
        if let Some(now) = self.same(key) {
            return match &now.decision {
                Decision::Act => Ok(now),
                Decision::Held(reason) => Err((
                    ActionResult::Skipped,
                    format!("at act time: held: {reason}"),
                )),
            };
        }
        Err(match what {
            What::Socket {
                netns,
                cookie,
                state,
            } => {
                if self.fresh.snap.netns(*netns).is_none() {
                    (
                        ActionResult::Skipped,
                        format!(
                            "namespace {} could not be read again at act time: nothing was done",
                            self.netns_name(*netns)
                        ),
                    )
                } else if !self.seen(*netns, *cookie, *state) {
                    (
                        ActionResult::AlreadyGone,
                        format!("gone, or no longer {state}, when re-scanned at act time"),
                    )
                } else {
                    let owners = self
                        .fresh_socket(*netns, *cookie)
                        .map(owner_names)
                        .unwrap_or_else(|| "-".into());
                    (
                        ActionResult::Skipped,
                        format!(
                            "at act time rule `{rule}` no longer acts on it (owners now: {owners})"
                        ),
                    )
                }
            }
            What::Other(Target::Process(p)) => (
                ActionResult::Skipped,
                format!(
                    "at act time {}({}) no longer holds a socket rule `{rule}` acts on",
                    p.comm, p.process.pid
                ),
            ),
            What::Other(Target::Unit { unit }) => (
                ActionResult::Skipped,
                format!("at act time no process in {unit} holds a socket rule `{rule}` acts on"),
            ),
            What::Other(Target::Socket { cookie, .. }) => (
                ActionResult::Skipped,
                format!("at act time rule `{rule}` no longer acts on socket {cookie}"),
            ),
        })
    }
}

fn owner_names(s: &StuckSocket) -> String {
    if s.owners.is_empty() {
        return "none".into();
    }
    s.owners
        .iter()
        .map(|o| format!("{}({})", o.process.comm, o.process.id.pid))
        .collect::<Vec<_>>()
        .join(", ")
}

fn first_socket<'s>(item: &PlanItem, snap: &'s Snapshot) -> Option<&'s StuckSocket> {
    item.socket_indices
        .first()
        .and_then(|i| snap.sockets.get(*i))
}

/// Dry-run records for items only planned (observe mode, `--dry-run`), group-committed.
fn record_plan_only(
    items: &[(&PlanItem, ActionResult)],
    snap: &Snapshot,
    ctx: &mut ActContext<'_>,
    reports: &mut dyn Reports,
) -> Result<(), AuditError> {
    let plan_items: Vec<&PlanItem> = items.iter().map(|(i, _)| *i).collect();
    let written = record_items(&plan_items, snap, ctx, RecordKind::DryRun)?;
    for ((item, result), w) in items.iter().zip(written) {
        reports.report(report(item, snap, result, None, None, Some(w.seq)));
    }
    Ok(())
}

/// Where an item's intent (or dry run) was recorded: the record's seq and mode, and its
/// entry when the record is a batch. 16 bytes: a mass leak keeps 100,000.
#[derive(Debug, Clone, Copy)]
struct Written {
    seq: u64,
    mode: policy::Mode,
    /// [`Written::SINGLE`]: not a batch.
    entry: u32,
}

impl Written {
    const SINGLE: u32 = u32::MAX;

    fn entry(&self) -> Option<u32> {
        (self.entry != Written::SINGLE).then_some(self.entry)
    }
}

/// Whether an item goes into a batch record: a socket target of an action that reads the
/// same for every socket (destroy, log). Exec commands, signals and restarts are single.
fn batchable(item: &PlanItem) -> bool {
    matches!(item.target, Target::Socket { .. })
        && matches!(item.action.kind(), ActionKind::Destroy | ActionKind::Log)
}

/// Intents (or dry runs) for `items`, in one group commit: the batchable ones of each
/// action as batch records of up to [`AUDIT_BATCH`] sockets, the others singly. Returns
/// where each item was recorded, in order.
fn record_items(
    items: &[&PlanItem],
    snap: &Snapshot,
    ctx: &mut ActContext<'_>,
    kind: RecordKind,
) -> Result<Vec<Written>, AuditError> {
    // The records to write, each as the items it holds (their index in `items`): singles
    // in order, then the batches of each action. Each record is made only when the writer
    // asks for it, so a mass destroy's entries are never all in memory at once.
    let mut singles: Vec<Vec<usize>> = Vec::new();
    let mut groups: Vec<(ActionKind, Vec<usize>)> = Vec::new();
    for (i, item) in items.iter().enumerate() {
        if batchable(item) {
            match groups.iter_mut().find(|(k, _)| *k == item.action.kind()) {
                Some((_, members)) => members.push(i),
                None => groups.push((item.action.kind(), vec![i])),
            }
        } else {
            singles.push(vec![i]);
        }
    }
    let mut layout: Vec<(Option<ActionKind>, Vec<usize>)> =
        singles.into_iter().map(|m| (None, m)).collect();
    for (action, members) in groups {
        for chunk in members.chunks(AUDIT_BATCH) {
            layout.push((Some(action), chunk.to_vec()));
        }
    }
    let mode = mode_of(ctx);
    let (actor, digest) = (ctx.actor.clone(), ctx.policy_digest.clone());
    let make = |(batch, members): &(Option<ActionKind>, Vec<usize>)| -> NewRecord {
        let Some(action) = batch else {
            let item = items[members[0]];
            return match kind {
                RecordKind::DryRun => {
                    let record = NewRecord::dry_run(
                        actor.clone(),
                        mode,
                        audit_action(item),
                        item.why(&snap.sockets),
                    );
                    describe_with(record, item, snap, &digest)
                }
                _ => intent_record_with(item, snap, &actor, mode, &digest),
            };
        };
        let entries = members.iter().filter_map(|&i| {
            let item = items[i];
            let s = first_socket(item, snap)?;
            Some(BatchEntry {
                rule: &item.rule,
                escalated: item.escalated,
                why: item.why(&snap.sockets),
                netns: snap.netns_name(s.socket.netns),
                socket: s,
            })
        });
        NewRecord::batch(
            kind,
            actor.clone(),
            mode,
            audit::Action::new(*action),
            digest.clone(),
            Batch::of(entries),
        )
    };
    let mut written = vec![None; items.len()];
    let mut placed = layout.iter();
    let records = layout.iter().map(make);
    let mut append = |records: &mut dyn Iterator<Item = NewRecord>| {
        ctx.audit.append_streamed(records, |record| {
            let Some((batch, members)) = placed.next() else {
                return;
            };
            for (entry, &i) in members.iter().enumerate() {
                written[i] = Some(Written {
                    seq: record.seq,
                    mode: record.mode,
                    entry: match batch {
                        Some(_) => u32::try_from(entry).unwrap_or(Written::SINGLE - 1),
                        None => Written::SINGLE,
                    },
                });
            }
        })
    };
    if layout.len() > 1 {
        made_ahead(records, append)?;
    } else {
        append(&mut { records })?;
    }
    // Every item is in exactly one record (a socket item always has its socket).
    Ok(written
        .into_iter()
        .map(|w| {
            w.unwrap_or(Written {
                seq: 0,
                mode,
                entry: Written::SINGLE,
            })
        })
        .collect())
}

/// `consume` the items of `produce`, made on another thread one ahead: a mass cleanup's
/// audit records are made (explanations, socket records) while the one before is sealed
/// and written.
fn made_ahead<T: Send, R>(
    produce: impl Iterator<Item = T> + Send,
    consume: impl FnOnce(&mut dyn Iterator<Item = T>) -> R,
) -> R {
    std::thread::scope(|scope| {
        let (tx, rx) = std::sync::mpsc::sync_channel(0);
        scope.spawn(move || {
            for item in produce {
                // The consumer stopped (an audit error): make no more.
                if tx.send(item).is_err() {
                    break;
                }
            }
        });
        consume(&mut rx.into_iter())
    })
}

/// The outcomes of recorded intents, in one group commit: one record per single intent,
/// one per batch (a result per entry, in its order).
fn record_outcomes(
    written: &[Written],
    results: &[Result3],
    ctx: &mut ActContext<'_>,
) -> Result<(), AuditError> {
    let mut singles: Vec<NewRecord> = Vec::new();
    // (intent seq, mode, (entry, outcome) of each of its sockets)
    type BatchOutcomes = (u64, policy::Mode, Vec<(u32, Outcome)>);
    let mut batches: Vec<BatchOutcomes> = Vec::new();
    for (w, (result, errno, message)) in written.iter().zip(results) {
        let outcome = Outcome {
            result: result.clone(),
            errno: *errno,
            message: message.clone(),
        };
        match w.entry() {
            None => singles.push(NewRecord::outcome_for(
                w.seq,
                w.mode,
                ctx.actor.clone(),
                outcome,
            )),
            Some(entry) => match batches.iter_mut().find(|(seq, _, _)| *seq == w.seq) {
                Some((_, _, list)) => list.push((entry, outcome)),
                None => batches.push((w.seq, w.mode, vec![(entry, outcome)])),
            },
        }
    }
    for (seq, mode, mut list) in batches {
        list.sort_by_key(|(entry, _)| *entry);
        let results = list.into_iter().map(|(_, o)| o).collect();
        singles.push(NewRecord::outcomes_of(
            seq,
            mode,
            ctx.actor.clone(),
            results,
        ));
    }
    ctx.audit.append_streamed(singles, |_| ())?;
    Ok(())
}

/// Signal, restart, exec and log, one at a time: intent (the fresh facts) → act → outcome.
/// A signal goes through the handle taken when the plan was made (`planned`: the process
/// as the plan saw it).
fn act_one(
    planned: Option<&Arc<Process>>,
    now: &PlanItem,
    fresh: &Snapshot,
    ctx: &mut ActContext<'_>,
) -> Result<ActionReport, AuditError> {
    let intent = ctx.audit.append(intent_record(now, fresh, ctx))?;
    let (result, errno, message) = match (&*now.action, &now.target) {
        (Action::Log, _) => (ActionResult::Logged, None, None),
        (Action::Signal { signal }, Target::Process(target)) => {
            // The process as the plan saw it, with the pidfd taken then: if it has exited
            // and another process got its pid (and start time), this says so.
            match planned.filter(|p| p.id == target.process) {
                Some(scanned) => {
                    signal_result(ctx.sys.signal(scanned, &inodes_of(now, fresh), signal.0))
                }
                None => (
                    ActionResult::Skipped,
                    None,
                    Some("the plan holds no handle on this process: not signalled".into()),
                ),
            }
        }
        (Action::Restart, Target::Unit { unit }) => restart(now, unit, fresh, ctx),
        (Action::Exec { .. }, Target::Socket { .. }) => exec(now, ctx),
        (action, target) => (
            ActionResult::Skipped,
            None,
            Some(format!("{action} cannot act on {target}").into()),
        ),
    };
    let outcome = Outcome {
        result: result.clone(),
        errno,
        message: message.clone(),
    };
    ctx.audit
        .append(NewRecord::outcome_of(&intent, ctx.actor.clone(), outcome))?;
    Ok(report(
        now,
        fresh,
        &result,
        errno,
        message.map(Message::into_owned),
        Some(intent.seq),
    ))
}

/// The sockfs inodes of the sockets an item is about.
fn inodes_of(item: &PlanItem, snap: &Snapshot) -> Vec<Inode> {
    item.socket_indices
        .iter()
        .filter_map(|i| snap.sockets.get(*i))
        .map(|s| s.socket.inode)
        .filter(|i| i.0 != 0)
        .collect()
}

/// Restart only if a process that holds the sockets now (checked through its handle) is
/// still in that unit.
fn restart(item: &PlanItem, unit: &str, fresh: &Snapshot, ctx: &ActContext<'_>) -> Result3 {
    let inodes = inodes_of(item, fresh);
    let mut owners: Vec<&Process> = item
        .socket_indices
        .iter()
        .filter_map(|i| fresh.sockets.get(*i))
        .flat_map(|s| s.owners.iter().map(|o| o.process.as_ref()))
        .filter(|p| p.unit.as_deref() == Some(unit))
        .collect();
    owners.dedup_by_key(|p| p.id);
    let still_there = owners.iter().any(
        |p| matches!(ctx.sys.holder(p, &inodes), HolderCheck::Holds { unit: Some(u) } if u == unit),
    );
    if !still_there {
        return (
            ActionResult::Skipped,
            None,
            Some(format!("no process that holds the sockets is still in {unit}").into()),
        );
    }
    match ctx.sys.restart_unit(unit, RESTART_TIMEOUT) {
        Ok(RestartOutcome::Restarted {
            old_main_pid,
            new_main_pid,
            ..
        }) => (
            ActionResult::Restarted,
            None,
            Some(
                format!(
                    "main pid {} -> {}",
                    pid_text(old_main_pid),
                    pid_text(new_main_pid)
                )
                .into(),
            ),
        ),
        Ok(RestartOutcome::AlreadyInProgress { state }) => (
            ActionResult::AlreadyInProgress,
            None,
            Some(
                format!(
                    "{unit} is {}/{}: not restarted again",
                    state.active_state, state.sub_state
                )
                .into(),
            ),
        ),
        Ok(RestartOutcome::Failed { result }) => (
            ActionResult::Failed,
            None,
            Some(format!("restart job ended `{result}`").into()),
        ),
        Ok(RestartOutcome::TimedOut) => (
            ActionResult::Failed,
            None,
            Some(
                format!(
                    "restart job still running after {}s",
                    RESTART_TIMEOUT.as_secs()
                )
                .into(),
            ),
        ),
        Err(e) => (ActionResult::Failed, None, Some(e.to_string().into())),
    }
}

fn pid_text(pid: Option<u32>) -> String {
    pid.map(|p| p.to_string()).unwrap_or_else(|| "-".into())
}

/// Run the command the fresh decision rendered (the socket was there a moment ago).
fn exec(item: &PlanItem, ctx: &ActContext<'_>) -> Result3 {
    let Some(exec) = &item.exec else {
        return (
            ActionResult::Failed,
            None,
            Some("the plan has no rendered command".into()),
        );
    };
    match ctx.sys.run_command(&exec.argv, &exec.env, EXEC_TIMEOUT) {
        CommandOutcome::Exited { code: Some(0), .. } => (ActionResult::Exited0, None, None),
        CommandOutcome::Exited { code, stderr } => (
            ActionResult::Failed,
            None,
            Some(
                format!(
                    "exit status {}: {}",
                    code.map(|c| c.to_string())
                        .unwrap_or_else(|| "killed by a signal".into()),
                    stderr.trim()
                )
                .into(),
            ),
        ),
        CommandOutcome::TimedOut => (
            ActionResult::Failed,
            None,
            Some(format!("killed after {}s", EXEC_TIMEOUT.as_secs()).into()),
        ),
        CommandOutcome::NotStarted { error } => (ActionResult::Failed, None, Some(error.into())),
    }
}

fn signal_result(outcome: SignalOutcome) -> Result3 {
    let (result, errno, message) = match outcome {
        SignalOutcome::Delivered => (ActionResult::Delivered, None, None),
        SignalOutcome::Exited => (
            ActionResult::Exited,
            Some(libc::ESRCH),
            Some("the process that was planned for has exited (its pid may belong to another process now): nothing was sent"),
        ),
        SignalOutcome::PidReused => (
            ActionResult::PidReused,
            None,
            Some("the pid now belongs to another process (start time differs): nothing was sent"),
        ),
        SignalOutcome::NoLongerHolds => (
            ActionResult::NoLongerHeld,
            None,
            Some("the process lives on but no longer holds the socket: nothing was sent"),
        ),
        SignalOutcome::NotPermitted => (
            ActionResult::NotPermitted,
            Some(libc::EPERM),
            Some("needs CAP_KILL or the same uid"),
        ),
        SignalOutcome::Unsupported => (
            ActionResult::Unsupported,
            Some(libc::ENOSYS),
            Some("no pidfd was taken on the process (Linux < 5.3?): refusing to signal by bare pid"),
        ),
        SignalOutcome::Failed(errno) => (ActionResult::Failed, Some(errno), None),
    };
    (result, errno, message.map(Message::Borrowed))
}

/// Destroys the act-time decision confirmed (`items`: each with its place in `results`,
/// where its result goes), per namespace: pipelined SOCK_DESTROYs by full id and cookie (a socket gone
/// since the re-scan answers ENOENT; a tuple reused answers "not that socket"), then one
/// dump to confirm they are gone. Their intents are recorded already; the caller records
/// the outcomes.
fn destroy_all(
    items: &[(usize, &KernelSocket)],
    fresh: &Snapshot,
    sys: &dyn System,
    results: &mut [Option<Result3>],
) {
    let mut by_netns: HashMap<NetnsId, Vec<(usize, &KernelSocket)>> = HashMap::new();
    for &(n, socket) in items {
        by_netns.entry(socket.netns).or_default().push((n, socket));
    }
    for (netns_id, targets) in by_netns {
        let sockets: Vec<&KernelSocket> = targets.iter().map(|(_, s)| *s).collect();
        let outcomes = match fresh.netns(netns_id) {
            Some(netns) => destroy_confirmed(sys, netns, &sockets),
            None => sockets
                .iter()
                .map(|_| {
                    (
                        ActionResult::Skipped,
                        None,
                        Some("namespace not read again".into()),
                    )
                })
                .collect(),
        };
        for ((n, _), outcome) in targets.iter().zip(outcomes) {
            results[*n] = Some(outcome);
        }
    }
}

/// Destroy one namespace's sockets and confirm with a re-dump; one result per socket.
fn destroy_confirmed(sys: &dyn System, netns: &Netns, sockets: &[&KernelSocket]) -> Vec<Result3> {
    let states: StateSet = sockets.iter().map(|s| s.state).collect();
    let outcomes = match sys.destroy_many(netns, sockets) {
        Ok(outcomes) => outcomes,
        Err(e) => {
            let message = format!("SOCK_DESTROY could not be sent: {e}");
            return sockets
                .iter()
                .map(|_| (ActionResult::Failed, None, Some(message.clone().into())))
                .collect();
        }
    };
    let after: Option<HashSet<crate::model::Cookie, NumberHash>> = sys
        .dump(netns, states)
        .ok()
        .map(|d| d.sockets.into_iter().map(|s| s.cookie).collect());
    sockets
        .iter()
        .zip(outcomes)
        .map(|(s, outcome)| destroy_result(outcome, after.as_ref().map(|a| a.contains(&s.cookie))))
        .collect()
}

fn destroy_result(outcome: DestroyOutcome, still_listed: Option<bool>) -> Result3 {
    match outcome {
        DestroyOutcome::Destroyed if still_listed == Some(true) => (
            ActionResult::NotConfirmed,
            None,
            Some("the kernel ACKed the destroy but a re-dump still lists the socket".into()),
        ),
        DestroyOutcome::Destroyed => (
            ActionResult::Destroyed,
            None,
            Some("kernel ACK; gone from a re-dump".into()),
        ),
        DestroyOutcome::AlreadyGone => (ActionResult::AlreadyGone, Some(libc::ENOENT), None),
        DestroyOutcome::TupleReused => (
            ActionResult::TupleReused,
            Some(libc::ESTALE),
            Some("the address now belongs to another socket: nothing touched".into()),
        ),
        DestroyOutcome::Unsupported => (
            ActionResult::Unsupported,
            Some(libc::EOPNOTSUPP),
            Some("kernel without CONFIG_INET_DIAG_DESTROY, or a state it cannot abort".into()),
        ),
        DestroyOutcome::NotPermitted => (
            ActionResult::NotPermitted,
            Some(libc::EPERM),
            Some("needs CAP_NET_ADMIN in the socket's namespace".into()),
        ),
        DestroyOutcome::Failed(errno) => {
            let mut message = std::io::Error::from_raw_os_error(errno).to_string();
            if still_listed == Some(false) {
                // The request may have been carried out before the failure was seen.
                message
                    .push_str("; the socket is gone from a re-dump (it may have been destroyed)");
            }
            (ActionResult::Failed, Some(errno), Some(message.into()))
        }
    }
}

/// The intent record of a plan item, written (and fsynced) before acting on it.
fn intent_record(item: &PlanItem, snap: &Snapshot, ctx: &ActContext<'_>) -> NewRecord {
    intent_record_with(item, snap, &ctx.actor, mode_of(ctx), &ctx.policy_digest)
}

fn intent_record_with(
    item: &PlanItem,
    snap: &Snapshot,
    actor: &Actor,
    mode: policy::Mode,
    policy_digest: &str,
) -> NewRecord {
    let why = item.why(&snap.sockets);
    let intent = NewRecord::intent(actor.clone(), mode, audit_action(item), why);
    describe_with(intent, item, snap, policy_digest)
}

/// Fill in rule, digest and target of a record from a plan item.
fn describe_with(
    record: NewRecord,
    item: &PlanItem,
    snap: &Snapshot,
    policy_digest: &str,
) -> NewRecord {
    let mut record = record
        .rule(item.rule.to_string(), policy_digest.to_string())
        .escalated(item.escalated);
    if let Some(s) = item
        .socket_indices
        .first()
        .and_then(|i| snap.sockets.get(*i))
    {
        record = record.target(snap.socket_record(s));
    }
    match &item.target {
        Target::Unit { unit } => record.unit(unit.to_string()),
        Target::Process(target) => {
            let owner = item
                .socket_indices
                .iter()
                .filter_map(|i| snap.sockets.get(*i))
                .flat_map(|s| &s.owners)
                .find(|o| o.process.id == target.process);
            record.process(ProcessRecord {
                pid: target.process.pid.0,
                start_time: target.process.start_time,
                comm: target.comm.clone(),
                cmdline: owner.map(|o| o.process.cmdline.clone()),
                unit: owner.and_then(|o| o.process.unit.clone()),
            })
        }
        Target::Socket { .. } => record,
    }
}

fn audit_action(item: &PlanItem) -> audit::Action {
    let mut action = audit::Action::new(item.action.kind());
    match (&*item.action, &item.target) {
        (Action::Signal { signal }, _) => action.signal = Some(signal.to_string()),
        (Action::Exec { .. }, _) => action.command = item.exec.as_ref().map(|e| e.argv.clone()),
        (Action::Restart, Target::Unit { unit }) => action.unit = Some(unit.to_string()),
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
    snap: &Snapshot,
    result: &ActionResult,
    errno: Option<i32>,
    message: Option<String>,
    intent_seq: Option<u64>,
) -> ActionReport {
    ActionReport {
        rule: item.rule.clone(),
        action: item.action.to_string().into(),
        target: TargetText::Words(item.target.text(&snap.sockets)),
        target_ref: item.target.reference(&snap.sockets),
        action_ref: audit_action(item),
        result: result.clone(),
        errno,
        message: message.map(Message::Owned),
        intent_seq,
        age_secs: None,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::sync::Arc;

    use super::*;
    use crate::audit::{read_trail, verify, ActorKind, RecordKind};
    use crate::engine::RunOptions;
    use crate::filter::SocketFilter;
    use crate::model::{Cookie, Owner, Pid, ProcessId, TcpState};
    use crate::policy::PolicySet;
    use crate::scan::Observations;
    use crate::sys::fake::FakeSystem;

    const NS: NetnsId = NetnsId {
        dev: 4,
        inode: 4026531840,
    };

    fn netns() -> Netns {
        Netns::new(NS, "host", "/proc/self/ns/net")
    }

    fn socket(cookie: u64) -> KernelSocket {
        KernelSocket {
            inode: Inode(10_000 + cookie),
            ..crate::sys::fake::socket(NS, cookie, TcpState::CloseWait)
        }
    }

    fn process(pid: i32, comm: &str) -> Arc<Process> {
        Arc::new(Process {
            id: ProcessId {
                pid: Pid(pid),
                start_time: 77,
            },
            comm: comm.into(),
            cmdline: comm.into(),
            exe: None,
            uid: 1000,
            unit: None,
            container: None,
            handle: Default::default(),
        })
    }

    fn policies(action: &str) -> PolicySet {
        crate::policy::load_str(
            "t",
            &format!(
                "mode = \"enforce\"\n[guards]\nmax_destroys_per_minute = 100000\nmax_signals_per_minute = 1000\n\
                 [[rule]]\nname = \"leak\"\nstates = [\"close-wait\"]\nolder_than = \"0s\"\n{action}\n"
            ),
        )
        .expect("policy")
    }

    fn decider<'a>(
        sys: &'a FakeSystem,
        policies: &'a PolicySet,
        obs: &'a Observations,
    ) -> Decider<'a> {
        Decider {
            sys,
            namespaces: vec![netns()],
            filter: SocketFilter::default(),
            observations: obs,
            policies,
            options: RunOptions::new(Pid(1)),
            one_shot: false,
        }
    }

    fn context<'a>(sys: &'a FakeSystem, log: &'a mut AuditLog) -> ActContext<'a> {
        ActContext {
            sys,
            audit: log,
            actor: Actor::current(ActorKind::Cli),
            policy_digest: "d".into(),
            dry_run: false,
            plan_history: None,
            now: SystemTime::now(),
        }
    }

    fn log_in(dir: &tempfile::TempDir) -> (std::path::PathBuf, AuditLog) {
        let path = dir.path().join("audit.jsonl");
        let log = AuditLog::open(&path).expect("open");
        (path, log)
    }

    /// More destroys than one audit batch: every intent is written before any destroy,
    /// every outcome after, and the chain verifies.
    #[test]
    fn destroys_are_recorded_in_batches() {
        let n = AUDIT_BATCH + 10;
        let sys = FakeSystem {
            namespaces: vec![netns()],
            sockets: (0..n as u64).map(socket).collect(),
            ..FakeSystem::default()
        };
        let policies = policies("action = \"destroy\"");
        let obs = Observations::new();
        let decider = decider(&sys, &policies, &obs);
        let planned = decider
            .decide(&Default::default(), SystemTime::now())
            .expect("decide");
        assert_eq!(planned.plan.to_act().count(), n);
        let dir = tempfile::tempdir().expect("tempdir");
        let (path, mut log) = log_in(&dir);
        let mut reports = Vec::new();
        carry_out(
            planned,
            &decider,
            &mut context(&sys, &mut log),
            &mut reports,
        )
        .expect("act");
        assert_eq!(
            reports.iter().filter(|r| r.result == "destroyed").count(),
            n
        );
        assert_eq!(sys.destroyed.borrow().len(), n);
        let report = verify(&path);
        assert!(report.is_intact(), "{report}");
        let records = read_trail(&path).expect("read").records;
        let kinds: Vec<RecordKind> = records.iter().map(|r| r.kind).collect();
        let mut want = vec![RecordKind::Intent; n];
        want.extend(vec![RecordKind::Outcome; n]);
        assert!(kinds == want, "intents first, then outcomes");
        let last = records.last().expect("records");
        assert_eq!(last.intent_seq, Some(records[n - 1].seq));
    }

    /// The intents are recorded before the decision is taken again: they must not count
    /// against the budget or start the cooldown they are the use of. (Regression: reading
    /// the trail after this run's intents held every item, by budget or cooldown.)
    #[test]
    fn the_run_s_own_intents_hold_nothing_at_act_time() {
        let sys = FakeSystem {
            namespaces: vec![netns()],
            sockets: (1..=3).map(socket).collect(),
            ..FakeSystem::default()
        };
        let policies = crate::policy::load_str(
            "t",
            "mode = \"enforce\"\n[guards]\nmax_destroys_per_minute = 3\n\
             [[rule]]\nname = \"leak\"\nstates = [\"close-wait\"]\nolder_than = \"0s\"\n\
             action = \"destroy\"\ncooldown = \"1h\"\n",
        )
        .expect("policy");
        let obs = Observations::new();
        let decider = decider(&sys, &policies, &obs);
        let planned = decider
            .decide(&Default::default(), SystemTime::now())
            .expect("decide");
        assert_eq!(planned.plan.to_act().count(), 3);
        let dir = tempfile::tempdir().expect("tempdir");
        let (_path, mut log) = log_in(&dir);
        let mut reports = Vec::new();
        carry_out(
            planned,
            &decider,
            &mut context(&sys, &mut log),
            &mut reports,
        )
        .expect("act");
        let results: Vec<String> = reports.iter().map(|r| r.result.to_string()).collect();
        assert_eq!(results, ["destroyed"; 3], "{reports:#?}");
        assert_eq!(sys.destroyed.borrow().len(), 3);
    }

    /// The act-time decision over the fake: what changed between plan and act is skipped,
    /// with the reason, and only what is still true is done.
    #[test]
    fn what_changed_since_the_plan_is_skipped_with_its_reason() {
        let app = process(500, "app");
        let sshd = process(501, "sshd");
        let mut sys = FakeSystem {
            namespaces: vec![netns()],
            sockets: (1..=3).map(socket).collect(),
            owners: (1..=3)
                .map(|c| {
                    (
                        Inode(10_000 + c),
                        vec![Owner {
                            process: Arc::clone(&app),
                            fd: 3,
                        }],
                    )
                })
                .collect(),
            ..FakeSystem::default()
        };
        let policies = policies("action = \"destroy\"");
        let obs = Observations::new();
        let planned = decider(&sys, &policies, &obs)
            .decide(&Default::default(), SystemTime::now())
            .expect("decide");
        assert_eq!(planned.plan.to_act().count(), 3);
        // During the confirmation: socket 2 closes; socket 3 passes to a child named sshd.
        sys.sockets.retain(|s| s.cookie != Cookie(2));
        sys.owners.insert(
            Inode(10_003),
            vec![Owner {
                process: Arc::clone(&sshd),
                fd: 3,
            }],
        );
        let dir = tempfile::tempdir().expect("tempdir");
        let (path, mut log) = log_in(&dir);
        let decider = decider(&sys, &policies, &obs);
        let mut reports = Vec::new();
        carry_out(
            planned,
            &decider,
            &mut context(&sys, &mut log),
            &mut reports,
        )
        .expect("act");
        let by_target: HashMap<u64, &ActionReport> = reports
            .iter()
            .filter_map(|r| match r.target_ref {
                crate::record::TargetRef::Socket { cookie, .. } => Some((cookie, r)),
                _ => None,
            })
            .collect();
        assert_eq!(by_target[&1].result, "destroyed");
        assert_eq!(by_target[&2].result, "already-gone");
        let protected = by_target[&3];
        assert_eq!(protected.result, "skipped");
        let message = protected.message.as_deref().unwrap_or("");
        assert!(message.contains("protect_ssh"), "{message}");
        assert_eq!(*sys.destroyed.borrow(), [Cookie(1)].into());
        // Every item has its intent and outcome; the skips say why in the trail too.
        let records = read_trail(&path).expect("read").records;
        assert_eq!(records.len(), 6, "{records:#?}");
        assert!(records
            .iter()
            .any(|r| r.outcome.as_ref().is_some_and(|o| o.result == "skipped"
                && o.message
                    .as_deref()
                    .is_some_and(|m| m.contains("protect_ssh")))));
    }

    /// Sockets the rule no longer selects at act time (their owner changed) are skipped,
    /// each naming its owners now.
    #[test]
    fn sockets_the_rule_no_longer_selects_are_skipped_naming_their_owners_now() {
        const N: u64 = 2_000;
        let app = process(500, "app");
        let other = process(600, "other");
        let owned_by = |p: &Arc<Process>| -> crate::model::InodeMap<Vec<Owner>> {
            (1..=N)
                .map(|c| {
                    let owner = Owner {
                        process: Arc::clone(p),
                        fd: 3,
                    };
                    (Inode(10_000 + c), vec![owner])
                })
                .collect()
        };
        let mut sys = FakeSystem {
            namespaces: vec![netns()],
            sockets: (1..=N).map(socket).collect(),
            owners: owned_by(&app),
            ..FakeSystem::default()
        };
        let policies = policies("action = \"destroy\"\nprocess = [\"app\"]");
        let obs = Observations::new();
        let planned = decider(&sys, &policies, &obs)
            .decide(&Default::default(), SystemTime::now())
            .expect("decide");
        assert_eq!(planned.plan.to_act().count(), N as usize);
        sys.owners = owned_by(&other);
        let dir = tempfile::tempdir().expect("tempdir");
        let (_path, mut log) = log_in(&dir);
        let decider = decider(&sys, &policies, &obs);
        let mut reports = Vec::new();
        carry_out(
            planned,
            &decider,
            &mut context(&sys, &mut log),
            &mut reports,
        )
        .expect("act");
        assert_eq!(reports.len(), N as usize);
        for r in &reports {
            assert_eq!(r.result, "skipped");
            let message = r.message.as_deref().unwrap_or("");
            assert!(message.contains("owners now: other(600)"), "{message}");
        }
        assert!(sys.destroyed.borrow().is_empty());
    }

    /// A signal goes only to a process that still holds the socket.
    #[test]
    fn a_signal_goes_only_to_a_process_that_still_holds_the_socket() {
        let app = process(500, "app");
        let mut sys = FakeSystem {
            namespaces: vec![netns()],
            sockets: vec![socket(1)],
            owners: [(
                Inode(10_001),
                vec![Owner {
                    process: Arc::clone(&app),
                    fd: 3,
                }],
            )]
            .into_iter()
            .collect(),
            processes: [(app.id, None)].into(),
            ..FakeSystem::default()
        };
        let policies = policies("action = \"signal\"\nsignal = \"SIGTERM\"");
        let obs = Observations::new();
        let planned = decider(&sys, &policies, &obs)
            .decide(&Default::default(), SystemTime::now())
            .expect("decide");
        assert_eq!(planned.plan.to_act().count(), 1);
        // The owner closes the socket and keeps running; the socket lingers without owner.
        sys.owners.clear();
        let dir = tempfile::tempdir().expect("tempdir");
        let (_path, mut log) = log_in(&dir);
        let decider = decider(&sys, &policies, &obs);
        let mut reports = Vec::new();
        carry_out(
            planned,
            &decider,
            &mut context(&sys, &mut log),
            &mut reports,
        )
        .expect("act");
        assert_eq!(reports.len(), 1);
        assert_eq!(reports[0].result, "skipped", "{reports:?}");
        assert!(
            !sys.calls.borrow().iter().any(|c| c.starts_with("signal")),
            "{:?}",
            sys.calls.borrow()
        );
    }
}
