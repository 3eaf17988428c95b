//! Integration tests: one binary, shared helpers in `support`. Tests that need root and the
//! real kernel run in network namespaces they create, and must run (not skip) under CI.

// Helpers (not #[test] functions) may expect(): a failed expectation is a failed test.
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod alert_rules;
mod audit_log;
mod bpf;
mod clean;
mod container;
mod daemon;
mod hostile;
mod isolated_systemd;
mod json_contract;
mod metrics_endpoint;
mod package;
mod policy_files;
mod races;
mod readme;
mod restart;
mod scan;
mod states;
mod support;
mod systemd;
mod unprivileged;
