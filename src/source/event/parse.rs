//! One line of JSON into a validated [`Event`], or a [`Reject`].

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;

use super::{
    account_key, canonical_account, parse_ip, AccountForm, AuthResult, Event, Kind, Protocol,
    Reject, RejectReason,
};
use crate::time::{parse_rfc3339, Millis, HOUR};

/// Limits applied while parsing, and how accounts are spelled.
#[derive(Debug, Clone)]
pub struct ParseLimits {
    /// Longest accepted line in bytes.
    pub max_bytes: usize,
    /// How far ahead of `now` a `ts` may be.
    pub max_future: Millis,
    /// The wall clock's "now" for the future check.
    pub now: Millis,
    /// The canonical form of accounts.
    pub form: AccountForm,
}

impl ParseLimits {
    pub fn new(max_bytes: usize, now: Millis) -> Self {
        ParseLimits {
            max_bytes,
            max_future: 24 * HOUR,
            now,
            form: AccountForm::default(),
        }
    }

    /// With the platform's account form (`[events]`).
    pub fn with_form(mut self, form: AccountForm) -> Self {
        self.form = form;
        self
    }
}

/// 2000-01-01T00:00:00Z: anything older is a broken clock or a unit mistake
/// (seconds where milliseconds belong).
const OLDEST_TS: Millis = 946_684_800_000;

mod scan;

/// A string that borrows from the input when it has no escapes.
#[derive(Debug, PartialEq)]
struct Str<'a>(Cow<'a, str>);

impl<'de: 'a, 'a> Deserialize<'de> for Str<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = Str<'a>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Str(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Str(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
                Ok(Str(Cow::Owned(v)))
            }
        }
        d.deserialize_str(V(std::marker::PhantomData))
    }
}

/// `ts` as it came: text or a number.
#[derive(Debug, PartialEq)]
enum RawTs<'a> {
    Text(Str<'a>),
    Millis(i64),
    Negative,
}

impl<'de: 'a, 'a> Deserialize<'de> for RawTs<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = RawTs<'a>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an RFC 3339 string or integer epoch milliseconds")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(RawTs::Text(Str(Cow::Borrowed(v))))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(RawTs::Text(Str(Cow::Owned(v.to_owned()))))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
                Ok(i64::try_from(v).map_or(RawTs::Negative, RawTs::Millis))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
                Ok(if v < 0 {
                    RawTs::Negative
                } else {
                    RawTs::Millis(v)
                })
            }
        }
        d.deserialize_any(V(std::marker::PhantomData))
    }
}

/// The event as written, before validation. Every field is optional here so
/// that a missing field is reported by name, by [`validate`].
#[derive(Deserialize, Default, Debug, PartialEq)]
struct RawEvent<'a> {
    #[serde(borrow, default)]
    ts: Option<RawTs<'a>>,
    #[serde(borrow, default)]
    kind: Option<Str<'a>>,
    #[serde(borrow, default)]
    account: Option<Str<'a>>,
    #[serde(borrow, default)]
    protocol: Option<Str<'a>>,
    #[serde(borrow, default)]
    src_ip: Option<Str<'a>>,
    #[serde(borrow, default)]
    result: Option<Str<'a>>,
    #[serde(borrow, default)]
    mechanism: Option<Str<'a>>,
    #[serde(borrow, default)]
    pwhash: Option<Str<'a>>,
    #[serde(borrow, default)]
    session: Option<Str<'a>>,
    #[serde(borrow, default)]
    client: Option<Str<'a>>,
    #[serde(borrow, default)]
    mail_from: Option<Str<'a>>,
    #[serde(borrow, default)]
    header_from: Option<Str<'a>>,
    #[serde(default)]
    rcpt_count: Option<u64>,
    #[serde(borrow, default)]
    queue_id: Option<Str<'a>>,
    #[serde(borrow, default)]
    reason: Option<Str<'a>>,
}

