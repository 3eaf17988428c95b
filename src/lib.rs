//! sockwarden finds TCP connections stuck in teardown, tells who owns them and for how
//! long, and acts on them under policy, recording every intervention.
//!
//! ```text
//!   sys::netns ─┐                      (kernel boundary: sys::System)
//!   sys::netlink ┼─► scan (watcher) ─► owner map (sys::procfs) ─► age ─► Snapshot
//!                                                                          │
//!   policy (TOML rules) ──────────────► engine (pure: snapshot+rules+clock) ┘─► Plan
//!   Plan ─► actions (destroy / signal / restart / exec) ─► audit (intent, outcome)
//! ```
//! `cmd/` holds one file per subcommand; `output` formats tables and JSON Lines.

pub mod actions;
pub mod age;
pub mod audit;
pub mod cli;
pub mod cmd;
pub mod daemon;
pub mod decide;
pub mod duration;
pub mod engine;
pub mod filter;
pub mod metrics;
pub mod model;
pub mod outcome;
pub mod output;
pub mod policy;
pub mod record;
pub mod scan;
pub mod sys;
pub mod toml_check;
