//! Questions asked of a trail: filtered records for `show` and the incident summary for
//! `summary`.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, SystemTime};

use serde::Serialize;

use super::record::{ActionKind, AuditRecord, RecordKind};
use crate::policy::Pattern;

/// Parse a `--since`/`--until` value: a duration meaning that long before `now` (`2h`,
/// `90m`, `1day`), or a UTC time (`2026-11-23T14:00:00Z`, `2026-11-23 14:00`, `2026-11-23`).
pub fn parse_when(s: &str, now: SystemTime) -> Result<SystemTime, String> {
    let s = s.trim();
    if let Ok(d) = crate::duration::parse(s) {
        return now
            .checked_sub(d)
            .ok_or_else(|| format!("`{s}` reaches before 1970"));
    }
    let normalized = match s.len() {
        10 => format!("{s} 00:00:00"),
        16 => format!("{s}:00"),
        _ => s.to_string(),
    };
    humantime::parse_rfc3339_weak(&normalized).map_err(|_| {
        format!(
            "cannot read `{s}` as a time: write a duration meaning that long ago (`2h`, `30m`, `1day`) or a UTC \
             time (`2026-11-23 14:00`, `2026-11-23T14:00:00Z`)"
        )
    })
}

/// Which records `show` and `summary` keep. Empty fields keep everything.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    pub since: Option<SystemTime>,
    pub until: Option<SystemTime>,
    /// Keep records whose action is one of these.
    pub actions: Vec<ActionKind>,
    /// Keep outcomes with this result, and the intents those outcomes answer.
    pub outcome: Option<String>,
    /// Glob on the `comm` of the target's owners or the process target.
    pub process: Option<Pattern>,
    /// Glob on any unit the record is about.
    pub unit: Option<Pattern>,
    /// Glob on the rule name.
    pub rule: Option<Pattern>,
}

impl Filter {
    /// The records of `records` this filter keeps, in order.
    pub fn apply<'a>(&self, records: &'a [AuditRecord]) -> Vec<&'a AuditRecord> {
        let results = outcome_results(records);
        records.iter().filter(|r| self.keeps(r, &results)).collect()
    }

    fn keeps(&self, r: &AuditRecord, results: &HashMap<AnswerKey, &str>) -> bool {
        if self.since.is_some() || self.until.is_some() {
            let Some(t) = r.timestamp() else { return false };
            if self.since.is_some_and(|s| t < s) || self.until.is_some_and(|u| t > u) {
                return false;
            }
        }
        if !self.actions.is_empty()
            && !r
                .action
                .as_ref()
                .is_some_and(|a| self.actions.contains(&a.kind))
        {
            return false;
        }
        if let Some(wanted) = &self.outcome {
            let got = result_of(r, results);
            let keep = match wanted.as_str() {
                "no-outcome" => r.kind == RecordKind::Intent && got.is_none(),
                w => got == Some(w),
            };
            if !keep {
                return false;
            }
        }
        if let Some(g) = &self.process {
            if !r.comms().iter().any(|c| g.matches(c)) {
                return false;
            }
        }
        if let Some(g) = &self.unit {
            if !r.units().iter().any(|u| g.matches(u)) {
                return false;
            }
        }
        if let Some(g) = &self.rule {
            if !r.rule.as_deref().is_some_and(|name| g.matches(name)) {
                return false;
            }
        }
        true
    }
}

/// What an outcome answers: the intent's seq and, in a batch, the entry.
pub type AnswerKey = (u64, Option<u32>);

/// (intent seq, entry) → the result of its outcome.
pub fn outcome_results(records: &[AuditRecord]) -> HashMap<AnswerKey, &str> {
    records
        .iter()
        .filter(|r| r.kind == RecordKind::Outcome)
        .filter_map(|r| Some((r.answer_key()?, r.outcome.as_ref()?.result.name())))
        .collect()
}

/// The result that belongs with a record: its own outcome, or for an intent the outcome
/// that answered it.
pub fn result_of<'a>(r: &'a AuditRecord, results: &HashMap<AnswerKey, &'a str>) -> Option<&'a str> {
    match r.kind {
        RecordKind::Outcome => r.outcome.as_ref().map(|o| o.result.name()),
        RecordKind::Intent => results.get(&(r.seq, r.entry)).copied(),
        _ => None,
    }
}

/// One row of a summary table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Tally {
    pub key: String,
    /// Interventions: intent records (one per action attempted).
    pub actions: u64,
    /// Actions by kind (`destroy`, `restart`, …).
    pub by_action: BTreeMap<String, u64>,
    /// Outcomes by result (`destroyed`, `failed`, … and `no-outcome` for an intent never
    /// answered: a crash or a failed outcome write).
    pub by_outcome: BTreeMap<String, u64>,
}

