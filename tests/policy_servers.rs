//! The policy servers of `credwatch run` on a real Kafka-protocol broker
//! (tansu), spoken to as Dovecot and Postfix speak (tests/support's
//! `policy` clients): two instances in one group; logins reported to one
//! make a lock, whichever instance judges them; both then refuse the
//! account at Dovecot's `allow` and at Postfix's END-OF-MESSAGE; an
//! instance started after the lock refuses it too (the lock view reads the
//! actions topic from its start); an unlock event lets the owner back in
//! everywhere. Hostile requests get an error and a counter, never an
//! answer that lets them steer.
//!
//! The real daemons against these servers are in tests/enforcement.rs.

use std::time::{Duration, Instant};

use credwatch_testkit::kafka::{
    create_topics, produce_keyed, read, read_partitions, wait_until, Binary, Broker, Tansu,
    ACTIONS, INPUT,
};
use credwatch_testkit::policy::{Dovecot, Postfix};
use credwatch_testkit::{free_port, http_get, ip, metric, World};

const SECRET: &str = "policy-test-secret";

struct Instance {
    bin: Binary,
    dovecot: String,
    postfix: String,
}

fn instance(world: &World, brokers: &str, name: &str, postfix_extra: &str) -> Instance {
    let (d, p) = (free_port(), free_port());
    let dovecot = format!("127.0.0.1:{d}");
    let postfix = format!("127.0.0.1:{p}");
    let bin = Binary::start_with(
        world,
        brokers,
        name,
        &format!(
            "[dovecot_policy]\nlisten = {dovecot:?}\nsecret = {SECRET:?}\nmessage = \"Locked: call 0120-000-000\"\n\
             [postfix_policy]\nlisten = {postfix:?}\n{postfix_extra}\n"
        ),
        &[],
    );
    Instance {
        bin,
        dovecot,
        postfix,
    }
}

fn ready(i: &Instance) -> bool {
    let addr = i.bin.http_addr();
    wait_until(Duration::from_secs(60), || {
        http_get(&addr, "/readyz").0 == 200
    })
}

fn refused(i: &Instance, account: &str) -> bool {
    let mut d = Dovecot::connect(&i.dovecot, Some(SECRET));
    d.allow(account, "192.0.2.1", "imap").1["status"] == -1
}

