//! The policy engine: a pure function from a snapshot, the policies, the action history and
//! the clock to a plan. No I/O, no clock reads: everything it knows is in [`EngineInput`].

mod history;
#[cfg(test)]
mod tests;

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::Arc;
use std::time::SystemTime;

use serde::Serialize;

pub use history::{History, Keep, OwnerKey, PastAction, PastOutcome, Step, TargetKey};

use crate::model::{
    Age, Cookie, NetnsId, NumberHash, Pid, Process, ProcessId, StuckSocket, TcpState,
};
use crate::policy::{
    render_arg, Action, ActionKind, Guards, Mode, PolicySet, Rule, SSH_PORT, SSH_PROCESSES,
    SSH_UNITS,
};

/// Everything a decision depends on.
#[derive(Debug, Clone, Copy)]
pub struct EngineInput<'a> {
    pub sockets: &'a [StuckSocket],
    /// Readable namespace names for the `netns` selector; a namespace missing here is
    /// called `net:[INODE]`.
    pub netns_names: &'a HashMap<NetnsId, String>,
    pub policies: &'a PolicySet,
    pub history: &'a History,
    pub now: SystemTime,
    pub options: RunOptions,
}

/// Per-run switches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct RunOptions {
    /// Overrides the policies' `mode` (e.g. `clean` on the command line).
    pub mode: Option<Mode>,
    /// Lift the budgets (rates and per-owner fraction) for this run only. Protection and
    /// cooldowns still apply.
    pub lift_budgets: bool,
    /// sockwarden's own pid: never a target.
    pub self_pid: Pid,
    /// Never touch PID 1 (true except in tests of a pid namespace).
    pub protect_pid1: bool,
}

impl RunOptions {
    pub fn new(self_pid: Pid) -> RunOptions {
        RunOptions {
            mode: None,
            lift_budgets: false,
            self_pid,
            protect_pid1: true,
        }
    }
}

/// The engine's answer: what to do, and what was held back and why.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Plan {
    /// The mode the plan was made in (the override, else the policies').
    pub mode: Mode,
    pub items: Vec<PlanItem>,
}

impl Plan {
    /// Items to carry out.
    pub fn to_act(&self) -> impl Iterator<Item = &PlanItem> {
        self.items.iter().filter(|i| i.decision == Decision::Act)
    }
}

/// One planned action on one target. A mass leak makes 100,000 of them, so what is the
/// same for many (the rule, its action) is shared, and the explanation is rendered only
/// when the item is shown or recorded ([`PlanItem::why`]).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PlanItem {
    /// The rule's name (shared by every item of the rule: a mass leak has 100,000 items).
    pub rule: Arc<str>,
    /// True when this is the rule's `[rule.escalate]` step.
    pub escalated: bool,
    /// The rule's action (or its escalation's), shared by its items.
    pub action: Arc<Action>,
    pub target: Target,
    /// The owner this is about (unit, else process), for the audit log and escalation.
    pub owner: Option<OwnerKey>,
    /// The indices in [`EngineInput::sockets`] of the sockets that justify the action (for
    /// a socket target, just that one), oldest first.
    pub socket_indices: SocketIndices,
    /// For `exec`: the command with its placeholders filled in, and their values.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exec: Option<Box<ExecCommand>>,
    pub decision: Decision,
    /// What [`PlanItem::why`] says it from.
    #[serde(skip)]
    pub reason: Why,
}

impl PlanItem {
    /// The explanation, e.g. "close-wait for 12m (tcp-info) >= 10m, owner api(1234) holds
    /// 57 matching sockets", from `sockets`, the snapshot the item was planned on.
    pub fn why(&self, sockets: &[StuckSocket]) -> String {
        let r = &self.reason;
        use std::fmt::Write;
        let mut why = String::with_capacity(128);
        if let Some(e) = r.notes.as_ref().and_then(|n| n.escalated.as_deref()) {
            why.push_str(e);
            why.push_str("; ");
        }
        // The first socket is the oldest.
        match self.socket_indices.first().and_then(|&i| sockets.get(i)) {
            Some(s) => {
                // Written into one string: a mass leak explains 100,000 items.
                if self.socket_indices.len() > 1 {
                    let _ = write!(why, "{} sockets, oldest ", self.socket_indices.len());
                }
                let _ = write!(
                    why,
                    "{} for {} >= {}, ",
                    s.socket.state,
                    AgeText(&s.age),
                    crate::duration::Shown(u64::from(r.older_than))
                );
                match s.owners.get(r.principal as usize) {
                    Some(o) => {
                        let _ = write!(
                            why,
                            "owner {} holds {} matching socket{}",
                            ProcName(&o.process),
                            r.owner_count,
                            plural(r.owner_count)
                        );
                        if r.min_sockets != 0 {
                            let _ = write!(why, " (min_sockets {})", r.min_sockets);
                        }
                    }
                    None => why.push_str("no owner process"),
                }
            }
            None => why.push_str("no socket"),
        }
        if let Some(after) = r.notes.as_ref().and_then(|n| n.after.as_deref()) {
            why.push_str(" — ");
            why.push_str(after);
        }
        why
    }

    /// Add `note` to the explanation (e.g. why it was not carried out after all).
    pub fn note(&mut self, note: String) {
        let notes = self.reason.notes.get_or_insert_with(Default::default);
        notes.after = Some(match notes.after.take() {
            Some(before) => format!("{before}; {note}"),
            None => note,
        });
    }
}

