//! Where events come from: the event format ([`event`]), line-oriented
//! files and standard input ([`lines`]), and the Kafka input topics
//! ([`kafka`]).

pub mod event;
pub mod kafka;
pub mod lines;