fn serde_reject(e: &serde_json::Error) -> Reject {
    use serde_json::error::Category;
    let at = format!("line {} column {}", e.line(), e.column());
    match e.classify() {
        Category::Syntax | Category::Eof | Category::Io => Reject::new(
            RejectReason::MalformedJson,
            format!("not a JSON object ({at})"),
        ),
        Category::Data => {
            // The message names the offending value; only its category is kept.
            let msg = e.to_string();
            let (reason, what) = if msg.starts_with("invalid type") {
                (RejectReason::BadType, "a field has the wrong JSON type")
            } else if msg.starts_with("duplicate field") {
                (RejectReason::DuplicateField, "a field appears twice")
            } else {
                (RejectReason::BadValue, "a field has a value out of range")
            };
            Reject::new(reason, format!("{what} ({at})"))
        }
    }
}

/// The one-word enum fields: compared exactly, as the contract spells them.
fn enum_field<T>(
    value: Option<Str<'_>>,
    field: &str,
    parse: impl Fn(&str) -> Option<T>,
) -> Result<Option<T>, Reject> {
    match value {
        None => Ok(None),
        Some(Str(s)) => parse(&s).map(Some).ok_or_else(|| {
            Reject::new(
                RejectReason::BadValue,
                format!("`{field}` is not one of the contract's values"),
            )
        }),
    }
}

