//! The part of a log line before the daemon's message: when, which host,
//! which program. Every shape the corpora hold (see `docs/maillog.md`):
//!
//! - classic syslog, `Mar  5 12:00:01 host program[pid]: message` (no year,
//!   no zone; the day space- or zero-padded, as Postfix's `maillog_file`
//!   writes it);
//! - RFC 3339, `2023-03-14T00:31:06.621091+01:00 host program[pid]: …`
//!   (rsyslog's precise format, `journalctl -o short-iso`);
//! - Dovecot's own `log_path` file, `Jan 29 09:33:58 pop3-login: Info: …`
//!   (no host, no `dovecot:`);
//! - daemontools' TAI64N stamp, `@400000004c91b044077a9e94 imap-login: …`.

use crate::time::{days_from_civil, parse_rfc3339, Millis, DAY};

/// How a timestamp without a year or a zone is completed.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    /// The year of classic stamps; `None`: inferred from `reference`.
    pub year: Option<i32>,
    /// Offset of the logs' local time from UTC, in minutes.
    pub offset_min: i32,
    /// No line is later than this (a file's modification time, a Kafka
    /// message's time): a stamp that would be more than a day after it
    /// belongs to the year before.
    pub reference: Millis,
}

impl Clock {
    fn complete(&self, month: u32, day: u32, secs: i64) -> Millis {
        let at = |y: i64| {
            (days_from_civil(y, month, day) * 86_400 + secs - i64::from(self.offset_min) * 60)
                * 1000
        };
        match self.year {
            Some(y) => at(y.into()),
            None => {
                let (y, _, _) = crate::time::civil_from_days(self.reference.div_euclid(DAY));
                let t = at(y);
                if t > self.reference + DAY {
                    at(y - 1)
                } else {
                    t
                }
            }
        }
    }
}

/// A log line taken apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Prefixed<'a> {
    pub ts: Millis,
    /// Empty when the line has none (Dovecot's own file, TAI64N).
    pub host: &'a str,
    /// `postfix/submission/smtpd`, `dovecot`; empty for Dovecot's own file,
    /// whose message starts with its process (`imap-login: …`).
    pub program: &'a str,
    pub pid: &'a str,
    pub message: &'a str,
}

const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// What Dovecot's own log file starts a message with, where a syslog line
/// would have a host: its processes and its level words.
fn starts_like_dovecot(rest: &str) -> bool {
    const HEADS: [&str; 17] = [
        "dovecot-auth:",
        "imap-login:",
        "pop3-login:",
        "submission-login:",
        "managesieve-login:",
        "auth:",
        "auth(",
        "auth-worker(",
        "master:",
        "imap(",
        "pop3(",
        "lmtp(",
        "submission(",
        "Info:",
        "Warn:",
        "Warning:",
        "Error:",
    ];
    HEADS.iter().any(|h| rest.starts_with(h))
}

