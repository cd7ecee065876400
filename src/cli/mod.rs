//! The command line's subcommands.

pub mod demo;
pub mod parallel;
pub mod replay;
pub mod service;
