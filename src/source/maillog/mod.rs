//! Dovecot's and Postfix's own log lines as events (contract §7, "Log
//! lines"): `replay --format maillog` and `kafka.log_topics`.
//!
//! A line is taken apart ([`prefix`]), read for what it says ([`dovecot`],
//! [`postfix`]), and joined with the lines it belongs with ([`Joiner`]):
//! the lines of one message by (host, queue id), the auth process's
//! per-attempt failures with their login process's disconnect (by
//! session) or with Postfix's SASL line (by address), within bounded time
//! and memory. Each finished event is [`Fields`], which become exactly the
//! contract's event through the JSON path's own checks. Every line that
//! gives nothing is counted by a [`Skip`] reason. The formats, with their
//! sources, are in `docs/maillog.md`.

pub mod dovecot;
mod files;
mod join;
pub mod postfix;
pub mod prefix;
pub mod render;

use std::collections::BTreeMap;

pub use files::{open_inputs, Inputs, MergedLine};
pub use join::Joiner;
pub use prefix::Clock;

use crate::section::Checks;
use crate::source::event::{Fields, RejectReason};
use crate::time::Millis;

crate::section! {
    /// `[maillog]`: reading Dovecot's and Postfix's log lines
    /// (`replay --format maillog`, and `kafka.log_topics` in `run`).
    pub struct MaillogConfig {
        /// The year of classic syslog stamps (`Mar  5 12:00:01`, which
        /// have none). 0: the latest year that puts no line more than a
        /// day after the file's modification time (for a Kafka message,
        /// its timestamp; for standard input, now).
        pub year: i32 = 0,
        /// The time zone of stamps that have none (classic syslog, Dovecot's
        /// own file): `UTC` or a fixed offset such as `+09:00`. A zone with
        /// summer time needs RFC 3339 stamps (rsyslog's
        /// `RSYSLOG_FileFormat`), which carry their offset.
        pub timezone: String = "UTC".into(),
        /// Domains whose mailboxes are hosted here: a bounce (a message
        /// from `<>`) delivered to one of them is a bounce event for that
        /// account. Empty: a bounce counts when a local transport (local,
        /// virtual, lmtp, pipe) delivered it, or when it is Postfix's own
        /// notification for a message an authenticated session sent.
        pub hosted_domains: Vec<String> = Vec::new(),
        /// How long the lines of one message or session wait for the rest,
        /// in seconds of log time; a queue id whose lines never complete is
        /// dropped then and counted as incomplete.
        pub join_secs: u64 = 3600,
        /// How long an auth-process failure waits for the line that says
        /// which service it was (the login process's disconnect, or
        /// Postfix's SASL warning), in seconds of log time; then it is a
        /// failure on its own.
        pub pair_secs: u64 = 60,
        /// Most messages, sessions and waiting failures held at once; the
        /// oldest beyond it are dropped and counted.
        pub max_joins: usize = 100_000,
    }
}

impl MaillogConfig {
    pub fn check(&self, c: &mut Checks) {
        if parse_offset(&self.timezone).is_none() {
            c.fail(
                "timezone",
                "must be UTC or a fixed offset such as +09:00 or -05:00",
            );
        }
        if self.year != 0 && !(2000..=2100).contains(&self.year) {
            c.fail("year", "must be 0 (inferred) or a year from 2000 to 2100");
        }
        c.positive("join_secs", self.join_secs);
        c.positive("pair_secs", self.pair_secs);
        c.positive("max_joins", self.max_joins as u64);
        for d in &self.hosted_domains {
            if d.trim().is_empty() || d.contains('@') || d.contains(char::is_whitespace) {
                c.fail(
                    "hosted_domains",
                    format!("{d:?} is not a domain (write example.jp, without @)"),
                );
            }
        }
    }

    /// The clock for lines whose latest possible time is `reference`.
    pub fn clock(&self, reference: Millis) -> Clock {
        Clock {
            year: (self.year != 0).then_some(self.year),
            offset_min: parse_offset(&self.timezone).unwrap_or(0),
            reference,
        }
    }
}

/// `UTC`, `Z`, `+09:00`, `-0500`, `+9` into minutes east of UTC.
pub fn parse_offset(s: &str) -> Option<i32> {
    let s = s.trim();
    if s.eq_ignore_ascii_case("utc") || s.eq_ignore_ascii_case("z") || s == "+00:00" {
        return Some(0);
    }
    let (sign, rest) = match s.as_bytes().first()? {
        b'+' => (1, &s[1..]),
        b'-' => (-1, &s[1..]),
        _ => return None,
    };
    let (h, m) = match rest.split_once(':') {
        Some((h, m)) => (h, m),
        None if rest.len() == 4 => rest.split_at(2),
        None => (rest, "0"),
    };
    let (h, m): (i32, i32) = (h.parse().ok()?, m.parse().ok()?);
    (h <= 14 && m < 60 && !rest.is_empty()).then_some(sign * (h * 60 + m))
}