/// What an item's explanation is made of, besides its oldest socket: a few words, as a
/// mass leak has 100,000 items.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Why {
    /// The rule's threshold, in seconds.
    pub older_than: u32,
    /// The rule's `min_sockets`; 0: none.
    pub min_sockets: u32,
    /// Which owner of the oldest socket the rule is about ([`Why::NO_OWNER`]: none), and
    /// how many matching sockets that owner holds.
    pub principal: u32,
    pub owner_count: u32,
    /// Rare additions, boxed so that the common item stays small.
    pub notes: Option<Box<WhyNotes>>,
}

impl Why {
    pub const NO_OWNER: u32 = u32::MAX;
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WhyNotes {
    /// Why the rule's escalation step applies.
    pub escalated: Option<String>,
    /// Added after planning (e.g. "not carried out: …").
    pub after: Option<String>,
}

/// The sockets of an item: one for a socket target (no allocation), several for a process
/// or a unit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SocketIndices {
    One([usize; 1]),
    Many(Box<[usize]>),
}

impl std::ops::Deref for SocketIndices {
    type Target = [usize];
    fn deref(&self) -> &[usize] {
        match self {
            SocketIndices::One(one) => one,
            SocketIndices::Many(many) => many,
        }
    }
}

impl From<Vec<usize>> for SocketIndices {
    fn from(v: Vec<usize>) -> SocketIndices {
        match v.as_slice() {
            [one] => SocketIndices::One([*one]),
            _ => SocketIndices::Many(v.into_boxed_slice()),
        }
    }
}

impl Serialize for SocketIndices {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        (**self).serialize(s)
    }
}

impl PartialEq<Vec<usize>> for SocketIndices {
    fn eq(&self, other: &Vec<usize>) -> bool {
        **self == **other
    }
}

/// An `exec` action's command with its placeholders filled in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ExecCommand {
    /// The argv (values read from processes escaped, see [`exec_values`]).
    pub argv: Vec<String>,
    /// The exact placeholder values as `SOCKWARDEN_<NAME>` environment variables.
    #[serde(skip)]
    pub env: Vec<(String, String)>,
}

/// What an action is aimed at.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Target {
    /// One socket (destroy, log, exec).
    Socket { cookie: Cookie, index: usize },
    /// One process (signal; or a restart held back because the process has no unit);
    /// boxed, so that the common socket target keeps every item small.
    Process(Box<ProcessTarget>),
    /// One systemd unit (restart).
    Unit { unit: Box<str> },
}

/// A process an item is aimed at.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ProcessTarget {
    pub process: ProcessId,
    pub comm: String,
}

impl Target {
    pub fn process(process: ProcessId, comm: &str) -> Target {
        Target::Process(Box::new(ProcessTarget {
            process,
            comm: comm.to_string(),
        }))
    }
}

impl Target {
    pub fn key(&self) -> TargetKey {
        match self {
            Target::Socket { cookie, .. } => TargetKey::Socket(*cookie),
            Target::Process(p) => TargetKey::Process(p.process),
            Target::Unit { unit } => TargetKey::Unit(unit.to_string()),
        }
    }
}

impl Target {
    /// The target as JSON names it; `snap_sockets` are the sockets `index` points into.
    pub fn reference(&self, sockets: &[StuckSocket]) -> crate::record::TargetRef {
        use crate::record::TargetRef;
        match self {
            Target::Socket { cookie, index } => TargetRef::Socket {
                netns_inode: sockets.get(*index).map_or(0, |s| s.socket.netns.inode),
                cookie: cookie.0,
            },
            Target::Process(p) => TargetRef::Process {
                pid: p.process.pid.0,
                start_time: p.process.start_time,
                comm: p.comm.clone(),
            },
            Target::Unit { unit } => TargetRef::Unit {
                unit: unit.to_string(),
            },
        }
    }
}

impl Target {
    /// The target in words, as every table writes it: a socket as its state and tuple
    /// (`close-wait 10.0.0.1:80→10.0.0.2:5000`), a process as `comm(pid)`, a unit by name.
    pub fn text(&self, sockets: &[StuckSocket]) -> String {
        match self {
            Target::Socket { index, .. } => match sockets.get(*index) {
                Some(s) => format!("{} {}→{}", s.socket.state, s.socket.local, s.socket.remote),
                None => self.to_string(),
            },
            _ => self.to_string(),
        }
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Socket { cookie, .. } => write!(f, "socket {cookie}"),
            Target::Process(p) => write!(f, "{}({})", p.comm, p.process.pid),
            Target::Unit { unit } => f.write_str(unit),
        }
    }
}

/// Whether an item is carried out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "decision", content = "reason", rename_all = "kebab-case")]
pub enum Decision {
    Act,
    Held(HeldReason),
}

impl fmt::Display for Decision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Decision::Act => f.write_str("act"),
            Decision::Held(r) => write!(f, "held: {r}"),
        }
    }
}

/// Why a guard held an item back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "guard", rename_all = "kebab-case")]
pub enum HeldReason {
    /// Mode is observe: planned and recorded only.
    Observe,
    /// LISTEN sockets are never targets.
    Listening,
    /// The target or one of its owners is on a never-touch list, or is sockwarden / PID 1.
    Protected { what: String },
    /// A signal or restart for a socket no process holds.
    NoOwner,
    /// A restart for a process that is not in a systemd unit.
    NoUnit,
    /// The same rule acted on the same target too recently.
    Cooldown {
        last_secs_ago: u64,
        cooldown_secs: u64,
    },
    /// A rate budget is used up (`budget` names the guard key).
    Budget {
        budget: String,
        limit: u32,
        used: u32,
    },
    /// `max_fraction_per_owner`: enough of this owner's sockets were taken this pass.
    OwnerFraction {
        owner: ProcessId,
        limit: u32,
        matching: u32,
    },
    /// An earlier item of this pass already does this to this target.
    AlreadyPlanned { rule: String },
}

