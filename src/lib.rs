//! credwatch finds stolen mail passwords while they are being used.
//!
//! The flow, as the modules are laid out: events come in ([`source`]),
//! detectors keep bounded state ([`state`]) and judge ([`detect`]), the
//! [`policy`] turns findings into [`action`]s, and [`sink`]s send them on.
//! [`engine`] ties these together for every command; [`service`] wires the
//! stages and threads of `credwatch run`. Around them: [`config`] (load and
//! check the sections each component declares with [`section!`]),
//! [`kafka`] (the connection source and sinks share), [`geo`], [`metrics`],
//! [`http`], [`time`], the command line ([`cli`]) and, in builds with the
//! `demo` feature, the generated worlds of `credwatch demo` ([`demo`]).

#![deny(unsafe_code)]

pub mod action;
pub mod cli;
pub mod config;
#[cfg(feature = "demo")]
pub mod demo;
pub mod detect;
pub mod enforce;
pub mod engine;
pub mod geo;
pub mod http;
pub mod kafka;
pub mod metrics;
pub mod policy;
pub mod report;
#[macro_use]
pub mod section;
pub mod service;
pub mod sink;
pub mod source;
pub mod state;
pub mod time;
