//! Integration tests: one binary, shared helpers in `support`. Tests that need root and the
//! real kernel run in network namespaces they create, and must run (not skip) under CI.

mod scan;
mod support;