impl fmt::Display for HeldReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HeldReason::Observe => f.write_str("observe mode (planned and recorded, not acted on)"),
            HeldReason::Listening => f.write_str("LISTEN sockets are never touched"),
            HeldReason::Protected { what } => write!(f, "protected: {what}"),
            HeldReason::NoOwner => f.write_str("no process holds this socket"),
            HeldReason::NoUnit => f.write_str("owner has no systemd unit"),
            HeldReason::Cooldown { last_secs_ago, cooldown_secs } => write!(
                f,
                "cooldown: this rule acted on it {} ago (< {})",
                crate::duration::format(*last_secs_ago),
                crate::duration::format(*cooldown_secs)
            ),
            HeldReason::Budget { budget, limit, used } => {
                write!(f, "budget {budget} = {limit} used up ({used} already)")
            }
            HeldReason::OwnerFraction { owner, limit, matching } => write!(
                f,
                "max_fraction_per_owner: {limit} of pid {}'s {matching} matching sockets already taken this pass",
                owner.pid
            ),
            HeldReason::AlreadyPlanned { rule } => write!(f, "already planned by rule `{rule}` in this pass"),
        }
    }
}

/// Why a socket is or is not acted on: every rule whose selectors match it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SocketExplanation {
    pub index: usize,
    /// The namespace's name (as `scan` names it).
    pub netns: String,
    pub cookie: Cookie,
    pub state: TcpState,
    pub local: std::net::SocketAddr,
    pub remote: std::net::SocketAddr,
    pub age: Age,
    /// `comm(pid)` of each owner.
    pub owners: Vec<String>,
    pub rules: Vec<RuleExplanation>,
    /// One line: what happens to this socket, or "no rule matches".
    pub summary: String,
}

/// One rule whose selectors match a socket.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RuleExplanation {
    pub rule: String,
    /// "12m (tcp-info) >= 10m" or "3m (tcp-info) < 10m".
    pub threshold: String,
    pub threshold_met: bool,
    /// For rules with `min_sockets`: "api(1234) holds 3 matching sockets < 20".
    #[serde(skip_serializing_if = "Option::is_none")]
    pub min_sockets: Option<String>,
    /// Selectors, age and min_sockets all pass.
    pub fires: bool,
    /// What came of it: the plan item's action and decision, "not yet", or "shadowed".
    pub outcome: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub decision: Option<Decision>,
}

/// Decide what to do about `input.sockets`.
pub fn plan(input: &EngineInput<'_>) -> Plan {
    Evaluation::new(input).plan
}

/// For each socket, every rule whose selectors match it and what came of it.
pub fn explain(input: &EngineInput<'_>) -> Vec<SocketExplanation> {
    let eval = Evaluation::new(input);
    eval.explain(input)
}

// ---- evaluation -----------------------------------------------------------------------

/// A rule's view of one socket.
#[derive(Debug, Clone, Copy, Default)]
struct Match {
    selectors: bool,
    age_ok: bool,
    /// Index into the socket's owners of the owner with the most matching sockets.
    principal: Option<u32>,
    /// How many sockets matching this rule (selectors and age) the principal owner holds.
    owner_count: u32,
    min_ok: bool,
}

impl Match {
    fn fires(&self) -> bool {
        self.selectors && self.age_ok && self.min_ok
    }
}

/// Every rule's view of every socket, in one allocation: `matches[socket][rule]`.
struct Matches {
    rules: usize,
    cells: Vec<Match>,
}

impl std::ops::Index<usize> for Matches {
    type Output = [Match];
    fn index(&self, socket: usize) -> &[Match] {
        &self.cells[socket * self.rules..(socket + 1) * self.rules]
    }
}

impl std::ops::IndexMut<usize> for Matches {
    fn index_mut(&mut self, socket: usize) -> &mut [Match] {
        &mut self.cells[socket * self.rules..(socket + 1) * self.rules]
    }
}

struct Evaluation {
    plan: Plan,
    /// matches[socket][rule]
    matches: Matches,
    /// The rule that fired first for each socket.
    winner: Vec<Option<usize>>,
}

impl Evaluation {
    fn new(input: &EngineInput<'_>) -> Evaluation {
        let rules = &input.policies.rules;
        let socks = input.sockets;
        let mut matches = Matches {
            rules: rules.len(),
            cells: socks
                .iter()
                .flat_map(|s| {
                    rules.iter().map(|r| Match {
                        selectors: selectors_match(r, s, input.netns_names),
                        age_ok: s.age.secs >= r.older_than.as_secs(),
                        ..Match::default()
                    })
                })
                .collect(),
        };

        // min_sockets: count, per rule and owner process, the sockets that match and are old
        // enough. A socket held by several processes counts for each.
        for (r, rule) in rules.iter().enumerate() {
            let mut counts: HashMap<ProcessId, u32, NumberHash> = HashMap::default();
            for (i, s) in socks.iter().enumerate() {
                if matches[i][r].selectors
                    && matches[i][r].age_ok
                    && s.socket.state != TcpState::Listen
                {
                    for o in &s.owners {
                        *counts.entry(o.process.id).or_default() += 1;
                    }
                }
            }
            for (i, s) in socks.iter().enumerate() {
                let m = &mut matches[i][r];
                let mut best: Option<(usize, u32)> = None;
                for (k, o) in s.owners.iter().enumerate() {
                    let c = counts.get(&o.process.id).copied().unwrap_or(0);
                    if best.map_or(true, |(_, bc)| c > bc) {
                        best = Some((k, c));
                    }
                }
                m.principal = best.and_then(|(k, _)| u32::try_from(k).ok());
                m.owner_count = best.map_or(0, |(_, c)| c);
                m.min_ok = match rule.min_sockets {
                    None => true,
                    Some(min) => m.owner_count >= min,
                };
            }
        }

        let winner: Vec<Option<usize>> = (0..socks.len())
            .map(|i| matches[i].iter().position(Match::fires))
            .collect();
        let mut planner = Planner::new(input, &matches);
        for r in 0..rules.len() {
            let mut won: Vec<usize> = (0..socks.len()).filter(|&i| winner[i] == Some(r)).collect();
            // Oldest first, so that a budget spends itself on the worst cases.
            won.sort_by_key(|&i| std::cmp::Reverse(socks[i].age.secs));
            planner.plan_rule(r, &won);
        }
        let items = planner.finish();
        let mode = input.options.mode.unwrap_or(input.policies.mode);
        Evaluation {
            plan: Plan { mode, items },
            matches,
            winner,
        }
    }

