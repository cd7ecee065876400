//! Enforcement at the door, with the real daemons: Debian's Dovecot and
//! Postfix on loopback (tests/support's `mailstack`) configured with
//! credwatch as their policy servers, exactly as docs/enforcement.md tells
//! an operator (Dovecot's `auth_policy_server_url` with a secret, Postfix's
//! `check_policy_service` at RCPT and END-OF-MESSAGE, both failing open),
//! and `credwatch run` on a real Kafka-protocol broker (tansu).
//!
//! The story: bob reads his mail; the phisher logs in over SMTP AUTH with
//! bob's password and sends as three other customers of the platform;
//! credwatch locks bob from the daemons' own policy requests; the next
//! message on the phisher's open session is refused, and so are the next
//! SMTP AUTH and IMAP login; alice is not touched; support unlocks bob and
//! he reads his mail again. Then credwatch is frozen, and killed: mail
//! still flows (fail open), at the cost the README states.

use std::time::{Duration, Instant};

use credwatch_testkit::kafka::{
    create_topics, produce_keyed, wait_until, Binary, Broker, Tansu, INPUT,
};
use credwatch_testkit::mailstack::{MailStack, PolicyHooks};
use credwatch_testkit::policy::Dovecot;
use credwatch_testkit::{free_port, http_get, ip, metric, World};

const SECRET: &str = "enforcement-secret";
const LOCKED: &str = "Locked for your protection: call support";

