//! Hostile input: a corpus of bad and strange events, through the real
//! binary on both paths (`credwatch run` on Kafka, `credwatch replay` on a
//! file). Every bad message is rejected with the right reason and lands on
//! the dead-letter topic byte for byte; every good one is judged; nothing
//! crashes; the log stays one JSON object per line, is rate-limited, and
//! never echoes a payload (each payload carries a canary that must not
//! appear in any log line).

use credwatch_testkit::kafka;

use std::collections::BTreeMap;
use std::process::Command;
use std::time::Duration;

use credwatch::demo::broker::EmbeddedBroker;
use credwatch::source::event::RejectReason;
use serde_json::{json, Value};

use credwatch_testkit::{http_get, metric};
use credwatch_testkit::{ip, World, T0};
use kafka::*;

const CANARY: &str = "CANARY-7f3a9c";

struct Case {
    name: String,
    bytes: Vec<u8>,
    /// The reject reason, or `None` for an event that must be judged.
    want: Option<&'static str>,
}

fn good() -> Value {
    json!({
        "ts": "2026-11-05T10:00:00Z",
        "kind": "auth",
        "account": "victim@example.net",
        "protocol": "imap",
        "src_ip": ip("London", 9).to_string(),
        "result": "success",
        "mechanism": "PLAIN",
        "note": CANARY,
    })
}

fn with(field: &str, value: Value) -> Vec<u8> {
    let mut v = good();
    v[field] = value;
    v.to_string().into_bytes()
}

fn without(field: &str) -> Vec<u8> {
    let mut v = good();
    v.as_object_mut().expect("object").remove(field);
    v.to_string().into_bytes()
}

/// A submission with `rcpt_count` (absent for `None`).
fn submission(rcpt_count: Option<Value>) -> Vec<u8> {
    let mut v = json!({"ts": "2026-11-05T10:00:01Z", "kind": "submission",
        "account": "victim@example.net", "src_ip": ip("London", 9).to_string(),
        "mail_from": "victim@example.net", "note": CANARY});
    if let Some(r) = rcpt_count {
        v["rcpt_count"] = r;
    }
    v.to_string().into_bytes()
}

