//! Events written as the log lines Dovecot 2.3 and Postfix 3.7 write for
//! them (rsyslog's RFC 3339 stamps, host `mail`): the demo's
//! `--format maillog`, and the comparison benchmark's input. Read back by
//! [`super::Joiner`], they give the same events, except that a submission
//! is also a successful SMTP login (Postfix's `client=` line is both).

use std::fmt::Write;

use crate::source::event::{AuthResult, Event, Kind, Protocol};
use crate::time::format_rfc3339;

/// How the lines are stamped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stamp {
    /// `2026-11-05T09:11:02.000+00:00 mail …` (rsyslog's RFC 3339 format).
    Rfc3339,
    /// `Nov  5 09:11:02 mail …` (classic syslog: no year, UTC).
    Syslog,
}

const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

fn stamp(ts: crate::time::Millis, how: Stamp) -> String {
    let t = format_rfc3339(ts);
    match how {
        // "2026-11-05T09:11:02.000Z" as rsyslog writes it.
        Stamp::Rfc3339 => format!("{}+00:00", t.trim_end_matches('Z')),
        Stamp::Syslog => {
            let month: usize = t[5..7].parse().unwrap_or(1);
            let day: u32 = t[8..10].parse().unwrap_or(1);
            format!("{} {day:>2} {}", MONTHS[month - 1], &t[11..19])
        }
    }
}

/// Appends the lines of `e` to `out`, stamped RFC 3339; `seq` makes its
/// session and queue ids unique.
pub fn lines(e: &Event, seq: u64, out: &mut String) {
    lines_stamped(e, seq, Stamp::Rfc3339, out)
}

/// [`lines`] with the stamp chosen.
pub fn lines_stamped(e: &Event, seq: u64, how: Stamp, out: &mut String) {
    let stamp = stamp(e.ts, how);
    let ip = e.src_ip.map(|i| i.to_string()).unwrap_or_default();
    let mech = e.mechanism.as_deref().unwrap_or("PLAIN");
    let session = session_id(seq);
    let qid = format!("{:011X}", seq & 0xFFF_FFFF_FFFF);
    let pid = 1000 + seq % 30_000;
    let acct = &e.account;
    match (e.kind, e.protocol, e.result) {
        (Kind::Auth, Some(Protocol::Smtp), Some(AuthResult::Failure)) => {
            if let Some(h) = e.pwhash {
                let _ = writeln!(out, "{stamp} mail dovecot: auth: passwd-file({acct},{ip}): Password mismatch (SHA1 of given password: {h:06x})");
            }
            let _ = writeln!(out, "{stamp} mail postfix/submission/smtpd[{pid}]: warning: unknown[{ip}]: SASL {mech} authentication failed: (reason unavailable), sasl_username={acct}");
        }
        (Kind::Auth, Some(p), Some(AuthResult::Failure)) => {
            let svc = service(p);
            if let Some(h) = e.pwhash {
                let _ = writeln!(out, "{stamp} mail dovecot: auth: passwd-file({acct},{ip},<{session}>): Password mismatch (SHA1 of given password: {h:06x})");
            }
            let _ = writeln!(out, "{stamp} mail dovecot: {svc}-login: Disconnected: Aborted login by logging out (auth failed, 1 attempts in 2 secs): user=<{acct}>, method={mech}, rip={ip}, lip=10.0.0.1, TLS, session=<{session}>");
        }
        (Kind::Auth, Some(p), Some(AuthResult::Success)) => {
            let svc = service(p);
            let _ = writeln!(out, "{stamp} mail dovecot: {svc}-login: Login: user=<{acct}>, method={mech}, rip={ip}, lip=10.0.0.1, mpid={pid}, TLS, session=<{session}>");
        }
        (Kind::Submission, _, _) => {
            let from = e.mail_from.as_deref().unwrap_or("");
            let n = e.rcpt_count.unwrap_or(1);
            let _ = writeln!(out, "{stamp} mail postfix/submission/smtpd[{pid}]: {qid}: client=unknown[{ip}], sasl_method={mech}, sasl_username={acct}");
            if let Some(h) = &e.header_from {
                let _ = writeln!(out, "{stamp} mail postfix/cleanup[{pid}]: {qid}: info: header From: {h} from unknown[{ip}]; from=<{from}> to=<r@remote.example> proto=ESMTP helo=<client>");
            }
            let _ = writeln!(out, "{stamp} mail postfix/qmgr[99]: {qid}: from=<{from}>, size=2048, nrcpt={n} (queue active)");
            let _ = writeln!(out, "{stamp} mail postfix/qmgr[99]: {qid}: removed");
        }
        (Kind::Bounce, _, _) => {
            let _ = writeln!(
                out,
                "{stamp} mail postfix/smtpd[{pid}]: {qid}: client=mx.remote.example[198.51.100.25]"
            );
            let _ = writeln!(
                out,
                "{stamp} mail postfix/qmgr[99]: {qid}: from=<>, size=4096, nrcpt=1 (queue active)"
            );
            let _ = writeln!(out, "{stamp} mail postfix/virtual[{pid}]: {qid}: to=<{acct}>, relay=virtual, delay=0.1, delays=0.05/0/0/0.05, dsn=2.0.0, status=sent (delivered to maildir)");
            let _ = writeln!(out, "{stamp} mail postfix/qmgr[99]: {qid}: removed");
        }
        _ => {}
    }
}

fn service(p: Protocol) -> &'static str {
    match p {
        Protocol::Pop3 => "pop3",
        Protocol::Smtp => "submission",
        _ => "imap",
    }
}

/// A Dovecot-like session id (base64 of 12 bytes).
fn session_id(seq: u64) -> String {
    use base64::Engine as _;
    let mut b = [0u8; 12];
    b[..8].copy_from_slice(&seq.to_le_bytes());
    b[8..].copy_from_slice(&[0x7f, 0, 0, 1]);
    base64::engine::general_purpose::STANDARD.encode(b)
}
