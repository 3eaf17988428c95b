//! One file per subcommand.

pub mod audit;
pub mod clean;
pub mod doctor;
pub mod policy;
pub mod run;
pub mod scan;