#[test]
fn tansu_a_lock_is_refused_by_every_instance_until_it_is_unlocked() {
    let world = World::new();
    let broker = Tansu::start();
    create_topics(&broker, 4);
    let brokers = broker.brokers();
    let a = instance(&world, &brokers, "a", "");
    let b = instance(&world, &brokers, "b", "");
    assert!(ready(&a), "a not ready:\n{}", a.bin.log());
    assert!(ready(&b), "b not ready:\n{}", b.bin.log());

    // Nobody is locked yet.
    let mut d = Dovecot::connect(&a.dovecot, Some(SECRET));
    assert_eq!(
        d.allow("alice@example.jp", "192.0.2.1", "imap").1["status"],
        0
    );
    let mut pf = Postfix::connect(&b.postfix);
    assert_eq!(
        pf.ask(
            "END-OF-MESSAGE",
            "alice@example.jp",
            "alice@example.jp",
            "192.0.2.1"
        ),
        "action=DUNNO"
    );

    // alice logs in from London; her password is used from Changchun a
    // moment later: impossible travel, decided by whichever instance owns
    // her partition, from the reports sent to instance a.
    let london = ip("London", 1000).to_string();
    let changchun = ip("Changchun", 5).to_string();
    assert_eq!(
        d.report("Alice@Example.JP", &london, "imap", "0262", true)
            .0,
        200
    );
    let reported = Instant::now();
    assert_eq!(
        d.report("alice@example.jp", &changchun, "smtp", "0262", true)
            .0,
        200
    );
    assert!(
        wait_until(Duration::from_secs(30), || refused(&a, "alice@example.jp")
            && refused(&b, "alice@example.jp")),
        "alice is not refused by both instances\na:\n{}\nb:\n{}",
        a.bin.log(),
        b.bin.log()
    );
    eprintln!(
        "report to refusal by both instances: {} ms",
        reported.elapsed().as_millis()
    );
    let (_, answer) =
        Dovecot::connect(&b.dovecot, Some(SECRET)).allow("ALICE@example.jp", "192.0.2.9", "pop3");
    assert_eq!(answer["msg"], "Locked: call 0120-000-000", "{answer}");
    // A message of a session opened before the lock, on a connection
    // opened before it: refused at END-OF-MESSAGE, and at RCPT.
    let eom = pf.ask(
        "END-OF-MESSAGE",
        "alice@example.jp",
        "alice@example.jp",
        &changchun,
    );
    assert!(eom.starts_with("action=REJECT "), "{eom}");
    assert!(pf
        .ask("RCPT", "alice@example.jp", "x@example.jp", &changchun)
        .starts_with("action=REJECT"));
    // Others, and unauthenticated requests, are let through.
    assert_eq!(
        pf.ask(
            "END-OF-MESSAGE",
            "bob@example.jp",
            "bob@example.jp",
            &london
        ),
        "action=DUNNO"
    );
    assert_eq!(
        pf.ask("RCPT", "", "someone@remote.example", &london),
        "action=DUNNO"
    );
    assert_eq!(d.allow("bob@example.jp", &london, "imap").1["status"], 0);

    // The reports became the contract's events on the input topic, with
    // Dovecot's pwhash, keyed by the canonical account.
    let events = read_partitions(
        &brokers,
        INPUT,
        4,
        2,
        Duration::from_secs(10),
        Duration::from_millis(500),
    );
    let alice: Vec<serde_json::Value> = events
        .iter()
        .filter(|r| r.key == "alice@example.jp")
        .map(|r| serde_json::from_str(&r.payload).unwrap())
        .filter(|e: &serde_json::Value| e["kind"] == "auth")
        .collect();
    assert!(alice.len() >= 2, "{events:?}");
    let first = &alice[0];
    assert_eq!(first["kind"], "auth");
    assert_eq!(first["pwhash"], "0262");
    assert_eq!(first["src_ip"], london);

    // An instance started after the lock refuses it once ready.
    let c = instance(&world, &brokers, "c", "");
    assert!(ready(&c), "c not ready:\n{}", c.bin.log());
    assert!(refused(&c, "alice@example.jp"), "{}", c.bin.log());
    drop(c);

    // Support resets her password: the unlock lets her in everywhere.
    produce_keyed(
        &brokers,
        INPUT,
        &[(
            "alice@example.jp",
            &format!(
                r#"{{"ts":{},"kind":"unlock","account":"alice@example.jp","reason":"password reset"}}"#,
                credwatch::time::now_millis()
            ),
        )],
    );
    assert!(
        wait_until(Duration::from_secs(30), || !refused(&a, "alice@example.jp")
            && !refused(&b, "alice@example.jp")),
        "alice is still refused after the unlock\na:\n{}\nb:\n{}",
        a.bin.log(),
        b.bin.log()
    );
    assert_eq!(
        pf.ask(
            "END-OF-MESSAGE",
            "alice@example.jp",
            "alice@example.jp",
            &london
        ),
        "action=DUNNO"
    );
    let actions = read(
        &brokers,
        ACTIONS,
        2,
        Duration::from_secs(10),
        Duration::from_millis(500),
    );
    let types: Vec<String> = actions
        .iter()
        .filter(|r| r.key == "alice@example.jp")
        .map(|r| {
            let v: serde_json::Value = serde_json::from_str(&r.payload).unwrap();
            v["type"].as_str().unwrap().to_string()
        })
        .collect();
    assert_eq!(types, ["account.lock", "account.unlock"], "{actions:?}");
}

