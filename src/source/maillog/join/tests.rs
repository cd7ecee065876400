use super::*;

fn joiner(max: usize) -> Joiner {
    Joiner::new(&MaillogConfig {
        max_joins: max,
        hosted_domains: vec!["example.jp".into()],
        ..MaillogConfig::default()
    })
}

fn clock() -> Clock {
    MaillogConfig::default().clock(crate::time::parse_rfc3339("2026-12-02T00:00:00Z").unwrap())
}

fn feed_all(j: &mut Joiner, lines: &[&str]) -> Vec<LogEvent> {
    let clock = clock();
    let mut out = Vec::new();
    for (i, l) in lines.iter().enumerate() {
        j.feed(l, i as u64 + 1, &clock, &mut out);
    }
    out
}

const CLIENT: &str = "Dec 01 10:00:00 mail postfix/submission/smtpd[7]: 5741C9B84F8: client=unknown[203.0.113.9], sasl_method=PLAIN, sasl_username=bob@example.jp";
const HEADER: &str = "Dec 01 10:00:00 mail postfix/cleanup[8]: 5741C9B84F8: info: header From: <carol@example.jp> from unknown[203.0.113.9]; from=<carol@example.jp> to=<x@remote.example> proto=ESMTP helo=<c>";
const QMGR: &str = "Dec 01 10:00:01 mail postfix/qmgr[9]: 5741C9B84F8: from=<carol@example.jp>, size=415, nrcpt=7 (queue active)";

#[test]
fn a_submission_holds_its_lines_until_its_envelope_comes() {
    let mut j = joiner(100);
    let out = feed_all(&mut j, &[CLIENT, HEADER]);
    // The login is known at once; the message waits for qmgr.
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].fields.result, Some("success"));
    assert_eq!(j.oldest_held(), Some(1));
    let clock = clock();
    let mut out = Vec::new();
    j.feed(QMGR, 3, &clock, &mut out);
    assert_eq!(out.len(), 1);
    let f = &out[0].fields;
    assert_eq!(
        (f.kind, &*f.account, f.rcpt_count),
        ("submission", "bob@example.jp", Some(7))
    );
    assert_eq!(f.header_from.as_deref(), Some("<carol@example.jp>"));
    assert_eq!(out[0].lines, vec![1, 2, 3]);
    assert_eq!(j.oldest_held(), None, "nothing held once the event is made");
}

#[test]
fn lines_that_never_complete_are_dropped_and_counted_within_the_bounds() {
    // A flood of queue ids whose envelope never comes: at most
    // max_joins are held, the rest are dropped and counted.
    let mut j = joiner(50);
    let lines: Vec<String> = (0..1000)
        .map(|i| format!("Dec 01 10:00:00 mail postfix/smtpd[{i}]: A{i:09X}: client=unknown[203.0.113.9], sasl_method=PLAIN, sasl_username=u{i}@example.jp"))
        .collect();
    let refs: Vec<&str> = lines.iter().map(String::as_str).collect();
    feed_all(&mut j, &refs);
    assert!(j.holding() <= 50, "{}", j.holding());
    assert!(
        j.counts.skipped[&Skip::TooManyJoins] >= 900,
        "{:?}",
        j.counts.skipped
    );
    // An hour of log time later, the rest are incomplete, and no line
    // is held any more.
    let mut out = Vec::new();
    j.advance_to(j.now() + 3600 * 1000 + 1, &mut out);
    assert_eq!(j.oldest_held(), None);
    assert!(
        j.counts
            .skipped
            .get(&Skip::Incomplete)
            .copied()
            .unwrap_or(0)
            > 0
    );
}

