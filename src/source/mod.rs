//! Where events come from: the event format ([`event`]), line-oriented
//! files and standard input ([`lines`]), Dovecot's and Postfix's log
//! lines ([`maillog`]), and the Kafka input topics
//! ([`kafka`]).

pub mod event;
pub mod kafka;
pub mod lines;
pub mod maillog;
