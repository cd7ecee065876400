//! `credwatch demo`: the whole service on one machine with nothing
//! installed. An embedded Kafka-protocol broker (librdkafka's mock
//! cluster), a generated GeoIP database, a compressed day of a mail
//! platform produced to the input topic, the real service consuming it,
//! and a timeline of what it caught, read back from the actions topic.
//!
//! Also what `credwatch generate` and the tests build worlds with: the
//! embedded broker ([`broker`]) and the generated days and GeoIP databases
//! ([`sample`]). Compiled with the `demo` feature (on by default).

pub mod broker;
mod door;
mod maillog;
mod report;
pub mod sample;
mod timeline;
mod verify;
pub mod world;

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use rdkafka::producer::{BaseRecord, Producer, ThreadedProducer};
use rdkafka::ClientConfig;

use crate::config::{Config, Settings};
use crate::http::Endpoint;
use crate::metrics::Metrics;
use crate::time::{format_rfc3339, Millis, HOUR};
use broker::EmbeddedBroker;
use sample::{DayParams, Expected, Line};
use timeline::{Seen, Timeline};

pub struct DemoOptions {
    /// Keep playing days until Ctrl-C.
    pub follow: bool,
    /// Where `/metrics` is served.
    pub listen: String,
    /// Wall-clock seconds one day of events takes.
    pub seconds: f64,
    pub accounts: usize,
    pub seed: u64,
    /// Play the day as Dovecot's and Postfix's log lines on a log topic
    /// (`kafka.log_topics`) instead of JSON events.
    pub maillog: bool,
    /// Where the report of the day is written at the end.
    pub report: std::path::PathBuf,
}

const INPUT: &str = "mail.events";
const LOGS: &str = "mail.logs";
const ACTIONS: &str = "credwatch.actions";
const DLQ: &str = "credwatch.dlq";

/// Runs the demo; returns false if an attack of the seed was not locked.
pub fn demo(o: DemoOptions, out: &mut dyn Write) -> anyhow::Result<bool> {
    // The report is written at the end: a path that cannot be is said now.
    std::fs::File::create(&o.report)
        .with_context(|| format!("cannot create the report file {}", o.report.display()))?;
    let dir = std::env::temp_dir().join(format!("credwatch-demo-{}", std::process::id()));
    let geo = sample::write_geoip(&dir).with_context(|| {
        format!(
            "cannot write the demo's GeoIP databases into {}",
            dir.display()
        )
    })?;
    let result = run(&o, &dir, &geo, out);
    let _ = std::fs::remove_dir_all(&dir);
    result
}