#[test]
fn dovecots_auth_line_and_postfixs_warning_are_one_failure_with_the_hash() {
    let mut j = joiner(100);
    let out = feed_all(&mut j, &[
        "Dec 01 10:00:00 auth: Info: passwd-file(bob@example.jp,203.0.113.9): Password mismatch (SHA1 of given password: 3546d6)",
        "Dec 01 10:00:02 mail postfix/submission/smtpd[7]: warning: unknown[203.0.113.9]: SASL PLAIN authentication failed: (reason unavailable), sasl_username=bob@example.jp",
    ]);
    assert_eq!(out.len(), 1, "{out:?}");
    let f = &out[0].fields;
    assert_eq!(
        (f.result, f.protocol, f.pwhash.as_deref()),
        (Some("failure"), Some("smtp"), Some("3546d6"))
    );
    assert_eq!(j.oldest_held(), None);
    // Alone, each is a failure too (Postfix's without a hash; Dovecot's
    // once pair_secs pass).
    let mut j = joiner(100);
    let mut out = feed_all(&mut j, &["Dec 01 10:00:00 auth: Info: passwd-file(bob@example.jp,203.0.113.9): Password mismatch (SHA1 of given password: 3546d6)"]);
    assert!(out.is_empty());
    j.advance_to(j.now() + 61_000, &mut out);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].fields.pwhash.as_deref(), Some("3546d6"));
    // Postfix's warning first (the same second, its file given first):
    // still one failure.
    let mut j = joiner(100);
    let mut out = feed_all(&mut j, &[
        "Dec 01 10:00:00 mail postfix/submission/smtpd[7]: warning: unknown[203.0.113.9]: SASL PLAIN authentication failed: (reason unavailable), sasl_username=bob@example.jp",
        "Dec 01 10:00:00 auth: Info: passwd-file(bob@example.jp,203.0.113.9): Password mismatch (SHA1 of given password: 3546d6)",
    ]);
    j.advance_to(j.now() + 61_000, &mut out);
    assert_eq!(out.len(), 1, "{out:?}");
    assert_eq!(j.oldest_held(), None);
}

#[test]
fn a_disconnect_does_not_count_again_what_the_auth_lines_counted() {
    let mut j = joiner(100);
    let out = feed_all(&mut j, &[
        "Dec 01 10:00:00 auth: Info: passwd-file(erin@example.jp,198.51.100.7,<S1>): Password mismatch (SHA1 of given password: 000001)",
        "Dec 01 10:00:01 auth: Info: passwd-file(erin@example.jp,198.51.100.7,<S1>): Password mismatch (SHA1 of given password: 000002)",
        "Dec 01 10:00:03 imap-login: Info: Disconnected: Aborted login by logging out (auth failed, 3 attempts in 3 secs): user=<erin@example.jp>, method=PLAIN, rip=198.51.100.7, lip=10.0.0.1, session=<S1>",
    ]);
    // Three attempts: two with their hash, one more from the disconnect.
    assert_eq!(out.len(), 3, "{out:?}");
    assert!(out.iter().all(|e| e.fields.protocol == Some("imap")));
    assert_eq!(out.iter().filter(|e| e.fields.pwhash.is_some()).count(), 2);
    // Late disconnect: the auth lines went out at pair_secs; the
    // disconnect adds only what they did not count.
    let mut j = joiner(100);
    let mut out = feed_all(&mut j, &["Dec 01 10:00:00 auth: Info: passwd-file(erin@example.jp,198.51.100.7,<S2>): Password mismatch"]);
    j.advance_to(j.now() + 61_000, &mut out);
    assert_eq!(out.len(), 1);
    let clock = clock();
    j.feed("Dec 01 10:03:00 imap-login: Info: Disconnected: Inactivity (auth failed, 1 attempts in 180 secs): user=<erin@example.jp>, method=PLAIN, rip=198.51.100.7, lip=10.0.0.1, session=<S2>", 2, &clock, &mut out);
    assert_eq!(out.len(), 1, "counted once: {out:?}");
}

#[test]
fn a_login_that_queued_nothing_is_counted_as_without_a_user() {
    let mut j = joiner(100);
    let out = feed_all(&mut j, &[
        "Dec 01 10:00:00 mail postfix/submission/smtpd[7]: connect from unknown[203.0.113.9]",
        "Dec 01 10:00:05 mail postfix/submission/smtpd[7]: disconnect from unknown[203.0.113.9] ehlo=1 auth=1 quit=1 commands=3",
        "Dec 01 10:01:00 mail postfix/submission/smtpd[7]: connect from unknown[203.0.113.9]",
        CLIENT,
        "Dec 01 10:01:05 mail postfix/submission/smtpd[7]: disconnect from unknown[203.0.113.9] ehlo=1 auth=1 mail=1 rcpt=1 data=1 quit=1 commands=6",
    ]);
    assert_eq!(out.len(), 1, "the client= line's login: {out:?}");
    assert_eq!(j.counts.skipped[&Skip::NoUser], 1, "{:?}", j.counts);
}

