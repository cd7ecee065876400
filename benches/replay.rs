//! Replay throughput against the parse-only ceiling, and state bytes per
//! tracked account. Prints a table; asserts nothing.
//!
//!     cargo bench --bench replay                 # 1,000,000 accounts
//!     CREDWATCH_BENCH_ACCOUNTS=200000 cargo bench --bench replay
//!
//! One generated file (a day of logins, one successful login per account,
//! one in fifty preceded by a typo, plus the attack scenarios) is read into
//! memory once; parse-only and replay both run over the same bytes.

use std::alloc::{GlobalAlloc, Layout};
use std::io::{self, Cursor};
use std::sync::atomic::{AtomicIsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use credwatch::cli::parallel::replay_parallel;
use credwatch::cli::replay::{replay, ReplayOptions};
use credwatch::config::Config;
use credwatch::demo::sample;
use credwatch::engine::Engine;
use credwatch::geo::GeoIp;
use credwatch::source::event::{parse_only, ParseLimits};
use credwatch::source::lines::{Line, LineReader};

/// Counts live heap bytes on top of mimalloc (the allocator the binary uses).
struct Counting;
static LIVE: AtomicIsize = AtomicIsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        LIVE.fetch_add(l.size() as isize, Ordering::Relaxed);
        unsafe { mimalloc::MiMalloc.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        LIVE.fetch_sub(l.size() as isize, Ordering::Relaxed);
        unsafe { mimalloc::MiMalloc.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        LIVE.fetch_add(new as isize - l.size() as isize, Ordering::Relaxed);
        unsafe { mimalloc::MiMalloc.realloc(p, l, new) }
    }
}

#[global_allocator]
static A: Counting = Counting;

fn live() -> isize {
    LIVE.load(Ordering::Relaxed)
}

fn parse_only_pass(data: &[u8]) -> (u64, f64) {
    let start = Instant::now();
    let mut reader = LineReader::new(Cursor::new(data), 65_536);
    let mut buf = Vec::with_capacity(1024);
    let mut ok = 0u64;
    while let Some(Line::Data) = reader.next_line(&mut buf).expect("in memory") {
        if parse_only(&buf) {
            ok += 1;
        }
    }
    (ok, start.elapsed().as_secs_f64())
}

struct Workload {
    name: &'static str,
    accounts: usize,
    logins: u32,
}

struct Result {
    events: usize,
    mb: usize,
    parse: f64,
    seq: f64,
    par: f64,
    rounds: String,
    state_bytes: isize,
    tracked: usize,
    engine_bytes: isize,
    actions: u64,
    geo: (u64, u64),
}

fn measure(w: &Workload, settings: &credwatch::config::Settings, threads: usize) -> Result {
    let params = sample::DayParams {
        accounts: w.accounts,
        logins_per_account: w.logins,
        ..Default::default()
    };
    let (lines, _) = sample::generate_day(&params);
    let mut data = Vec::with_capacity(lines.len() * 200);
    sample::write_lines(&lines, &mut data).expect("in memory");
    let events = lines.len();
    drop(lines);

    let fresh = |lanes: usize| {
        let geo = Arc::new(GeoIp::open(&settings.config.geoip).expect("GeoIP"));
        let mut e = Engine::with_geo(settings, geo);
        e.set_lanes(lanes);
        e
    };
    let opts = || ReplayOptions {
        limits: ParseLimits::new(65_536, credwatch::time::now_millis()),
        rejects: None,
        progress_total: None,
        events_out: None,
        threads: 1,
        report: None,
    };

    // Three rounds, each measuring the three side by side, so that a noisy
    // neighbour slows all of them alike; the median round is reported.
    let _ = parse_only_pass(&data[..data.len().min(20_000_000)]);
    let mut rounds = Vec::new();
    let mut memory = None;
    for round in 0..3 {
        let (parsed, parse_secs) = parse_only_pass(&data);
        assert_eq!(parsed as usize, events, "every generated line parses");

        let before_engine = live();
        let engine = fresh(1);
        let after_engine = live();
        let start = Instant::now();
        let seq = replay(&engine, Cursor::new(&data[..]), io::sink(), opts()).expect("replay");
        let seq_secs = start.elapsed().as_secs_f64();
        if round == 0 {
            let state_bytes = live() - after_engine;
            memory = Some((
                state_bytes,
                engine.accounts_tracked(),
                after_engine - before_engine,
                seq.clone(),
            ));
        }
        drop(engine);

        let engine = fresh(threads);
        let start = Instant::now();
        let par = replay_parallel(&engine, Cursor::new(&data[..]), io::sink(), opts(), threads)
            .expect("replay");
        let par_secs = start.elapsed().as_secs_f64();
        assert_eq!(
            par.actions, seq.actions,
            "parallel and sequential emit the same number of actions"
        );
        drop(engine);
        rounds.push((
            events as f64 / parse_secs,
            events as f64 / seq_secs,
            events as f64 / par_secs,
        ));
    }
    let text = rounds
        .iter()
        .map(|r| format!("{:.0}/{:.0}/{:.0}", r.0, r.1, r.2))
        .collect::<Vec<_>>()
        .join(", ");
    rounds.sort_by(|a, b| (a.2 / a.0).total_cmp(&(b.2 / b.0)));
    let (parse, seq, par) = rounds[1];
    let (state_bytes, tracked, engine_bytes, summary) = memory.expect("round 0");
    Result {
        events,
        mb: data.len() / 1_000_000,
        parse,
        seq,
        par,
        rounds: text,
        state_bytes,
        tracked,
        engine_bytes,
        actions: summary.actions,
        geo: (summary.geo_lookups, summary.geo_cache_hits),
    }
}

/// Opening (and verifying) a City database of realistic size: start-up cost.
fn geoip_open(networks: u32) -> (usize, f64) {
    let mut w = mmdb_writer::Writer::builder("Bench-City")
        .description(&[("en", "benchmark")])
        .build();
    for i in 0..networks {
        let net: ipnet::IpNet = format!(
            "{}.{}.{}.0/24",
            1 + (i >> 16) % 200,
            (i >> 8) & 255,
            i & 255
        )
        .parse()
        .expect("net");
        let rec = sample::CityRecord::new(
            &format!("City {}", i % 50_000),
            "ZZ",
            (i % 180) as f64 - 90.0,
            (i % 360) as f64 - 180.0,
            20,
        );
        w.insert(net, &rec).expect("insert");
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("bench-City.mmdb");
    let bytes = w.to_bytes().expect("bytes");
    std::fs::write(&path, &bytes).expect("write");
    let cfg = credwatch::geo::GeoIpConfig {
        city_db: path.display().to_string(),
        ..Default::default()
    };
    let start = Instant::now();
    let _geo = GeoIp::open(&cfg).expect("open");
    (bytes.len(), start.elapsed().as_secs_f64())
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return; // `cargo test --benches` asks for a list; there are no tests here.
    }
    let accounts: usize = credwatch_testkit::env_usize("CREDWATCH_BENCH_ACCOUNTS", 1_000_000);
    let dir = tempfile::tempdir().expect("tempdir");
    let geo_files = sample::write_geoip(dir.path()).expect("GeoIP");
    let toml = sample::config_toml(&geo_files);
    let settings = Config::from_toml_with_env(&toml, "bench", &[]).expect("config");
    let threads = std::thread::available_parallelism()
        .map_or(2, |n| n.get())
        .clamp(2, 8);

    let workloads = [
        Workload {
            name: "day: every account logs in 3 times",
            accounts,
            logins: 3,
        },
        Workload {
            name: "first sight: every event a new account",
            accounts,
            logins: 1,
        },
    ];
    let results: Vec<Result> = workloads
        .iter()
        .map(|w| measure(w, &settings, threads))
        .collect();

    println!("credwatch replay benchmark: {accounts} accounts, {threads} threads for the parallel replay, median of 3 rounds");
    println!();
    print!("| measure |");
    for w in &workloads {
        print!(" {} |", w.name);
    }
    println!();
    println!("|---|{}", "---|".repeat(workloads.len()));
    let row = |label: &str, f: &dyn Fn(&Result) -> String| {
        print!("| {label} |");
        for r in &results {
            print!(" {} |", f(r));
        }
        println!();
    };
    row("events (MB of JSON lines)", &|r| {
        format!("{} ({} MB)", r.events, r.mb)
    });
    row(
        "parse-only: serde_json into the raw event struct, 1 thread, events/s",
        &|r| format!("{:.0}", r.parse),
    );
    row(
        "replay --threads 1: parse, validate, GeoIP, all 9 detectors, policy, JSON out, events/s",
        &|r| format!("{:.0}", r.seq),
    );
    row(&format!("replay --threads {threads}, events/s"), &|r| {
        format!("{:.0}", r.par)
    });
    row("replay --threads 1 / parse-only", &|r| {
        format!("{:.2}", r.seq / r.parse)
    });
    row(
        &format!("**replay --threads {threads} / parse-only** (goal >= 0.6)"),
        &|r| format!("**{:.2}**", r.par / r.parse),
    );
    row("accounts tracked at the end", &|r| r.tracked.to_string());
    row(
        "state bytes: heap growth during replay (all tables, GeoIP cache)",
        &|r| r.state_bytes.to_string(),
    );
    row(
        "**state bytes per tracked account** (goal <= 512 with profiles)",
        &|r| format!("**{:.0}**", r.state_bytes as f64 / r.tracked.max(1) as f64),
    );
    row(
        "engine at start: GeoIP databases, cache, breaker sketch, bytes",
        &|r| r.engine_bytes.to_string(),
    );
    row("actions emitted", &|r| r.actions.to_string());
    row("GeoIP lookups (cache hit ratio)", &|r| {
        format!(
            "{} ({:.2})",
            r.geo.0,
            r.geo.1 as f64 / r.geo.0.max(1) as f64
        )
    });
    row("rounds: parse/seq/parallel events/s", &|r| r.rounds.clone());

    let networks = (accounts as u32).clamp(10_000, 1_000_000);
    let (size, secs) = geoip_open(networks);
    println!();
    println!("| GeoIP start-up | value |");
    println!("|---|---|");
    println!("| City database with {networks} networks, bytes | {size} |");
    println!("| open + type check + full verify, seconds | {secs:.2} |");
}