/// Interventions in one hour (UTC).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HourCount {
    /// Start of the hour: `2026-11-23T14:00:00Z`.
    pub hour: String,
    pub actions: u64,
    pub dry_runs: u64,
    pub by_outcome: BTreeMap<String, u64>,
}

/// `audit summary`: what was done, by whom (rule), to what (unit), with what result, when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Summary {
    pub first_time: Option<String>,
    pub last_time: Option<String>,
    pub records: u64,
    pub intents: u64,
    pub outcomes: u64,
    pub dry_runs: u64,
    pub notes: u64,
    pub per_rule: Vec<Tally>,
    pub per_unit: Vec<Tally>,
    /// Outcome results over all outcome records.
    pub per_outcome: BTreeMap<String, u64>,
    /// Dry-run records by rule: what would have been done.
    pub dry_runs_per_rule: BTreeMap<String, u64>,
    pub timeline: Vec<HourCount>,
}

const NONE_KEY: &str = "(none)";

/// Summarize `records` (already filtered). Interventions are intents; their outcome is
/// found through the outcome's `intent_seq` in `all` (the unfiltered trail).
pub fn summarize(records: &[&AuditRecord], all: &[AuditRecord]) -> Summary {
    let results = outcome_results(all);
    let mut s = Summary {
        first_time: records.first().map(|r| r.time.clone()),
        last_time: records.last().map(|r| r.time.clone()),
        records: records.len() as u64,
        intents: 0,
        outcomes: 0,
        dry_runs: 0,
        notes: 0,
        per_rule: Vec::new(),
        per_unit: Vec::new(),
        per_outcome: BTreeMap::new(),
        dry_runs_per_rule: BTreeMap::new(),
        timeline: Vec::new(),
    };
    let mut rules: BTreeMap<String, Tally> = BTreeMap::new();
    let mut units: BTreeMap<String, Tally> = BTreeMap::new();
    let mut hours: BTreeMap<u64, HourCount> = BTreeMap::new();
    for r in records {
        let hour = r.timestamp().map(hour_of);
        match r.kind {
            RecordKind::Note => s.notes += 1,
            RecordKind::Outcome => {
                s.outcomes += 1;
                if let Some(o) = &r.outcome {
                    *s.per_outcome
                        .entry(o.result.name().to_string())
                        .or_default() += 1;
                }
            }
            RecordKind::DryRun => {
                s.dry_runs += 1;
                *s.dry_runs_per_rule
                    .entry(r.rule.clone().unwrap_or_else(|| NONE_KEY.into()))
                    .or_default() += 1;
                if let Some(h) = hour {
                    hour_entry(&mut hours, h).dry_runs += 1;
                }
            }
            RecordKind::Intent => {
                s.intents += 1;
                let action = r.action.as_ref().map_or("?", |a| a.kind.name()).to_string();
                let result = results
                    .get(&(r.seq, r.entry))
                    .copied()
                    .unwrap_or("no-outcome")
                    .to_string();
                let rule = r.rule.clone().unwrap_or_else(|| NONE_KEY.into());
                count(&mut rules, rule, &action, &result);
                let record_units = r.units();
                if record_units.is_empty() {
                    count(&mut units, NONE_KEY.into(), &action, &result);
                }
                for u in record_units {
                    count(&mut units, u.to_string(), &action, &result);
                }
                if let Some(h) = hour {
                    let entry = hour_entry(&mut hours, h);
                    entry.actions += 1;
                    *entry.by_outcome.entry(result).or_default() += 1;
                }
            }
        }
    }
    s.per_rule = by_count(rules);
    s.per_unit = by_count(units);
    s.timeline = hours.into_values().collect();
    s
}

fn count(map: &mut BTreeMap<String, Tally>, key: String, action: &str, result: &str) {
    let t = map.entry(key.clone()).or_insert_with(|| Tally {
        key,
        actions: 0,
        by_action: BTreeMap::new(),
        by_outcome: BTreeMap::new(),
    });
    t.actions += 1;
    *t.by_action.entry(action.to_string()).or_default() += 1;
    *t.by_outcome.entry(result.to_string()).or_default() += 1;
}

/// Most actions first, then by name.
fn by_count(map: BTreeMap<String, Tally>) -> Vec<Tally> {
    let mut v: Vec<Tally> = map.into_values().collect();
    v.sort_by(|a, b| b.actions.cmp(&a.actions).then_with(|| a.key.cmp(&b.key)));
    v
}

fn hour_of(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() / 3600)
}

fn hour_entry(hours: &mut BTreeMap<u64, HourCount>, h: u64) -> &mut HourCount {
    hours.entry(h).or_insert_with(|| HourCount {
        hour: humantime::format_rfc3339_seconds(
            SystemTime::UNIX_EPOCH + Duration::from_secs(h * 3600),
        )
        .to_string(),
        actions: 0,
        dry_runs: 0,
        by_outcome: BTreeMap::new(),
    })
}