#[test]
fn real_daemons_refuse_a_locked_account_and_fail_open_without_credwatch() {
    let world = World::new();
    let broker = Tansu::start();
    create_topics(&broker, 2);
    let brokers = broker.brokers();
    let (dp, pp) = (free_port(), free_port());
    let cw = Binary::start_with(
        &world,
        &brokers,
        "enforcing",
        &format!(
            "[dovecot_policy]\nlisten = \"127.0.0.1:{dp}\"\nsecret = {SECRET:?}\nmessage = {LOCKED:?}\n\
             [postfix_policy]\nlisten = \"127.0.0.1:{pp}\"\nlock_message = {LOCKED:?}\n"
        ),
        &[],
    );
    let http = cw.http_addr();
    assert!(
        wait_until(Duration::from_secs(60), || http_get(&http, "/readyz").0
            == 200),
        "credwatch not ready:\n{}",
        cw.log()
    );
    let stack = MailStack::start_with(Some(PolicyHooks {
        dovecot_url: format!("http://credwatch:{SECRET}@127.0.0.1:{dp}/"),
        postfix: format!("inet:127.0.0.1:{pp}"),
    }));
    let home = ip("Tokyo", 11);
    let phisher = ip("Tokyo", 200);
    let locked = || {
        Dovecot::connect(&format!("127.0.0.1:{dp}"), Some(SECRET))
            .allow("bob@example.jp", "192.0.2.1", "imap")
            .1["status"]
            == -1
    };

    // bob reads his mail; alice too.
    assert!(stack.imap_login(home, "bob@example.jp", &["bob-pw"]));
    assert!(stack.imap_login(ip("Osaka", 3), "alice@example.jp", &["alice-pw"]));

    // The phisher's session, opened before any lock: three messages as
    // other customers go out.
    let mut session = stack
        .smtp_open(phisher, "bob@example.jp", "bob-pw")
        .expect("the phisher's SMTP AUTH, before the lock");
    for who in ["carol", "dave", "frank"] {
        session
            .send(
                &format!("{who}@example.jp"),
                &format!("\"{who}\" <{who}@example.jp>"),
                &["victim@remote.example"],
            )
            .unwrap_or_else(|e| panic!("message as {who} refused before the lock: {e}"));
    }
    assert!(
        wait_until(Duration::from_secs(30), locked),
        "credwatch did not lock bob from the daemons' requests:\n{}",
        cw.log()
    );

    // The next message on that same session: refused at RCPT.
    let refused = session
        .send(
            "erin@example.jp",
            "\"Erin\" <erin@example.jp>",
            &["victim2@remote.example"],
        )
        .expect_err("a message of the open session after the lock");
    assert!(
        refused.starts_with("554") && refused.contains(LOCKED),
        "{refused}"
    );
    session.quit();
    // The next SMTP AUTH, and the next IMAP login, with the right password.
    let auth = stack
        .smtp_open(phisher, "bob@example.jp", "bob-pw")
        .err()
        .expect("SMTP AUTH of a locked account");
    assert!(auth.starts_with("535") && auth.contains(LOCKED), "{auth}");
    assert!(!stack.imap_login(phisher, "bob@example.jp", &["bob-pw"]));
    assert!(!stack.imap_login(home, "bob@example.jp", &["bob-pw"]));
    // Nobody else is touched.
    assert!(stack.imap_login(ip("Osaka", 3), "alice@example.jp", &["alice-pw"]));
    stack
        .smtp_session(
            ip("Osaka", 3),
            "alice@example.jp",
            "alice-pw",
            &[(
                "alice@example.jp",
                "<alice@example.jp>",
                &["pal@remote.example"],
            )],
        )
        .expect("alice sends");

    // Support resets bob's password: the unlock lets him in again.
    produce_keyed(
        &brokers,
        INPUT,
        &[(
            "bob@example.jp",
            &format!(
                r#"{{"ts":{},"kind":"unlock","account":"bob@example.jp","reason":"password reset"}}"#,
                credwatch::time::now_millis()
            ),
        )],
    );
    assert!(
        wait_until(Duration::from_secs(30), || !locked()),
        "bob is still refused after the unlock:\n{}",
        cw.log()
    );
    assert!(stack.imap_login(home, "bob@example.jp", &["bob-pw"]));

    let (_, text) = http_get(&http, "/metrics");
    let m = |s: &str| metric(&text, s);
    assert!(
        m(r#"credwatch_policy_requests_total{protocol="imap",server="dovecot",verdict="refuse"}"#)
            >= 2.0,
        "{text}"
    );
    assert!(
        m(r#"credwatch_policy_requests_total{protocol="smtp",server="dovecot",verdict="refuse"}"#)
            >= 1.0
    );
    assert!(
        m(r#"credwatch_policy_requests_total{protocol="smtp",server="postfix",verdict="refuse"}"#)
            >= 1.0
    );
    assert!(m(r#"credwatch_policy_events_total{outcome="sent",server="postfix"}"#) >= 4.0);

    // Fail open. Frozen first (the port still accepts, nothing answers):
    // every login and message waits for the daemons' timeouts.
    cw.signal("-STOP");
    let t = Instant::now();
    assert!(stack.imap_login(home, "alice@example.jp", &["alice-pw"]));
    let frozen_login = t.elapsed();
    let t = Instant::now();
    stack
        .smtp_session(
            home,
            "alice@example.jp",
            "alice-pw",
            &[(
                "alice@example.jp",
                "<alice@example.jp>",
                &["pal@remote.example"],
            )],
        )
        .expect("alice sends while credwatch is frozen");
    let frozen_send = t.elapsed();
    cw.signal("-CONT");
    // Then killed (the port refuses at once).
    cw.signal("-KILL");
    let t = Instant::now();
    assert!(stack.imap_login(home, "bob@example.jp", &["bob-pw"]));
    let dead_login = t.elapsed();
    let t = Instant::now();
    stack
        .smtp_session(
            home,
            "bob@example.jp",
            "bob-pw",
            &[(
                "bob@example.jp",
                "<bob@example.jp>",
                &["pal@remote.example"],
            )],
        )
        .expect("bob sends while credwatch is down");
    let dead_send = t.elapsed();
    eprintln!(
        "fail open: frozen credwatch: IMAP login {frozen_login:?}, AUTH and one message {frozen_send:?}; \
         killed credwatch: IMAP login {dead_login:?}, AUTH and one message {dead_send:?}"
    );
    assert!(
        stack.wait_queue_empty(Duration::from_secs(30)),
        "the messages sent without credwatch were delivered"
    );
}