    fn explain(&self, input: &EngineInput<'_>) -> Vec<SocketExplanation> {
        let rules = &input.policies.rules;
        // The plan item covering each socket, if any.
        let mut item_of = HashMap::new();
        for (n, item) in self.plan.items.iter().enumerate() {
            for &i in item.socket_indices.iter() {
                item_of.insert(i, n);
            }
        }
        input
            .sockets
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let mut out = Vec::new();
                for (r, rule) in rules.iter().enumerate() {
                    let m = self.matches[i][r];
                    if !m.selectors {
                        continue;
                    }
                    let threshold = format!(
                        "{} {} {}",
                        AgeText(&s.age),
                        if m.age_ok { ">=" } else { "<" },
                        rule.older_than
                    );
                    let min_sockets = rule.min_sockets.map(|min| match m.principal {
                        Some(k) => format!(
                            "{} holds {} matching socket{} {} {min}",
                            ProcName(&s.owners[k as usize].process),
                            m.owner_count,
                            plural(m.owner_count),
                            if m.min_ok { ">=" } else { "<" }
                        ),
                        None => "no process holds it".to_string(),
                    });
                    let (outcome, decision) = if s.socket.state == TcpState::Listen {
                        ("LISTEN sockets are never touched".to_string(), None)
                    } else if !m.age_ok {
                        (format!("not yet: {threshold}"), None)
                    } else if !m.min_ok {
                        (
                            format!(
                                "not a leak yet: {}",
                                min_sockets.clone().unwrap_or_default()
                            ),
                            None,
                        )
                    } else if self.winner[i] != Some(r) {
                        let w = self.winner[i]
                            .map(|w| rules[w].name.as_str())
                            .unwrap_or("?");
                        (format!("shadowed: rule `{w}` comes first"), None)
                    } else {
                        match item_of.get(&i).map(|&n| &self.plan.items[n]) {
                            Some(item) => (item_text(item), Some(item.decision.clone())),
                            None => ("no action planned".to_string(), None),
                        }
                    };
                    out.push(RuleExplanation {
                        rule: rule.name.clone(),
                        threshold,
                        threshold_met: m.age_ok,
                        min_sockets,
                        fires: m.fires(),
                        outcome,
                        decision,
                    });
                }
                let summary = match (self.winner[i], item_of.get(&i)) {
                    (Some(r), Some(&n)) => format!(
                        "rule `{}`: {}",
                        rules[r].name,
                        item_text(&self.plan.items[n])
                    ),
                    _ if s.socket.state == TcpState::Listen => {
                        "LISTEN sockets are never touched".to_string()
                    }
                    _ if out.is_empty() => "no rule matches".to_string(),
                    _ => format!(
                        "no rule fires yet ({} matching rule{})",
                        out.len(),
                        plural(u32::try_from(out.len()).unwrap_or(u32::MAX))
                    ),
                };
                SocketExplanation {
                    index: i,
                    netns: input
                        .netns_names
                        .get(&s.socket.netns)
                        .cloned()
                        .unwrap_or_else(|| s.socket.netns.to_string()),
                    cookie: s.socket.cookie,
                    state: s.socket.state,
                    local: s.socket.local,
                    remote: s.socket.remote,
                    age: s.age,
                    owners: s
                        .owners
                        .iter()
                        .map(|o| ProcName(&o.process).to_string())
                        .collect(),
                    rules: out,
                    summary,
                }
            })
            .collect()
    }
}

fn item_text(item: &PlanItem) -> String {
    format!("{} {}: {}", item.action, item.target, item.decision)
}

fn selectors_match(rule: &Rule, s: &StuckSocket, names: &HashMap<NetnsId, String>) -> bool {
    let k = &s.socket;
    let sel = &rule.selectors;
    let procs = || s.owners.iter().map(|o| o.process.as_ref());
    let any_port =
        |list: &[crate::policy::PortRange], port: u16| list.iter().any(|p| p.contains(port));
    rule.matches_state(k.state)
        && (sel.ports.is_empty()
            || any_port(&sel.ports, k.local.port())
            || any_port(&sel.ports, k.remote.port()))
        && (sel.local_ports.is_empty() || any_port(&sel.local_ports, k.local.port()))
        && (sel.remote_ports.is_empty() || any_port(&sel.remote_ports, k.remote.port()))
        && (sel.local_cidrs.is_empty() || sel.local_cidrs.iter().any(|c| c.contains(k.local.ip())))
        && (sel.remote_cidrs.is_empty()
            || sel.remote_cidrs.iter().any(|c| c.contains(k.remote.ip())))
        && (sel.process.is_empty()
            || procs().any(|p| sel.process.iter().any(|g| g.matches(&p.comm))))
        && (sel.exe.is_empty()
            || procs().any(|p| {
                p.exe
                    .as_deref()
                    .is_some_and(|e| sel.exe.iter().any(|g| g.matches(e)))
            }))
        && (sel.cmdline.is_empty()
            || procs().any(|p| sel.cmdline.iter().any(|g| g.matches(&p.cmdline))))
        && (sel.unit.is_empty()
            || procs().any(|p| {
                p.unit
                    .as_deref()
                    .is_some_and(|u| sel.unit.iter().any(|g| g.matches(u)))
            }))
        && (sel.uid.is_empty()
            || sel.uid.contains(&k.uid)
            || procs().any(|p| sel.uid.contains(&p.uid)))
        && (sel.netns.is_empty() || {
            let name = names
                .get(&k.netns)
                .cloned()
                .unwrap_or_else(|| k.netns.to_string());
            sel.netns.iter().any(|g| g.matches(&name))
        })
}