fn run(
    o: &DemoOptions,
    _dir: &std::path::Path,
    geo: &sample::GeoFiles,
    out: &mut dyn Write,
) -> anyhow::Result<bool> {
    let broker = EmbeddedBroker::start(1)?;
    broker.create_topic(INPUT, 4)?;
    broker.create_topic(ACTIONS, 1)?;
    broker.create_topic(DLQ, 1)?;
    if o.maillog {
        broker.create_topic(LOGS, 1)?;
    }

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let metrics = Arc::new(Metrics::new());
    let hooks_seen = Arc::new(Mutex::new(HookLog::default()));
    let hook_port = rt.block_on(receiver(hooks_seen.clone()))?;
    let settings = demo_settings(geo, &broker.bootstrap_servers(), hook_port, o.maillog)?;
    let endpoint = rt.block_on(async {
        let at = |listen: &str| crate::http::HttpConfig {
            listen: listen.to_string(),
            ..Default::default()
        };
        match Endpoint::bind(&at(&o.listen), metrics.clone()).await {
            Ok(e) => Ok(e),
            // The default port is taken: any free port will do for a demo.
            Err(_) => Endpoint::bind(&at("127.0.0.1:0"), metrics.clone()).await,
        }
    })?;
    let crate::cli::service::Started {
        service,
        hooks,
        policy,
    } = crate::cli::service::start(&rt, &settings, &metrics, &endpoint)?;

    let stop = Arc::new(AtomicBool::new(false));
    {
        let stop = stop.clone();
        rt.spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                stop.store(true, Ordering::Relaxed);
            }
        });
    }

    writeln!(
        out,
        "credwatch demo: a day of a mail platform ({} customers, seed {}) in {:.0} s, through an embedded Kafka broker at {}.\n\
         Metrics: http://{}/metrics   (readiness: /readyz)\n",
        o.accounts,
        o.seed,
        o.seconds,
        broker.bootstrap_servers(),
        endpoint.addr
    )?;
    writeln!(
        out,
        "{:<6} {:<6} {:<30} {:<18} why",
        "time", "action", "account", "detector"
    )?;
    out.flush()?;

    let timeline = Timeline::start(&broker.bootstrap_servers())?;
    let producer: ThreadedProducer<rdkafka::producer::DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", broker.bootstrap_servers())
        .set("linger.ms", "5")
        .create()?;

    // Join the group first, so the day is judged as it is played.
    let deadline = Instant::now() + Duration::from_secs(30);
    while !service.ready() {
        if Instant::now() > deadline || service.stopped() {
            anyhow::bail!("the service did not join the embedded broker's group within 30 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let started = Instant::now();
    let mut day_report = report::DayReport::default();
    let mut produced = 0u64;
    let mut all_ok = true;
    let mut day = 0u64;
    loop {
        let params = DayParams {
            accounts: o.accounts,
            seed: o.seed + day,
            start: DayParams::default().start + day as Millis * 24 * HOUR,
            ..Default::default()
        };
        let (mut lines, expected) = sample::generate_day(&params);
        lines.sort_by_key(|l| l.ts);
        day_report.events(&lines);
        let (lines, events) = if o.maillog {
            maillog::as_log_lines(&lines, day == 0, out)?
        } else {
            let n = lines.len() as u64;
            (lines.into_iter().map(|l| (l, None)).collect(), n)
        };
        let played = play(
            &producer,
            &lines,
            &expected,
            params.start,
            o.seconds,
            &stop,
            &timeline,
            out,
        )?;
        // Every event of the day, or as many as the lines played made.
        produced += if played == lines.len() as u64 {
            events
        } else {
            played
        };
        // Let the service judge everything and the timeline print it.
        let deadline = Instant::now() + Duration::from_secs(60);
        while (service.processed() as u64) < produced && Instant::now() < deadline {
            if service.stopped() {
                anyhow::bail!("the service stopped unexpectedly (see the log above)");
            }
            timeline.print(out)?;
            std::thread::sleep(Duration::from_millis(50));
        }
        let want = metrics.actions.with_label_values(&["lock"]).get()
            + metrics.actions.with_label_values(&["alert"]).get();
        let deadline = Instant::now() + Duration::from_secs(10);
        while (timeline.seen() as u64) < want && Instant::now() < deadline {
            timeline.print(out)?;
            std::thread::sleep(Duration::from_millis(50));
        }
        timeline.print(out)?;
        all_ok &= summary(&expected, &timeline, day, out)?;
        if let (Some(p), 0) = (&policy, day) {
            let last = lines.last().map_or(params.start, |(l, _)| l.ts);
            let shown = door::show(
                p,
                &expected,
                &producer,
                INPUT,
                last,
                |o| {
                    timeline.print(o)?;
                    Ok(timeline.seen())
                },
                out,
            )?;
            if !shown {
                writeln!(
                    out,
                    "  ✗ the policy servers did not refuse the lock, or did not lift it"
                )?;
            }
            all_ok &= shown;
        }
        day += 1;
        if !o.follow || stop.load(Ordering::Relaxed) {
            break;
        }
    }
    let events_per_s = produced as f64 / started.elapsed().as_secs_f64();
    // Give the last webhooks a moment, then stop.
    let deadline = Instant::now() + Duration::from_secs(10);
    while hooks_seen
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .ids
        .len()
        < timeline.seen()
        && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(50));
    }
    let breaker_open = metrics.breaker_open.get() > 0;
    service.shutdown()?;
    let incidents = day_report.write(
        &timeline.actions(),
        &settings,
        breaker_open,
        format!("credwatch demo, {} day(s) of seed {}", day, o.seed),
        &o.report,
    )?;
    if let Some(h) = hooks {
        rt.block_on(h.shutdown());
    }
    let log = hooks_seen.lock().unwrap_or_else(|e| e.into_inner());
    writeln!(
        out,
        "\n{produced} events went through Kafka ({events_per_s:.0}/s, paced), {} actions on {ACTIONS}. Stopped cleanly: offsets committed, group left.\n\
         Webhooks: {} of {} actions delivered to the local receiver, {} with a valid Standard Webhooks signature.",
        timeline.seen(),
        log.ids.len(),
        timeline.seen(),
        log.valid
    )?;
    writeln!(
        out,
        "Report of the run ({incidents} incidents, open it in a browser): {}",
        o.report.display()
    )?;
    Ok(all_ok)
}

