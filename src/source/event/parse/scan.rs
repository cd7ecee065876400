//! The fast path of [`super::parse_event`]: a scanner for the flat objects
//! the contract's producers write (string and whole-number values, no
//! escapes). It gives the very [`RawEvent`] serde_json would, or `None`,
//! and then serde_json parses the line as before: every malformed,
//! unusual or hostile line still takes the one path whose rejects, reasons
//! and details the contract and the fuzz targets pin down.
//!
//! `None` on anything outside that subset: an escape, a control character
//! in a string, `null`, a nested value, a fraction or exponent, a number
//! of more than 19 digits, a duplicate field, trailing text. The fuzz
//! target `event` checks on every input that a line this scanner accepts
//! parses to the same event through serde_json.

use std::borrow::Cow;

use super::{RawEvent, RawTs, Str};

/// JSON's whitespace (RFC 8259 §2), which serde_json skips too.
fn is_ws(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r')
}

struct Scanner<'a> {
    text: &'a str,
    at: usize,
}

/// The contract's fields, and the rest (which serde ignores).
#[derive(Clone, Copy)]
enum Field {
    Ts,
    Kind,
    Account,
    Protocol,
    SrcIp,
    Result,
    Mechanism,
    Pwhash,
    Session,
    Client,
    MailFrom,
    HeaderFrom,
    QueueId,
    Reason,
    RcptCount,
    Other,
}

enum Value<'a> {
    Text(&'a str),
    Whole(u64),
}

impl<'a> Scanner<'a> {
    fn bytes(&self) -> &'a [u8] {
        self.text.as_bytes()
    }

    fn skip_ws(&mut self) {
        let b = self.bytes();
        while self.at < b.len() && is_ws(b[self.at]) {
            self.at += 1;
        }
    }

    fn peek(&self) -> Option<u8> {
        self.bytes().get(self.at).copied()
    }

    fn eat(&mut self, want: u8) -> Option<()> {
        (self.peek()? == want).then(|| self.at += 1)
    }

    /// A string without escapes or control characters, the quotes
    /// excluded. `at` is on the opening quote.
    fn string(&mut self) -> Option<&'a str> {
        self.eat(b'"')?;
        let start = self.at;
        let rest = &self.bytes()[start..];
        let len = special(rest)?;
        if rest[len] != b'"' {
            return None; // an escape or a control character
        }
        self.at = start + len + 1;
        // The quote is ASCII, so both ends are character boundaries.
        Some(&self.text[start..start + len])
    }

    /// A field's name: one of the contract's is recognised by its first
    /// two letters and a comparison, without scanning for escapes (the
    /// quote right after it shows there is none); any other name is
    /// scanned as a string, and is none of the contract's.
    fn key(&mut self) -> Option<Field> {
        use Field::*;
        let rest = self.bytes().get(self.at..)?;
        let names: &[(&str, Field)] = match rest.get(1..3)? {
            [b't', b's'] => &[("ts", Ts)],
            [b'k', _] => &[("kind", Kind)],
            [b'a', _] => &[("account", Account)],
            [b'p', b'r'] => &[("protocol", Protocol)],
            [b'p', b'w'] => &[("pwhash", Pwhash)],
            [b's', b'r'] => &[("src_ip", SrcIp)],
            [b's', b'e'] => &[("session", Session)],
            [b'r', b'e'] => &[("result", Result), ("reason", Reason)],
            [b'r', b'c'] => &[("rcpt_count", RcptCount)],
            [b'm', b'e'] => &[("mechanism", Mechanism)],
            [b'm', b'a'] => &[("mail_from", MailFrom)],
            [b'c', _] => &[("client", Client)],
            [b'h', _] => &[("header_from", HeaderFrom)],
            [b'q', _] => &[("queue_id", QueueId)],
            _ => &[],
        };
        if rest[0] == b'"' {
            for &(name, field) in names {
                let n = name.len();
                if rest.get(1..=n) == Some(name.as_bytes()) && rest.get(n + 1) == Some(&b'"') {
                    self.at += n + 2;
                    return Some(field);
                }
            }
        }
        self.string().map(|_| Other)
    }

    /// A whole number as serde_json reads one: no sign, no leading zero,
    /// no fraction or exponent; at most 19 digits (always within u64).
    fn whole(&mut self) -> Option<u64> {
        let rest = &self.bytes()[self.at..];
        let len = rest
            .iter()
            .position(|c| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        if len == 0 || len > 19 || (len > 1 && rest[0] == b'0') {
            return None;
        }
        if matches!(rest.get(len), Some(b'.' | b'e' | b'E')) {
            return None;
        }
        let n = rest[..len]
            .iter()
            .fold(0u64, |n, d| n * 10 + u64::from(d - b'0'));
        self.at += len;
        Some(n)
    }

    fn value(&mut self) -> Option<Value<'a>> {
        match self.peek()? {
            b'"' => self.string().map(Value::Text),
            b'0'..=b'9' => self.whole().map(Value::Whole),
            _ => None,
        }
    }
}

