//! One file per subcommand.

pub mod audit;
pub mod doctor;
pub mod scan;