#[test]
fn tansu_hostile_policy_clients_get_errors_and_counters_not_answers() {
    let world = World::new();
    let broker = Tansu::start();
    create_topics(&broker, 1);
    let brokers = broker.brokers();
    let i = instance(&world, &brokers, "hostile", "request_timeout_secs = 1");
    assert!(ready(&i), "{}", i.bin.log());

    // No secret, or a wrong one: 401, no verdict.
    let mut anon = Dovecot::connect(&i.dovecot, None);
    let (code, _) = anon.allow("alice@example.jp", "192.0.2.1", "imap");
    assert_eq!(code, 401);
    let mut wrong = Dovecot::connect(&i.dovecot, Some("policy-test-secreT"));
    assert_eq!(wrong.allow("alice@example.jp", "192.0.2.1", "imap").0, 401);
    // Not JSON, the wrong shape, too large, an unknown command.
    let mut d = Dovecot::connect(&i.dovecot, Some(SECRET));
    assert_eq!(d.post("allow", b"{not json").0, 400);
    assert_eq!(d.post("allow", br#"{"login":{"nested":1}}"#).0, 400);
    assert_eq!(d.post("allow", &vec![b' '; 20_000]).0, 413);
    assert_eq!(d.post("drop", b"{}").0, 404);
    // The connection still answers properly afterwards.
    let mut d = Dovecot::connect(&i.dovecot, Some(SECRET));
    assert_eq!(
        d.allow("alice@example.jp", "192.0.2.1", "imap").1["status"],
        0
    );

    // Postfix's side: a line without `=`, and a request over the size
    // limit, close the connection without an answer (Postfix then retries
    // or takes its default_action); a good connection is unaffected.
    let mut good = Postfix::connect(&i.postfix);
    let mut bad = Postfix::connect(&i.postfix);
    assert_eq!(bad.send_raw(b"hello there\n\n"), None);
    let mut big = Postfix::connect(&i.postfix);
    let huge = format!(
        "request=smtpd_access_policy\nsender={}\n\n",
        "x".repeat(40_000)
    );
    assert_eq!(big.send_raw(huge.as_bytes()), None);
    assert_eq!(
        good.ask("RCPT", "", "a@remote.example", "192.0.2.1"),
        "action=DUNNO"
    );
    // A client that sends half a request and stalls is cut off (request
    // timeout 1 s here), and does not hold the server.
    let mut stall = Postfix::connect(&i.postfix);
    assert_eq!(
        stall.send_raw(b"request=smtpd_access_policy\nprotocol_state=RCPT\n"),
        None
    );

    let (_, text) = http_get(&i.bin.http_addr(), "/metrics");
    let m = |s: &str| metric(&text, s);
    assert_eq!(
        m(r#"credwatch_policy_errors_total{reason="unauthorized",server="dovecot"}"#),
        2.0,
        "{text}"
    );
    assert_eq!(
        m(r#"credwatch_policy_errors_total{reason="bad_request",server="dovecot"}"#),
        2.0
    );
    assert_eq!(
        m(r#"credwatch_policy_errors_total{reason="too_large",server="dovecot"}"#),
        1.0
    );
    assert_eq!(
        m(r#"credwatch_policy_errors_total{reason="not_found",server="dovecot"}"#),
        1.0
    );
    assert_eq!(
        m(r#"credwatch_policy_errors_total{reason="bad_request",server="postfix"}"#),
        1.0
    );
    assert_eq!(
        m(r#"credwatch_policy_errors_total{reason="too_large",server="postfix"}"#),
        1.0
    );
    assert_eq!(
        m(r#"credwatch_policy_errors_total{reason="timeout",server="postfix"}"#),
        1.0
    );
    assert!(
        m(r#"credwatch_policy_requests_total{protocol="imap",server="dovecot",verdict="allow"}"#)
            >= 1.0
    );
    assert!(!i.bin.log().contains(SECRET), "the secret is never logged");
}

#[test]
fn tansu_the_sender_check_the_bounces_and_the_tarpit_as_configured() {
    let world = World::new();
    let broker = Tansu::start();
    create_topics(&broker, 1);
    let brokers = broker.brokers();
    let aliases = world.dir.path().join("aliases");
    std::fs::write(&aliases, "bob@example.jp  sales@example.jp\n").unwrap();
    let (d, p, q) = (free_port(), free_port(), free_port());
    let bin = Binary::start_with(
        &world,
        &brokers,
        "checks",
        &format!(
            "[dovecot_policy]\nlisten = \"127.0.0.1:{d}\"\ntarpit_secs = 3\ntarpit_failures = 5\ntarpit_accounts = 3\n\
             [postfix_policy]\nlisten = \"127.0.0.1:{p}\"\nsender_check = \"enforce\"\nhosted_domains = [\"example.jp\"]\n\
             [detectors.sender_mismatch]\nalias_map = {:?}\n",
            aliases.display()
        ),
        &[],
    );
    let i = Instance {
        bin,
        dovecot: format!("127.0.0.1:{d}"),
        postfix: format!("127.0.0.1:{p}"),
    };
    assert!(ready(&i), "{}", i.bin.log());
    let mut pf = Postfix::connect(&i.postfix);
    let client = "192.0.2.7";
    // Enforced: bob may send as himself (any spelling) and as his alias,
    // not as carol.
    assert_eq!(
        pf.ask("RCPT", "bob@example.jp", "Bob+news@Example.JP", client),
        "action=DUNNO"
    );
    assert_eq!(
        pf.ask("RCPT", "bob@example.jp", "sales@example.jp", client),
        "action=DUNNO"
    );
    let carol = pf.ask("RCPT", "bob@example.jp", "carol@example.jp", client);
    assert!(carol.starts_with("action=REJECT 5.7.1"), "{carol}");
    // A null-sender recipient of a hosted domain, unauthenticated: a bounce.
    let bounce = Postfix::request_to("RCPT", "", "", "Dave@Example.JP", client, 0);
    assert_eq!(pf.send_raw(bounce.as_bytes()).unwrap(), "action=DUNNO");

    // A dry-run instance on the same broker lets carol through, and says so.
    let dry = Binary::start_with(
        &world,
        &brokers,
        "dry",
        &format!("[postfix_policy]\nlisten = \"127.0.0.1:{q}\"\nsender_check = \"dry_run\"\n"),
        &[],
    );
    let dry_http = dry.http_addr();
    assert!(wait_until(Duration::from_secs(60), || http_get(
        &dry_http, "/readyz"
    )
    .0 == 200));
    let mut pd = Postfix::connect(&format!("127.0.0.1:{q}"));
    assert_eq!(
        pd.ask("RCPT", "bob@example.jp", "carol@example.jp", client),
        "action=DUNNO"
    );
    let (_, text) = http_get(&dry_http, "/metrics");
    assert_eq!(
        metric(
            &text,
            r#"credwatch_policy_requests_total{protocol="smtp",server="postfix",verdict="would_refuse_sender"}"#
        ),
        1.0,
        "{text}"
    );

    // The tarpit: five failures on three accounts from one address.
    let mut dv = Dovecot::connect(&i.dovecot, None);
    let sprayer = "203.0.113.66";
    assert_eq!(dv.allow("x@example.jp", sprayer, "imap").1["status"], 0);
    for k in 0..5 {
        dv.report(
            &format!("u{}@example.jp", k % 3),
            sprayer,
            "imap",
            &format!("{k:04x}"),
            false,
        );
    }
    assert_eq!(
        dv.allow("x@example.jp", sprayer, "imap").1["status"],
        3,
        "held 3 s"
    );
    assert_eq!(
        dv.allow("x@example.jp", "203.0.113.67", "imap").1["status"],
        0,
        "another address is not"
    );

    // The events: the refused foreign sender is a submission (evidence for
    // sender_mismatch), the null-sender recipient a bounce, the failures
    // auth events with their hashes.
    let events = read(
        &brokers,
        INPUT,
        7,
        Duration::from_secs(10),
        Duration::from_millis(500),
    );
    let kinds = |k: &str| {
        events
            .iter()
            .filter(|r| serde_json::from_str::<serde_json::Value>(&r.payload).unwrap()["kind"] == k)
            .count()
    };
    assert_eq!(kinds("submission"), 2, "{events:?}");
    assert_eq!(kinds("bounce"), 1, "{events:?}");
    assert_eq!(kinds("auth"), 5, "{events:?}");
}
