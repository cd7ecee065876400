//! `cargo bench --bench durable`: durable state (`kafka.state_topic`)
//! against today's restore from input, on the real tansu broker, in one
//! run:
//!
//! 1. `credwatch run` with durable state judges a day of N accounts on 4
//!    partitions (checkpoints every 5 s here, so that the run pays for
//!    several rounds of them, not only the last); it stops
//!    (final checkpoints), and a new instance restores every partition from
//!    the checkpoints.
//! 2. The same without durable state, in another group: the new instance
//!    re-reads the whole day (`kafka.restore_secs`) to rebuild its state.
//!
//! It prints both throughputs (goal: with durable state ≥ 0.8× without),
//! both restore times (goal: ≥ 10× faster, ≤ 10 s at 1 M accounts), the
//! checkpoint bytes per account, and the broker bytes they add per event.
//! The day here has CREDWATCH_BENCH_DURABLE_EVENTS events per account
//! (default 10); a provider's day has about 30 (the seed's 4.5 M
//! mailboxes): the table also gives the re-read of such a day at the
//! measured rate.
//!
//! Size: CREDWATCH_BENCH_DURABLE_ACCOUNTS (default 1,000,000);
//! CREDWATCH_BENCH_DURABLE_CHECKPOINT_SECS (default 5).

use credwatch_testkit::kafka;

use std::sync::Arc;
use std::time::{Duration, Instant};

use credwatch::demo::sample::{submission, Line};
use credwatch::metrics::Metrics;
use credwatch::service::Service;

use credwatch_testkit::{ip, ok, World, MINUTE, T0};
use kafka::*;

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// `per` events per account over a day: logins spread over the day (a
/// mail client polling), and one message in three events.
fn day(accounts: usize, per: usize) -> Vec<Line> {
    let mut v = Vec::with_capacity(accounts * per);
    let span = 12 * 60 * MINUTE;
    let step = 12 * 60 * MINUTE / per as i64;
    for i in 0..accounts {
        let a = format!("u{i}@bench.example");
        let home = ip("Berlin", (i % 60_000) as u16);
        let t = T0 + (i as i64 * span) / accounts as i64;
        for e in 0..per {
            let at = t + e as i64 * step;
            v.push(if e % 3 == 1 {
                submission(at, &a, home, &a, Some(&a), 3)
            } else {
                ok(at, &a, home)
            });
        }
    }
    v.sort_by_key(|l| l.ts);
    v
}

/// Events/s from the first judged event to the last.
fn judge_all(svc: &Service, n: usize) -> f64 {
    let deadline = Instant::now() + Duration::from_secs(1800);
    while svc.processed() == 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(1));
    }
    let first = Instant::now();
    while (svc.processed() as usize) < n && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(2));
    }
    assert!(
        svc.processed() as usize >= n,
        "judged {} of {n}",
        svc.processed()
    );
    n as f64 / first.elapsed().as_secs_f64()
}

struct Restart {
    /// Wall time of the partitions' restore (they restore side by side).
    restore_secs: f64,
    to_ready: f64,
    events: u64,
    bytes: u64,
    accounts: usize,
}

fn restart(world: &World, brokers: &str, group: &str, keys: &str) -> Restart {
    let metrics = Arc::new(Metrics::new());
    let started = Instant::now();
    let svc =
        Service::start(settings(world, brokers, group, keys), metrics.clone()).expect("service");
    let deadline = Instant::now() + Duration::from_secs(1800);
    while !svc.ready() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(svc.ready(), "not ready after the restore");
    let r = Restart {
        restore_secs: metrics.restore_duration.get_sample_sum()
            / metrics.restore_duration.get_sample_count().max(1) as f64,
        to_ready: started.elapsed().as_secs_f64(),
        events: metrics.restored_events.get(),
        bytes: metrics.state_restored_bytes.get(),
        accounts: svc.engine().accounts_tracked(),
    };
    svc.shutdown().expect("shutdown");
    r
}

