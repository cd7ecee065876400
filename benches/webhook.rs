//! `cargo bench --bench webhook`: event-to-webhook latency at a steady
//! rate, everything real and local: the tansu broker, the service, the
//! webhook delivery (its own consumer group on the actions topic) and an
//! HTTP receiver on loopback.
//!
//! Events are produced at CREDWATCH_BENCH_WEBHOOK_RATE events/s (default
//! 20000) for CREDWATCH_BENCH_WEBHOOK_SECS (default 10); one event in 200
//! completes an impossible travel of its own account and causes a lock.
//! Latency: from handing that event to the producer to the receiver
//! getting the webhook for its account.

use credwatch_testkit::kafka;

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use credwatch::demo::sample::Line;
use credwatch::metrics::Metrics;
use credwatch::service::Service;
use credwatch::sink::webhook::Webhooks;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;

use credwatch_testkit::{ip, ok, World, MINUTE, T0};
use kafka::*;

static DECIDED: Mutex<Vec<i64>> = Mutex::new(Vec::new());

type Sent = Arc<Mutex<HashMap<String, Instant>>>;
type Got = Arc<Mutex<Vec<Duration>>>;

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

async fn receiver(sent: Sent, got: Got) -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let (sent, got) = (sent.clone(), got.clone());
            tokio::spawn(async move {
                let svc = service_fn(move |req: Request<hyper::body::Incoming>| {
                    let (sent, got) = (sent.clone(), got.clone());
                    async move {
                        let body = req.into_body().collect().await.map(|b| b.to_bytes());
                        if let Ok(body) = body {
                            let v: serde_json::Value =
                                serde_json::from_slice(&body).unwrap_or_default();
                            let account = v["data"]["account"].as_str().unwrap_or("");
                            if let Some(t) = sent.lock().unwrap().get(account) {
                                got.lock().unwrap().push(t.elapsed());
                            }
                            if let Some(d) = v["timestamp"]
                                .as_str()
                                .and_then(credwatch::time::parse_rfc3339)
                            {
                                let ms = credwatch::time::now_millis() - d;
                                DECIDED.lock().unwrap().push(ms);
                            }
                        }
                        Ok::<_, Infallible>(Response::new(Full::new(Bytes::new())))
                    }
                });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    port
}

fn pct(v: &[Duration], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[i].as_secs_f64() * 1e3
}

fn main() {
    let rate = env("CREDWATCH_BENCH_WEBHOOK_RATE", 20_000);
    let secs = env("CREDWATCH_BENCH_WEBHOOK_SECS", 10);
    // CREDWATCH_BENCH_BROKER=embedded: librdkafka's in-process mock
    // cluster instead of tansu (to tell the broker's share of the latency).
    let broker: Box<dyn Broker> = match std::env::var("CREDWATCH_BENCH_BROKER").as_deref() {
        Ok("embedded") => {
            Box::new(credwatch::demo::broker::EmbeddedBroker::start(1).expect("embedded broker"))
        }
        _ => Box::new(Tansu::start()),
    };
    let brokers = broker.brokers();
    let world = World::new();
    create_topics(broker.as_ref(), 4);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let sent: Sent = Arc::default();
    let got: Got = Arc::default();
    let port = rt.block_on(receiver(sent.clone(), got.clone()));
    let mut settings = settings(
        &world,
        &brokers,
        "bench-hooks",
        &format!(
            "[webhook]\nurls = [\"http://127.0.0.1:{port}/hook\"]\nsecret = \"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\"\n"
        ),
    );
    // How long a fetch may wait at the broker for new data. Kafka answers a
    // waiting fetch as soon as data arrives; librdkafka's mock cluster (and
    // tansu) hold it for the whole wait, which then becomes latency.
    let fetch_wait = env("CREDWATCH_BENCH_FETCH_WAIT_MS", 10);
    settings
        .config
        .kafka
        .properties
        .insert("fetch.wait.max.ms".into(), fetch_wait.to_string());
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
        .expect("url");
    let deadline = Instant::now() + Duration::from_secs(60);
    while !svc.ready() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    // Let the webhook group join too.
    std::thread::sleep(Duration::from_secs(4));

    let london = ip("London", 3);
    let changchun = ip("Changchun", 5);
    let total = rate * secs;
    // Ordinary accounts log in from home; every 200th event is the second,
    // impossible login of a fresh account whose first came 100 events earlier.
    let lines: Vec<Line> = (0..total)
        .map(|i| {
            let ts = T0 + (i as i64) * 10;
            if i % 200 == 100 {
                let a = format!("hook{}@example.jp", i / 200);
                ok(ts, &a, london)
            } else if i % 200 == 0 && i > 0 {
                let a = format!("hook{}@example.jp", i / 200 - 1);
                ok(ts + 30 * MINUTE, &a, changchun)
            } else {
                let a = format!("user{}@example.jp", i % 5000);
                ok(ts, &a, london)
            }
        })
        .collect();
    let produced_in = produce_paced(&brokers, &lines, rate, |i, account| {
        if i % 200 == 0 && i > 0 {
            sent.lock()
                .unwrap()
                .insert(account.to_string(), Instant::now());
        }
    });
    let want = sent.lock().unwrap().len();
    let deadline = Instant::now() + Duration::from_secs(60);
    while got.lock().unwrap().len() < want && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut lat = got.lock().unwrap().clone();
    lat.sort();
    let mean =
        |h: &prometheus::Histogram| h.get_sample_sum() / h.get_sample_count().max(1) as f64 * 1e3;
    let (lag_ms, decision_ms, ack_ms, request_ms) = (
        mean(&metrics.event_lag),
        mean(&metrics.decision_duration),
        mean(&metrics.action_ack_duration),
        mean(&metrics.webhook_duration),
    );
    svc.shutdown().expect("shutdown");
    rt.block_on(hooks.shutdown());

    let kind = if std::env::var("CREDWATCH_BENCH_BROKER").as_deref() == Ok("embedded") {
        "embedded (librdkafka mock)"
    } else {
        "tansu"
    };
    println!(
        "credwatch event -> webhook latency ({kind} broker, fetch.wait.max.ms = {fetch_wait}, receiver on loopback, 2 cores)"
    );
    println!();
    println!("| measure | value |");
    println!("|---|---|");
    println!(
        "| offered rate | {rate} events/s for {secs} s (achieved {:.0} events/s) |",
        total as f64 / produced_in
    );
    println!(
        "| webhooks received / locks caused | {} / {want} |",
        lat.len()
    );
    println!(
        "| event produced -> webhook received, p50 / p99 / max (goal p99 <= 50 ms) | {:.1} ms / {:.1} ms / {:.1} ms |",
        pct(&lat, 0.5),
        pct(&lat, 0.99),
        pct(&lat, 1.0)
    );
    let mut d = DECIDED.lock().unwrap().clone();
    d.sort();
    if !d.is_empty() {
        println!(
            "| decision (action timestamp) -> webhook received, p50 / p99 | {} ms / {} ms |",
            d[d.len() / 2],
            d[(d.len() - 1) * 99 / 100]
        );
    }
    println!(
        "| means: message timestamp -> decision / receipt -> decision / receipt -> action acknowledged / webhook request | {lag_ms:.2} ms / {decision_ms:.2} ms / {ack_ms:.2} ms / {request_ms:.2} ms |"
    );
}
