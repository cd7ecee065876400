//! Where events come from: the event format, and line-oriented readers.

pub mod event;
pub mod lines;
