//! `credwatch run` against Kafka-protocol brokers: the real `tansu` broker
//! (a process on loopback, as in production) and librdkafka's in-process
//! mock cluster (what `credwatch demo` uses).
//!
//! The same events must give the same actions as `replay`, with one
//! instance, with two in one group, and across a restart (state restored
//! from the partition, nothing acted on twice).

use credwatch_testkit::kafka;

use std::collections::BTreeSet;
use std::time::Duration;

use credwatch::demo::broker::EmbeddedBroker;
use credwatch::demo::sample::Line;
use credwatch::service::Service;

use credwatch_testkit::{http_get, ip, ok, World, MINUTE, T0};
use kafka::*;

const PARTITIONS: i32 = 4;

fn day() -> Vec<Line> {
    sample_day(150)
}

fn processed(services: &[&Service]) -> i64 {
    services.iter().map(|s| s.processed()).sum()
}

/// Every event judged, then every action read back.
fn run_one(b: &dyn Broker, world: &World, lines: &[Line], group: &str) -> Vec<Record> {
    let svc = start(settings(world, &b.brokers(), group, ""));
    produce(&b.brokers(), INPUT, lines);
    assert!(
        wait_until(Duration::from_secs(90), || processed(&[&svc])
            >= lines.len() as i64),
        "the service judged {} of {} events",
        processed(&[&svc]),
        lines.len()
    );
    svc.shutdown().expect("clean shutdown");
    read_actions(&b.brokers())
}

/// A world, the topics on `b`, the sample day, and replay's actions for it.
fn sample_day_on(b: &dyn Broker) -> (World, Vec<Line>, Actions) {
    let world = World::new();
    create_topics(b, PARTITIONS);
    let lines = day();
    let want = replay_set(&credwatch_testkit::run(&world.engine(""), &lines));
    (world, lines, want)
}

/// Two instances in one group, each owning partitions and ready.
fn start_pair(world: &World, b: &dyn Broker, group: &str, extra: &str) -> (Service, Service) {
    let one = start(settings(world, &b.brokers(), group, extra));
    let two = start(settings(world, &b.brokers(), group, extra));
    assert!(
        wait_until(Duration::from_secs(60), || one.partitions() > 0
            && two.partitions() > 0
            && one.ready()
            && two.ready()),
        "partitions not split: {} and {}",
        one.partitions(),
        two.partitions()
    );
    (one, two)
}

fn same_actions_as_replay(b: &dyn Broker) {
    let (world, lines, want) = sample_day_on(b);
    assert!(want.len() >= 10, "the sample day has attacks: {want:?}");
    let got = run_one(b, &world, &lines, "same-as-replay");
    let got_set = action_set(&got);
    assert_same_as_replay(&got_set, &want);
    assert_eq!(
        got.len(),
        got_set.len(),
        "a clean run emits each action once"
    );
}

#[test]
fn tansu_same_actions_as_replay() {
    same_actions_as_replay(&Tansu::start());
}

#[test]
fn embedded_same_actions_as_replay() {
    same_actions_as_replay(&EmbeddedBroker::start(1).expect("embedded broker"));
}

#[test]
fn tansu_two_instances_split_the_partitions() {
    let b = Tansu::start();
    let (world, lines, want) = sample_day_on(&b);
    let (one, two) = start_pair(&world, &b, "pair", "");
    assert!(
        wait_until(Duration::from_secs(60), || one.partitions()
            + two.partitions()
            == PARTITIONS as usize),
        "partitions not split: {} and {}",
        one.partitions(),
        two.partitions()
    );
    produce(&b.brokers(), INPUT, &lines);
    assert!(
        wait_until(Duration::from_secs(90), || processed(&[&one, &two])
            >= lines.len() as i64),
        "judged {} of {}",
        processed(&[&one, &two]),
        lines.len()
    );
    let (p1, p2) = (one.partitions(), two.partitions());
    one.shutdown().expect("shutdown");
    two.shutdown().expect("shutdown");
    let got = read_actions(&b.brokers());
    assert!(
        p1 > 0 && p2 > 0,
        "both instances had partitions: {p1} and {p2}"
    );
    // Every per-account detector agrees exactly. `password_spray` counts
    // the failures of one address over many accounts, and each instance
    // sees only its own partitions' accounts: split over two instances, a
    // spray of 15-20 accounts stays under the threshold on both. This is
    // a known limit of scaling out (README); it must never lock more.
    let got = action_set(&got);
    assert_same_except_spray(&got, &want);
    let spray = |s: &Actions| s.iter().filter(|a| a.2 == "password_spray").count();
    assert!(spray(&got) <= spray(&want));
}