fn corpus() -> Vec<Case> {
    let mut c = Vec::new();
    let mut add = |name: &str, bytes: Vec<u8>, want: Option<&'static str>| {
        c.push(Case {
            name: name.to_string(),
            bytes,
            want,
        })
    };
    let base = good().to_string();

    // Well-formed, strange, and accepted.
    add("plain good event", base.clone().into_bytes(), None);
    add(
        "IPv6 with a zone id",
        with("src_ip", json!("fe80::1%eth0")),
        None,
    );
    add(
        "IPv4-mapped IPv6",
        with("src_ip", json!(format!("::ffff:{}", ip("Tokyo", 3)))),
        None,
    );
    add(
        "epoch milliseconds",
        with("ts", json!(T0 + 36_000_000)),
        None,
    );
    add(
        "non-ASCII account",
        with("account", json!("jürgen.öztürk@exämple.de")),
        None,
    );
    // Spellings of one account (the canonical form folds them).
    for (name, v) in [
        ("fullwidth account", "ｆｒａｎｋ＠ｅｘａｍｐｌｅ．ｊｐ"),
        ("zero-width space in account", "fr\u{200b}ank@example.jp"),
        (
            "right-to-left override in account",
            "\u{202e}knarf@example.jp",
        ),
        ("trailing dot on the domain", "frank@example.jp."),
        ("sub-address", "frank+x@example.jp"),
    ] {
        add(name, with("account", json!(v)), None);
    }
    add(
        "account of format characters only",
        with("account", json!("\u{200b}\u{feff}")),
        Some("bad_account"),
    );
    // From: headers built to break the address parser or the evidence.
    for (name, v) in [
        (
            "a 60 KB display name",
            format!("\"{}\" <boss@bank.example>", "A".repeat(60_000)),
        ),
        (
            "10,000 nested comments",
            format!("{}own@example.jp", "(".repeat(10_000)),
        ),
        ("an unclosed quote", "\"own@example.jp".to_string()),
        (
            "a thousand addresses",
            (0..1000)
                .map(|i| format!("u{i}@example.jp"))
                .collect::<Vec<_>>()
                .join(","),
        ),
    ] {
        let mut v2 = submission(None);
        let mut ev: Value = serde_json::from_slice(&v2).unwrap();
        ev["rcpt_count"] = json!(1);
        ev["header_from"] = json!(v);
        v2 = ev.to_string().into_bytes();
        add(&format!("header_from with {name}"), v2, None);
    }
    add(
        "unicode line separator in account",
        with("account", json!("a\u{2028}b@example.net")),
        None,
    );
    add(
        "submission with a large but plausible rcpt_count",
        submission(Some(json!(5000))),
        None,
    );

    // malformed_json
    add(
        "not JSON",
        format!("{CANARY} hello").into_bytes(),
        Some("malformed_json"),
    );
    add("empty", Vec::new(), Some("malformed_json"));
    add("a JSON array", b"[1,2,3]".to_vec(), Some("malformed_json"));
    add(
        "a JSON string",
        b"\"event\"".to_vec(),
        Some("malformed_json"),
    );
    for cut in [1, 10, base.len() / 2, base.len() - 1] {
        add(
            &format!("truncated at byte {cut}"),
            base.as_bytes()[..cut].to_vec(),
            Some("malformed_json"),
        );
    }
    let mut deep = good().to_string();
    deep.pop();
    deep.push_str(&format!(
        ",\"x\":{}{}}}",
        "[".repeat(20_000),
        "]".repeat(20_000)
    ));
    add(
        "an unknown field nested 20,000 deep (ignored, no stack overflow)",
        deep.into_bytes(),
        None,
    );
    add(
        "a message nested 20,000 deep",
        format!("{}{}", "[".repeat(20_000), "]".repeat(20_000)).into_bytes(),
        Some("malformed_json"),
    );
    let deep_obj = format!("{}{}", "{\"a\":".repeat(5_000), "}".repeat(5_000));
    add(
        "objects nested 5,000 deep",
        deep_obj.into_bytes(),
        Some("malformed_json"),
    );
    add(
        "raw newline inside a string",
        base.replace("victim@", "vic\ntim@").into_bytes(),
        Some("malformed_json"),
    );
    add(
        "NUL byte outside strings",
        format!("{base}\0").into_bytes(),
        Some("malformed_json"),
    );

    // invalid_utf8
    let mut bad = base.clone().into_bytes();
    let at = base.find("victim").expect("account");
    bad[at] = 0xff;
    add("invalid UTF-8 in the account", bad, Some("invalid_utf8"));
    let mut overlong = base.clone().into_bytes();
    overlong.splice(at..at + 1, [0xc0, 0xaf]);
    add("overlong UTF-8 encoding", overlong, Some("invalid_utf8"));

    // too_large
    add(
        "70 kB event",
        with("note", json!(format!("{CANARY}{}", "x".repeat(70_000)))),
        Some("too_large"),
    );

    // missing_field
    add("no `kind` (defaults to auth)", without("kind"), None);
    add(
        "submission without rcpt_count",
        submission(None),
        Some("missing_field"),
    );
    for f in ["ts", "account"] {
        add(&format!("no `{f}`"), without(f), Some("missing_field"));
    }
    add(
        "`account` null",
        with("account", Value::Null),
        Some("missing_field"),
    );

    // bad_type
    add(
        "numeric account",
        with("account", json!(5)),
        Some("bad_type"),
    );
    add(
        "account as an object",
        with("account", json!({"a": 1})),
        Some("bad_type"),
    );
    add("ts as a boolean", with("ts", json!(true)), Some("bad_type"));

    // bad_value
    add("unknown kind", with("kind", json!("x")), Some("bad_value"));
    add(
        "unknown result",
        with("result", json!("maybe")),
        Some("bad_value"),
    );
    add(
        "huge rcpt_count",
        submission(Some(json!(u64::MAX))),
        Some("bad_value"),
    );
    add(
        "negative rcpt_count",
        submission(Some(json!(-1))),
        Some("bad_value"),
    );

    // duplicate_field
    add(
        "account twice",
        base.replacen("{", "{\"account\":\"evil@example.net\",", 1)
            .into_bytes(),
        Some("duplicate_field"),
    );

    // bad_account
    add(
        "empty account",
        with("account", json!("")),
        Some("bad_account"),
    );
    add(
        "blank account",
        with("account", json!(" \t ")),
        Some("bad_account"),
    );
    add(
        "escaped newline in account (log injection)",
        with(
            "account",
            json!("x@example.net\n{\"level\":\"INFO\",\"message\":\"forged\"}"),
        ),
        Some("bad_account"),
    );
    add(
        "carriage return in account",
        with("account", json!("a\rb@example.net")),
        Some("bad_account"),
    );
    add(
        "NUL in account",
        with("account", json!("a\u{0}b@example.net")),
        Some("bad_account"),
    );
    add(
        "terminal escape in account",
        with("account", json!("\u{1b}[31mred@example.net")),
        Some("bad_account"),
    );
    add(
        "account of 400 bytes",
        with("account", json!(format!("{}@example.net", "a".repeat(400)))),
        Some("bad_account"),
    );

    // bad_ip
    for (name, v) in [
        ("octet out of range", "999.1.1.1"),
        ("a host name", "mail.example.net"),
        ("an empty zone id", "fe80::1%"),
        ("an address with a port", "81.2.0.1:25"),
        ("a CIDR", "81.2.0.0/16"),
    ] {
        add(
            &format!("src_ip {name}"),
            with("src_ip", json!(v)),
            Some("bad_ip"),
        );
    }

    // bad_timestamp
    for (name, v) in [
        ("before 2000", json!("1999-12-31T23:59:59Z")),
        ("far in the future", json!("2999-01-01T00:00:00Z")),
        ("epoch zero", json!(0)),
        ("negative epoch", json!(-5)),
        ("not a date", json!("yesterday")),
        ("month 13", json!("2026-13-01T00:00:00Z")),
    ] {
        add(&format!("ts {name}"), with("ts", v), Some("bad_timestamp"));
    }
    c
}