/// Never-touch checks, with the words that say why.
struct Protection<'a> {
    guards: &'a Guards,
    options: RunOptions,
    /// Units that hold a protected process: restarting them would hit it.
    units_with_protected: HashSet<String>,
    /// [`Protection::process`] of every owner in the snapshot, taken once per process (a
    /// mass leak has 100,000 sockets and a few hundred owners).
    processes: HashMap<ProcessId, Option<String>, NumberHash>,
}

impl<'a> Protection<'a> {
    fn new(input: &EngineInput<'a>) -> Protection<'a> {
        let mut p = Protection {
            guards: &input.policies.guards,
            options: input.options,
            units_with_protected: HashSet::new(),
            processes: HashMap::default(),
        };
        let mut processes = HashMap::default();
        for s in input.sockets {
            for o in &s.owners {
                processes
                    .entry(o.process.id)
                    .or_insert_with(|| p.process(&o.process));
            }
        }
        let mut units = HashSet::new();
        for s in input.sockets {
            for o in &s.owners {
                if let (Some(unit), Some(Some(_))) = (&o.process.unit, processes.get(&o.process.id))
                {
                    units.insert(unit.clone());
                }
            }
        }
        p.units_with_protected = units;
        p.processes = processes;
        p
    }

    /// [`Protection::process`], as taken when the snapshot was read.
    fn owner(&self, p: &Process) -> Option<String> {
        match self.processes.get(&p.id) {
            Some(verdict) => verdict.clone(),
            None => self.process(p),
        }
    }

    fn process(&self, p: &Process) -> Option<String> {
        let g = self.guards;
        if p.id.pid == self.options.self_pid {
            return Some(format!("{} is sockwarden itself", ProcName(p)));
        }
        if self.options.protect_pid1 && p.id.pid == Pid(1) {
            return Some(format!("{} is PID 1", ProcName(p)));
        }
        if let Some(glob) = g.never_touch_processes.iter().find(|g| g.matches(&p.comm)) {
            return Some(format!(
                "{} matches never_touch_processes `{glob}`",
                ProcName(p)
            ));
        }
        if g.protect_ssh && SSH_PROCESSES.contains(&p.comm.as_str()) {
            return Some(format!("{} is sshd (protect_ssh)", ProcName(p)));
        }
        if let Some(unit) = &p.unit {
            if let Some(why) = self.unit_listed(unit) {
                return Some(why);
            }
        }
        if g.never_touch_uids.contains(&p.uid) {
            return Some(format!(
                "{} runs as uid {}, in never_touch_uids",
                ProcName(p),
                p.uid
            ));
        }
        None
    }

    fn unit_listed(&self, unit: &str) -> Option<String> {
        if let Some(glob) = self
            .guards
            .never_touch_units
            .iter()
            .find(|g| g.matches(unit))
        {
            return Some(format!("unit {unit} matches never_touch_units `{glob}`"));
        }
        if self.guards.protect_ssh && SSH_UNITS.contains(&unit) {
            return Some(format!("unit {unit} is ssh (protect_ssh)"));
        }
        None
    }

    fn unit(&self, unit: &str) -> Option<String> {
        self.unit_listed(unit).or_else(|| {
            self.units_with_protected
                .contains(unit)
                .then(|| format!("unit {unit} holds a protected process"))
        })
    }

    fn socket(&self, s: &StuckSocket) -> Option<String> {
        let g = self.guards;
        for port in [s.socket.local.port(), s.socket.remote.port()] {
            if g.never_touch_ports.iter().any(|p| p.contains(port)) {
                return Some(format!("port {port} is in never_touch_ports"));
            }
            if g.protect_ssh && port == SSH_PORT {
                return Some(format!("port {port} is ssh (protect_ssh)"));
            }
        }
        if g.never_touch_uids.contains(&s.socket.uid) {
            return Some(format!(
                "socket uid {} is in never_touch_uids",
                s.socket.uid
            ));
        }
        s.owners.iter().find_map(|o| self.owner(&o.process))
    }
}

/// Builds plan items rule by rule and applies the guards in order.
struct Planner<'a> {
    input: &'a EngineInput<'a>,
    matches: &'a Matches,
    protection: Protection<'a>,
    mode: Mode,
    items: Vec<PlanItem>,
    /// Items that passed every guard (acted on, or held only by observe mode), for the
    /// in-pass part of budgets.
    rate_used: HashMap<ActionKind, u32>,
    restarts_used: HashMap<String, u32>,
    fraction_used: HashMap<(usize, ProcessId), u32, NumberHash>,
    planned: HashMap<(ActionKind, TargetKey), Arc<str>>,
    /// Each rule's name, shared by its items.
    rule_names: Vec<Arc<str>>,
    /// Each rule's action and its escalation's, shared by their items.
    rule_actions: Vec<(Arc<Action>, Option<Arc<Action>>)>,
}