fn mechanism(m: Cow<'_, str>) -> Cow<'static, str> {
    const KNOWN: &[&str] = &[
        "PLAIN",
        "LOGIN",
        "XOAUTH2",
        "OAUTHBEARER",
        "CRAM-MD5",
        "DIGEST-MD5",
        "SCRAM-SHA-1",
        "SCRAM-SHA-256",
        "EXTERNAL",
        "GSSAPI",
        "NTLM",
        "ANONYMOUS",
    ];
    match KNOWN.iter().find(|k| k.eq_ignore_ascii_case(&m)) {
        Some(k) => Cow::Borrowed(k),
        None => Cow::Owned(m.into_owned()),
    }
}

/// The longest text kept of a field that goes into state or evidence: a
/// hostile event must not make a megabyte action or hold a megabyte per
/// account. `client`, `queue_id` and the SASL mechanism are cut to this (at
/// a character boundary).
pub const MAX_FIELD_BYTES: usize = 256;
/// The longest sender field kept as it is (`mail_from`, `header_from`;
/// RFC 5322 allows 998 bytes a line). A longer one is replaced by its
/// addresses (at most [`MAX_MAILBOXES`]), so no address hides behind a long
/// display name and the evidence stays small.
pub const MAX_SENDER_BYTES: usize = 1024;

/// `s` cut to at most `max` bytes at a character boundary.
pub fn clip(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

fn bounded(s: Option<Str<'_>>, max: usize) -> Option<Box<str>> {
    s.map(|Str(c)| clip(&c, max).into())
}

fn sender(s: Option<Str<'_>>) -> Option<Box<str>> {
    s.map(|Str(c)| {
        if c.len() <= MAX_SENDER_BYTES {
            c.into_owned().into_boxed_str()
        } else {
            let list = super::mailboxes(&c)
                .into_iter()
                .map(|a| clip(&a, super::account::MAX_ACCOUNT_BYTES).to_string())
                .collect::<Vec<_>>()
                .join(", ");
            if list.is_empty() {
                "(a sender field with no address)".into()
            } else {
                list.into_boxed_str()
            }
        }
    })
}

/// Parses one line (without its newline) into an event.
pub fn parse_event(line: &[u8], limits: &ParseLimits) -> Result<Event, Reject> {
    parse(line, limits, true)
}

/// [`parse_event`] with serde_json only (no fast path): the reference the
/// fuzz target holds the fast path to.
pub fn parse_event_reference(line: &[u8], limits: &ParseLimits) -> Result<Event, Reject> {
    parse(line, limits, false)
}

fn parse(line: &[u8], limits: &ParseLimits, fast: bool) -> Result<Event, Reject> {
    if line.len() > limits.max_bytes {
        return Err(Reject::too_large(line.len(), limits.max_bytes));
    }
    let text = std::str::from_utf8(line).map_err(|e| {
        Reject::new(
            RejectReason::InvalidUtf8,
            format!("invalid UTF-8 at byte {}", e.valid_up_to()),
        )
    })?;
    // serde would accept a JSON array as a struct too: only objects are events.
    if text.trim_start().as_bytes().first() != Some(&b'{') {
        return Err(Reject::new(
            RejectReason::MalformedJson,
            "the event is not a JSON object",
        ));
    }
    // Filled in place and validated by reference: the raw event is some
    // 400 bytes, and moving it twice was a tenth of the parsing time.
    let mut raw = RawEvent::default();
    if !(fast && scan::scan(text, &mut raw)) {
        raw = serde_json::from_str(text).map_err(|e| serde_reject(&e))?;
    }
    validate(&mut raw, limits)
}

fn validate(raw: &mut RawEvent<'_>, limits: &ParseLimits) -> Result<Event, Reject> {
    let ts = match raw.ts.take().ok_or_else(|| Reject::missing("ts"))? {
        RawTs::Text(Str(s)) => parse_rfc3339(&s).ok_or_else(|| {
            Reject::new(
                RejectReason::BadTimestamp,
                "`ts` is not an RFC 3339 timestamp",
            )
        })?,
        RawTs::Millis(ms) => ms,
        RawTs::Negative => {
            return Err(Reject::new(
                RejectReason::BadTimestamp,
                "`ts` is a negative number",
            ))
        }
    };
    if ts < OLDEST_TS {
        return Err(Reject::new(
            RejectReason::BadTimestamp,
            "`ts` is before 2000-01-01 (seconds given where milliseconds belong?)",
        ));
    }
    if ts > limits.now.saturating_add(limits.max_future) {
        return Err(Reject::new(
            RejectReason::BadTimestamp,
            "`ts` is more than 24 h in the future",
        ));
    }
    let kind = enum_field(raw.kind.take(), "kind", |s| match s {
        "auth" => Some(Kind::Auth),
        "submission" => Some(Kind::Submission),
        "bounce" => Some(Kind::Bounce),
        "unlock" => Some(Kind::Unlock),
        _ => None,
    })?
    .unwrap_or(Kind::Auth);
    let account = canonical_account(
        &raw.account
            .take()
            .ok_or_else(|| Reject::missing("account"))?
            .0,
        &limits.form,
    )?;
    let protocol = enum_field(raw.protocol.take(), "protocol", |s| match s {
        "smtp" => Some(Protocol::Smtp),
        "imap" => Some(Protocol::Imap),
        "pop3" => Some(Protocol::Pop3),
        "webmail" => Some(Protocol::Webmail),
        "other" => Some(Protocol::Other),
        _ => None,
    })?;
    let result = enum_field(raw.result.take(), "result", |s| match s {
        "success" => Some(AuthResult::Success),
        "failure" => Some(AuthResult::Failure),
        _ => None,
    })?;
    let src_ip = match raw.src_ip.take() {
        None => None,
        Some(Str(s)) => Some(parse_ip(&s).ok_or_else(|| {
            Reject::new(
                RejectReason::BadIp,
                "`src_ip` is not an IPv4 or IPv6 address",
            )
        })?),
    };
    let pwhash = match raw.pwhash.take() {
        None => None,
        Some(Str(s)) if !s.is_empty() && s.len() <= 16 => Some(
            u64::from_str_radix(&s, 16)
                .map_err(|_| Reject::new(RejectReason::BadValue, "`pwhash` is not hexadecimal"))?,
        ),
        Some(_) => {
            return Err(Reject::new(
                RejectReason::BadValue,
                "`pwhash` must be 1 to 16 hex digits",
            ))
        }
    };
    let rcpt_count = match raw.rcpt_count.take() {
        None => None,
        Some(n) => Some(u32::try_from(n).map_err(|_| {
            Reject::new(RejectReason::BadValue, "`rcpt_count` is implausibly large")
        })?),
    };
    match kind {
        Kind::Auth => {
            if protocol.is_none() {
                return Err(Reject::missing("protocol"));
            }
            if src_ip.is_none() {
                return Err(Reject::missing("src_ip"));
            }
            if result.is_none() {
                return Err(Reject::missing("result"));
            }
        }
        Kind::Submission => {
            if src_ip.is_none() {
                return Err(Reject::missing("src_ip"));
            }
            if raw.mail_from.is_none() {
                return Err(Reject::missing("mail_from"));
            }
            if rcpt_count.is_none() {
                return Err(Reject::missing("rcpt_count"));
            }
        }
        Kind::Bounce | Kind::Unlock => {}
    }
    let _ = raw.session;
    let key = account_key(&account);
    Ok(Event {
        ts,
        kind,
        account,
        key,
        protocol,
        src_ip,
        result,
        pwhash,
        mechanism: raw.mechanism.take().map(|Str(m)| match mechanism(m) {
            Cow::Owned(s) if s.len() > MAX_FIELD_BYTES => {
                Cow::Owned(clip(&s, MAX_FIELD_BYTES).to_string())
            }
            m => m,
        }),
        client: bounded(raw.client.take(), MAX_FIELD_BYTES),
        mail_from: sender(raw.mail_from.take()),
        header_from: sender(raw.header_from.take()),
        rcpt_count,
        queue_id: bounded(raw.queue_id.take(), MAX_FIELD_BYTES),
        reason: match kind {
            Kind::Unlock => bounded(raw.reason.take(), MAX_FIELD_BYTES),
            _ => None,
        },
        hint: None,
    })
}

/// An event's fields as text, built by another reader than JSON (the
/// mail-server log reader, [`crate::source::maillog`]): validated by the
/// very checks a JSON event passes, so it becomes exactly the event the
/// same JSON would.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Fields {
    /// Epoch milliseconds (written as RFC 3339 by [`Fields::to_json`]).
    #[serde(skip)]
    pub ts: Millis,
    pub kind: &'static str,
    pub account: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub protocol: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub src_ip: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub result: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mechanism: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pwhash: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mail_from: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub header_from: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rcpt_count: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub queue_id: Option<String>,
}

impl Fields {
    /// The event these fields make, or why they make none.
    pub fn to_event(&self, limits: &ParseLimits) -> Result<Event, Reject> {
        fn s(v: &Option<String>) -> Option<Str<'_>> {
            v.as_deref().map(|x| Str(Cow::Borrowed(x)))
        }
        let e = |v: Option<&'static str>| v.map(|x| Str(Cow::Borrowed(x)));
        let mut raw = RawEvent {
            ts: Some(if self.ts < 0 {
                RawTs::Negative
            } else {
                RawTs::Millis(self.ts)
            }),
            kind: Some(Str(Cow::Borrowed(self.kind))),
            account: Some(Str(Cow::Borrowed(&self.account))),
            protocol: e(self.protocol),
            src_ip: s(&self.src_ip),
            result: e(self.result),
            mechanism: s(&self.mechanism),
            pwhash: s(&self.pwhash),
            session: s(&self.session),
            client: s(&self.client),
            mail_from: s(&self.mail_from),
            header_from: s(&self.header_from),
            rcpt_count: self.rcpt_count,
            queue_id: s(&self.queue_id),
            reason: None,
        };
        validate(&mut raw, limits)
    }

    /// The contract's JSON event (`ts` as RFC 3339).
    pub fn to_json(&self) -> Vec<u8> {
        #[derive(serde::Serialize)]
        struct Out<'a> {
            ts: String,
            #[serde(flatten)]
            f: &'a Fields,
        }
        serde_json::to_vec(&Out {
            ts: crate::time::format_rfc3339(self.ts),
            f: self,
        })
        .unwrap_or_default()
    }
}

/// Parses a line with serde_json into the raw event only, without
/// validation: the ceiling the benchmark compares a replay against (the
/// replay's own parser takes a faster path for simple lines, see `scan`).
pub fn parse_only(line: &[u8]) -> bool {
    std::str::from_utf8(line)
        .ok()
        .and_then(|t| serde_json::from_str::<RawEvent>(t).ok())
        .is_some()
}

#[cfg(test)]
mod tests;