#[test]
fn the_corpus_names_every_reject_reason() {
    let cases = corpus();
    eprintln!("{} cases", cases.len());
    let named: std::collections::BTreeSet<&str> = cases.iter().filter_map(|c| c.want).collect();
    for r in RejectReason::ALL {
        assert!(named.contains(r.as_str()), "no case for {}", r.as_str());
    }
}

/// Every line is one JSON object, no line carries a payload's canary, and
/// rejects are logged at most a few times per reason.
fn check_log(log: &str) {
    let mut rejected_lines: BTreeMap<String, usize> = BTreeMap::new();
    for line in log.lines() {
        assert!(
            !line.contains("CANARY"),
            "a log line echoes a payload: {line}"
        );
        let v: Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("a log line is not one JSON object ({e}): {line:?}"));
        if v["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("Rejected"))
        {
            *rejected_lines
                .entry(v["reason"].as_str().unwrap_or_default().to_string())
                .or_default() += 1;
        }
    }
    for (reason, n) in &rejected_lines {
        assert!(
            *n <= 2,
            "{n} log lines for reason {reason}: not rate-limited"
        );
    }
}

#[test]
fn run_rejects_each_bad_message_with_its_reason_and_judges_the_rest() {
    let b = EmbeddedBroker::start(1).expect("embedded broker");
    let world = World::new();
    b.create_topic(INPUT, 1).expect("topic");
    for t in [SOURCES, ACTIONS, DLQ] {
        b.create_topic(t, 1).expect("topic");
    }
    let cases = corpus();
    let run = Binary::start(&world, &b.bootstrap_servers(), "hostile", &[]);
    let payloads: Vec<&[u8]> = cases.iter().map(|c| c.bytes.as_slice()).collect();
    produce_raw(&b.bootstrap_servers(), INPUT, &payloads);

    let bad: Vec<&Case> = cases.iter().filter(|c| c.want.is_some()).collect();
    let dead = read(
        &b.bootstrap_servers(),
        DLQ,
        bad.len(),
        Duration::from_secs(60),
        Duration::from_secs(1),
    );
    assert_eq!(
        dead.len(),
        bad.len(),
        "one dead letter per bad message:\n{}",
        run.log()
    );
    for (d, c) in dead.iter().zip(&bad) {
        let reason = d
            .headers
            .iter()
            .find(|(k, _)| k == credwatch::sink::kafka::REASON_HEADER)
            .map(|(_, v)| v.as_str());
        assert_eq!(reason, c.want, "case {:?}", c.name);
        assert_eq!(
            d.payload,
            String::from_utf8_lossy(&c.bytes),
            "case {:?}: the dead letter is the message as it came",
            c.name
        );
    }

    // The good ones were judged: the metrics say so.
    let addr = run.http_addr();
    let good = cases.iter().filter(|c| c.want.is_none()).count() as f64;
    let mut text = String::new();
    let judged = wait_until(Duration::from_secs(30), || {
        text = http_get(&addr, "/metrics").1;
        metric(&text, "credwatch_events_total{") >= good
    });
    assert!(
        judged,
        "judged {} of {good}",
        metric(&text, "credwatch_events_total{")
    );
    for r in RejectReason::ALL {
        let want = bad.iter().filter(|c| c.want == Some(r.as_str())).count() as f64;
        let got = metric(
            &text,
            &format!(
                "credwatch_events_rejected_total{{reason=\"{}\"}}",
                r.as_str()
            ),
        );
        assert_eq!(
            got,
            want,
            "credwatch_events_rejected_total{{reason={}}}",
            r.as_str()
        );
    }
    run.signal("-TERM");
    assert!(wait_until(Duration::from_secs(30), || run
        .exited()
        .is_some()));
    assert!(run.exited().is_some_and(|s| s.success()), "{}", run.log());
    check_log(&run.log());
}

