//! How a batch is written in the trail: what every target shares is written once
//! (`shared`), each distinct explanation once (`whys`, a target naming its index), and each
//! distinct outcome once (`outcomes`, a result naming its index), so a mass destroy's
//! records are a third of the bytes to serialize, seal and write. Read back, every target
//! and result is whole again; one written whole (before these) reads the same.

use std::collections::HashMap;
use std::net::SocketAddr;

use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::batch::{Batch, BatchProcess, BatchTarget};
use super::record::Outcome;
use crate::model::{AgeSource, Family, TcpState};

/// The fields every target may share, each present only when all targets agree on it.
#[derive(Default, Serialize, Deserialize)]
struct Shared<R, N> {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    rule: Option<R>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    netns_inode: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    netns: Option<N>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    family: Option<Family>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    state: Option<TcpState>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    uid: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    age_source: Option<AgeSource>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    age_is_lower_bound: Option<bool>,
}

/// Each distinct value once, in the order first seen, and where each is.
struct Distinct<T> {
    values: Vec<T>,
    at: HashMap<T, u32>,
}

impl<T> Default for Distinct<T> {
    fn default() -> Self {
        Distinct {
            values: Vec::new(),
            at: HashMap::new(),
        }
    }
}

impl<T: Copy + Eq + std::hash::Hash> Distinct<T> {
    /// The index of `value`, added when new.
    fn index(&mut self, value: T) -> u32 {
        *self.at.entry(value).or_insert_with(|| {
            self.values.push(value);
            u32::try_from(self.values.len() - 1).unwrap_or(u32::MAX)
        })
    }
}

/// `value` when `shared` does not hold it for every target.
fn own<S, T>(shared: &Option<S>, value: T) -> Option<T> {
    shared.is_none().then_some(value)
}

impl<R, N> Shared<R, N> {
    fn is_empty(&self) -> bool {
        self.rule.is_none()
            && self.netns_inode.is_none()
            && self.netns.is_none()
            && self.family.is_none()
            && self.state.is_none()
            && self.uid.is_none()
            && self.age_source.is_none()
            && self.age_is_lower_bound.is_none()
    }
}

/// `f`'s value when every target has the same.
fn common<'t, T: PartialEq>(
    targets: &'t [BatchTarget],
    f: impl Fn(&'t BatchTarget) -> T,
) -> Option<T> {
    let first = f(targets.first()?);
    targets[1..].iter().all(|t| f(t) == first).then_some(first)
}

/// A target as written (`S` = `&str`, `W` = its why's index, `O` = borrowed owners) and
/// as read (owned, and a why that may be a text): what `shared` holds is left out.
#[derive(Serialize, Deserialize)]
struct TargetWire<S, W, O> {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    rule: Option<S>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    escalated: bool,
    why: W,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    netns_inode: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    netns: Option<S>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    family: Option<Family>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    state: Option<TcpState>,
    local: SocketAddr,
    remote: SocketAddr,
    recv_q: u32,
    send_q: u32,
    cookie: u64,
    inode: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    uid: Option<u32>,
    age_secs: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    age_source: Option<AgeSource>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    age_is_lower_bound: Option<bool>,
    owners: O,
}

/// A target as written; `why` indexes `whys`.
type TargetOut<'a> = TargetWire<&'a str, u32, &'a [(usize, i32)]>;

/// A target as read.
type TargetIn = TargetWire<String, WhyIn, Vec<(usize, i32)>>;

#[derive(Serialize)]
struct BatchOut<'a> {
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    processes: &'a [BatchProcess],
    #[serde(skip_serializing_if = "Shared::is_empty")]
    shared: Shared<&'a str, &'a str>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    whys: Vec<&'a str>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    targets: Vec<TargetOut<'a>>,
    /// Each distinct outcome once; `results` has the index of each target's.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    outcomes: Vec<&'a Outcome>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    results: Vec<u32>,
}

