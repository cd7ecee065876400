//! The classic way to exhaust a detector's memory: millions of distinct
//! random usernames failing from rotating addresses. Resident memory levels
//! off once the caps are reached, the eviction counters move, and real
//! attacks in the middle of the flood are still caught.
//!
//! CI runs 1,000,000 events through the debug binary; the full size is
//! `FLOOD_EVENTS=10000000 cargo test --release --test flood -- --nocapture`
//! (and `cargo bench --bench flood` prints the table for BENCHMARKS.md).

use credwatch_testkit::flood;

use credwatch_testkit::World;
use flood::*;

#[test]
fn a_username_flood_stays_within_its_memory_and_real_attacks_are_caught() {
    let events: u64 = std::env::var("FLOOD_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    assert!(
        events >= 400_000,
        "FLOOD_EVENTS={events}: the impossible travel in the flood needs at least 400,000 events"
    );
    let f = Flood {
        events,
        max_accounts: 100_000,
        max_sources: 50_000,
    };
    let world = World::new();
    let config = world.dir.path().join("flood.toml");
    std::fs::write(
        &config,
        world.toml(&format!(
            "[state]\nmax_accounts = {}\nmax_sources = {}\n",
            f.max_accounts, f.max_sources
        )),
    )
    .expect("config");
    let r = run(env!("CARGO_BIN_EXE_credwatch").as_ref(), &config, &f);
    eprintln!(
        "flood: {events} events in {:.1} s; RSS start {} MiB, caps full {} MiB, end {} MiB, peak {} MiB\n{}",
        r.seconds,
        r.rss_start_kb / 1024,
        r.rss_full_kb / 1024,
        r.rss_end_kb / 1024,
        r.peak_kb / 1024,
        r.summary
    );

    assert!(
        r.locked(GUESSED, "failed_login_burst"),
        "the guessed password was not caught in the flood:\n{}",
        r.summary
    );
    assert!(
        r.locked(TRAVELLER, "impossible_travel"),
        "the impossible travel was not caught in the flood:\n{}",
        r.summary
    );
    let junk_locks = r
        .actions
        .iter()
        .filter(|a| a["data"]["action"] == "lock")
        .filter(|a| {
            a["data"]["account"]
                .as_str()
                .is_some_and(|s| s.starts_with('u'))
        })
        .count();
    assert_eq!(junk_locks, 0, "single failures lock nobody");

    // Every table within its cap, and the caps did the work.
    for l in r.summary.lines().filter(|l| l.contains(" evicted ")) {
        let nums: Vec<u64> = l
            .split_whitespace()
            .filter_map(|w| w.replace(',', "").parse().ok())
            .collect();
        assert!(nums[0] <= nums[1], "a table over its cap: {l}");
    }
    let (_, at_cap) = r.evictions();
    assert!(
        at_cap as f64 > 0.5 * events as f64,
        "evictions at cap: {at_cap} of {events} junk accounts:\n{}",
        r.summary
    );

    // The caps bound memory: at most 1 KiB of resident memory per capped
    // entry on top of the process at start (the README's sizing rule).
    let budget_kb = r.rss_start_kb + (f.max_accounts + f.max_sources) as u64;
    assert!(
        r.peak_kb <= budget_kb,
        "peak resident memory {} kB is over the caps' budget of {budget_kb} kB",
        r.peak_kb
    );

    // Memory levels off once the tables are full: the last 70 % of the
    // flood adds (almost) nothing.
    let limit = r.rss_full_kb + r.rss_full_kb / 5 + 16 * 1024;
    assert!(
        r.rss_end_kb <= limit && r.peak_kb <= limit,
        "resident memory kept growing after the caps were reached: {} kB when full, {} kB at the end, peak {} kB",
        r.rss_full_kb,
        r.rss_end_kb,
        r.peak_kb
    );
}

/// Resident memory of a process, in KiB.
fn rss_kb(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

#[test]
fn a_username_flood_through_run_stays_within_its_caps() {
    use credwatch_testkit::kafka::*;
    use credwatch_testkit::{fail, http_get, ip, metric, T0};
    use std::time::Duration;

    // The same flood through the service: the partitions' account lists
    // (kept to drop a moved partition's state) are bounded like the tables.
    let b = Tansu::start();
    let world = World::new();
    create_topics(&b, 2);
    let cap = 10_000;
    let cap_text = cap.to_string();
    let run = Binary::start(
        &world,
        &b.brokers(),
        "flood-run",
        &[
            ("CREDWATCH_STATE_MAX_ACCOUNTS", cap_text.as_str()),
            ("CREDWATCH_STATE_MAX_SOURCES", "5000"),
        ],
    );
    let addr = run.http_addr();
    let metrics = || http_get(&addr, "/metrics").1;
    let batch = |from: usize, n: usize| -> Vec<_> {
        (from..from + n)
            .map(|i| {
                fail(
                    T0 + i as i64,
                    &format!("u{i:08x}@example.net"),
                    ip("Moscow", (i % 60_000) as u16),
                    None,
                )
            })
            .collect()
    };
    let judged = |n: usize| {
        wait_until(Duration::from_secs(300), || {
            metric(
                &metrics(),
                "credwatch_events_total{kind=\"auth\",protocol=\"imap\",result=\"failure\"}",
            ) >= n as f64
        })
    };
    let mut rss = Vec::new();
    let per = 40_000;
    for round in 0..4 {
        produce(&b.brokers(), INPUT, &batch(round * per, per));
        assert!(
            judged((round + 1) * per),
            "round {round} not judged:\n{}",
            metrics()
        );
        rss.push(rss_kb(run.pid()));
    }
    let text = metrics();
    let tracked = metric(&text, "credwatch_partition_accounts_tracked");
    assert!(tracked <= cap as f64, "{tracked} keys tracked, cap {cap}");
    assert!(
        metric(&text, "credwatch_partition_accounts_untracked_total") > 0.0,
        "the flood reached the cap"
    );
    for line in text
        .lines()
        .filter(|l| l.starts_with("credwatch_state_entries{"))
    {
        let v: f64 = line.rsplit(' ').next().unwrap().parse().unwrap();
        assert!(v <= cap as f64, "a table over its cap: {line}");
    }
    // Memory levels off once the caps are full: the last two rounds add
    // little next to the first.
    eprintln!("flood through run: RSS per round {rss:?} KiB");
    let growth = rss[3] as f64 - rss[1] as f64;
    assert!(
        growth < 0.25 * rss[1] as f64,
        "resident memory still growing after the caps filled: {rss:?} KiB"
    );
}
