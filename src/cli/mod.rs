//! The command line's subcommands.

pub mod parallel;
pub mod replay;
pub mod service;
