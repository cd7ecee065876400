//! Durable state (`kafka.state_topic`) on the real broker with durable
//! storage (tansu on S3), with the real `credwatch run` binary: a fortnight
//! of history on four partitions, where the two-week `send_volume`
//! baseline decides the outcome (a weekly newsletter is normal; a real
//! surge locks), and messages stamped with their events' times, as a
//! shipper forwarding events as they happen would stamp them.
//!
//! - credwatch killed with `kill -9` on day 13 and started again;
//! - a second instance joining on day 10 and leaving on day 13, so that
//!   partitions move both ways;
//!
//! each gives exactly replay's actions. And the control: without durable
//! state, the same kill makes the newsletter of day 14 alert, because a
//! day of input (`kafka.restore_secs`) does not hold its baseline. That is
//! what makes the two tests above able to fail.

use std::collections::BTreeSet;
use std::time::Duration;

use credwatch::demo::sample::{submission, Line};
use credwatch_testkit::kafka::{self, *};
use credwatch_testkit::{fail, http_get, ip, metric, ok, World, T0};

const PARTITIONS: i32 = 4;
const MINUTE: i64 = 60_000;
const HOUR: i64 = 60 * MINUTE;
const DAY: i64 = 24 * HOUR;
/// Day 0 of the history: two weeks and a day before the sample clock.
const BASE: i64 = T0 - 15 * DAY;

/// One account named `{prefix}{k}@fort.example` per input partition.
fn one_per_partition(prefix: &str) -> Vec<String> {
    kafka::one_per_partition(prefix, "fort.example", PARTITIONS)
}

/// When the faults strike: day 13 at noon, and the joiner's day 10.
const KILL_AT: i64 = BASE + 13 * DAY + 12 * HOUR;
const JOIN_AT: i64 = BASE + 10 * DAY + 12 * HOUR;

/// Fifteen days: ordinary accounts logging in and sending a little every
/// day; newsletter accounts sending 600 recipients every Monday (days 0, 7
/// and 14); accounts that send a few a day and then 1,500 in one hour on
/// day 14; and an impossible travel per partition straddling the kill.
fn fortnight() -> Vec<Line> {
    let mut v = Vec::new();
    for day in 0..15 {
        let d = BASE + day * DAY;
        for i in 0..240u16 {
            let a = format!("user{i}@fort.example");
            let home = ip("Berlin", 10 + i);
            v.push(ok(d + 8 * HOUR + i64::from(i) * 1000, &a, home));
            if i % 3 == 0 {
                v.push(submission(
                    d + 9 * HOUR + i64::from(i) * 1000,
                    &a,
                    home,
                    &a,
                    Some(&a),
                    3,
                ));
            }
        }
        for (k, a) in one_per_partition("news").iter().enumerate() {
            let home = ip("Berlin", 500 + k as u16);
            v.push(ok(d + 7 * HOUR + k as i64, a, home));
            if day % 7 == 0 {
                for m in 0..4 {
                    v.push(submission(
                        d + 10 * HOUR + m * 10 * MINUTE + k as i64,
                        a,
                        home,
                        a,
                        Some(a),
                        150,
                    ));
                }
            }
        }
        for (k, a) in one_per_partition("surge").iter().enumerate() {
            let home = ip("Berlin", 600 + k as u16);
            v.push(ok(d + 7 * HOUR + 30 * MINUTE + k as i64, a, home));
            if day < 14 {
                v.push(submission(d + 11 * HOUR + k as i64, a, home, a, Some(a), 5));
            } else {
                for m in 0..6 {
                    v.push(submission(
                        d + 11 * HOUR + m * 8 * MINUTE + k as i64,
                        a,
                        home,
                        a,
                        Some(a),
                        250,
                    ));
                }
            }
        }
    }
    for (k, a) in one_per_partition("trav").iter().enumerate() {
        v.push(ok(KILL_AT - 20 * MINUTE + k as i64, a, ip("London", 77)));
        v.push(ok(KILL_AT + 40 * MINUTE + k as i64, a, ip("Sydney", 77)));
    }
    // A sprayer: one password on 20 accounts (on every partition) just
    // before the kill, then into one of them with it just after. Its
    // window is keyed by its address, which no partition's checkpoint
    // holds: the restore rebuilds it from the input before the checkpoint.
    let sprayer = ip("Changchun", 99);
    for j in 0..20 {
        let a = format!("sprayed{j}@fort.example");
        v.push(ok(BASE + 9 * HOUR + j, &a, ip("Berlin", 700 + j as u16)));
        v.push(fail(
            KILL_AT - 12 * MINUTE + j * 1000,
            &a,
            sprayer,
            Some("5e884898da28"),
        ));
    }
    v.push(ok(KILL_AT + 20 * MINUTE, "sprayed3@fort.example", sprayer));
    v.sort_by_key(|l| l.ts);
    v
}