impl Serialize for Batch {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let t = &self.targets[..];
        let shared = Shared {
            rule: common(t, |t| t.rule.as_str()),
            netns_inode: common(t, |t| t.netns_inode),
            netns: common(t, |t| t.netns.as_str()),
            family: common(t, |t| t.family),
            state: common(t, |t| t.state),
            uid: common(t, |t| t.uid),
            age_source: common(t, |t| t.age_source),
            age_is_lower_bound: common(t, |t| t.age_is_lower_bound),
        };
        let mut outcomes = Distinct::default();
        let results = self.results.iter().map(|o| outcomes.index(o)).collect();
        let mut whys = Distinct::default();
        let targets = t
            .iter()
            .map(|t| TargetOut {
                rule: own(&shared.rule, t.rule.as_str()),
                escalated: t.escalated,
                why: whys.index(t.why.as_str()),
                netns_inode: own(&shared.netns_inode, t.netns_inode),
                netns: own(&shared.netns, t.netns.as_str()),
                family: own(&shared.family, t.family),
                state: own(&shared.state, t.state),
                local: t.local,
                remote: t.remote,
                recv_q: t.recv_q,
                send_q: t.send_q,
                cookie: t.cookie,
                inode: t.inode,
                uid: own(&shared.uid, t.uid),
                age_secs: t.age_secs,
                age_source: own(&shared.age_source, t.age_source),
                age_is_lower_bound: own(&shared.age_is_lower_bound, t.age_is_lower_bound),
                owners: &t.owners,
            })
            .collect();
        BatchOut {
            processes: &self.processes,
            shared,
            whys: whys.values,
            targets,
            outcomes: outcomes.values,
            results,
        }
        .serialize(serializer)
    }
}

/// A target's explanation as read: its own text (written whole), or an index into `whys`.
#[derive(Deserialize)]
#[serde(untagged)]
enum WhyIn {
    Text(String),
    Index(usize),
}

#[derive(Deserialize)]
struct BatchIn {
    #[serde(default)]
    processes: Vec<BatchProcess>,
    #[serde(default)]
    shared: Shared<String, String>,
    #[serde(default)]
    whys: Vec<String>,
    #[serde(default)]
    targets: Vec<TargetIn>,
    #[serde(default)]
    outcomes: Vec<Outcome>,
    #[serde(default)]
    results: Vec<ResultIn>,
}

/// A target's outcome as read: whole (written before `outcomes`), or an index into
/// `outcomes`.
#[derive(Deserialize)]
#[serde(untagged)]
enum ResultIn {
    Whole(Outcome),
    Index(usize),
}

impl<'de> Deserialize<'de> for Batch {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Batch, D::Error> {
        let b = BatchIn::deserialize(deserializer)?;
        let shared = b.shared;
        let whys = b.whys;
        let mut results = Vec::with_capacity(b.results.len());
        for (i, r) in b.results.into_iter().enumerate() {
            results.push(match r {
                ResultIn::Whole(outcome) => outcome,
                ResultIn::Index(n) => match b.outcomes.get(n) {
                    Some(outcome) => outcome.clone(),
                    None => {
                        return Err(D::Error::custom(format_args!(
                            "batch result {i} names outcome {n} of {}",
                            b.outcomes.len()
                        )))
                    }
                },
            });
        }
        let mut targets = Vec::with_capacity(b.targets.len());
        for (i, t) in b.targets.into_iter().enumerate() {
            // A field is the target's own, else the shared one; a target with neither is
            // not a record sockwarden wrote.
            macro_rules! field {
                ($name:ident) => {
                    match t.$name.or_else(|| shared.$name.clone()) {
                        Some(v) => v,
                        None => {
                            return Err(D::Error::custom(format_args!(
                                "batch target {i} has no `{}`, of its own or shared",
                                stringify!($name)
                            )))
                        }
                    }
                };
            }
            let why = match t.why {
                WhyIn::Text(text) => text,
                WhyIn::Index(n) => match whys.get(n) {
                    Some(text) => text.clone(),
                    None => {
                        return Err(D::Error::custom(format_args!(
                            "batch target {i} names why {n} of {}",
                            whys.len()
                        )))
                    }
                },
            };
            targets.push(BatchTarget {
                rule: field!(rule),
                escalated: t.escalated,
                why,
                netns_inode: field!(netns_inode),
                netns: field!(netns),
                family: field!(family),
                state: field!(state),
                local: t.local,
                remote: t.remote,
                recv_q: t.recv_q,
                send_q: t.send_q,
                cookie: t.cookie,
                inode: t.inode,
                uid: field!(uid),
                age_secs: t.age_secs,
                age_source: field!(age_source),
                age_is_lower_bound: field!(age_is_lower_bound),
                owners: t.owners,
            });
        }
        Ok(Batch {
            processes: b.processes,
            targets,
            results,
        })
    }
}
