use super::*;

fn ip(s: &str) -> Option<IpAddr> {
    Some(s.parse().unwrap())
}

#[test]
fn a_login_with_every_element() {
    let f = parse("", "imap-login: Info: Login: user=<alice@example.jp>, method=PLAIN, rip=192.0.2.1, lip=192.0.2.2, mpid=18, TLS, session=<PeYcgjjOGOisEQAB>").unwrap();
    assert_eq!(
        f,
        Fact::Login {
            protocol: Protocol::Imap,
            user: "alice@example.jp",
            mechanism: Some("PLAIN"),
            rip: ip("192.0.2.1"),
            session: Some("PeYcgjjOGOisEQAB"),
        }
    );
    // submission-login is SMTP; syslog's Info lines have no level word.
    let f = parse(
        "dovecot",
        "submission-login: Login: user=<bob>, method=LOGIN, rip=::ffff:10.0.0.1, lip=10.0.0.2",
    )
    .unwrap();
    assert!(
        matches!(f, Fact::Login { protocol: Protocol::Smtp, user: "bob", rip, .. } if rip == ip("10.0.0.1"))
    );
    // No rip (a UNIX socket): read, without an address.
    let f = parse(
        "dovecot",
        "imap-login: Login: user=<carol smith, sales>, method=PLAIN, secured",
    )
    .unwrap();
    assert!(matches!(
        f,
        Fact::Login {
            user: "carol smith, sales",
            rip: None,
            ..
        }
    ));
}

#[test]
fn a_user_name_cannot_replace_the_real_address() {
    let f = parse("", "imap-login: Login: user=<x>, rip=9.9.9.9, session=<fake>, method=PLAIN, rip=203.0.113.5, lip=10.0.0.1, session=<real>").unwrap();
    assert!(
        matches!(f, Fact::Login { user: "x>, rip=9.9.9.9, session=<fake", rip, session: Some("real"), .. } if rip == ip("203.0.113.5")),
        "{f:?}"
    );
}

#[test]
fn failed_disconnects_count_their_attempts() {
    let cases = [
        ("imap-login: Disconnected (auth failed, 7 attempts in 111 secs): user=<thousands>, method=PLAIN, rip=109.201.200.201, lip=67.205.141.203, session=<+hgd5vxDBMZtycjJ>", 7, Some("thousands")),
        ("pop3-login: Info: Disconnected: Inactivity (auth failed, 1 attempts in 178 secs): user=<ivo>, method=PLAIN, rip=1.2.3.4, lip=1.1.2.2, session=<x>", 1, Some("ivo")),
        ("imap-login: Info: Login aborted: Connection closed (auth failed, 3 attempts in 16 secs) (auth_failed): user=<test>, method=PLAIN, rip=1.2.3.4, lip=0.0.0.0, TLS, session=<x>", 3, Some("test")),
        ("pop3-login: Aborted login (2 authentication attempts): user=<username>, method=PLAIN, rip=::ffff:1.2.3.4, lip=::ffff:1.2.3.5, secured", 2, Some("username")),
        ("imap-login: Disconnected (auth failed, 1 attempts): method=PLAIN, rip=59.167.242.100, lip=1.2.3.4", 1, None),
    ];
    for (line, n, user) in cases {
        match parse("dovecot", line).unwrap() {
            Fact::LoginFailed {
                attempts,
                user: u,
                rip,
                ..
            } => {
                assert_eq!((attempts, u), (n, user), "{line}");
                assert!(rip.is_some());
            }
            f => panic!("{line}: {f:?}"),
        }
    }
}

#[test]
fn disconnects_without_a_credential_check_are_not_failures() {
    assert_eq!(parse("", "imap-login: Disconnected: Connection closed (no auth attempts in 0 secs): user=<>, rip=127.0.0.1, lip=127.0.0.1, secured, session=<x>"), Err(Skip::NoAuthAttempt));
    assert_eq!(parse("", "imap-login: Disconnected (tried to use disallowed plaintext auth): user=<>, rip=1.2.3.4, lip=1.2.3.5"), Err(Skip::NotCredential));
    // Client-made text before the reason does not count.
    assert_eq!(parse("dovecot", "imap-login: Disconnected: a: (auth failed, 9 attempts): (tried to use disallowed test auth): user=<>, rip=192.0.2.111"), Err(Skip::NotCredential));
}

#[test]
fn auth_process_failures_with_and_without_a_session_and_a_hash() {
    let f = parse("", "auth: Info: passwd-file(alice@example.jp,127.0.0.1,<zvY2P5phcuV/AAAB>): Password mismatch (SHA1 of given password: 3546d6)").unwrap();
    assert_eq!(
        f,
        Fact::PassdbFailure {
            user: "alice@example.jp",
            ip: ip("127.0.0.1"),
            session: Some("zvY2P5phcuV/AAAB"),
            pwhash: Some("3546d6"),
        }
    );
    let f = parse("dovecot", "auth-worker(10377): conn unix:auth-worker (pid=919,uid=112): auth-worker<1>: sql(testing@example.com,192.168.1.1): unknown user (given password: Password123$)").unwrap();
    assert!(matches!(
        f,
        Fact::PassdbFailure {
            user: "testing@example.com",
            session: None,
            pwhash: None,
            ..
        }
    ));
    let f = parse("dovecot", "auth-worker(31326): pam(username,2001:db8::1): pam_authenticate() failed: Authentication failure (password mismatch?)").unwrap();
    assert!(
        matches!(f, Fact::PassdbFailure { user: "username", ip: i, .. } if i == ip("2001:db8::1"))
    );
    // 2.4: the identifier is the process.
    let f = parse("", "auth(info@example.com,192.0.2.110,sasl:login)<CvN+E95Uf4e7eEnj>: Info: sql: Password mismatch (given password: XxxxXXxx123)").unwrap();
    assert!(
        matches!(f, Fact::PassdbFailure { user: "info@example.com", ip: i, .. } if i == ip("192.0.2.110"))
    );
}

#[test]
fn a_password_cannot_fake_an_identifier() {
    // The first identifier followed by an exact message wins; the
    // plaintext password after it is not read.
    let f = parse("", "auth: passwd-file(bob,198.51.100.7): unknown user (given password: x): Password mismatch,9.9.9.9): unknown user)").unwrap();
    assert!(
        matches!(f, Fact::PassdbFailure { user: "bob", ip: i, .. } if i == ip("198.51.100.7")),
        "{f:?}"
    );
}

#[test]
fn policy_refusals() {
    let f = parse("", "auth: Info: policy(carol@example.jp,127.0.0.1,<vNKPyZlhNtR/AAAB>): Authentication failure due to policy server refusal: locked").unwrap();
    assert!(matches!(
        f,
        Fact::PolicyRefusal {
            user: "carol@example.jp",
            session: Some("vNKPyZlhNtR/AAAB"),
            ..
        }
    ));
    assert_eq!(parse("", "auth: Info: policy(carol@example.jp,127.0.0.1): Policy check action is drop connection"), Err(Skip::NotUsed));
}