#[test]
fn a_policy_refusal_is_no_failure() {
    let mut j = joiner(100);
    let out = feed_all(&mut j, &[
        "Dec 01 10:00:00 auth: Info: policy(carol@example.jp,127.0.0.1): Authentication failure due to policy server refusal: locked",
        "Dec 01 10:00:02 mail postfix/submission/smtpd[7]: warning: localhost[127.0.0.1]: SASL PLAIN authentication failed: locked, sasl_username=carol@example.jp",
        "Dec 01 10:00:04 auth: Info: policy(carol@example.jp,127.0.0.1,<S3>): Authentication failure due to policy server refusal: locked",
        "Dec 01 10:00:06 imap-login: Info: Disconnected: Aborted login by logging out (auth failed, 1 attempts in 2 secs): user=<carol@example.jp>, method=PLAIN, rip=127.0.0.1, lip=127.0.0.1, secured, session=<S3>",
    ]);
    assert!(out.is_empty(), "{out:?}");
    assert_eq!(j.counts.skipped[&Skip::PolicyRefusal], 4);
}

#[test]
fn a_header_cannot_fake_the_envelope_or_another_message() {
    // The From: header names another queue id and origin; the message's
    // own envelope still decides.
    let mut j = joiner(100);
    let out = feed_all(&mut j, &[
        CLIENT,
        "Dec 01 10:00:00 mail postfix/cleanup[8]: 5741C9B84F8: info: header From: x from y[1.1.1.1]; from=<a@b> 9999999999: from=<z@z>, size=1, nrcpt=900 from unknown[203.0.113.9]; from=<bob@example.jp> to=<x@remote.example> proto=ESMTP helo=<c>",
        "Dec 01 10:00:01 mail postfix/qmgr[9]: 5741C9B84F8: from=<bob@example.jp>, size=415, nrcpt=1 (queue active)",
    ]);
    let sub = out.iter().find(|e| e.fields.kind == "submission").unwrap();
    assert_eq!(sub.fields.rcpt_count, Some(1));
    assert_eq!(sub.fields.mail_from.as_deref(), Some("bob@example.jp"));
}

#[test]
fn bounces_count_only_for_hosted_mailboxes() {
    let mut j = joiner(100);
    let out = feed_all(&mut j, &[
        "Dec 01 10:00:00 mail postfix/smtpd[1]: AAAAA11111: client=mx.remote.example[198.51.100.25]",
        "Dec 01 10:00:00 mail postfix/qmgr[9]: AAAAA11111: from=<>, size=4096, nrcpt=1 (queue active)",
        "Dec 01 10:00:01 mail postfix/smtp[3]: AAAAA11111: to=<dave@example.jp>, relay=mx[10.0.0.5]:25, delay=0.1, delays=0/0/0/0, dsn=2.0.0, status=sent (250 ok)",
        "Dec 01 10:00:02 mail postfix/smtpd[1]: BBBBB22222: client=mx.remote.example[198.51.100.25]",
        "Dec 01 10:00:02 mail postfix/qmgr[9]: BBBBB22222: from=<>, size=4096, nrcpt=1 (queue active)",
        "Dec 01 10:00:03 mail postfix/smtp[3]: BBBBB22222: to=<someone@elsewhere.example>, relay=mx[10.0.0.6]:25, delay=0.1, delays=0/0/0/0, dsn=2.0.0, status=sent (250 ok)",
    ]);
    let bounces: Vec<_> = out.iter().filter(|e| e.fields.kind == "bounce").collect();
    assert_eq!(bounces.len(), 1);
    assert_eq!(bounces[0].fields.account, "dave@example.jp");
    assert_eq!(j.counts.skipped[&Skip::NotHosted], 1);
}
