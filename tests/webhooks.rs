//! Lock webhooks against a real HTTP receiver on loopback that verifies
//! every request with an independent Standard Webhooks implementation
//! (PyPI `standardwebhooks`, in tests/webhook_receiver.py), with the
//! service on the real tansu broker.

use credwatch_testkit::kafka;
use credwatch_testkit::receiver;

use std::collections::{BTreeMap, BTreeSet};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use credwatch::demo::sample::Line;
use credwatch::metrics::Metrics;
use credwatch::service::Service;
use credwatch::sink::webhook::Webhooks;
use serde_json::Value;

use credwatch_testkit::{openssl, World};
use kafka::*;
use receiver::*;

fn url(port: u16) -> String {
    format!("http://127.0.0.1:{port}/hooks/credwatch")
}

fn day() -> Vec<Line> {
    sample_day(100)
}

fn hook_settings(world: &World, b: &Tansu, port: u16) -> credwatch::config::Settings {
    hooks_to(world, b, &[url(port)], "")
}

fn hooks_to(world: &World, b: &Tansu, urls: &[String], extra: &str) -> credwatch::config::Settings {
    settings(
        world,
        &b.brokers(),
        "hooks",
        &format!(
            "[webhook]\nurls = {urls:?}\nsecret = \"{SECRET_A} {SECRET_B}\"\ninitial_backoff_ms = 100\nmax_backoff_secs = 1\ntimeout_secs = 5\n{extra}"
        ),
    )
}

/// The service and its webhooks, on a runtime of their own.
struct Running {
    rt: tokio::runtime::Runtime,
    svc: Option<Service>,
    hooks: Option<Webhooks>,
    metrics: Arc<Metrics>,
}

impl Running {
    fn start(settings: credwatch::config::Settings) -> Running {
        init_logs();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let metrics = Arc::new(Metrics::new());
        let svc = Service::start(settings.clone(), metrics.clone()).expect("service");
        let hooks = rt
            .block_on(async {
                Webhooks::start(
                    &settings.config.webhook,
                    &settings.config.kafka,
                    metrics.clone(),
                )
            })
            .expect("webhooks")
            .expect("a URL is configured");
        Running {
            rt,
            svc: Some(svc),
            hooks: Some(hooks),
            metrics,
        }
    }

    fn processed(&self) -> i64 {
        self.svc.as_ref().map_or(0, |s| s.processed())
    }

    fn stop(mut self) {
        if let Some(s) = self.svc.take() {
            s.shutdown().expect("service shutdown");
        }
        if let Some(h) = self.hooks.take() {
            self.rt.block_on(h.shutdown());
        }
    }

    fn deliveries(&self, outcome: &str) -> u64 {
        self.metrics
            .webhook_deliveries
            .with_label_values(&[outcome])
            .get()
    }
}

/// Ids of the actions on the topic.
fn action_ids(b: &Tansu) -> BTreeSet<String> {
    read_actions(&b.brokers())
        .iter()
        .map(|r| {
            serde_json::from_str::<Value>(&r.payload).expect("action")["id"]
                .as_str()
                .unwrap_or_default()
                .to_string()
        })
        .collect()
}

fn judged_all(run: &Running, lines: &[Line]) {
    assert!(
        wait_until(Duration::from_secs(90), || run.processed()
            >= lines.len() as i64),
        "judged {} of {}",
        run.processed(),
        lines.len()
    );
}

/// A broker, a receiver started with `rx_args`, the service with its
/// webhooks to it, and the sample day judged; returns them with the ids
/// of the actions on the topic.
fn deliver_day(rx_args: &[&str]) -> (Tansu, World, Receiver, Running, BTreeSet<String>) {
    let b = Tansu::start();
    let world = World::new();
    create_topics(&b, 4);
    let rx = Receiver::start(world.dir.path(), "rx", rx_args, 0);
    let run = Running::start(hook_settings(&world, &b, rx.port));
    let lines = day();
    produce(&b.brokers(), INPUT, &lines);
    judged_all(&run, &lines);
    let ids = action_ids(&b);
    (b, world, rx, run, ids)
}