fn is_special(c: u8) -> bool {
    c == b'"' || c == b'\\' || c < 0x20
}

/// Where the first quote, backslash or control character is: eight bytes
/// at a time (SWAR), the rest one by one.
fn special(b: &[u8]) -> Option<usize> {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    // The high bit of each byte below `n` (n <= 128); a borrow can only
    // mark bytes after a true one, so the lowest mark is exact.
    let below = |x: u64, n: u8| x.wrapping_sub(ONES * u64::from(n)) & !x & HIGHS;
    let mut chunks = b.chunks_exact(8);
    for (i, chunk) in chunks.by_ref().enumerate() {
        let x = u64::from_le_bytes(chunk.try_into().unwrap_or_default());
        let hits = below(x ^ (ONES * u64::from(b'"')), 1)
            | below(x ^ (ONES * u64::from(b'\\')), 1)
            | below(x, 0x20);
        if hits != 0 {
            return Some(i * 8 + hits.trailing_zeros() as usize / 8);
        }
    }
    let done = b.len() - chunks.remainder().len();
    chunks
        .remainder()
        .iter()
        .position(|&c| is_special(c))
        .map(|p| done + p)
}

/// Sets a field once; a second time is serde's "duplicate field": `None`.
fn once<T>(slot: &mut Option<T>, v: T) -> Option<()> {
    match slot {
        Some(_) => None,
        None => {
            *slot = Some(v);
            Some(())
        }
    }
}

fn string_field<'a>(slot: &mut Option<Str<'a>>, v: Value<'a>) -> Option<()> {
    match v {
        Value::Text(s) => once(slot, Str(Cow::Borrowed(s))),
        Value::Whole(_) => None,
    }
}

/// Fills `raw` (empty) with the event as serde_json would read it, when
/// the line is in the simple subset; false otherwise (see the module's
/// text), and `raw` is then partly filled.
pub(super) fn scan<'a>(text: &'a str, raw: &mut RawEvent<'a>) -> bool {
    fill(text, raw).is_some()
}