/// The demo's webhook key (a demo has no secrets to keep).
const DEMO_SECRET: &str = "whsec_ZGVtbyBrZXkgb2YgY3JlZHdhdGNoIGRlbW8=";

fn demo_settings(
    geo: &sample::GeoFiles,
    brokers: &str,
    hook_port: u16,
    maillog: bool,
) -> anyhow::Result<Settings> {
    let logs = if maillog {
        format!("log_topics = [{LOGS:?}]\n")
    } else {
        String::new()
    };
    let text = format!(
        "{}\n[kafka]\nbrokers = {brokers:?}\ngroup_id = \"credwatch-demo\"\ninput_topics = [{INPUT:?}]\n{logs}\
         actions_topic = {ACTIONS:?}\ndead_letter_topic = {DLQ:?}\ncommit_interval_ms = 200\n\
         [kafka.properties]\n\"fetch.wait.max.ms\" = \"10\"\n\
         [webhook]\nurls = [\"http://127.0.0.1:{hook_port}/credwatch\"]\nsecret = {DEMO_SECRET:?}\n\
         [dovecot_policy]\nlisten = \"127.0.0.1:0\"\n[postfix_policy]\nlisten = \"127.0.0.1:0\"\n",
        sample::config_toml(geo)
    );
    Ok(Config::from_toml_with_env(&text, "the demo's config", &[])?)
}

/// Produces one day's events, paced so the day (from `day_start`) takes
/// `seconds`, printing a marker when an attack of the seed begins. The
/// history before the day (the customers' usual sending) goes first, at once.
#[allow(clippy::too_many_arguments)]
fn play(
    producer: &ThreadedProducer<rdkafka::producer::DefaultProducerContext>,
    lines: &[Played],
    expected: &[Expected],
    day_start: Millis,
    seconds: f64,
    stop: &AtomicBool,
    timeline: &Timeline,
    out: &mut dyn Write,
) -> anyhow::Result<u64> {
    let Some((last, _)) = lines.last() else {
        return Ok(0);
    };
    let span = (last.ts - day_start).max(1) as f64;
    let mut markers: Vec<&Expected> = expected
        .iter()
        .filter(|e| e.detector.is_some() && e.abuse_start.is_some())
        .collect();
    markers.sort_by_key(|e| e.abuse_start);
    let mut markers = markers.into_iter().peekable();
    let t0 = Instant::now();
    let mut n = 0u64;
    for (line, log) in lines {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        while let Some(m) = markers.next_if(|m| m.abuse_start.is_some_and(|a| a <= line.ts)) {
            timeline.print(out)?;
            writeln!(
                out,
                "{:<6} {:<6} {:<30} {:<18} {}",
                hhmm(m.abuse_start.unwrap_or(line.ts)),
                "▸",
                m.account,
                "(attack begins)",
                m.scenario
            )?;
        }
        let due = Duration::from_secs_f64((line.ts - day_start).max(0) as f64 / span * seconds);
        if let Some(wait) = due.checked_sub(t0.elapsed()) {
            timeline.print(out)?;
            std::thread::sleep(wait.min(Duration::from_millis(200)));
        }
        match log {
            // The event's log lines, one per message, keyed by host as a
            // log shipper sends them; the log stage makes the event again.
            Some(text) => {
                for l in text.lines() {
                    send(
                        producer,
                        BaseRecord::to(LOGS)
                            .payload(l.as_bytes())
                            .key("mail.example.jp"),
                    );
                }
            }
            None => send(
                producer,
                BaseRecord::to(INPUT)
                    .payload(line.json.as_bytes())
                    .key(account_of(&line.json)),
            ),
        }
        n += 1;
    }
    producer
        .flush(Duration::from_secs(30))
        .context("the embedded broker did not take the demo's events")?;
    Ok(n)
}