#[test]
fn every_action_arrives_and_verifies_with_both_secrets() {
    let (_b, _world, rx, run, ids) = deliver_day(&[]);
    assert!(ids.len() >= 10, "the day has actions: {}", ids.len());
    assert!(
        wait_until(Duration::from_secs(60), || delivered(&rx).len()
            >= ids.len()),
        "delivered {} of {}",
        delivered(&rx).len(),
        ids.len()
    );
    check_metrics(&String::from_utf8(run.metrics.render()).expect("utf-8"));
    run.stop();
    let reqs = rx.requests();
    for q in &reqs {
        assert_eq!(
            q["verified"],
            serde_json::json!([true, true]),
            "every request verifies with each of the two secrets: {q}"
        );
        assert_eq!(q["content_type"], "application/json");
        assert_eq!(q["id"], q["body_id"], "webhook-id is the action's id");
    }
    assert_eq!(
        delivered(&rx).keys().cloned().collect::<BTreeSet<_>>(),
        ids,
        "every action on the topic, and nothing else"
    );
}

#[test]
fn a_receiver_failing_for_a_while_gets_every_action_once() {
    let (_b, _world, rx, run, ids) = deliver_day(&["--fail-first", "25"]);
    assert!(
        wait_until(Duration::from_secs(90), || delivered(&rx).len()
            >= ids.len()),
        "delivered {} of {}",
        delivered(&rx).len(),
        ids.len()
    );
    let retried = run.deliveries("retried");
    run.stop();
    let got = delivered(&rx);
    assert_eq!(got.keys().cloned().collect::<BTreeSet<_>>(), ids);
    assert!(
        got.values().all(|&n| n == 1),
        "each id answered 2xx exactly once: {got:?}"
    );
    let fails = rx
        .requests()
        .iter()
        .filter(|q| q["answered"] == 500)
        .count();
    assert_eq!(fails, 25, "the first 25 requests failed");
    assert!(retried >= 25, "500s are retried: {retried}");
}

#[test]
fn a_400_is_not_retried_and_goes_to_the_dead_letter_topic() {
    let (b, _world, rx, run, ids) = deliver_day(&["--status", "400"]);
    assert!(
        wait_until(Duration::from_secs(60), || run.deliveries("failed")
            >= ids.len() as u64),
        "failed {} of {}",
        run.deliveries("failed"),
        ids.len()
    );
    // Time a retry would have come (back-off 100 ms).
    std::thread::sleep(Duration::from_secs(1));
    let retried = run.deliveries("retried");
    run.stop();
    let per_id: BTreeMap<String, usize> = rx.requests().iter().fold(BTreeMap::new(), |mut m, q| {
        *m.entry(q["id"].as_str().unwrap_or_default().to_string())
            .or_default() += 1;
        m
    });
    assert_eq!(per_id.keys().cloned().collect::<BTreeSet<_>>(), ids);
    assert!(
        per_id.values().all(|&n| n == 1),
        "a 400 is not retried: {per_id:?}"
    );
    assert_eq!(retried, 0);
    let dead = read(
        &b.brokers(),
        DLQ,
        ids.len(),
        Duration::from_secs(20),
        Duration::from_millis(500),
    );
    let copies = dead
        .iter()
        .filter(|r| {
            r.headers
                .iter()
                .any(|(k, v)| k == credwatch::sink::kafka::REASON_HEADER && v == "webhook_failed")
        })
        .count();
    assert_eq!(
        copies,
        ids.len(),
        "each refused action is on the dead-letter topic"
    );
}

#[test]
fn a_receiver_down_across_a_restart_still_gets_everything() {
    let b = Tansu::start();
    let world = World::new();
    create_topics(&b, 4);
    // A port with nobody listening on it.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let run = Running::start(hook_settings(&world, &b, port));
    let lines = day();
    produce(&b.brokers(), INPUT, &lines);
    judged_all(&run, &lines);
    assert!(
        wait_until(Duration::from_secs(30), || run.deliveries("retried") > 0),
        "deliveries are being retried while the receiver is down"
    );
    run.stop();
    // The receiver comes up; credwatch starts again.
    let rx = Receiver::start(world.dir.path(), "rx", &[], port);
    let again = Running::start(hook_settings(&world, &b, port));
    let ids = action_ids(&b);
    assert!(
        wait_until(Duration::from_secs(90), || delivered(&rx).len()
            >= ids.len()),
        "after the restart: delivered {} of {}",
        delivered(&rx).len(),
        ids.len()
    );
    again.stop();
    assert_eq!(delivered(&rx).keys().cloned().collect::<BTreeSet<_>>(), ids);
}

