//! One file per subcommand.

pub mod audit;