/// Why a log line gave no event: a closed set, counted in the summary
/// and in `credwatch_log_lines_total{outcome}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Skip {
    /// No time stamp credwatch knows (see `docs/maillog.md`).
    NoTimestamp,
    /// Longer than `events.max_bytes`.
    TooLong,
    /// A program other than Dovecot or Postfix.
    OtherProgram,
    /// Dovecot's or Postfix's, but nothing credwatch judges (start-up,
    /// TLS, rejects of unauthenticated clients, message ids, ...).
    NotUsed,
    /// A disconnect with no login attempt.
    NoAuthAttempt,
    /// A refusal where no password was checked (plaintext disallowed,
    /// the auth server unreachable, an unknown mechanism).
    NotCredential,
    /// A login refused by an auth policy server (credwatch itself, or
    /// another): not a wrong password.
    PolicyRefusal,
    /// A login with no user name on the line: a failure (Postfix before
    /// 3.6.12 / 3.7.8 without Dovecot's auth line to pair it with), or
    /// Postfix's `disconnect … auth=1` of a login that queued nothing.
    NoUser,
    /// A login with no client address (a UNIX socket, a proxy without
    /// the PROXY protocol).
    NoAddress,
    /// A message from a client that did not log in (inbound mail, a
    /// content filter's re-injection).
    Unauthenticated,
    /// A bounce delivered to a mailbox not hosted here.
    NotHosted,
    /// Lines of a message or session whose rest never came within
    /// `maillog.join_secs` (counted once per message).
    Incomplete,
    /// Dropped because `maillog.max_joins` were held.
    TooManyJoins,
    /// The event the line made fails the contract's checks (an account
    /// too long, say): the reason is counted beside it.
    Invalid,
}

impl Skip {
    pub const ALL: [Skip; 14] = [
        Skip::NoTimestamp,
        Skip::TooLong,
        Skip::OtherProgram,
        Skip::NotUsed,
        Skip::NoAuthAttempt,
        Skip::NotCredential,
        Skip::PolicyRefusal,
        Skip::NoUser,
        Skip::NoAddress,
        Skip::Unauthenticated,
        Skip::NotHosted,
        Skip::Incomplete,
        Skip::TooManyJoins,
        Skip::Invalid,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Skip::NoTimestamp => "no_timestamp",
            Skip::TooLong => "too_long",
            Skip::OtherProgram => "other_program",
            Skip::NotUsed => "not_used",
            Skip::NoAuthAttempt => "no_auth_attempt",
            Skip::NotCredential => "not_credential",
            Skip::PolicyRefusal => "policy_refusal",
            Skip::NoUser => "no_user",
            Skip::NoAddress => "no_address",
            Skip::Unauthenticated => "unauthenticated",
            Skip::NotHosted => "not_hosted",
            Skip::Incomplete => "incomplete",
            Skip::TooManyJoins => "too_many_joins",
            Skip::Invalid => "invalid_event",
        }
    }
}

/// The most failures one disconnect line stands for.
pub const MAX_ATTEMPTS_PER_LINE: u32 = 100;

/// A finished event and the lines it was made of (the references the
/// caller gave them: line numbers, Kafka offsets).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogEvent {
    pub fields: Fields,
    pub lines: Vec<u64>,
}

/// What the joiner counted.
#[derive(Debug, Clone, Default)]
pub struct LogCounts {
    /// Lines read.
    pub lines: u64,
    /// Lines that went into an event or are held for one.
    pub used: u64,
    /// Lines (and dropped joins) by why they gave nothing.
    pub skipped: BTreeMap<Skip, u64>,
    /// Events that failed the contract's checks, by reason.
    pub invalid: BTreeMap<RejectReason, u64>,
}

impl LogCounts {
    pub fn skip(&mut self, s: Skip) {
        *self.skipped.entry(s).or_default() += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_parse() {
        assert_eq!(parse_offset("UTC"), Some(0));
        assert_eq!(parse_offset("+09:00"), Some(540));
        assert_eq!(parse_offset("-0530"), Some(-330));
        assert_eq!(parse_offset("Europe/Berlin"), None);
        assert_eq!(parse_offset("+25:00"), None);
    }
}