/// (account, detector, action) of the newsletter accounts' actions.
fn newsletter(set: &Actions) -> BTreeSet<(String, String, String)> {
    set.iter()
        .filter(|a| a.1.starts_with("news"))
        .map(|a| (a.0.clone(), a.2.clone(), a.3.clone()))
        .collect()
}

enum Fault {
    Kill9,
    JoinThenLeave,
}

/// One at a time: each runs a durable broker, its S3 and one or two
/// credwatch processes (as the fault tests do).
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

const DURABLE: &str = "state_topic = \"credwatch.state\"\ncheckpoint_interval_secs = 1\n";

/// Plays the fortnight through `credwatch run` with `fault`; returns the
/// actions on the topic, replay's, and the last instance's log.
fn play(fault: Fault, kafka_keys: &str) -> (Actions, Actions, String) {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let mut b = Tansu::start_durable();
    let world = World::new();
    create_topics(&b, PARTITIONS);
    let brokers = b.brokers();
    let lines = fortnight();
    let want = replay_set(&credwatch_testkit::run(&world.engine(""), &lines));
    // DURABLE_DEBUG=1: the instances log at debug level, and the test
    // prints the newsletters' actions.
    let env: Vec<(&str, &str)> = match std::env::var("DURABLE_DEBUG") {
        Ok(_) => vec![("RUST_LOG", "credwatch=debug")],
        Err(_) => Vec::new(),
    };
    let mut svc = Some(Binary::start_keyed(
        &world, &brokers, "first", kafka_keys, "", &env,
    ));
    let first = svc.as_ref().expect("first");
    assert!(
        wait_until(Duration::from_secs(60), || first
            .log()
            .contains("State restored")),
        "credwatch did not join the group within 60 s:\n{}",
        first.log()
    );
    let kill = lines
        .iter()
        .position(|l| l.ts >= KILL_AT)
        .expect("kill point");
    let join = lines
        .iter()
        .position(|l| l.ts >= JOIN_AT)
        .expect("join point");
    let mut joiner: Option<Binary> = None;
    let mut logs = String::new();
    produce_paced_at(&brokers, &lines, 400, 50, true, |i, _| match fault {
        Fault::Kill9 if i == kill => {
            let first = svc.take().expect("first instance");
            // Strike when everything produced is judged and checkpointed,
            // so that the restart has only the durable state to go on.
            let addr = first.http_addr();
            let judged = || metric(&http_get(&addr, "/metrics").1, "credwatch_events_total");
            assert!(
                wait_until(Duration::from_secs(120), || judged() >= i as f64),
                "the first instance did not catch up before the kill"
            );
            std::thread::sleep(Duration::from_millis(2500));
            first.signal("-KILL");
            logs.push_str(&first.log());
            drop(first);
            svc = Some(Binary::start_keyed(
                &world, &brokers, "second", kafka_keys, "", &env,
            ));
        }
        Fault::JoinThenLeave if i == join => {
            let j = Binary::start_keyed(&world, &brokers, "joiner", kafka_keys, "", &[]);
            j.wait_joined("the joiner");
            joiner = Some(j);
        }
        Fault::JoinThenLeave if i == kill => {
            let j = joiner.take().expect("joiner");
            j.stop("the joiner");
            logs.push_str(&j.log());
        }
        _ => {}
    });
    // Until every action of replay is there, or a while after.
    let mut set = Actions::new();
    wait_until(Duration::from_secs(120), || {
        set = action_set(&read_actions(&brokers));
        want.is_subset(&set)
    });
    // Anything extra would come within moments of the last event.
    std::thread::sleep(Duration::from_secs(3));
    let records = read_actions(&brokers);
    set = action_set(&records);
    if std::env::var("DURABLE_DEBUG").is_ok() {
        for r in records.iter().filter(|r| r.key.starts_with("news")) {
            eprintln!("ACTION {}", r.payload);
        }
    }
    let s = svc.take().expect("instance");
    logs.push_str(&s.log());
    s.signal("-TERM");
    wait_until(Duration::from_secs(40), || s.exited().is_some());
    b.kill_9();
    (set, want, logs)
}