/// An event of the day, and the log lines to play instead of its JSON.
type Played = (Line, Option<String>);

fn send(
    producer: &ThreadedProducer<rdkafka::producer::DefaultProducerContext>,
    mut record: BaseRecord<'_, str, [u8]>,
) {
    loop {
        match producer.send(record) {
            Ok(()) => return,
            Err((_, r)) => {
                record = r;
                std::thread::sleep(Duration::from_millis(2));
            }
        }
    }
}

/// The account of a generated line (the recommended Kafka key).
fn account_of(json: &str) -> &str {
    json.split("\"account\":\"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .unwrap_or("")
}

fn hhmm(ms: Millis) -> String {
    format_rfc3339(ms)[11..16].to_string()
}

/// Prints what became of each scenario of the day; false if an attack was
/// not locked or a look-alike was.
fn summary(
    expected: &[Expected],
    timeline: &Timeline,
    day: u64,
    out: &mut dyn Write,
) -> anyhow::Result<bool> {
    let by = timeline.by_account();
    let mut ok = true;
    let width = expected
        .iter()
        .map(|e| e.scenario.chars().count())
        .max()
        .unwrap_or(0);
    writeln!(
        out,
        "\nDay {} — what the seed planted, and what credwatch did:",
        day + 1
    )?;
    for e in expected {
        let actions = by.get(&e.account);
        let lock = actions.and_then(|v| v.iter().find(|a| a.lock));
        let verdict = match (e.detector, lock) {
            (
                Some(_),
                Some(Seen {
                    detector: det,
                    last_event_ts: ts,
                    ..
                }),
            ) => {
                let after = e
                    .abuse_start
                    .zip(crate::time::parse_rfc3339(ts))
                    .map(|(a, t)| {
                        format!(
                            ", {} after the abuse began",
                            crate::time::human_duration(t - a)
                        )
                    })
                    .unwrap_or_default();
                format!(
                    "locked by {det} at {}{after}",
                    ts.get(11..16).unwrap_or("?")
                )
            }
            (Some(det), None) => {
                ok = false;
                format!("MISSED (expected a lock by {det})")
            }
            (None, Some(Seen { detector: det, .. })) => {
                ok = false;
                format!("WRONGLY LOCKED by {det}")
            }
            (None, None) => match actions.map(|v| v.len()).unwrap_or(0) {
                0 => "left alone".to_string(),
                n => format!("not locked ({n} alert{})", if n == 1 { "" } else { "s" }),
            },
        };
        writeln!(
            out,
            "  {:<30} {:<width$}  {}",
            e.account, e.scenario, verdict
        )?;
    }
    Ok(ok)
}

/// What the demo's webhook receiver saw.
#[derive(Default)]
struct HookLog {
    ids: std::collections::BTreeSet<String>,
    valid: usize,
}

/// A local webhook receiver: verifies each request's signature and notes its id.
async fn receiver(log: Arc<Mutex<HookLog>>) -> anyhow::Result<u16> {
    use http_body_util::{BodyExt, Full};
    use hyper::body::Bytes;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let log = log.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(
                    move |req: hyper::Request<hyper::body::Incoming>| {
                        let log = log.clone();
                        async move {
                            let header = |n: &str| {
                                req.headers()
                                    .get(n)
                                    .and_then(|v| v.to_str().ok())
                                    .unwrap_or("")
                                    .to_string()
                            };
                            let (id, ts, sig) = (
                                header("webhook-id"),
                                header("webhook-timestamp"),
                                header("webhook-signature"),
                            );
                            let body = req.into_body().collect().await.map(|b| b.to_bytes());
                            if let Ok(body) = body {
                                // Checked by an implementation of its own,
                                // not the `sign` that made the signature.
                                let valid =
                                    verify::standard_webhook(DEMO_SECRET, &id, &ts, &body, &sig);
                                let mut l = log.lock().unwrap_or_else(|e| e.into_inner());
                                if l.ids.insert(id) && valid {
                                    l.valid += 1;
                                }
                            }
                            Ok::<_, std::convert::Infallible>(hyper::Response::new(Full::new(
                                Bytes::new(),
                            )))
                        }
                    },
                );
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    Ok(port)
}