/// Sockets of one rule that become one item.
struct Group {
    action: Arc<Action>,
    escalated: Option<String>,
    target: Target,
    owner: Option<OwnerKey>,
    sockets: Vec<usize>,
    held: Option<HeldReason>,
}

impl<'a> Planner<'a> {
    fn new(input: &'a EngineInput<'a>, matches: &'a Matches) -> Planner<'a> {
        Planner {
            input,
            matches,
            protection: Protection::new(input),
            mode: input.options.mode.unwrap_or(input.policies.mode),
            items: Vec::new(),
            rate_used: HashMap::new(),
            restarts_used: HashMap::new(),
            fraction_used: HashMap::default(),
            planned: HashMap::new(),
            rule_names: input
                .policies
                .rules
                .iter()
                .map(|r| Arc::from(r.name.as_str()))
                .collect(),
            rule_actions: input
                .policies
                .rules
                .iter()
                .map(|r| {
                    let escalated = r.escalate.as_ref().map(|e| Arc::new(e.action.clone()));
                    (Arc::new(r.action.clone()), escalated)
                })
                .collect(),
        }
    }

    fn finish(self) -> Vec<PlanItem> {
        self.items
    }

    fn principal(&self, r: usize, i: usize) -> Option<&'a Process> {
        let s = &self.input.sockets[i];
        self.matches[i][r]
            .principal
            .map(|k| s.owners[k as usize].process.as_ref())
    }

    fn owner_key(&self, r: usize, i: usize) -> Option<OwnerKey> {
        self.principal(r, i).map(|p| match &p.unit {
            Some(u) => OwnerKey::Unit(u.clone()),
            None => OwnerKey::Process(p.id),
        })
    }

    /// Split the sockets a rule won into items, then guard each item, in the order of
    /// `won`. A socket target is kept as its index until it is guarded (a mass leak has
    /// 100,000 of them); sockets of a shared target (process, unit) join one group.
    fn plan_rule(&mut self, r: usize, won: &[usize]) {
        enum Slot {
            Socket(usize),
            Shared(usize),
        }
        let mut escalations: HashMap<OwnerKey, Option<String>> = HashMap::new();
        // Only a signal or a restart shares a target (a process, a unit) among sockets;
        // a rule without one makes an item per socket, each group made once.
        let (plain, escalate) = &self.rule_actions[r];
        let shares = [Some(plain), escalate.as_ref()]
            .into_iter()
            .flatten()
            .any(|a| matches!(a.kind(), ActionKind::Signal | ActionKind::Restart));
        if !shares {
            self.items.reserve(won.len());
            for &i in won {
                let g = self.group_of(r, i, &mut escalations);
                self.guard(r, g);
            }
            return;
        }
        let mut slots: Vec<Slot> = Vec::with_capacity(won.len());
        let mut shared: Vec<Group> = Vec::new();
        for &i in won {
            let g = self.group_of(r, i, &mut escalations);
            if !matches!(g.target, Target::Process(_) | Target::Unit { .. }) {
                slots.push(Slot::Socket(i));
                continue;
            }
            match shared.iter_mut().find(|s| {
                s.target == g.target
                    && s.action == g.action
                    && s.held == g.held
                    && s.escalated.is_some() == g.escalated.is_some()
            }) {
                Some(existing) => existing.sockets.push(i),
                None => {
                    slots.push(Slot::Shared(shared.len()));
                    shared.push(g);
                }
            }
        }
        self.items.reserve(slots.len());
        let mut shared: Vec<Option<Group>> = shared.into_iter().map(Some).collect();
        for slot in slots {
            let g = match slot {
                Slot::Socket(i) => self.group_of(r, i, &mut escalations),
                Slot::Shared(n) => match shared[n].take() {
                    Some(g) => g,
                    None => continue,
                },
            };
            self.guard(r, g);
        }
    }

    /// The item socket `i` makes under rule `r` on its own: the action (escalated or not),
    /// the target and anything that holds it back before the guards are asked.
    fn group_of(
        &self,
        r: usize,
        i: usize,
        escalations: &mut HashMap<OwnerKey, Option<String>>,
    ) -> Group {
        let rule = &self.input.policies.rules[r];
        let s = &self.input.sockets[i];
        let owner = self.owner_key(r, i);
        let escalated = match &owner {
            Some(o) => escalations
                .entry(o.clone())
                .or_insert_with(|| escalation(rule, o, self.input))
                .clone(),
            None => None,
        };
        let (plain, escalate) = &self.rule_actions[r];
        let action = match (&escalated, escalate) {
            (Some(_), Some(e)) => e.clone(),
            _ => plain.clone(),
        };
        let socket_target = Target::Socket {
            cookie: s.socket.cookie,
            index: i,
        };
        if s.socket.state == TcpState::Listen {
            return Group {
                action,
                escalated,
                target: socket_target,
                owner,
                sockets: vec![i],
                held: Some(HeldReason::Listening),
            };
        }
        let protected = self.protection.socket(s);
        let (target, held) = match action.kind() {
            ActionKind::Log | ActionKind::Destroy | ActionKind::Exec => (socket_target, None),
            ActionKind::Signal | ActionKind::Restart => match self.principal(r, i) {
                None => (socket_target, Some(HeldReason::NoOwner)),
                Some(p) => match (&p.unit, action.kind()) {
                    (Some(u), ActionKind::Restart) => (
                        Target::Unit {
                            unit: u.as_str().into(),
                        },
                        None,
                    ),
                    (None, ActionKind::Restart) => {
                        (Target::process(p.id, &p.comm), Some(HeldReason::NoUnit))
                    }
                    _ => (Target::process(p.id, &p.comm), None),
                },
            },
        };
        // A protected socket never joins a group that acts: it gets an item of its own
        // (same target, held) so that the plan says why it was left out.
        let held = held.or(protected.map(|what| HeldReason::Protected { what }));
        Group {
            action,
            escalated,
            target,
            owner,
            sockets: vec![i],
            held,
        }
    }

