//! Policies: the TOML rules an operator writes, loaded and validated with file:line:col errors.
