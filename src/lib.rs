//! sockwarden finds TCP connections stuck in teardown, tells who owns them and for how
//! long, and acts on them under policy, recording every intervention.
//!
//! ```text
//!  main ─► cli (clap, every flag) ─► cmd/<command> ──────────────────────────────┐
//!                                                                                │
//!  sys::System (the kernel boundary: netlink, /proc, netns, pidfds, D-Bus, probes)
//!     │  sys::linux (real) · sys::fake (tests)                                    │
//!     ▼                                                                           ▼
//!  scan (watcher) ─► owners ─► age ─► Snapshot ─┐                    decide::Decider
//!  policy (TOML) ───────────────────────────────┼─► engine (pure) ─► Plan   (plan, then
//!  audit::history (the trail's memory) ─────────┘                    again at act time)
//!  Plan ─► actions (destroy / signal / restart / exec) ─► audit (intent, outcome)
//!  daemon: a pass every interval (the same Decider), metrics, sd_notify
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
pub mod logging;
pub mod metrics;
pub mod model;
pub mod observed;
pub mod outcome;
pub mod output;
pub mod policy;
pub mod record;
pub mod scan;
pub mod sys;
pub mod toml_check;
