//! Resident memory under the username flood (tests/common/flood.rs) at full
//! size, through the release binary; prints a table, asserts nothing.
//!
//!     cargo bench --bench flood                          # 10,000,000 events
//!     FLOOD_EVENTS=2000000 cargo bench --bench flood
//!
//! The travel attack needs at least 400,000 events; the caps are "full"
//! after three times their size.

use credwatch_testkit::flood;

use flood::{run, Flood, GUESSED, TRAVELLER};

fn main() {
    let events: u64 = std::env::var("FLOOD_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000_000);
    let dir = tempfile::tempdir().expect("tempdir");
    let geo = credwatch::demo::sample::write_geoip(dir.path()).expect("GeoIP");
    println!("\n| caps (accounts / sources) | events | seconds | RSS start MiB | RSS caps full MiB | RSS end MiB | peak MiB | evicted at cap | attacks caught |");
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---|");
    for (accounts, sources) in [(100_000, 50_000), (1_000_000, 500_000)] {
        let f = Flood {
            events,
            max_accounts: accounts,
            max_sources: sources,
        };
        let config = dir.path().join("flood.toml");
        std::fs::write(
            &config,
            format!(
                "{}\n[state]\nmax_accounts = {accounts}\nmax_sources = {sources}\n",
                credwatch::demo::sample::config_toml(&geo)
            ),
        )
        .expect("config");
        let r = run(env!("CARGO_BIN_EXE_credwatch").as_ref(), &config, &f);
        let (_, at_cap) = r.evictions();
        let caught = [
            (GUESSED, "failed_login_burst"),
            (TRAVELLER, "impossible_travel"),
        ]
        .iter()
        .filter(|(a, d)| r.locked(a, d))
        .count();
        let full = if r.rss_full_kb == 0 {
            "not reached".to_string()
        } else {
            (r.rss_full_kb / 1024).to_string()
        };
        println!(
            "| {accounts} / {sources} | {events} | {:.1} | {} | {full} | {} | {} | {at_cap} | {caught} of 2 |",
            r.seconds,
            r.rss_start_kb / 1024,
            r.rss_end_kb / 1024,
            r.peak_kb / 1024
        );
    }
}
