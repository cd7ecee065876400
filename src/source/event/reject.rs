//! Why a line was rejected.

use std::fmt;

/// Why a line was rejected: a closed set, used as a metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RejectReason {
    /// Not JSON, truncated, not an object, nested too deep.
    MalformedJson,
    /// The bytes are not UTF-8.
    InvalidUtf8,
    /// Longer than `events.max_bytes`.
    TooLarge,
    /// A required field is absent or null.
    MissingField,
    /// A field has the wrong JSON type (a number where a string belongs).
    BadType,
    /// A field has the right type but a value outside its set (`kind: "x"`, negative count).
    BadValue,
    /// The same field twice in one object.
    DuplicateField,
    /// `account` empty after trimming, longer than 320 bytes, or with control characters.
    BadAccount,
    /// `src_ip` is not an IPv4 or IPv6 address.
    BadIp,
    /// `ts` is not RFC 3339 or epoch milliseconds, before 2000, or too far in the future.
    BadTimestamp,
}

impl RejectReason {
    pub const ALL: [RejectReason; 10] = [
        RejectReason::MalformedJson,
        RejectReason::InvalidUtf8,
        RejectReason::TooLarge,
        RejectReason::MissingField,
        RejectReason::BadType,
        RejectReason::BadValue,
        RejectReason::DuplicateField,
        RejectReason::BadAccount,
        RejectReason::BadIp,
        RejectReason::BadTimestamp,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RejectReason::MalformedJson => "malformed_json",
            RejectReason::InvalidUtf8 => "invalid_utf8",
            RejectReason::TooLarge => "too_large",
            RejectReason::MissingField => "missing_field",
            RejectReason::BadType => "bad_type",
            RejectReason::BadValue => "bad_value",
            RejectReason::DuplicateField => "duplicate_field",
            RejectReason::BadAccount => "bad_account",
            RejectReason::BadIp => "bad_ip",
            RejectReason::BadTimestamp => "bad_timestamp",
        }
    }
}

impl fmt::Display for RejectReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A rejected line: the reason and a short description that never contains
/// the payload itself.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}: {detail}")]
pub struct Reject {
    pub reason: RejectReason,
    pub detail: String,
}

impl Reject {
    pub(super) fn new(reason: RejectReason, detail: impl Into<String>) -> Self {
        Reject {
            reason,
            detail: detail.into(),
        }
    }
    /// A line of `len` bytes over the `max_bytes` limit (whether it was read
    /// whole or skipped unread by the line reader).
    pub fn too_large(len: usize, max_bytes: usize) -> Self {
        Reject::new(
            RejectReason::TooLarge,
            format!("{len} bytes, at most {max_bytes} allowed (events.max_bytes)"),
        )
    }

    /// A Kafka message without a value (a tombstone).
    pub fn empty() -> Self {
        Reject::new(
            RejectReason::MalformedJson,
            "the message has no value (expected one JSON object)",
        )
    }

    pub(super) fn missing(field: &str) -> Self {
        Reject::new(
            RejectReason::MissingField,
            format!("required field `{field}` is missing or null"),
        )
    }
}