/// Splits the time stamp off `line`; `None` when it has none credwatch
/// knows.
fn stamp<'a>(line: &'a str, clock: &Clock) -> Option<(Millis, &'a str)> {
    let b = line.as_bytes();
    if b.first() == Some(&b'@') && b.len() > 25 && b[25] == b' ' {
        // TAI64N: "@" + 16 hex digits of seconds + 8 of nanoseconds, the
        // seconds counted from 2^62 at 1970 (leap seconds not applied, as
        // fail2ban reads them).
        let secs = u64::from_str_radix(&line[1..17], 16).ok()?;
        let nanos = u64::from_str_radix(&line[17..25], 16).ok()?;
        let unix = secs.checked_sub(0x4000_0000_0000_0000)?;
        // Past the year 9999 is no log line's time.
        if unix > 253_402_300_799 || nanos >= 1_000_000_000 {
            return None;
        }
        return Some(((unix * 1000 + nanos / 1_000_000) as Millis, &line[26..]));
    }
    if b.len() > 20 && b[0].is_ascii_digit() && b[4] == b'-' {
        // "2013-08-11 03:56:40" has a space inside the stamp.
        let from = if b[10] == b' ' { 11 } else { 0 };
        let end = from + line[from..].find(' ')?;
        let text = &line[..end];
        let ts = parse_rfc3339(text).or_else(|| {
            // journald's short-iso writes the offset without a colon
            // (+0100), and a stamp may have no zone at all.
            let n = text.len();
            let tail = &text.as_bytes()[n.saturating_sub(5)..];
            if n > 5 && matches!(tail[0], b'+' | b'-') && tail[1..].iter().all(u8::is_ascii_digit) {
                parse_rfc3339(&format!("{}:{}", &text[..n - 2], &text[n - 2..]))
            } else {
                let z = clock.offset_min;
                let sign = if z < 0 { '-' } else { '+' };
                parse_rfc3339(&format!(
                    "{text}{sign}{:02}:{:02}",
                    z.abs() / 60,
                    z.abs() % 60
                ))
            }
        })?;
        return Some((ts, &line[end + 1..]));
    }
    // "Mmm dd hh:mm:ss " with the day space- or zero-padded.
    if b.len() < 16 {
        return None;
    }
    let month = MONTHS.iter().position(|m| line.starts_with(m))? as u32 + 1;
    if b[3] != b' ' {
        return None;
    }
    // "Mar  5", "Mar 05", and "Mar 5" (some writers do not pad).
    let (day, at) = if b[4] == b' ' {
        (digit(b[5])?, 6)
    } else if b[5] == b' ' {
        (digit(b[4])?, 5)
    } else {
        (digit(b[4])? * 10 + digit(b[5])?, 6)
    };
    if b[at] != b' ' || b.len() < at + 10 || b[at + 3] != b':' || b[at + 6] != b':' {
        return None;
    }
    let two = |i: usize| Some(digit(b[i])? * 10 + digit(b[i + 1])?);
    let (h, m, s) = (two(at + 1)?, two(at + 4)?, two(at + 7)?);
    if day == 0 || day > 31 || h > 23 || m > 59 || s > 60 {
        return None;
    }
    let mut rest = &line[at + 9..];
    // Some writers add fractions to the classic stamp ("12:00:01.123").
    let mut millis = 0;
    if let Some(frac) = rest.strip_prefix('.') {
        let n = frac.bytes().take_while(u8::is_ascii_digit).count();
        let d = &frac[..n.min(3)];
        millis = d.parse::<i64>().unwrap_or(0) * 10_i64.pow(3 - d.len() as u32);
        rest = &frac[n..];
    }
    let rest = rest.strip_prefix(' ')?;
    let secs = i64::from(h) * 3600 + i64::from(m) * 60 + i64::from(s);
    Some((clock.complete(month, day, secs) + millis, rest))
}

fn digit(c: u8) -> Option<u32> {
    c.is_ascii_digit().then(|| u32::from(c - b'0'))
}

