//! Faults mid-stream, on the real broker with durable storage (tansu on S3,
//! a local moto server that outlives the broker), with the real `credwatch
//! run` binary delivering webhooks to a real receiver:
//!
//! - the broker killed with `kill -9` and started again;
//! - credwatch killed with `kill -9` and started again;
//! - the webhook receiver down for a while, then back;
//! - a second instance joining while an incident is in progress, then
//!   leaving.
//!
//! After each, every action replay gives is on the actions topic and at the
//! receiver, nothing else is; a record that comes twice carries the same id
//! and the same body; and an impossible travel whose two logins straddle the
//! fault is still caught.

use credwatch_testkit::kafka;
use credwatch_testkit::receiver;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use credwatch::demo::sample::Line;
use serde_json::Value;

use credwatch_testkit::{ip, ok, World};
use kafka::*;
use receiver::*;

const PARTITIONS: i32 = 4;

/// One account per input partition whose incident straddles the fault, so
/// that whichever partitions a rebalance moves, one such incident moves
/// with them.
fn straddlers() -> Vec<String> {
    one_per_partition("straddle", "fault.example", PARTITIONS)
}

enum Fault {
    BrokerKill9,
    CredwatchKill9,
    ReceiverDown,
    InstanceJoinsThenLeaves,
}

/// The sample day with one impossible travel whose first login comes well
/// before `at` (the index where the fault strikes) and whose second comes
/// well after it. Returns the lines and the index.
fn day_with_a_straddling_incident() -> (Vec<Line>, usize) {
    let mut lines = sample_day(60);
    let at = lines.len() / 2;
    // Far enough from the fault that the first login is committed before
    // it (the commit interval is a second; 400 lines take 1.3 s).
    let before = lines[at - 400].ts + 1;
    let after = lines[at + 400].ts + 1;
    for (k, a) in straddlers().iter().enumerate() {
        lines.push(ok(before + k as i64, a, ip("London", 77)));
        lines.push(ok(after + k as i64, a, ip("Sydney", 77)));
    }
    lines.sort_by_key(|l| l.ts);
    (lines, at)
}

fn hook_toml(port: u16) -> String {
    format!(
        "[webhook]\nurls = [\"http://127.0.0.1:{port}/hooks/credwatch\"]\nsecret = \"{SECRET_A} {SECRET_B}\"\n\
         initial_backoff_ms = 200\nmax_backoff_secs = 2\ntimeout_secs = 5\n"
    )
}

