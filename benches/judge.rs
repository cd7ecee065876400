//! Judging alone: the events of a generated day are parsed into memory
//! first, then judged by one thread, in runs of `CREDWATCH_BENCH_WARM`
//! events, every other run with its accounts brought into the cache first
//! (`Engine::warm`, as the parallel replay does). Prints a table; asserts
//! nothing.
//!
//!     cargo bench --bench judge                 # 1,000,000 accounts
//!     CREDWATCH_BENCH_ACCOUNTS=200000 CREDWATCH_BENCH_WARM=16 cargo bench --bench judge
//!
//! Parsing, reading and the other threads are left out. The two ways take
//! turns every few dozen events of the same run on the same engine, so a
//! machine that speeds up or slows down (this one does, by ±15 % within
//! minutes) slows both alike, and the state they meet is the same.
//! `CREDWATCH_BENCH_ALL_WARMED=1` warms every run (to profile that path).

use std::sync::Arc;
use std::time::Instant;

use credwatch::config::Config;
use credwatch::demo::sample;
use credwatch::engine::Engine;
use credwatch::geo::GeoIp;
use credwatch::source::event::{parse_event, Event, ParseLimits};

#[global_allocator]
static A: mimalloc::MiMalloc = mimalloc::MiMalloc;

struct Round {
    /// Seconds and events judged as they came, and warmed first.
    cold: (f64, usize),
    warmed: (f64, usize),
    /// Seconds spent in `Engine::warm` itself (part of `warmed`).
    warming: f64,
    decisions: usize,
}

/// Judges every event in runs of `warm`, every other run warmed first.
fn judge(engine: &Engine, events: &[Event], warm: usize, all_warmed: bool) -> Round {
    let mut decisions = Vec::new();
    let mut r = Round {
        cold: (0.0, 0),
        warmed: (0.0, 0),
        warming: 0.0,
        decisions: 0,
    };
    let mut keys = Vec::with_capacity(warm);
    for (n, chunk) in events.chunks(warm).enumerate() {
        let start = Instant::now();
        let warmed = all_warmed || n % 2 == 1;
        if warmed {
            engine.warm(chunk.iter(), &mut keys);
            r.warming += start.elapsed().as_secs_f64();
        }
        for e in chunk {
            engine.process(e, None, &mut decisions);
            r.decisions += decisions.len();
            decisions.clear();
        }
        let side = if warmed { &mut r.warmed } else { &mut r.cold };
        side.0 += start.elapsed().as_secs_f64();
        side.1 += chunk.len();
    }
    r
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return; // `cargo test --benches` asks for a list; there are no tests here.
    }
    let accounts = credwatch_testkit::env_usize("CREDWATCH_BENCH_ACCOUNTS", 1_000_000);
    let warm = credwatch_testkit::env_usize("CREDWATCH_BENCH_WARM", 32).max(1);
    let rounds = credwatch_testkit::env_usize("CREDWATCH_BENCH_ROUNDS", 3).max(1);
    // Every run warmed (for a profile of the warmed path alone).
    let all_warmed = credwatch_testkit::env_usize("CREDWATCH_BENCH_ALL_WARMED", 0) == 1;
    let dir = tempfile::tempdir().expect("tempdir");
    let geo_files = sample::write_geoip(dir.path()).expect("GeoIP");
    let toml = sample::config_toml(&geo_files);
    let settings = Config::from_toml_with_env(&toml, "bench", &[]).expect("config");
    let params = sample::DayParams {
        accounts,
        logins_per_account: 3,
        ..Default::default()
    };
    let (lines, _) = sample::generate_day(&params);
    let mut data = Vec::with_capacity(lines.len() * 200);
    sample::write_lines(&lines, &mut data).expect("in memory");
    drop(lines);
    let limits = ParseLimits::new(65_536, credwatch::time::now_millis());
    let events: Vec<Event> = data
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| parse_event(l, &limits).expect("every generated line parses"))
        .collect();
    drop(data);
    let geo = Arc::new(GeoIp::open(&settings.config.geoip).expect("GeoIP"));

    println!(
        "credwatch judging benchmark: {accounts} accounts, {} events parsed beforehand, 1 thread, runs of {warm} events taking turns",
        events.len()
    );
    println!();
    println!("| round | ns per event as they come | ns per event, accounts warmed first | of which warming | warmed / as they come | decisions |");
    println!("|---|---|---|---|---|---|");
    let mut ratios = Vec::new();
    for round in 1..=rounds {
        let engine = Engine::with_geo(&settings, Arc::clone(&geo));
        let r = judge(&engine, &events, warm, all_warmed);
        let ns = |(secs, n): (f64, usize)| secs * 1e9 / n.max(1) as f64;
        let (c, w) = (ns(r.cold), ns(r.warmed));
        // No runs as they come with CREDWATCH_BENCH_ALL_WARMED=1.
        let ratio = (r.cold.1 > 0).then(|| w / c);
        ratios.extend(ratio);
        let shown = ratio.map_or("—".to_string(), |x| format!("{x:.3}"));
        let warming = r.warming * 1e9 / r.warmed.1.max(1) as f64;
        println!(
            "| {round} | {c:.0} | {w:.0} | {warming:.0} | {shown} | {} |",
            r.decisions
        );
    }
    ratios.sort_by(f64::total_cmp);
    if let Some(m) = ratios.get(ratios.len() / 2) {
        println!("| median | | | | **{m:.3}** | |");
    }
}