/// Logins with an address: what the account stage forwards to the source stage.
fn forwarded(lines: &[Line]) -> i64 {
    let limits = credwatch::source::event::ParseLimits::new(65_536, T0 + 1000 * 3_600_000);
    lines
        .iter()
        .filter_map(|l| credwatch::source::event::parse_event(l.json.as_bytes(), &limits).ok())
        .filter(|e| e.kind == credwatch::source::event::Kind::Auth && e.src_ip.is_some())
        .count() as i64
}

/// Two instances of `group` with a source stage, `lines` produced, and
/// every event and forwarded login judged.
fn judged_with_a_source_stage(
    world: &World,
    b: &Tansu,
    group: &str,
    lines: &[Line],
) -> (Service, Service) {
    let extra = format!("sources_topic = {SOURCES:?}");
    let (one, two) = start_pair(world, b, group, &extra);
    produce(&b.brokers(), INPUT, lines);
    let logins = forwarded(lines);
    assert!(
        wait_until(Duration::from_secs(90), || processed(&[&one, &two])
            >= lines.len() as i64
            && one.sources_processed() + two.sources_processed() >= logins),
        "judged {} of {} events, {} of {} forwarded logins",
        processed(&[&one, &two]),
        lines.len(),
        one.sources_processed() + two.sources_processed(),
        logins
    );
    (one, two)
}

/// With `kafka.sources_topic`, `password_spray` is judged by a second stage
/// keyed by address: two instances together lock what replay locks, spray
/// included.
#[test]
fn tansu_two_instances_with_a_source_stage_give_replays_actions() {
    let b = Tansu::start();
    let (world, lines, want) = sample_day_on(&b);
    let (one, two) = judged_with_a_source_stage(&world, &b, "split", &lines);
    one.shutdown().expect("shutdown");
    two.shutdown().expect("shutdown");
    let got = read_actions(&b.brokers());
    assert_same_as_replay(&action_set(&got), &want);
}

/// The source stage spares an office address's everyday users from a
/// spray through it: the account stage forwards, with each login, since
/// when the account has used that network (a header the source stage
/// trusts on the sources topic only). The sprayer's victim, new to the
/// address, is locked.
#[test]
fn tansu_a_source_stage_spares_an_addresss_everyday_users() {
    let b = Tansu::start();
    let world = World::new();
    create_topics(&b, PARTITIONS);
    let office = ip("Berlin", 40);
    const DAY: i64 = 24 * 60 * MINUTE;
    let mut lines = Vec::new();
    for d in 0..3 {
        for i in 0..20 {
            lines.push(ok(
                T0 + d * DAY + i * 1000,
                &format!("staff{i}@example.de"),
                office,
            ));
        }
    }
    let day4 = T0 + 3 * DAY;
    for i in 0..15 {
        lines.push(credwatch_testkit::fail(
            day4 + i * 2 * MINUTE,
            &format!("guess{i}@example.de"),
            office,
            Some("5eed"),
        ));
    }
    for i in 0..20 {
        lines.push(ok(
            day4 + 40 * MINUTE + i * 1000,
            &format!("staff{i}@example.de"),
            office,
        ));
    }
    lines.push(ok(day4 + 45 * MINUTE, "victim@example.de", office));
    let (one, two) = judged_with_a_source_stage(&world, &b, "regulars", &lines);
    let mut locked: Vec<String> = Vec::new();
    wait_until(Duration::from_secs(20), || {
        locked = action_set(&read_actions(&b.brokers()))
            .into_iter()
            .filter(|a| a.3 == "lock")
            .map(|a| a.1)
            .collect();
        !locked.is_empty()
    });
    one.shutdown().expect("shutdown");
    two.shutdown().expect("shutdown");
    assert_eq!(locked, ["victim@example.de"]);
}