/// Every contract §4 metric with exactly its labels, values that moved,
/// and nothing `promtool check metrics` (Debian package prometheus)
/// complains about.
fn check_metrics(text: &str) {
    let contract: &[(&str, &[&str])] = &[
        ("credwatch_events_total", &["kind", "protocol", "result"]),
        ("credwatch_events_rejected_total", &["reason"]),
        ("credwatch_detections_total", &["action", "detector"]),
        ("credwatch_actions_emitted_total", &["action"]),
        ("credwatch_webhook_deliveries_total", &["outcome"]),
        (
            "credwatch_webhook_delivery_duration_seconds_bucket",
            &["le"],
        ),
        ("credwatch_event_decision_duration_seconds_bucket", &["le"]),
        ("credwatch_accounts_tracked", &[]),
        ("credwatch_breaker_open", &[]),
    ];
    for (name, labels) in contract {
        let series: Vec<&str> = text
            .lines()
            .filter(|l| !l.starts_with('#'))
            .filter(|l| l.split(['{', ' ']).next() == Some(*name))
            .collect();
        assert!(!series.is_empty(), "/metrics lacks {name}");
        for l in &series {
            let got: BTreeSet<&str> = match l.split_once('{') {
                Some((_, rest)) => rest
                    .split('}')
                    .next()
                    .unwrap_or("")
                    .split(',')
                    .filter_map(|kv| kv.split_once('=').map(|(k, _)| k))
                    .collect(),
                None => BTreeSet::new(),
            };
            let want: BTreeSet<&str> = labels.iter().copied().collect();
            assert_eq!(got, want, "labels of {l}");
        }
    }
    let value = |series: &str| -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(series).and_then(|v| v.trim().parse().ok()))
            .unwrap_or_else(|| panic!("no {series}"))
    };
    assert!(value("credwatch_webhook_deliveries_total{outcome=\"delivered\"}") > 0.0);
    assert!(value("credwatch_webhook_delivery_duration_seconds_count") > 0.0);
    assert!(value("credwatch_event_decision_duration_seconds_count") > 0.0);
    assert!(value("credwatch_actions_emitted_total{action=\"lock\"}") > 0.0);
    assert!(value("credwatch_accounts_tracked") > 0.0);
    // No label value is an account, an address or a URL.
    for l in text.lines().filter(|l| !l.starts_with('#')) {
        assert!(
            !l.contains('@') && !l.contains("127.0.0.1") && !l.contains("http"),
            "{l}"
        );
    }
    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (Debian package prometheus; tests/run installs it)");
    use std::io::Write;
    promtool
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("write");
    let out = promtool.wait_with_output().expect("promtool");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && said.trim().is_empty(),
        "promtool check metrics: {said}"
    );
}

/// Two endpoints, one dead: the live one gets everything at once, while
/// the dead one's deliveries wait and retry on their own.
#[test]
fn a_dead_endpoint_does_not_hold_up_a_live_one() {
    let b = Tansu::start();
    let world = World::new();
    create_topics(&b, 4);
    let rx = Receiver::start(world.dir.path(), "rx", &[], 0);
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let run = Running::start(hooks_to(&world, &b, &[url(dead), url(rx.port)], ""));
    let lines = day();
    produce(&b.brokers(), INPUT, &lines);
    judged_all(&run, &lines);
    let ids = action_ids(&b);
    assert!(
        wait_until(Duration::from_secs(30), || delivered(&rx).len()
            >= ids.len()),
        "the live endpoint got {} of {} while the other is dead",
        delivered(&rx).len(),
        ids.len()
    );
    assert!(
        run.deliveries("retried") > 0,
        "the dead endpoint is retried"
    );
    // The lag says which endpoint is behind, and by how much.
    let lag = |e: &str| run.metrics.webhook_lag.with_label_values(&[e]).get();
    assert!(
        wait_until(Duration::from_secs(10), || lag("1") == 0
            && lag("0") == ids.len() as i64),
        "lag: dead endpoint {} (want {}), live endpoint {} (want 0)",
        lag("0"),
        ids.len(),
        lag("1")
    );
    run.stop();
    assert_eq!(delivered(&rx).keys().cloned().collect::<BTreeSet<_>>(), ids);
}

