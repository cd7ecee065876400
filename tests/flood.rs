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