#[test]
fn replay_rejects_each_bad_line_with_its_reason() {
    let world = World::new();
    let dir = world.dir.path();
    // A file holds lines: a case with a raw newline is two lines there, so
    // it is left to the Kafka test.
    let cases: Vec<Case> = corpus()
        .into_iter()
        .filter(|c| !c.bytes.contains(&b'\n') && !c.bytes.is_empty())
        .collect();
    let mut input = Vec::new();
    for c in &cases {
        input.extend_from_slice(&c.bytes);
        input.push(b'\n');
    }
    std::fs::write(dir.join("hostile.jsonl"), &input).expect("write");
    std::fs::write(dir.join("c.toml"), world.toml("")).expect("config");
    let out = Command::new(env!("CARGO_BIN_EXE_credwatch"))
        .args(["replay", "--threads", "1", "--config"])
        .arg(dir.join("c.toml"))
        .arg("--rejects")
        .arg(dir.join("rejects.jsonl"))
        .arg(dir.join("hostile.jsonl"))
        .env_remove("RUST_LOG")
        .output()
        .expect("run replay");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        !stderr.contains("CANARY"),
        "the summary echoes a payload: {stderr}"
    );
    let rejects: Vec<Value> = std::fs::read_to_string(dir.join("rejects.jsonl"))
        .expect("rejects file")
        .lines()
        .map(|l| serde_json::from_str(l).expect("reject line"))
        .collect();
    let want: Vec<(u64, &str)> = cases
        .iter()
        .enumerate()
        .filter_map(|(i, c)| c.want.map(|w| (i as u64 + 1, w)))
        .collect();
    let got: Vec<(u64, &str)> = rejects
        .iter()
        .map(|r| {
            (
                r["line"].as_u64().unwrap_or(0),
                r["reason"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert_eq!(got, want, "(line, reason) of every rejected line");
    for r in &rejects {
        assert!(
            !r["detail"].as_str().unwrap_or("").contains("CANARY"),
            "a reject's detail echoes the payload: {r}"
        );
    }
}
