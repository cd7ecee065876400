use super::*;

fn limits() -> ParseLimits {
    ParseLimits::new(65_536, 1_800_000_000_000)
}

fn parse(s: &str) -> Result<Event, Reject> {
    parse_event(s.as_bytes(), &limits())
}

#[test]
fn a_full_auth_event() {
    let e = parse(
        r#"{"ts":"2026-11-05T09:11:02Z","kind":"auth","account":"  Alice@Example.JP ","protocol":"smtp","src_ip":"81.2.69.142","result":"success","mechanism":"PLAIN","pwhash":"9f86d081","unknown":{"deep":[1,2,3]}}"#,
    )
    .unwrap();
    assert_eq!(&*e.account, "alice@example.jp");
    assert_eq!(e.kind, Kind::Auth);
    assert_eq!(e.protocol, Some(Protocol::Smtp));
    assert_eq!(e.result, Some(AuthResult::Success));
    assert_eq!(e.pwhash, Some(0x9f86d081));
    assert_eq!(e.key, account_key("alice@example.jp"));
}

#[test]
fn kind_defaults_to_auth_and_ts_may_be_millis() {
    let e = parse(
        r#"{"ts":1793958121250,"account":"bob","protocol":"imap","src_ip":"2001:db8::1","result":"failure"}"#,
    )
    .unwrap();
    assert_eq!(e.kind, Kind::Auth);
    assert_eq!(e.ts, 1_793_958_121_250);
}

#[test]
fn escaped_strings_are_decoded() {
    let e = parse(
        r#"{"ts":1793958121250,"account":"b\u006fb","protocol":"imap","src_ip":"10.0.0.1","result":"failure"}"#,
    )
    .unwrap();
    assert_eq!(&*e.account, "bob");
}

#[test]
fn addresses_with_zone_or_mapping() {
    assert_eq!(parse_ip("fe80::1%eth0"), "fe80::1".parse().ok());
    assert_eq!(parse_ip("::ffff:192.0.2.1"), "192.0.2.1".parse().ok());
    assert_eq!(parse_ip("192.0.2.1%eth0"), None);
    assert_eq!(parse_ip("[::1]"), None);
    assert_eq!(parse_ip("999.1.1.1"), None);
}

#[test]
fn every_reason_has_an_input() {
    let big = format!(
        r#"{{"ts":1793958121250,"account":"a","protocol":"imap","src_ip":"10.0.0.1","result":"failure","pad":"{}"}}"#,
        "x".repeat(70_000)
    );
    let cases: Vec<(Vec<u8>, RejectReason)> = vec![
        (b"{not json".to_vec(), RejectReason::MalformedJson),
        (b"[1,2]".to_vec(), RejectReason::MalformedJson),
        (b"{\"ts\":1793958121250,\"account\":\"a".to_vec(), RejectReason::MalformedJson),
        (b"{\"account\":\"\xff\"}".to_vec(), RejectReason::InvalidUtf8),
        (big.into_bytes(), RejectReason::TooLarge),
        (br#"{"account":"a","protocol":"imap","src_ip":"10.0.0.1","result":"failure"}"#.to_vec(), RejectReason::MissingField),
        (br#"{"ts":1793958121250,"protocol":"imap","src_ip":"10.0.0.1","result":"failure"}"#.to_vec(), RejectReason::MissingField),
        (br#"{"ts":1793958121250,"account":"a","src_ip":"10.0.0.1","result":"failure"}"#.to_vec(), RejectReason::MissingField),
        (br#"{"ts":1793958121250,"kind":"submission","account":"a","src_ip":"10.0.0.1","rcpt_count":3}"#.to_vec(), RejectReason::MissingField),
        (br#"{"ts":1793958121250,"account":5,"protocol":"imap","src_ip":"10.0.0.1","result":"failure"}"#.to_vec(), RejectReason::BadType),
        (br#"{"ts":17939581.5,"account":"a","protocol":"imap","src_ip":"10.0.0.1","result":"failure"}"#.to_vec(), RejectReason::BadType),
        (br#"{"ts":1793958121250,"kind":"login","account":"a","protocol":"imap","src_ip":"10.0.0.1","result":"failure"}"#.to_vec(), RejectReason::BadValue),
        (br#"{"ts":1793958121250,"kind":"submission","account":"a","src_ip":"10.0.0.1","mail_from":"a","rcpt_count":-1}"#.to_vec(), RejectReason::BadValue),
        (br#"{"ts":1793958121250,"account":"a","protocol":"imap","src_ip":"10.0.0.1","result":"failure","pwhash":"xyz"}"#.to_vec(), RejectReason::BadValue),
        (br#"{"ts":1793958121250,"ts":1793958121250,"account":"a","protocol":"imap","src_ip":"10.0.0.1","result":"failure"}"#.to_vec(), RejectReason::DuplicateField),
        (br#"{"ts":1793958121250,"account":"   ","protocol":"imap","src_ip":"10.0.0.1","result":"failure"}"#.to_vec(), RejectReason::BadAccount),
        (br#"{"ts":1793958121250,"account":"a\nb","protocol":"imap","src_ip":"10.0.0.1","result":"failure"}"#.to_vec(), RejectReason::BadAccount),
        (br#"{"ts":1793958121250,"account":"a","protocol":"imap","src_ip":"10.0.0.300","result":"failure"}"#.to_vec(), RejectReason::BadIp),
        (br#"{"ts":"yesterday","account":"a","protocol":"imap","src_ip":"10.0.0.1","result":"failure"}"#.to_vec(), RejectReason::BadTimestamp),
        (br#"{"ts":1793958121,"account":"a","protocol":"imap","src_ip":"10.0.0.1","result":"failure"}"#.to_vec(), RejectReason::BadTimestamp),
        (br#"{"ts":"2099-01-01T00:00:00Z","account":"a","protocol":"imap","src_ip":"10.0.0.1","result":"failure"}"#.to_vec(), RejectReason::BadTimestamp),
    ];
    let mut seen = std::collections::BTreeSet::new();
    for (line, want) in cases {
        let got = parse_event(&line, &limits()).expect_err("must be rejected");
        assert_eq!(
            got.reason,
            want,
            "{}",
            String::from_utf8_lossy(&line[..line.len().min(120)])
        );
        seen.insert(want);
    }
    assert_eq!(
        seen.len(),
        RejectReason::ALL.len(),
        "every reason is exercised"
    );
}

#[test]
fn a_reject_never_echoes_the_payload() {
    let e = parse(r#"{"ts":1793958121250,"account":"secret-user","protocol":"imap","src_ip":"hunter2","result":"failure"}"#)
        .unwrap_err();
    assert!(!e.detail.contains("hunter2") && !e.detail.contains("secret-user"));
    let e = parse(r#"{"ts":1793958121250,"account":{"password":"hunter2"}}"#).unwrap_err();
    assert_eq!(e.reason, RejectReason::BadType);
    assert!(!e.to_string().contains("hunter2"), "{e}");
}