    fn guard(&mut self, r: usize, g: Group) {
        let kind = g.action.kind();
        let key = g.target.key();
        let decision = match g.held.clone() {
            Some(reason) => Decision::Held(reason),
            None => match self.check(r, &g) {
                Some(reason) => Decision::Held(reason),
                None => {
                    // Passed every guard: it uses up budget even in observe mode, so that
                    // observe shows exactly what enforce would do.
                    *self.rate_used.entry(kind).or_default() += 1;
                    if let Target::Unit { unit } = &g.target {
                        *self.restarts_used.entry(unit.to_string()).or_default() += 1;
                    }
                    if let Some(p) = self.principal(r, g.sockets[0]) {
                        *self.fraction_used.entry((r, p.id)).or_default() += 1;
                    }
                    // A socket is won by one rule and makes one item: only a shared
                    // target (a process, a unit) can come up again in the same pass. (A
                    // mass leak would otherwise keep 100,000 keys here.)
                    if !matches!(key, TargetKey::Socket(_)) {
                        self.planned.insert((kind, key), self.rule_names[r].clone());
                    }
                    match self.mode {
                        Mode::Observe => Decision::Held(HeldReason::Observe),
                        Mode::Enforce => Decision::Act,
                    }
                }
            },
        };
        let exec = match &*g.action {
            Action::Exec { command } => {
                let values = self.exec_values(r, g.sockets[0]);
                Some(Box::new(ExecCommand {
                    argv: render_command(command, &values),
                    env: exec_env(&values),
                }))
            }
            _ => None,
        };
        let reason = self.reason(r, &g);
        self.items.push(PlanItem {
            rule: self.rule_names[r].clone(),
            escalated: g.escalated.is_some(),
            action: g.action,
            target: g.target,
            owner: g.owner,
            socket_indices: g.sockets.into(),
            exec,
            decision,
            reason,
        });
    }

    /// The guards after protection, in order: duplicates, cooldown, budgets.
    fn check(&self, r: usize, g: &Group) -> Option<HeldReason> {
        let input = self.input;
        let rule = &input.policies.rules[r];
        let guards = &input.policies.guards;
        let kind = g.action.kind();
        let key = g.target.key();
        if let Target::Unit { unit } = &g.target {
            if let Some(what) = self.protection.unit(unit) {
                return Some(HeldReason::Protected { what });
            }
        }
        if let Some(rule) = self.planned.get(&(kind, key.clone())) {
            return Some(HeldReason::AlreadyPlanned {
                rule: rule.to_string(),
            });
        }
        if let Some(cooldown) = rule.cooldown {
            let last = input
                .history
                .latest(&rule.name, &key)
                .map(|t| secs_since(input.now, t));
            if let Some(ago) = last.filter(|&ago| ago < cooldown.as_secs()) {
                return Some(HeldReason::Cooldown {
                    last_secs_ago: ago,
                    cooldown_secs: cooldown.as_secs(),
                });
            }
        }
        if input.options.lift_budgets {
            return None;
        }
        let rate = |name: &str, limit: u32| {
            let used = input.history.count(kind, input.now, 60)
                + self.rate_used.get(&kind).copied().unwrap_or(0);
            (used >= limit).then(|| HeldReason::Budget {
                budget: name.to_string(),
                limit,
                used,
            })
        };
        let over = match kind {
            ActionKind::Log => None,
            ActionKind::Destroy => rate("max_destroys_per_minute", guards.max_destroys_per_minute),
            ActionKind::Signal => rate("max_signals_per_minute", guards.max_signals_per_minute),
            ActionKind::Exec => rate("max_execs_per_minute", guards.max_execs_per_minute),
            ActionKind::Restart => match &g.target {
                Target::Unit { unit } => {
                    let limit = guards.max_restarts_per_unit_per_hour;
                    let used = input.history.restarts(unit, input.now, 3600)
                        + self.restarts_used.get(&**unit).copied().unwrap_or(0);
                    (used >= limit).then(|| HeldReason::Budget {
                        budget: "max_restarts_per_unit_per_hour".to_string(),
                        limit,
                        used,
                    })
                }
                _ => None,
            },
        };
        if over.is_some() {
            return over;
        }
        if matches!(kind, ActionKind::Destroy | ActionKind::Exec)
            && guards.max_fraction_per_owner < 1.0
        {
            if let Some(p) = self.principal(r, g.sockets[0]) {
                // Denominator: the owner's sockets that match the rule's selectors, old or not.
                let matching = input
                    .sockets
                    .iter()
                    .enumerate()
                    .filter(|(i, s)| {
                        self.matches[*i][r].selectors
                            && s.owners.iter().any(|o| o.process.id == p.id)
                    })
                    .count();
                let matching = u32::try_from(matching).unwrap_or(u32::MAX);
                // Rounded down, but at least one, so that a small leak still drains.
                let limit =
                    ((f64::from(matching) * guards.max_fraction_per_owner).floor() as u32).max(1);
                let used = self.fraction_used.get(&(r, p.id)).copied().unwrap_or(0);
                if used >= limit {
                    return Some(HeldReason::OwnerFraction {
                        owner: p.id,
                        limit,
                        matching,
                    });
                }
            }
        }
        None
    }