fn fill<'a>(text: &'a str, raw: &mut RawEvent<'a>) -> Option<()> {
    let mut s = Scanner { text, at: 0 };
    s.skip_ws();
    s.eat(b'{')?;
    s.skip_ws();
    if s.eat(b'}').is_none() {
        loop {
            s.skip_ws();
            let key = s.key()?;
            s.skip_ws();
            s.eat(b':')?;
            s.skip_ws();
            let v = s.value()?;
            match key {
                Field::Ts => once(
                    &mut raw.ts,
                    match v {
                        Value::Text(t) => RawTs::Text(Str(Cow::Borrowed(t))),
                        Value::Whole(n) => i64::try_from(n).map_or(RawTs::Negative, RawTs::Millis),
                    },
                )?,
                Field::Kind => string_field(&mut raw.kind, v)?,
                Field::Account => string_field(&mut raw.account, v)?,
                Field::Protocol => string_field(&mut raw.protocol, v)?,
                Field::SrcIp => string_field(&mut raw.src_ip, v)?,
                Field::Result => string_field(&mut raw.result, v)?,
                Field::Mechanism => string_field(&mut raw.mechanism, v)?,
                Field::Pwhash => string_field(&mut raw.pwhash, v)?,
                Field::Session => string_field(&mut raw.session, v)?,
                Field::Client => string_field(&mut raw.client, v)?,
                Field::MailFrom => string_field(&mut raw.mail_from, v)?,
                Field::HeaderFrom => string_field(&mut raw.header_from, v)?,
                Field::QueueId => string_field(&mut raw.queue_id, v)?,
                Field::Reason => string_field(&mut raw.reason, v)?,
                Field::RcptCount => match v {
                    Value::Whole(n) => once(&mut raw.rcpt_count, n)?,
                    Value::Text(_) => return None,
                },
                // serde ignores fields it does not know, even twice.
                Field::Other => {}
            }
            s.skip_ws();
            match s.peek()? {
                b',' => s.at += 1,
                b'}' => {
                    s.at += 1;
                    break;
                }
                _ => return None,
            }
        }
    }
    s.skip_ws();
    (s.at == text.len()).then_some(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scanned(line: &str) -> Option<RawEvent<'_>> {
        let mut raw = RawEvent::default();
        scan(line, &mut raw).then_some(raw)
    }

    fn same_as_serde(line: &str) -> bool {
        let fast = scanned(line);
        let slow = serde_json::from_str::<RawEvent>(line).ok();
        match fast {
            Some(f) => {
                assert_eq!(Some(&f), slow.as_ref(), "{line}");
                true
            }
            None => false,
        }
    }

    #[test]
    fn the_contracts_lines_take_the_fast_path_and_agree_with_serde() {
        for line in [
            r#"{"ts":"2026-11-28T09:00:00Z","kind":"auth","account":"a@example.jp","protocol":"imap","src_ip":"192.0.2.1","result":"success","mechanism":"PLAIN","pwhash":"0a1b","session":"s1","client":"Thunderbird"}"#,
            r#"{"ts":1795737600000,"kind":"submission","account":"a@example.jp","src_ip":"2001:db8::1","mail_from":"a@example.jp","header_from":"A <a@example.jp>","rcpt_count":3,"queue_id":"4XyZ"}"#,
            r#" { "ts" : 1795737600000 , "account" : "ü@例え.jp" , "extra" : 12, "extra": "x" } "#,
            // Names that begin as the contract's do, and are not theirs.
            r#"{"tsx":1,"ts":1795737600000,"kinda":"x","re":"y","rcpt":2,"c":"z","":"w"}"#,
            "{\"ts\":0,\"kind\":\"unlock\",\"account\":\"a\",\"reason\":\"helpdesk\"}\r\n",
            "{}",
            r#"{"ts":9223372036854775808}"#,
        ] {
            assert!(same_as_serde(line), "not on the fast path: {line}");
        }
    }

    #[test]
    fn anything_unusual_is_left_to_serde() {
        for line in [
            r#"{"account":"a\"b"}"#,
            r#"{"account":"a\u0041"}"#,
            "{\"account\":\"a\tb\"}",
            r#"{"account":null}"#,
            r#"{"account":["a"]}"#,
            r#"{"account":{"x":1}}"#,
            r#"{"account":"a","account":"b"}"#,
            r#"{"ts":1.5}"#,
            r#"{"ts":1e3}"#,
            r#"{"ts":-1}"#,
            r#"{"ts":01}"#,
            r#"{"ts":12345678901234567890}"#,
            r#"{"rcpt_count":"3"}"#,
            r#"{"account":3}"#,
            r#"{"account":"a"} x"#,
            r#"{"account":"a",}"#,
            r#"{"account":"a""#,
            r#"["account"]"#,
            r#"{"extra":true}"#,
            "",
        ] {
            assert!(!same_as_serde(line), "took the fast path: {line}");
        }
    }

    #[test]
    fn special_bytes_are_found_at_every_position() {
        for len in 0..40 {
            for at in 0..len {
                for c in [b'"', b'\\', 0x00, 0x1f] {
                    let mut b = vec![b'a'; len];
                    b[at] = c;
                    b.iter_mut().skip(at + 1).for_each(|x| *x = 0xc3);
                    assert_eq!(special(&b), Some(at), "{len} {at} {c}");
                }
            }
            assert_eq!(special(&vec![0x20; len]), None);
            assert_eq!(special(&vec![0xff; len]), None);
        }
    }

    /// A differential fuzz in every `cargo test`: lines mutated byte by
    /// byte from the contract's shapes parse to the same event or reject
    /// through the fast path as through serde_json alone.
    #[test]
    fn mutated_lines_parse_the_same_with_and_without_the_fast_path() {
        use crate::source::event::{parse_event, parse_event_reference, ParseLimits};
        let limits = ParseLimits::new(65_536, 1_795_737_600_000);
        let seeds = [
            r#"{"ts":"2026-11-28T09:00:00Z","kind":"auth","account":"A@Example.jp","protocol":"imap","src_ip":"192.0.2.1","result":"success","mechanism":"plain","pwhash":"0a1b","client":"Thunderbird"}"#,
            r#"{"ts":1795737600000,"kind":"submission","account":"a+x@example.jp","src_ip":"::ffff:192.0.2.1","mail_from":"a@example.jp","header_from":"A <a@example.jp>","rcpt_count":3,"queue_id":"4XyZ"}"#,
            r#"{"ts":1795737600000,"kind":"unlock","account":"a@example.jp","reason":"helpdesk"}"#,
        ];
        const ALPHABET: &[u8] = b"{}[]\":,\\ \t\n0123456789-+.eEnultrsfa@\x00\x1f\xc3\xa9";
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move |n: usize| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state % n as u64) as usize
        };
        let mut fast = 0;
        for round in 0..60_000 {
            let mut line = seeds[round % seeds.len()].as_bytes().to_vec();
            for _ in 0..1 + next(3) {
                let at = next(line.len() + 1);
                match next(4) {
                    0 if at < line.len() => line[at] = ALPHABET[next(ALPHABET.len())],
                    1 => line.insert(at, ALPHABET[next(ALPHABET.len())]),
                    2 if at < line.len() => {
                        line.remove(at);
                    }
                    _ => line.truncate(at),
                }
            }
            let got = parse_event(&line, &limits);
            assert_eq!(
                got,
                parse_event_reference(&line, &limits),
                "{}",
                String::from_utf8_lossy(&line)
            );
            if std::str::from_utf8(&line).ok().and_then(scanned).is_some() {
                fast += 1;
            }
        }
        assert!(
            fast > 10_000,
            "only {fast} mutated lines took the fast path"
        );
    }
}
