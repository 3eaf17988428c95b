//! Integration tests: one binary, shared helpers in `support`. Tests that need root and the
//! real kernel run in network namespaces they create, and must run (not skip) under CI.

mod clean;
mod daemon;
mod hostile;
mod isolated_systemd;
mod races;
mod restart;
mod scan;
mod support;
mod systemd;
mod unprivileged;