fn replay_is_as_planned(want: &Actions) {
    // Replay itself: the newsletters alert once, on day 0, when there is no
    // baseline yet; the surges lock; the travels lock.
    let news = newsletter(want);
    assert_eq!(news.len(), PARTITIONS as usize, "{news:?}");
    assert!(
        news.iter().all(|a| a.1 == "send_volume" && a.2 == "alert"),
        "{news:?}"
    );
    assert!(
        want.iter()
            .any(|a| a.1 == "sprayed3@fort.example" && a.2 == "password_spray" && a.3 == "lock"),
        "the sprayer's success is locked: {want:?}"
    );
    for prefix in ["surge", "trav"] {
        let locked = want
            .iter()
            .filter(|a| a.1.starts_with(prefix) && a.3 == "lock")
            .map(|a| a.1.clone())
            .collect::<BTreeSet<_>>();
        assert_eq!(locked.len(), PARTITIONS as usize, "{prefix}: {want:?}");
    }
}

#[test]
fn killed_with_sigkill_on_day_13_it_restores_two_weeks_from_durable_state() {
    let (got, want, log) = play(Fault::Kill9, DURABLE);
    replay_is_as_planned(&want);
    assert!(
        log.contains("Durable state read"),
        "the restarted instance did not restore from durable state:\n{log}"
    );
    // The restore read its state partitions back from their ends to the
    // chains, not from the beginning (the topic holds a fortnight of
    // superseded checkpoints, which tansu does not compact away).
    let reads: Vec<serde_json::Value> = log
        .lines()
        .filter(|l| l.contains("State partition read back"))
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .map(|v| {
            let mut v = v.clone();
            for k in ["message", "level", "target", "timestamp", "topic"] {
                v.as_object_mut().map(|o| o.remove(k));
            }
            v
        })
        .collect();
    assert!(!reads.is_empty(), "{}", restores(&log));
    eprintln!("state partitions read: {reads:?}");
    let skipped = |v: &serde_json::Value| v["from"].as_i64() > v["low"].as_i64();
    assert!(
        reads.iter().any(skipped),
        "every restore read its state partition from the beginning: {reads:?}"
    );
    if got != want {
        eprintln!("{}", restores(&log));
    }
    assert_same_as_replay(&got, &want);
}

/// The log lines about restores and durable state, for a failure.
fn restores(log: &str) -> String {
    log.lines()
        .filter(|l| {
            [
                "restore",
                "Durable",
                "durable",
                "Partitions",
                "state",
                "Checkpoint",
            ]
            .iter()
            .any(|w| l.contains(w))
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn partitions_moving_both_ways_keep_their_two_weeks() {
    let (got, want, log) = play(Fault::JoinThenLeave, DURABLE);
    replay_is_as_planned(&want);
    assert!(
        log.matches("Durable state read").count() >= 2,
        "partitions did not move with their durable state:\n{log}"
    );
    if got != want {
        eprintln!("{}", restores(&log));
    }
    assert_same_as_replay(&got, &want);
}

#[test]
fn without_durable_state_the_same_kill_forgets_the_baseline() {
    let (got, want, log) = play(Fault::Kill9, "");
    replay_is_as_planned(&want);
    // The input restore still rebuilds the last day before the committed
    // offset, measured in message time (the messages are stamped two weeks
    // ago: measured back from the wall clock, it restored nothing at all).
    let restored: u64 = log
        .lines()
        .filter(|l| l.contains("State restored"))
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| v["events"].as_u64())
        .sum();
    assert!(
        restored > 100,
        "the restart re-read {restored} events of the day before the kill:\n{}",
        restores(&log)
    );
    let extra: Vec<_> = got
        .difference(&want)
        .filter(|a| a.1.starts_with("news"))
        .collect();
    assert!(
        !extra.is_empty(),
        "a day of input should not hold a weekly baseline; the newsletter of day 14 should have alerted after the restart: {:?}",
        newsletter(&got)
    );
}
