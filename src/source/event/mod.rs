//! Input events (contract §1): the event and its parts ([`Event`]), how a
//! line becomes one or a [`Reject`] with a reason from the closed set
//! [`RejectReason`] ([`parse`]), and how accounts and addresses are
//! normalised and keyed ([`account`]). A reject never carries the raw
//! payload, only where and what was wrong, so it is safe to log.

mod account;
mod mailbox;
mod parse;
mod reject;

use std::borrow::Cow;
use std::net::IpAddr;

pub use account::{
    account_key, address_key, canonical_account, network_key, normalise_account, parse_ip,
    set_state_key, truncate, AccountForm, AccountName,
};
pub use mailbox::{mailboxes, MAX_MAILBOXES};
pub use parse::{
    clip, parse_event, parse_event_reference, parse_only, Fields, ParseLimits, MAX_FIELD_BYTES,
    MAX_SENDER_BYTES,
};
pub use reject::{Reject, RejectReason};

use crate::time::Millis;

crate::section! {
    /// `[events]`: input limits.
    pub struct EventsConfig {
        /// Longest accepted event in bytes (at least 256).
        pub max_bytes: usize = 65_536,
        /// Characters that begin a sub-address in a login's local part
        /// (`frank+x@example.jp` is `frank@example.jp`); empty: logins have
        /// no sub-addresses. Set it as the mail server's
        /// `recipient_delimiter`: an attacker must not become a new account
        /// by adding `+x`.
        pub subaddress_separators: String = "+".into(),
        /// Where logins are addresses, the domain of a bare login (`frank`
        /// is `frank@<default_domain>`); empty: bare logins stay as they are.
        pub default_domain: String = String::new(),
    }
}

impl EventsConfig {
    pub fn check(&self, c: &mut crate::section::Checks) {
        if self.max_bytes < 256 {
            c.fail("max_bytes", "must be at least 256");
        }
        if self
            .subaddress_separators
            .chars()
            .any(|ch| ch == '@' || ch.is_alphanumeric() || ch.is_whitespace())
        {
            c.fail(
                "subaddress_separators",
                "must be punctuation such as \"+\" or \"+-\" (not letters, digits, spaces or @)",
            );
        }
        let d = self.default_domain.trim();
        if !d.is_empty() && (d.contains('@') || d.contains(char::is_whitespace) || !d.contains('.'))
        {
            c.fail(
                "default_domain",
                "must be a domain such as example.net, or empty",
            );
        }
    }

    /// How logins are spelled ([`canonical_account`]).
    pub fn form(&self) -> AccountForm {
        let d = self
            .default_domain
            .trim()
            .trim_end_matches('.')
            .to_lowercase();
        AccountForm {
            subaddress: self.subaddress_separators.as_str().into(),
            default_domain: (!d.is_empty()).then(|| d.into_boxed_str()),
        }
    }
}

/// What kind of thing happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    Auth,
    Submission,
    Bounce,
    /// The provider's account system lifted a lock (contract §7): the
    /// account's incident ends and it starts afresh.
    Unlock,
}

impl Kind {
    pub const ALL: [Kind; 4] = [Kind::Auth, Kind::Submission, Kind::Bounce, Kind::Unlock];
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Auth => "auth",
            Kind::Submission => "submission",
            Kind::Bounce => "bounce",
            Kind::Unlock => "unlock",
        }
    }
}

/// Where a login happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Protocol {
    Smtp,
    Imap,
    Pop3,
    Webmail,
    Other,
}

impl Protocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Smtp => "smtp",
            Protocol::Imap => "imap",
            Protocol::Pop3 => "pop3",
            Protocol::Webmail => "webmail",
            Protocol::Other => "other",
        }
    }
}

/// Outcome of a login attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AuthResult {
    Success,
    Failure,
}

impl AuthResult {
    pub fn as_str(self) -> &'static str {
        match self {
            AuthResult::Success => "success",
            AuthResult::Failure => "failure",
        }
    }
}

/// What the account stage of a split pipeline knows of a login's account
/// from its profile, forwarded with the login to the source stage (a Kafka
/// header on the sources topic, never read from the input): since when
/// the account had used the login's network, and since when it is known.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProfileHint {
    pub network_since: Option<Millis>,
    pub account_since: Option<Millis>,
}

impl ProfileHint {
    /// The header that carries it.
    pub const HEADER: &'static str = "credwatch-profile";

    /// `<network_since>,<account_since>` in epoch milliseconds, empty for none.
    pub fn to_header(self) -> String {
        let t = |x: Option<Millis>| x.map(|v| v.to_string()).unwrap_or_default();
        format!("{},{}", t(self.network_since), t(self.account_since))
    }

    pub fn from_header(v: &[u8]) -> Option<ProfileHint> {
        let s = std::str::from_utf8(v).ok()?;
        let (n, a) = s.split_once(',')?;
        let t = |x: &str| -> Option<Option<Millis>> {
            if x.is_empty() {
                Some(None)
            } else {
                x.parse().ok().map(Some)
            }
        };
        Some(ProfileHint {
            network_since: t(n)?,
            account_since: t(a)?,
        })
    }
}

/// A validated event. Strings are normalised: `account` is trimmed and
/// lower-cased, and `key` is its hash, used as the key of every state map.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub ts: Millis,
    pub kind: Kind,
    pub account: AccountName,
    pub key: u64,
    pub protocol: Option<Protocol>,
    pub src_ip: Option<IpAddr>,
    pub result: Option<AuthResult>,
    /// The short password hash, as a number (at most 16 hex digits).
    pub pwhash: Option<u64>,
    /// SASL mechanism; the common ones are not allocated.
    pub mechanism: Option<Cow<'static, str>>,
    pub client: Option<Box<str>>,
    pub mail_from: Option<Box<str>>,
    pub header_from: Option<Box<str>>,
    pub rcpt_count: Option<u32>,
    pub queue_id: Option<Box<str>>,
    /// Why an account was unlocked (`unlock` events only).
    pub reason: Option<Box<str>>,
    /// Only in the source stage of a split pipeline: see [`ProfileHint`].
    pub hint: Option<ProfileHint>,
}

impl Event {
    pub fn is_auth(&self, result: AuthResult) -> bool {
        self.kind == Kind::Auth && self.result == Some(result)
    }
}