/// Takes a line apart; `None` when its stamp or its program cannot be
/// told.
pub fn split<'a>(line: &'a str, clock: &Clock) -> Option<Prefixed<'a>> {
    let (ts, rest) = stamp(line, clock)?;
    let rest = rest.trim_start_matches(' ');
    if let Some(m) = rest.strip_prefix("dovecot-auth: ") {
        return Some(Prefixed {
            ts,
            host: "",
            program: "dovecot-auth",
            pid: "",
            message: m,
        });
    }
    if starts_like_dovecot(rest) {
        return Some(Prefixed {
            ts,
            host: "",
            program: "",
            pid: "",
            message: rest,
        });
    }
    let (host, rest) = rest.split_once(' ')?;
    // The program: up to "[pid]: " or ": ".
    let end = rest.find([':', '[', ' '])?;
    let program = &rest[..end];
    let (pid, message) = match rest.as_bytes()[end] {
        b'[' => {
            let close = rest[end..].find("]: ")? + end;
            (&rest[end + 1..close], &rest[close + 3..])
        }
        b':' => (
            "",
            rest[end..]
                .strip_prefix(": ")
                .or_else(|| rest[end..].strip_prefix(':'))?,
        ),
        _ => return None,
    };
    if program.is_empty() {
        return None;
    }
    Some(Prefixed {
        ts,
        host,
        program,
        pid,
        message,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time::format_rfc3339;

    fn clock() -> Clock {
        Clock {
            year: None,
            offset_min: 0,
            // 2026-12-01T12:00:00Z
            reference: parse_rfc3339("2026-12-01T12:00:00Z").unwrap(),
        }
    }

    fn at(line: &str) -> (String, String, String, String, String) {
        let p = split(line, &clock()).unwrap();
        (
            format_rfc3339(p.ts),
            p.host.into(),
            p.program.into(),
            p.pid.into(),
            p.message.into(),
        )
    }

    #[test]
    fn classic_syslog_with_space_or_zero_padded_day() {
        let (ts, host, prog, pid, msg) =
            at("Mar  5 12:00:01 mail postfix/submission/smtpd[123]: connect from x[1.2.3.4]");
        assert_eq!(ts, "2026-03-05T12:00:01.000Z");
        assert_eq!(
            (&*host, &*prog, &*pid),
            ("mail", "postfix/submission/smtpd", "123")
        );
        assert_eq!(msg, "connect from x[1.2.3.4]");
        assert_eq!(at("Mar 05 12:00:01 mail postfix/smtpd[1]: x").0, ts);
        assert_eq!(at("Mar 5 12:00:01 mail postfix/smtpd[1]: x").0, ts);
        assert_eq!(
            at("2026-03-05 12:00:01 auth-worker(default): Info: x").0,
            ts
        );
        // No pid.
        let (_, host, prog, pid, msg) =
            at("Jun 13 16:30:54 platypus dovecot: imap-login: Login: user=<a>");
        assert_eq!(
            (&*host, &*prog, &*pid, &*msg),
            ("platypus", "dovecot", "", "imap-login: Login: user=<a>")
        );
    }

    #[test]
    fn the_year_is_the_latest_that_is_not_after_the_reference() {
        // The reference is 2026-12-01: a December 31 stamp is last year's.
        assert_eq!(
            at("Dec 31 23:59:59 h postfix/qmgr[1]: x").0,
            "2025-12-31T23:59:59.000Z"
        );
        assert_eq!(
            at("Dec  1 23:59:59 h postfix/qmgr[1]: x").0,
            "2026-12-01T23:59:59.000Z"
        );
        let fixed = Clock {
            year: Some(2020),
            offset_min: 9 * 60,
            ..clock()
        };
        let p = split("Feb 29 09:00:00 h postfix/qmgr[1]: x", &fixed).unwrap();
        assert_eq!(format_rfc3339(p.ts), "2020-02-29T00:00:00.000Z");
    }

    #[test]
    fn rfc3339_stamps_with_or_without_a_colon_in_the_offset() {
        let (ts, host, prog, pid, _) = at(
            "2023-03-14T00:31:06.621091+01:00 helga postfix/submission/smtpd[303987]: connect from x",
        );
        assert_eq!(ts, "2023-03-13T23:31:06.621Z");
        assert_eq!(
            (&*host, &*prog, &*pid),
            ("helga", "postfix/submission/smtpd", "303987")
        );
        assert_eq!(
            at("2023-03-14T00:31:06+0100 helga dovecot[7]: x").0,
            "2023-03-13T23:31:06.000Z"
        );
    }

    #[test]
    fn dovecot_own_file_and_tai64n_have_no_host() {
        let (ts, host, prog, _, msg) = at("Jan 29 09:33:58 pop3-login: Info: Aborted login");
        assert_eq!(ts, "2026-01-29T09:33:58.000Z");
        assert_eq!(
            (&*host, &*prog, &*msg),
            ("", "", "pop3-login: Info: Aborted login")
        );
        let (ts, host, _, _, msg) = at("@400000004c91b044077a9e94 imap-login: Info: Aborted login");
        assert_eq!(ts, "2010-09-16T05:51:00.125Z");
        assert_eq!((&*host, &*msg), ("", "imap-login: Info: Aborted login"));
    }

    #[test]
    fn lines_without_a_known_stamp_are_refused() {
        for l in [
            "",
            "garbage",
            "Foo 12 12:00:00 h p: x",
            "Mar 99 12:00:00 h p: x",
            "Mar  5 25:00:00 h p: x",
            "# failJSON: {}",
            "Mar  5 12:00:01 host",
        ] {
            assert!(split(l, &clock()).is_none(), "{l:?}");
        }
    }
}