/// One fault test at a time: each runs a durable broker, its S3, one or two
/// credwatch processes and a receiver at 300 events/s; four at once
/// overload a 2-core machine until webhook consumers starve (seen here with
/// the code before and after the issue-12 redesign alike), and one at a
/// time is faster in all.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn survive(fault: Fault) {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let mut b = Tansu::start_durable();
    let world = World::new();
    create_topics(&b, PARTITIONS);
    let brokers = b.brokers();
    let (lines, at) = day_with_a_straddling_incident();
    let want = replay_set(&credwatch_testkit::run(&world.engine(""), &lines));
    let straddling = |set: &Actions| {
        straddlers()
            .into_iter()
            .filter(|s| set.iter().any(|a| &a.1 == s && a.2 == "impossible_travel"))
            .count()
    };
    assert_eq!(
        straddling(&want),
        PARTITIONS as usize,
        "replay catches every straddling incident"
    );

    let mut rx = Receiver::start(world.dir.path(), "rx", &[], 0);
    let hooks = hook_toml(rx.port);
    let mut svc = Some(Binary::start_with(&world, &brokers, "first", &hooks, &[]));
    let first = svc.as_ref().expect("first");
    assert!(
        wait_until(Duration::from_secs(60), || first
            .log()
            .contains("State restored")),
        "credwatch did not join the group within 60 s:\n{}",
        first.log()
    );
    let mut joiner: Option<Binary> = None;
    let mut first_log = String::new();
    let mut joiner_log = String::new();
    let back_at = at + 600;

    let rate = 300;
    produce_paced_lingering(&brokers, &lines, rate, 100, |i, _| match fault {
        Fault::BrokerKill9 if i == at => {
            b.kill_9();
            std::thread::sleep(Duration::from_secs(3));
            b.restart();
        }
        Fault::CredwatchKill9 if i == at => {
            let first = svc.take().expect("first instance");
            first.signal("-KILL");
            first_log = first.log();
            drop(first);
            svc = Some(Binary::start_with(&world, &brokers, "second", &hooks, &[]));
        }
        Fault::ReceiverDown if i == at => rx.kill(),
        Fault::InstanceJoinsThenLeaves if i == at - 100 => {
            let j = Binary::start_with(&world, &brokers, "joiner", &hooks, &[]);
            j.wait_joined("the joiner");
            joiner = Some(j);
        }
        Fault::InstanceJoinsThenLeaves if i == back_at => {
            let j = joiner.take().expect("joiner");
            j.stop("the joiner");
            assert!(j.exited().is_some_and(|s| s.success()), "{}", j.log());
            joiner_log = j.log();
        }
        _ => {}
    });

    // Every action of replay on the topic (spray may differ by ordering
    // across partitions, as the README says).
    let deadline = Instant::now() + Duration::from_secs(180);
    let records = loop {
        let records = read_actions(&brokers);
        let set = action_set(&records);
        let missing = want
            .difference(&set)
            .filter(|a| a.2 != "password_spray")
            .count();
        if missing == 0 || Instant::now() > deadline {
            break records;
        }
        std::thread::sleep(Duration::from_secs(2));
    };
    if let Fault::ReceiverDown = fault {
        // Down until every action has been emitted and deliveries have met
        // the dead receiver (a slow webhook consumer may not have tried
        // yet when the last action is on the topic), then back.
        let tried = || {
            svc.as_ref()
                .is_some_and(|s| s.log().contains("Webhook request failed; retrying"))
        };
        wait_until(Duration::from_secs(180), tried);
        rx = Receiver::start(world.dir.path(), "rx", &[], rx.port);
    }
    let log = || {
        let svc_log = svc.as_ref().map(|s| s.log()).unwrap_or_default();
        let tail: Vec<&str> = svc_log.lines().rev().take(40).collect();
        tail.into_iter().rev().collect::<Vec<_>>().join("\n")
    };
    let set = action_set(&records);
    // The fault really struck.
    let svc_log = svc.as_ref().map(|s| s.log()).unwrap_or_default();
    match fault {
        Fault::BrokerKill9 => assert!(
            svc_log.contains("Kafka is unreachable"),
            "credwatch did not notice the broker going away:\n{svc_log}"
        ),
        Fault::CredwatchKill9 => {
            assert!(first_log.contains("State restored"), "{first_log}");
            assert!(
                restored_events(&svc_log) > 0,
                "the restarted instance rebuilt no state from what the killed one had committed:\n{svc_log}"
            );
        }
        Fault::ReceiverDown => assert!(
            svc_log.contains("Webhook request failed; retrying"),
            "no delivery met the dead receiver:\n{svc_log}"
        ),
        Fault::InstanceJoinsThenLeaves => {
            assert!(
                restored_events(&joiner_log) > 0,
                "the joiner took no partition over:\n{joiner_log}"
            );
            assert!(
                svc_log.matches("State restored").count() >= 2,
                "the first instance did not take the joiner's partitions back:\n{svc_log}"
            );
        }
    }

    assert_same_as_replay(&set, &want);
    assert_eq!(
        straddling(&set),
        PARTITIONS as usize,
        "every incident straddling the fault is caught\n{}",
        log()
    );

    // A record that comes twice is the same action: same id, same body
    // but for the emission time. Except password_spray's: what it says of
    // the moment (the count of accounts the source failed on, when it was
    // recognised, which event completed the finding, and the reason quoting
    // them) comes from failures on every partition, which a re-run after a
    // crash interleaves differently (the ordering limit in
    // docs/known-limits.md). Its decision must still be the same: the same
    // id, account, action, severity and incident.
    let mut bodies: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for r in &records {
        let mut v: Value = serde_json::from_str(&r.payload).expect("action JSON");
        let id = v["id"].as_str().unwrap_or_default().to_string();
        // `timestamp` is when it was emitted: a second emission has its own.
        v["timestamp"] = Value::Null;
        if v["data"]["detector"] == "password_spray" {
            let d = &v["data"];
            v = serde_json::json!({
                "id": v["id"],
                "type": v["type"],
                "account": d["account"],
                "action": d["action"],
                "severity": d["severity"],
                "incident": d["incident"],
                "source_ip": d["evidence"]["source_ip"],
            });
        }
        bodies.entry(id).or_default().insert(v.to_string());
    }
    for (id, b) in &bodies {
        assert_eq!(b.len(), 1, "records with id {id} differ: {b:?}");
    }

    // Every action at the receiver, verified, and nothing else.
    let ids: BTreeSet<String> = bodies.keys().cloned().collect();
    // Generous: after a broker or credwatch kill, the webhook consumer
    // rejoins its group only once the dead member's session has timed out.
    let arrived = wait_until(Duration::from_secs(300), || {
        delivered(&rx).keys().cloned().collect::<BTreeSet<_>>() == ids
    });
    let got: BTreeSet<String> = delivered(&rx).keys().cloned().collect();
    assert!(
        arrived,
        "delivered {} of {} actions; missing {:?}, extra {:?}\n{}",
        got.len(),
        ids.len(),
        ids.difference(&got).collect::<Vec<_>>(),
        got.difference(&ids).collect::<Vec<_>>(),
        log()
    );
    for q in rx.requests() {
        assert_eq!(q["verified"], serde_json::json!([true, true]), "{q}");
    }
    if let Some(s) = svc.take() {
        s.signal("-TERM");
        assert!(
            wait_until(Duration::from_secs(40), || s.exited().is_some()),
            "credwatch did not stop after SIGTERM"
        );
    }
}

/// The events rebuilt by restores, summed over a JSON log.
fn restored_events(log: &str) -> u64 {
    log.lines()
        .filter(|l| l.contains("State restored"))
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter_map(|v| v["events"].as_u64())
        .sum()
}

#[test]
fn broker_killed_with_sigkill_and_restarted_mid_stream() {
    survive(Fault::BrokerKill9);
}

#[test]
fn credwatch_killed_with_sigkill_and_restarted_mid_stream() {
    survive(Fault::CredwatchKill9);
}

#[test]
fn webhook_receiver_down_for_a_while_then_back() {
    survive(Fault::ReceiverDown);
}

#[test]
fn a_second_instance_joins_during_an_incident_then_leaves() {
    survive(Fault::InstanceJoinsThenLeaves);
}