fn main() {
    init_logs();
    let accounts = env("CREDWATCH_BENCH_DURABLE_ACCOUNTS", 1_000_000);
    let per = env("CREDWATCH_BENCH_DURABLE_EVENTS", 10);
    let broker = Tansu::start();
    let brokers = broker.brokers();
    let world = World::new();
    create_topics(&broker, 4);
    let lines = day(accounts, per);
    let n = lines.len();
    eprintln!("producing {n} events ({accounts} accounts) to tansu at {brokers} ...");
    // Stamped with the events' times, as a shipper forwarding them as they
    // happen would: the windows measured in message time (the input
    // restore's day, the source windows before a checkpoint) are then the
    // day's, not the few seconds it took to produce it.
    produce_at(&brokers, INPUT, &lines, true);
    drop(lines);
    // Checkpoints every 5 s by default (the service's is 30): the run pays
    // for several rounds of them, not only the final one.
    let every = env("CREDWATCH_BENCH_DURABLE_CHECKPOINT_SECS", 5);
    let durable =
        format!("state_topic = \"credwatch.state\"\ncheckpoint_interval_secs = {every}\n");
    let durable = durable.as_str();

    // Durable state first: it sets the process's hash key from the state
    // topic, which the plain run then shares.
    let m = Arc::new(Metrics::new());
    let svc = Service::start(
        settings(&world, &brokers, "bench-durable", durable),
        m.clone(),
    )
    .expect("service");
    let with = judge_all(&svc, n);
    svc.shutdown().expect("shutdown");
    let state_bytes = m.state_bytes.get();
    let checkpoints: u64 = ["base", "delta"]
        .iter()
        .map(|k| m.checkpoints.with_label_values(&[k]).get())
        .sum();
    let from_state = restart(&world, &brokers, "bench-durable", durable);

    let svc = Service::start(
        settings(&world, &brokers, "bench-plain", ""),
        Arc::new(Metrics::new()),
    )
    .expect("service");
    let without = judge_all(&svc, n);
    svc.shutdown().expect("shutdown");
    let from_input = restart(&world, &brokers, "bench-plain", "");

    let rate = from_input.events as f64 / from_input.restore_secs.max(1e-9);
    let real_day = accounts as f64 * 30.0 / rate;
    println!("Durable state on Kafka (tansu on loopback, 4 input partitions, 2 judge threads, {accounts} accounts, {n} events: {per} per account)");
    println!();
    println!("| measure | value |");
    println!("|---|---|");
    println!("| run without durable state | {without:.0} events/s |");
    println!(
        "| run with durable state (checkpoints every {every} s and at shutdown) | {with:.0} events/s |"
    );
    println!(
        "| ratio with / without (goal >= 0.8) | {:.2} |",
        with / without
    );
    println!(
        "| checkpoints written | {checkpoints} ({state_bytes} bytes: {:.0} bytes per account, {:.1} bytes per event) |",
        state_bytes as f64 / accounts as f64,
        state_bytes as f64 / n as f64
    );
    println!(
        "| restore from durable state ({} accounts, {} bytes read, {} events re-read) | {:.2} s; ready {:.1} s after start |",
        from_state.accounts, from_state.bytes, from_state.events, from_state.restore_secs, from_state.to_ready
    );
    println!(
        "| restore from input (this day: {} events re-read, {} accounts) | {:.2} s ({rate:.0} events/s); ready {:.1} s after start |",
        from_input.events, from_input.accounts, from_input.restore_secs, from_input.to_ready
    );
    println!(
        "| ratio restore from input / from durable state, this day (goal >= 10) | {:.1} |",
        from_input.restore_secs / from_state.restore_secs.max(1e-9)
    );
    println!(
        "| a provider's day (30 events per account) re-read at that rate | {real_day:.0} s ({:.0}x the restore from durable state) |",
        real_day / from_state.restore_secs.max(1e-9)
    );
}