/// An incident that spans a restart: the London login is judged by the
/// first instance, the Changchun login 31 minutes later by the second.
/// Only a restored window connects them. The lock of an attack judged
/// before the restart is not emitted again.
fn restart_restores_state(b: &dyn Broker) {
    let world = World::new();
    create_topics(b, PARTITIONS);
    let london = ip("London", 7);
    let changchun = ip("Changchun", 9);
    let mut before: Vec<Line> = (0..5)
        .map(|i| ok(T0 + i * 10 * MINUTE, "victim@example.jp", london))
        .collect();
    // An attack locked before the restart.
    before.push(ok(T0, "early@example.jp", london));
    before.push(ok(T0 + 20 * MINUTE, "early@example.jp", changchun));
    let after = vec![ok(T0 + 71 * MINUTE, "victim@example.jp", changchun)];

    let first = start(settings(&world, &b.brokers(), "restart", ""));
    produce(&b.brokers(), INPUT, &before);
    assert!(
        wait_until(Duration::from_secs(60), || first.processed()
            >= before.len() as i64),
        "first instance judged {} of {}",
        first.processed(),
        before.len()
    );
    first.shutdown().expect("clean shutdown");

    produce(&b.brokers(), INPUT, &after);
    let second = start(settings(&world, &b.brokers(), "restart", ""));
    assert!(
        wait_until(Duration::from_secs(60), || second.processed()
            >= (before.len() + after.len()) as i64),
        "second instance judged up to {}",
        second.processed()
    );
    let restored = second.engine().accounts_tracked();
    second.shutdown().expect("clean shutdown");
    let got = read(
        &b.brokers(),
        ACTIONS,
        2,
        Duration::from_secs(20),
        Duration::from_secs(2),
    );
    let set = action_set(&got);
    let accounts: Vec<&str> = got
        .iter()
        .map(|r| {
            if r.payload.contains("victim@example.jp") {
                "victim"
            } else {
                "early"
            }
        })
        .collect();
    assert!(
        set.iter().any(|(_, a, d, act)| a == "victim@example.jp"
            && d == "impossible_travel"
            && act == "lock"),
        "the travel that spans the restart is caught (restored accounts: {restored}): {set:?}"
    );
    assert_eq!(
        accounts.iter().filter(|a| **a == "early").count(),
        1,
        "the lock acted on before the restart is not emitted again: {accounts:?}"
    );
    // And it is what replay gives on the same events.
    let mut all = before.clone();
    all.extend(after);
    assert_eq!(
        set,
        replay_set(&credwatch_testkit::run(&world.engine(""), &all))
    );
}

#[test]
fn tansu_restart_restores_state() {
    restart_restores_state(&Tansu::start());
}

#[test]
fn embedded_restart_restores_state() {
    restart_restores_state(&EmbeddedBroker::start(1).expect("embedded broker"));
}

