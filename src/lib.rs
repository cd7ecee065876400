//! credwatch finds stolen mail passwords while they are being used.
//!
//! The flow, as the modules are laid out: events come in ([`source`]),
//! detectors keep bounded state ([`state`]) and judge ([`detect`]), the
//! [`policy`] turns findings into [`action`]s, and [`sink`]s send them on.
//! [`engine`] ties these together for every command.

pub mod action;
pub mod cli;
pub mod config;
pub mod detect;
pub mod engine;
pub mod geo;
pub mod http;
pub mod metrics;
pub mod policy;
pub mod sample;
pub mod service;
pub mod sink;
pub mod source;
pub mod state;
pub mod time;
pub mod webhook;
