//! What the parsers promise on any input, checked by the fuzz targets
//! (fuzz/fuzz_targets/*.rs include this file) and by
//! tests/fuzz_regressions.rs on the seeds and on every input a fuzzer once
//! crashed on. Each check panics with what was broken.

use credwatch::config::Config;
use credwatch::source::event::{
    canonical_account, mailboxes, parse_event, parse_event_reference, AccountForm, ParseLimits,
    RejectReason, MAX_FIELD_BYTES, MAX_MAILBOXES, MAX_SENDER_BYTES,
};

/// The most a sender field may hold once parsed: as it came when short,
/// else its addresses.
const SENDER_MAX: usize = if MAX_SENDER_BYTES > MAX_MAILBOXES * 322 {
    MAX_SENDER_BYTES
} else {
    MAX_MAILBOXES * 322
};

/// The canonical account form and the From: address parser never panic on
/// any text; the canonical form is idempotent and holds no format or
/// control characters; the parser gives at most `MAX_MAILBOXES` addresses,
/// each with an `@`.
pub fn check_account(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let form = AccountForm {
        subaddress: "+-".into(),
        default_domain: Some("example.net".into()),
    };
    for f in [AccountForm::default(), form] {
        if let Ok(c) = canonical_account(text, &f) {
            assert!(
                !c.is_empty() && c.len() <= 320,
                "canonical of {} bytes",
                c.len()
            );
            assert!(!c.chars().any(char::is_control), "a control character kept");
            assert!(
                !c.chars().any(|ch| matches!(ch, '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2060}'..='\u{2064}' | '\u{feff}')),
                "a format character kept: {c:?}"
            );
            assert_eq!(
                canonical_account(&c, &f).as_deref(),
                Ok(&*c),
                "not idempotent: {text:?} -> {c:?}"
            );
        }
    }
    let found = mailboxes(text);
    assert!(found.len() <= MAX_MAILBOXES, "{} addresses", found.len());
    for a in &found {
        assert!(a.contains('@'), "an address without @: {a:?}");
    }
}

/// 2026-11-28T00:00:00Z: a fixed "now", so a crash reproduces.
pub const NOW: i64 = 1_795_737_600_000;

/// The event parser never panics; what it accepts keeps the contract's
/// promises, and what it rejects has a closed reason and a short one-line
/// detail (it goes into logs and headers); the fast path for simple lines
/// gives exactly the event or reject serde_json gives.
pub fn check_event(data: &[u8]) {
    let limits = ParseLimits::new(65_536, NOW);
    let parsed = parse_event(data, &limits);
    // The fast path for simple lines gives exactly what serde_json gives.
    assert_eq!(
        parsed,
        parse_event_reference(data, &limits),
        "the fast path and serde_json disagree"
    );
    match parsed {
        Ok(ev) => {
            let account = &*ev.account;
            assert!(!account.is_empty(), "accepted an empty account");
            assert!(
                account.len() <= 320,
                "accepted an account of {} bytes",
                account.len()
            );
            assert!(
                !account.chars().any(char::is_control),
                "accepted control characters in an account"
            );
            assert_eq!(account, account.trim(), "the account is not trimmed");
            assert_eq!(
                canonical_account(account, &AccountForm::default()).as_deref(),
                Ok(account),
                "the account is not in its canonical form"
            );
            for (name, v, max) in [
                ("client", &ev.client, MAX_FIELD_BYTES),
                ("queue_id", &ev.queue_id, MAX_FIELD_BYTES),
                ("mail_from", &ev.mail_from, SENDER_MAX),
                ("header_from", &ev.header_from, SENDER_MAX),
            ] {
                if let Some(v) = v {
                    assert!(v.len() <= max, "{name} of {} bytes kept", v.len());
                }
            }
            assert!(ev.ts >= 946_684_800_000, "accepted a time before 2000");
            assert!(
                ev.ts <= NOW + limits.max_future,
                "accepted a time too far ahead"
            );
            if let Some(ip) = ev.src_ip {
                assert_eq!(ip, ip.to_canonical(), "a mapped address was not unmapped");
            }
        }
        Err(r) => {
            assert!(RejectReason::ALL.contains(&r.reason));
            assert!(r.detail.len() < 200, "long detail: {}", r.detail);
            assert!(!r.detail.contains('\n'), "multi-line detail: {}", r.detail);
        }
    }
}

/// The config parser never panics, and an accepted config prints without
/// its webhook secret.
pub fn check_config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match Config::from_toml_with_env(text, "fuzz.toml", &[]) {
        Ok(settings) => {
            let printed = settings.config.to_redacted_toml();
            let secret = settings.config.webhook.secret.trim();
            if secret.len() >= 12 {
                assert!(!printed.contains(secret), "the secret is printed");
            }
        }
        Err(e) => assert!(!e.to_string().is_empty(), "an error without a message"),
    }
}

/// The log-line reader on arbitrary bytes (each `\n` ends a line): it
/// never panics; it holds at most `max_joins` messages and sessions; every
/// line is counted, as used or by why it gave nothing; every event it makes
/// either passes the contract's checks or is refused by them with a reason
/// (never a panic); and once the input ends, no line is held.
pub fn check_maillog(data: &[u8]) {
    use credwatch::source::maillog::{Joiner, MaillogConfig};
    let cfg = MaillogConfig {
        max_joins: 8,
        ..MaillogConfig::default()
    };
    let clock = cfg.clock(NOW);
    let mut j = Joiner::new(&cfg);
    let mut out = Vec::new();
    let limits = ParseLimits::new(65_536, NOW);
    let text = String::from_utf8_lossy(data);
    let mut n = 0u64;
    let mut answered = 0u64;
    for line in text.split('\n') {
        n += 1;
        // Used (None) or skipped with a reason: every line gets an answer.
        let _ = j.feed(line, n, &clock, &mut out);
        answered += 1;
        assert!(
            j.holding() <= 8 + 1,
            "holds {} joins with max_joins 8",
            j.holding()
        );
    }
    j.finish(&mut out);
    assert_eq!(j.counts.lines, n, "a line was not counted");
    assert_eq!(answered, n);
    assert!(j.counts.used <= n, "more lines used than read");
    assert_eq!(j.oldest_held(), None, "a line is still held after the end");
    for e in &out {
        let _ = e.fields.to_event(&limits);
        assert!(!e.lines.is_empty(), "an event made of no line");
    }
}