/// Bad messages go to the dead-letter topic with their reason, are
/// counted, and the good ones around them are judged.
fn bad_messages_go_to_the_dead_letter_topic(b: &dyn Broker) {
    let world = World::new();
    create_topics(b, 1);
    let london = ip("London", 7);
    let good = ok(T0, "good@example.jp", london);
    let bad: Vec<&[u8]> = vec![
        b"not json",
        b"{\"ts\":1,\"account\":\"a\"}",
        b"{\"ts\":\"2026-11-05T00:00:00Z\",\"account\":\"a@b\",\"protocol\":\"imap\",\"result\":\"success\",\"src_ip\":\"999.1.1.1\"}",
        b"\xff\xfe",
        good.json.as_bytes(),
    ];
    let svc = start(settings(&world, &b.brokers(), "dlq", ""));
    produce_raw(&b.brokers(), INPUT, &bad);
    assert!(wait_until(Duration::from_secs(60), || svc.processed() >= 5));
    let tracked = svc.engine().accounts_tracked();
    svc.shutdown().expect("shutdown");
    let dead = read(
        &b.brokers(),
        DLQ,
        4,
        Duration::from_secs(20),
        Duration::from_secs(1),
    );
    let reasons: BTreeSet<String> = dead
        .iter()
        .filter_map(|r| {
            r.headers
                .iter()
                .find(|(k, _)| k == credwatch::sink::kafka::REASON_HEADER)
                .map(|(_, v)| v.clone())
        })
        .collect();
    assert_eq!(dead.len(), 4, "each bad message once: {dead:?}");
    assert_eq!(
        reasons,
        ["bad_ip", "bad_timestamp", "invalid_utf8", "malformed_json"]
            .into_iter()
            .map(String::from)
            .collect::<BTreeSet<_>>()
    );
    assert_eq!(
        dead[0].payload, "not json",
        "the dead letter carries the original bytes"
    );
    assert_eq!(tracked, 1, "the good event after the bad ones was judged");
}

#[test]
fn tansu_bad_messages_go_to_the_dead_letter_topic() {
    bad_messages_go_to_the_dead_letter_topic(&Tansu::start());
}

#[test]
fn embedded_bad_messages_go_to_the_dead_letter_topic() {
    bad_messages_go_to_the_dead_letter_topic(&EmbeddedBroker::start(1).expect("embedded broker"));
}