    fn reason(&self, r: usize, g: &Group) -> Why {
        let rule = &self.input.policies.rules[r];
        // Sockets are sorted oldest first within a rule, so the first is the oldest.
        let m = self.matches[g.sockets[0]][r];
        Why {
            older_than: u32::try_from(rule.older_than.as_secs()).unwrap_or(u32::MAX),
            min_sockets: rule.min_sockets.unwrap_or(0),
            principal: m.principal.unwrap_or(Why::NO_OWNER),
            owner_count: m.owner_count,
            notes: g.escalated.as_ref().map(|e| {
                Box::new(WhyNotes {
                    escalated: Some(e.clone()),
                    after: None,
                })
            }),
        }
    }

    /// Every placeholder's exact value for socket `i` under rule `r`.
    fn exec_values(&self, r: usize, i: usize) -> Vec<ExecValue> {
        let rule = &self.input.policies.rules[r];
        let s = &self.input.sockets[i];
        let k = &s.socket;
        let owner = self.principal(r, i);
        let netns = self
            .input
            .netns_names
            .get(&k.netns)
            .cloned()
            .unwrap_or_else(|| k.netns.to_string());
        let plain = |name: &'static str, value: String| ExecValue {
            name,
            value,
            from_process: false,
        };
        let chosen = |name: &'static str, value: String| ExecValue {
            name,
            value,
            from_process: true,
        };
        vec![
            plain("rule", rule.name.clone()),
            plain("cookie", k.cookie.to_string()),
            plain("state", k.state.name().to_string()),
            plain("local", k.local.to_string()),
            plain("remote", k.remote.to_string()),
            plain("local_port", k.local.port().to_string()),
            plain("remote_port", k.remote.port().to_string()),
            chosen("netns", netns),
            plain("age", s.age.secs.to_string()),
            plain("uid", k.uid.to_string()),
            plain(
                "pid",
                owner.map(|p| p.id.pid.to_string()).unwrap_or_default(),
            ),
            chosen("comm", owner.map(|p| p.comm.clone()).unwrap_or_default()),
            chosen(
                "unit",
                owner.and_then(|p| p.unit.clone()).unwrap_or_default(),
            ),
        ]
    }
}

/// One `exec` placeholder's value. Values chosen by whoever runs a process (its comm, its
/// unit, a namespace named after it) are escaped where they are spliced into an argument,
/// so that a newline or an escape sequence in a name cannot forge a log line or a
/// terminal; the exact bytes reach the command as `SOCKWARDEN_<NAME>`.
#[derive(Debug, Clone)]
struct ExecValue {
    name: &'static str,
    value: String,
    from_process: bool,
}

/// The command's arguments with placeholders filled in.
fn render_command(command: &[String], values: &[ExecValue]) -> Vec<String> {
    let field = |name: &str| -> Option<String> {
        let v = values.iter().find(|v| v.name == name)?;
        Some(if v.from_process {
            crate::output::escape(&v.value).into_owned()
        } else {
            v.value.clone()
        })
    };
    // Placeholders were validated at load time, so rendering cannot fail; keep the raw
    // argument if it somehow does rather than invent one.
    command
        .iter()
        .map(|a| render_arg(a, &field).unwrap_or_else(|_| a.clone()))
        .collect()
}

/// `SOCKWARDEN_COMM=…` and the rest: the exact values, for scripts that need them.
fn exec_env(values: &[ExecValue]) -> Vec<(String, String)> {
    values
        .iter()
        .map(|v| {
            (
                format!("SOCKWARDEN_{}", v.name.to_ascii_uppercase()),
                v.value.clone(),
            )
        })
        .collect()
}

/// When the rule's escalation applies to `owner`, the words that say why.
fn escalation(rule: &Rule, owner: &OwnerKey, input: &EngineInput<'_>) -> Option<String> {
    let e = rule.escalate.as_ref()?;
    let mine = || input.history.steps(&rule.name, owner).iter();
    // Time since the last escalation step on this owner: earlier first steps are spent.
    let last_escalation = mine()
        .filter(|(_, escalated, _)| *escalated)
        .map(|(time, _, _)| secs_since(input.now, *time))
        .min();
    let after = e.after.as_secs();
    let oldest = mine()
        .filter(|(_, escalated, _)| !escalated)
        .map(|(time, _, action)| (secs_since(input.now, *time), *action))
        .filter(|(ago, _)| last_escalation.map_or(true, |esc| *ago < esc))
        .filter(|(ago, _)| *ago >= after && *ago <= after + e.within.as_secs())
        .max_by_key(|(ago, _)| *ago)?;
    Some(format!(
        "escalated: this rule did {} on {owner} {} ago (>= {}) and it still matches",
        oldest.1,
        crate::duration::format(oldest.0),
        e.after
    ))
}

fn secs_since(now: SystemTime, then: SystemTime) -> u64 {
    // A record from the future (clock stepped back) counts as just now: conservative for
    // cooldowns and budgets.
    now.duration_since(then).map_or(0, |d| d.as_secs())
}

/// An age with its evidence: "at least 12m (tcp-info)".
struct AgeText<'a>(&'a Age);

impl fmt::Display for AgeText<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let age = self.0;
        if age.lower_bound {
            f.write_str("at least ")?;
        }
        write!(
            f,
            "{} ({})",
            crate::duration::Shown(age.secs),
            age.source.name()
        )
    }
}

/// A process as every explanation names it: "comm(pid)".
struct ProcName<'a>(&'a Process);

impl fmt::Display for ProcName<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}({})", self.0.comm, self.0.id.pid)
    }
}

fn plural(n: u32) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}
