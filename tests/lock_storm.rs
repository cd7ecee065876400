//! A lock storm: a bad GeoIP update suddenly puts every address on another
//! continent, so every account's next login looks like impossible travel.
//! The breaker opens after `policy.breaker.min_locks` locks, further locks
//! are sent as alerts (`downgraded_by: "breaker"`), the breaker metric says
//! so, and the shipped alert `CredwatchBreakerOpen` fires in a real
//! Prometheus evaluating deploy/prometheus/credwatch.rules.yml.

use credwatch_testkit::kafka;
use credwatch_testkit::prometheus;

use std::path::Path;
use std::time::Duration;

use credwatch::demo::broker::EmbeddedBroker;
use credwatch::demo::sample::Line;
use serde_json::Value;

use credwatch_testkit::{http_get, ip, metric, ok, World, MINUTE, SECOND, T0};
use kafka::*;
use prometheus::Prometheus;

const ACCOUNTS: usize = 400;
const MIN_LOCKS: usize = 20;

/// Everyone's login, `offset` after T0, from host `host + k` of their home
/// network.
fn logins(offset: i64, host: u16) -> Vec<Line> {
    let homes = ["London", "Paris", "Berlin", "Manchester"];
    (0..ACCOUNTS)
        .map(|k| {
            ok(
                T0 + offset + k as i64 * SECOND,
                &format!("user{k}@example.net"),
                ip(homes[k % homes.len()], k as u16 + host),
            )
        })
        .collect()
}

#[test]
fn a_bad_geoip_update_opens_the_breaker_and_the_alert_fires() {
    let b = EmbeddedBroker::start(1).expect("embedded broker");
    let world = World::new();
    create_topics(&b, 2);
    let brokers = b.bootstrap_servers();
    let min_locks = MIN_LOCKS.to_string();
    let run = Binary::start(
        &world,
        &brokers,
        "storm",
        &[
            ("CREDWATCH_GEOIP_RELOAD_CHECK_SECS", "1"),
            ("CREDWATCH_POLICY_BREAKER_MIN_LOCKS", &min_locks),
        ],
    );
    let addr = run.http_addr();
    let metrics = || http_get(&addr, "/metrics").1;

    // A real Prometheus with the shipped rules, scraping credwatch.
    let dir = world.dir.path();
    let prom = Prometheus::start(
        dir,
        &addr,
        Some(&Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/prometheus/credwatch.rules.yml")),
    );

    // Yesterday and a normal morning: everyone logs in from home. (The
    // breaker counts locks of established accounts only: customers who
    // logged in at least a day before, as a bad update's victims are.)
    produce(&brokers, INPUT, &logins(-24 * 60 * MINUTE, 5_000));
    produce(&brokers, INPUT, &logins(0, 10));
    assert!(
        wait_until(Duration::from_secs(60), || metric(
            &metrics(),
            "credwatch_events_total{"
        ) >= 2.0 * ACCOUNTS as f64),
        "the morning was not judged:\n{}",
        run.log()
    );

    // The bad update: every network now "in Sydney".
    std::thread::sleep(Duration::from_millis(1100));
    credwatch::demo::sample::write_geoip_all_in(dir, "Sydney").expect("write GeoIP");
    assert!(
        wait_until(Duration::from_secs(20), || metric(
            &metrics(),
            "credwatch_geoip_reloads_total{outcome=\"ok\"}"
        ) >= 1.0),
        "the new database was not loaded:\n{}",
        run.log()
    );

    // Half an hour later everyone logs in again from their home networks,
    // on new addresses (the same address is the same place and is not
    // looked up again; carriers and DHCP hand out new ones all day).
    produce(&brokers, INPUT, &logins(30 * MINUTE, 2_000));
    assert!(
        wait_until(Duration::from_secs(60), || metric(
            &metrics(),
            "credwatch_events_total{"
        ) >= 3.0 * ACCOUNTS as f64),
        "the storm was not judged:\n{}",
        run.log()
    );

    let actions: Vec<Value> = read(
        &brokers,
        ACTIONS,
        ACCOUNTS,
        Duration::from_secs(30),
        Duration::from_secs(1),
    )
    .iter()
    .map(|r| serde_json::from_str(&r.payload).expect("action"))
    .collect();
    let locks = actions
        .iter()
        .filter(|a| a["type"] == "account.lock")
        .count();
    let held = actions
        .iter()
        .filter(|a| a["type"] == "account.alert" && a["data"]["downgraded_by"] == "breaker")
        .count();
    eprintln!("storm: {locks} locks, {held} held back as alerts by the breaker");
    assert!(
        (1..=MIN_LOCKS + 2).contains(&locks),
        "{locks} locks: the breaker should stop them at about {MIN_LOCKS}"
    );
    assert!(
        held >= ACCOUNTS - MIN_LOCKS - 2,
        "alerts go on: {held} findings sent as alerts while the breaker is open"
    );
    assert_eq!(
        metric(&metrics(), "credwatch_breaker_open "),
        1.0,
        "credwatch_breaker_open"
    );

    // The shipped alert fires (it is `for: 1m`).
    let firing = wait_until(Duration::from_secs(150), || {
        prom.has_data("ALERTS{alertname=\"CredwatchBreakerOpen\",alertstate=\"firing\"}")
    });
    assert!(firing, "CredwatchBreakerOpen did not fire in Prometheus");
    run.signal("-TERM");
}