/// The binary as deployed: `credwatch run` serves /readyz and /metrics,
/// judges events, and on SIGTERM drains, commits and exits 0 in time.
#[test]
fn tansu_run_serves_health_and_stops_cleanly_on_sigterm() {
    let b = Tansu::start();
    let world = World::new();
    create_topics(&b, PARTITIONS);
    let child = Binary::start(&world, &b.brokers(), "sigterm", &[]);
    let log_text = || child.log();
    // The port is the one the service logs (it binds port 0: no race with
    // other tests for a free port).
    let addr = child.http_addr();
    assert!(
        wait_until(Duration::from_secs(30), || http_get(&addr, "/healthz").0
            == 200),
        "/healthz never answered:\n{}",
        log_text()
    );
    assert!(
        wait_until(Duration::from_secs(30), || http_get(&addr, "/readyz").0
            == 200),
        "/readyz never became ready: {:?}\n{}",
        http_get(&addr, "/readyz"),
        log_text()
    );
    let lines = day();
    produce(&b.brokers(), INPUT, &lines);
    assert!(
        wait_until(Duration::from_secs(60), || {
            // Ten or more locks counted by the binary itself.
            http_get(&addr, "/metrics")
                .1
                .lines()
                .find_map(|l| l.strip_prefix("credwatch_actions_emitted_total{action=\"lock\"} "))
                .and_then(|v| v.trim().parse::<u64>().ok())
                .is_some_and(|n| n >= 10)
        }),
        "no actions from the binary:\n{}",
        log_text()
    );
    let on_topic = read(
        &b.brokers(),
        ACTIONS,
        10,
        Duration::from_secs(20),
        Duration::ZERO,
    );
    assert!(
        on_topic.len() >= 10,
        "actions on the topic: {}",
        on_topic.len()
    );
    // Consumer lag comes with librdkafka's statistics, every 5 s.
    let mut metrics = String::new();
    wait_until(Duration::from_secs(15), || {
        metrics = http_get(&addr, "/metrics").1;
        metrics.contains("credwatch_consumer_lag_messages{")
    });
    for name in [
        "credwatch_events_total{kind=\"auth\",protocol=\"imap\",result=\"success\"}",
        "credwatch_events_rejected_total{reason=\"bad_ip\"} 0",
        "credwatch_detections_total{action=\"lock\",detector=\"impossible_travel\"}",
        "credwatch_event_decision_duration_seconds_bucket",
        "credwatch_accounts_tracked",
        "credwatch_breaker_open 0",
        "credwatch_consumer_lag_messages{partition=\"0\",topic=\"mail.events\"} 0",
    ] {
        assert!(metrics.contains(name), "/metrics lacks {name}");
    }
    let stopped_at = std::time::Instant::now();
    child.signal("-TERM");
    let status = loop {
        if let Some(s) = child.exited() {
            break s;
        }
        assert!(
            stopped_at.elapsed() < Duration::from_secs(30),
            "credwatch did not stop within 30 s of SIGTERM:\n{}",
            log_text()
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(
        status.success(),
        "exit status after SIGTERM: {status}\n{}",
        log_text()
    );
    assert!(log_text().contains("offsets committed, group left"));
}

/// `kill -9` mid-stream, before any commit: the next instance re-reads
/// everything, emits every action again with the same id, and nothing is
/// lost.
#[test]
fn tansu_kill_9_loses_nothing() {
    let b = Tansu::start();
    let (world, lines, want) = sample_day_on(&b);
    // No commit for a minute: the kill surely lands before the first one.
    let first = Binary::start(
        &world,
        &b.brokers(),
        "first",
        &[("CREDWATCH_KAFKA_COMMIT_INTERVAL_MS", "60000")],
    );
    produce(&b.brokers(), INPUT, &lines);
    // Wait for actions on the topic, not for "Action emitted." in the log:
    // the log line comes when an action is handed to the producer, and a
    // kill before librdkafka's next send loses it from the topic (the
    // uncommitted offset brings it back, but it would not come twice).
    let landed = read(
        &b.brokers(),
        ACTIONS,
        5,
        Duration::from_secs(60),
        Duration::ZERO,
    );
    assert!(
        landed.len() >= 5,
        "the first instance put {} actions on the topic in 60 s:\n{}",
        landed.len(),
        first.log()
    );
    first.signal("-KILL");
    drop(first);
    // What the first instance got out before it died.
    let before = read_actions(&b.brokers()).len();

    let second = Binary::start(&world, &b.brokers(), "second", &[]);
    let got = read(
        &b.brokers(),
        ACTIONS,
        before + want.len(),
        Duration::from_secs(90),
        Duration::from_secs(2),
    );
    let set = action_set(&got);
    assert_same_as_replay(&set, &want);
    assert!(
        got.len() >= before + want.len(),
        "the second instance re-read everything the first had not committed: \
         {} records, {} before the restart and {} actions in the day",
        got.len(),
        before,
        want.len()
    );
    assert!(
        got.len() > set.len(),
        "the crash left uncommitted work, so some actions come twice ({} records, {} ids)",
        got.len(),
        set.len()
    );
    second.signal("-TERM");
}

/// The broker goes away for a while: the service neither exits nor loses
/// anything; it says so once and carries on when the broker is back.
#[test]
fn embedded_broker_outage_is_survived() {
    let b = EmbeddedBroker::start(1).expect("embedded broker");
    let world = World::new();
    create_topics(&b, PARTITIONS);
    let lines = day();
    let (first, second) = lines.split_at(lines.len() / 2);
    let metrics = std::sync::Arc::new(credwatch::metrics::Metrics::new());
    init_logs();
    let svc = Service::start(
        settings(&world, &b.brokers(), "outage", ""),
        metrics.clone(),
    )
    .expect("start");
    produce(&b.brokers(), INPUT, first);
    assert!(wait_until(Duration::from_secs(60), || svc.processed()
        >= first.len() as i64));
    b.set_up(1, false).expect("broker down");
    assert!(
        wait_until(Duration::from_secs(20), || metrics.broker_up.get() == 0),
        "the outage is noticed (credwatch_kafka_up 0)"
    );
    std::thread::sleep(Duration::from_secs(3));
    assert!(
        !svc.stopped(),
        "the service keeps running while Kafka is away"
    );
    b.set_up(1, true).expect("broker up");
    produce(&b.brokers(), INPUT, second);
    assert!(
        wait_until(Duration::from_secs(90), || svc.processed()
            >= lines.len() as i64),
        "after the outage: judged {} of {}",
        svc.processed(),
        lines.len()
    );
    assert_eq!(metrics.broker_up.get(), 1, "the recovery is noticed");
    svc.shutdown().expect("clean shutdown");
    let got = read_actions(&b.brokers());
    let want = replay_set(&credwatch_testkit::run(&world.engine(""), &lines));
    assert_same_as_replay(&action_set(&got), &want);
}

/// Scale-out: a second instance joins after the first judged the day. The
/// partitions that move take their accounts' state with them: the first
/// instance drops it, the second rebuilds it from the partitions' past
/// before judging anything new.
#[test]
fn tansu_state_follows_partitions_on_scale_out() {
    let b = Tansu::start();
    let world = World::new();
    create_topics(&b, PARTITIONS);
    let lines = day();
    let one = start(settings(&world, &b.brokers(), "scale", ""));
    produce(&b.brokers(), INPUT, &lines);
    assert!(wait_until(Duration::from_secs(60), || one.processed()
        >= lines.len() as i64));
    // Let the first commit land.
    std::thread::sleep(Duration::from_millis(600));
    let before = one.engine().accounts_tracked();
    let two = start(settings(&world, &b.brokers(), "scale", ""));
    assert!(
        wait_until(Duration::from_secs(60), || one.partitions() > 0
            && two.partitions() > 0
            && one.partitions() + two.partitions() == PARTITIONS as usize
            && two.ready()),
        "no split: {} and {}",
        one.partitions(),
        two.partitions()
    );
    let (after_one, after_two) = (
        one.engine().accounts_tracked(),
        two.engine().accounts_tracked(),
    );
    assert!(
        after_one < before,
        "the first instance dropped the moved accounts: {before} -> {after_one}"
    );
    assert!(
        after_two > 0,
        "the second instance restored the moved accounts before any new event"
    );
    assert_eq!(
        two.processed(),
        0,
        "the revoke committed everything: the second instance judged nothing again as new"
    );
    one.shutdown().expect("shutdown");
    two.shutdown().expect("shutdown");
}

/// geoipupdate replaces the database files: credwatch reloads them without
/// a restart; a file that cannot be used is reported and the old
/// databases stay in use.
#[test]
fn embedded_geoip_files_are_reloaded_when_they_change() {
    let b = EmbeddedBroker::start(1).expect("embedded broker");
    let world = World::new();
    create_topics(&b, 1);
    let metrics = std::sync::Arc::new(credwatch::metrics::Metrics::new());
    init_logs();
    let mut s = settings(&world, &b.brokers(), "geo", "");
    s.config.geoip.reload_check_secs = 1;
    let svc = Service::start(s, metrics.clone()).expect("start");
    let reloads = |o: &str| metrics.geoip_reloads.with_label_values(&[o]).get();
    // A broken copy: refused, the old databases stay.
    std::thread::sleep(Duration::from_millis(1100));
    std::fs::write(&world.geo.city, b"not a MaxMind database").expect("write");
    assert!(
        wait_until(Duration::from_secs(10), || reloads("failed") == 1),
        "a broken database file is reported"
    );
    // A good one again: reloaded.
    std::thread::sleep(Duration::from_millis(1100));
    credwatch::demo::sample::write_geoip(world.dir.path()).expect("rewrite GeoIP");
    assert!(
        wait_until(Duration::from_secs(10), || reloads("ok") == 1),
        "a new database file is reloaded"
    );
    // And it is used: a travel is still caught.
    let london = ip("London", 7);
    let changchun = ip("Changchun", 9);
    produce(
        &b.brokers(),
        INPUT,
        &[
            ok(T0, "geo@example.jp", london),
            ok(T0 + 30 * MINUTE, "geo@example.jp", changchun),
        ],
    );
    assert!(wait_until(Duration::from_secs(30), || svc.processed() >= 2));
    assert!(!svc.stopped());
    svc.shutdown().expect("shutdown");
    let got = read(
        &b.brokers(),
        ACTIONS,
        1,
        Duration::from_secs(10),
        Duration::ZERO,
    );
    assert_eq!(
        action_set(&got).len(),
        1,
        "the travel is caught with the reloaded databases"
    );
}

/// The log stage commits only past lines held for an event to come: a
/// message whose `client=` line was read before a restart and whose
/// envelope came after it is still one submission, made by the second
/// instance from the line it read again.
#[test]
fn tansu_the_log_stage_keeps_a_held_line_across_a_restart() {
    let b = Tansu::start();
    let world = World::new();
    create_topics(&b, 1);
    b.create_topic("mail.logs", 1);
    let at = |secs: i64| {
        let t = credwatch::time::format_rfc3339(T0 + secs * 1000);
        format!("{}+00:00", t.trim_end_matches('Z'))
    };
    let client = format!("{} mail postfix/submission/smtpd[7]: 5741C9B84F8: client=unknown[81.2.69.142], sasl_method=PLAIN, sasl_username=bob@example.jp", at(0));
    let header = format!("{} mail postfix/cleanup[8]: 5741C9B84F8: info: header From: <bob@example.jp> from unknown[81.2.69.142]; from=<bob@example.jp> to=<x@remote.example> proto=ESMTP helo=<c>", at(0));
    let qmgr = format!("{} mail postfix/qmgr[9]: 5741C9B84F8: from=<bob@example.jp>, size=415, nrcpt=3 (queue active)", at(1));
    let cfg = || settings(&world, &b.brokers(), "logs", "log_topics = [\"mail.logs\"]");

    produce_keyed(&b.brokers(), "mail.logs", &[("mail", client.as_str())]);
    let first = start(cfg());
    assert!(
        wait_until(Duration::from_secs(60), || first.logs_processed() >= 1
            && first.processed() >= 1),
        "the first instance read {} line(s) and judged {} event(s)",
        first.logs_processed(),
        first.processed()
    );
    first.shutdown().expect("clean shutdown");

    produce_keyed(
        &b.brokers(),
        "mail.logs",
        &[("mail", header.as_str()), ("mail", qmgr.as_str())],
    );
    let second = start(cfg());
    assert!(
        wait_until(Duration::from_secs(60), || second.logs_processed() >= 3),
        "the second instance read up to {}",
        second.logs_processed()
    );
    let events = read(
        &b.brokers(),
        INPUT,
        3,
        Duration::from_secs(30),
        Duration::from_secs(2),
    );
    second.shutdown().expect("clean shutdown");
    let subs: Vec<_> = events
        .iter()
        .filter(|r| r.payload.contains("\"kind\":\"submission\""))
        .collect();
    assert_eq!(subs.len(), 1, "{events:#?}");
    assert!(subs[0].payload.contains("\"rcpt_count\":3") && subs[0].key == "bob@example.jp");
    // The login was forwarded before the restart and again after it (at
    // least once).
    assert!(
        events
            .iter()
            .filter(|r| r.payload.contains("\"result\":\"success\""))
            .count()
            >= 1
    );
}