/// HTTPS to a receiver whose certificate comes from a private CA, trusted
/// through `webhook.ca_file` (rustls).
#[test]
fn https_with_a_configured_ca() {
    let b = Tansu::start();
    let world = World::new();
    create_topics(&b, 4);
    let d = world.dir.path();
    openssl(
        d,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "1",
            "-subj",
            "/CN=credwatch test CA",
        ],
    );
    openssl(
        d,
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "leaf.key",
            "-out",
            "leaf.csr",
            "-subj",
            "/CN=127.0.0.1",
        ],
    );
    std::fs::write(
        d.join("ext"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n",
    )
    .expect("ext");
    openssl(
        d,
        &[
            "x509",
            "-req",
            "-in",
            "leaf.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "leaf.pem",
            "-days",
            "1",
            "-extfile",
            "ext",
        ],
    );
    let cert = d.join("leaf.pem").display().to_string();
    let key = d.join("leaf.key").display().to_string();
    let rx = Receiver::start(d, "rx", &["--cert", &cert, "--key", &key], 0);
    let https = format!("https://127.0.0.1:{}/hooks/credwatch", rx.port);
    let ca = format!("ca_file = {:?}\n", d.join("ca.pem").display().to_string());
    let run = Running::start(hooks_to(&world, &b, &[https], &ca));
    let lines = day();
    produce(&b.brokers(), INPUT, &lines);
    judged_all(&run, &lines);
    let ids = action_ids(&b);
    assert!(
        wait_until(Duration::from_secs(60), || delivered(&rx).len()
            >= ids.len()),
        "delivered over HTTPS {} of {}",
        delivered(&rx).len(),
        ids.len()
    );
    run.stop();
    assert!(rx
        .requests()
        .iter()
        .all(|q| q["verified"] == serde_json::json!([true, true])));
}

#[test]
fn an_action_older_than_the_retry_horizon_is_dead_lettered_not_skipped() {
    // The endpoint's reader was behind by more than the retry horizon (a
    // receiver down for days, a new endpoint added to an old topic): the
    // action is not tried, but it is counted, logged and dead-lettered,
    // never silently skipped.
    let b = Tansu::start();
    let world = World::new();
    create_topics(&b, 2);
    let old: Vec<String> = (0..3)
        .map(|i| {
            format!(
                r#"{{"type":"account.lock","id":"cw_old{i:013}","timestamp":"2026-11-05T00:00:00.000Z","data":{{"account":"a{i}@example.net"}}}}"#
            )
        })
        .collect();
    let payloads: Vec<&[u8]> = old.iter().map(|s| s.as_bytes()).collect();
    produce_raw(&b.brokers(), ACTIONS, &payloads);
    std::thread::sleep(Duration::from_secs(3));
    let rx = Receiver::start(world.dir.path(), "rx", &[], 0);
    let settings = hooks_to(&world, &b, &[url(rx.port)], "retry_horizon_secs = 1\n");
    init_logs();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let metrics = Arc::new(Metrics::new());
    let hooks = rt
        .block_on(async {
            Webhooks::start(
                &settings.config.webhook,
                &settings.config.kafka,
                metrics.clone(),
            )
        })
        .expect("webhooks")
        .expect("a URL is configured");
    let failed = || {
        metrics
            .webhook_deliveries
            .with_label_values(&["failed"])
            .get()
    };
    assert!(
        wait_until(Duration::from_secs(60), || failed() >= 3),
        "failed {}",
        failed()
    );
    rt.block_on(hooks.shutdown());
    assert!(rx.requests().is_empty(), "too old to try");
    let dead = read(
        &b.brokers(),
        DLQ,
        3,
        Duration::from_secs(20),
        Duration::from_millis(500),
    );
    let expired = dead
        .iter()
        .filter(|r| {
            r.headers.iter().any(|(k, v)| {
                k == credwatch::sink::kafka::DETAIL_HEADER && v.contains("retry_horizon_secs")
            })
        })
        .count();
    assert_eq!(expired, 3, "{dead:?}");
}
