//! Replay throughput against the parse-only ceiling, and state bytes per
//! tracked account. Prints a table; asserts nothing but that the parallel
//! and sequential replays agree.
//!
//!     cargo bench --bench replay                 # 1,000,000 accounts
//!     CREDWATCH_BENCH_ACCOUNTS=200000 cargo bench --bench replay
//!     CREDWATCH_BENCH_SHAPES=day,ipv6 cargo bench --bench replay
//!
//! Each shape is one generated file, read into memory once; parse-only and
//! both replays run over the same bytes. The shapes (all by default):
//!
//! - `day`: every account logs in 3 times (one in fifty after a typo, one
//!   in ten over IPv6, one in six on the submission port, which then sends
//!   a message), plus the attack scenarios;
//! - `first`: the same with one login per account, so nearly every event
//!   is an account's first;
//! - `submissions`: the day, with 5 messages after each submission login
//!   (more submitted messages than logins);
//! - `ipv6`: the day, every login over IPv6.
//!
//! Files of other shapes are timed the same way, in place of the generated
//! ones: `CREDWATCH_BENCH_FILES=a.jsonl,b.jsonl` (the contract's JSON
//! events), with `CREDWATCH_BENCH_CONFIG=credwatch.toml` for their config
//! and GeoIP databases (as `credwatch generate` writes them; without it,
//! the generated world's).

use std::alloc::{GlobalAlloc, Layout};
use std::io::{self, Cursor};
use std::path::PathBuf;
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
    name: String,
    input: Input,
}

enum Input {
    Day(sample::DayParams),
    File(PathBuf),
}

impl Workload {
    /// The workload's JSON lines and their number.
    fn data(&self) -> (Vec<u8>, usize) {
        match &self.input {
            Input::Day(params) => {
                let (lines, _) = sample::generate_day(params);
                let mut data = Vec::with_capacity(lines.len() * 200);
                sample::write_lines(&lines, &mut data).expect("in memory");
                (data, lines.len())
            }
            Input::File(path) => {
                let data = std::fs::read(path)
                    .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
                let lines = data
                    .split(|&b| b == b'\n')
                    .filter(|l| !l.iter().all(u8::is_ascii_whitespace))
                    .count();
                (data, lines)
            }
        }
    }
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
    let (data, events) = w.data();

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
        if matches!(w.input, Input::Day(_)) {
            assert_eq!(parsed as usize, events, "every generated line parses");
        }

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
        if matches!(w.input, Input::Day(_)) {
            assert_eq!(
                par.actions, seq.actions,
                "parallel and sequential emit the same number of actions"
            );
        } else if par.actions != seq.actions {
            eprintln!(
                "{}: the parallel replay emitted {} actions, the sequential {}",
                w.name, par.actions, seq.actions
            );
        }
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
    let settings = match std::env::var_os("CREDWATCH_BENCH_CONFIG") {
        Some(path) => Config::load_with_env(Some(path.as_ref()), &[])
            .unwrap_or_else(|e| panic!("CREDWATCH_BENCH_CONFIG: {e}")),
        None => {
            let geo_files = sample::write_geoip(dir.path()).expect("GeoIP");
            let toml = sample::config_toml(&geo_files);
            Config::from_toml_with_env(&toml, "bench", &[]).expect("config")
        }
    };
    let threads = std::thread::available_parallelism()
        .map_or(2, |n| n.get())
        .clamp(2, 8);

    let day = |logins_per_account: u32| sample::DayParams {
        accounts,
        logins_per_account,
        ..Default::default()
    };
    let shapes = [
        ("day", "day: every account logs in 3 times", day(3)),
        ("first", "first sight: every event a new account", day(1)),
        (
            "submissions",
            "submissions: the day, 5 messages per submission login",
            sample::DayParams {
                submissions_per_smtp_login: 5,
                ..day(3)
            },
        ),
        (
            "ipv6",
            "ipv6: the day, every login over IPv6",
            sample::DayParams {
                ipv6_in_ten: 10,
                ..day(3)
            },
        ),
    ];
    let files = std::env::var("CREDWATCH_BENCH_FILES").ok();
    let workloads: Vec<Workload> = match &files {
        Some(files) => files
            .split(',')
            .filter(|f| !f.is_empty())
            .map(|f| Workload {
                name: format!("file {f}"),
                input: Input::File(f.into()),
            })
            .collect(),
        None => {
            let wanted = std::env::var("CREDWATCH_BENCH_SHAPES")
                .unwrap_or_else(|_| "day,first,submissions,ipv6".into());
            let wanted: Vec<&str> = wanted.split(',').map(str::trim).collect();
            for w in &wanted {
                assert!(
                    shapes.iter().any(|s| s.0 == *w),
                    "CREDWATCH_BENCH_SHAPES: no shape {w:?} (day, first, submissions, ipv6)"
                );
            }
            shapes
                .into_iter()
                .filter(|s| wanted.contains(&s.0))
                .map(|(_, name, params)| Workload {
                    name: name.into(),
                    input: Input::Day(params),
                })
                .collect()
        }
    };
    let results: Vec<Result> = workloads
        .iter()
        .map(|w| measure(w, &settings, threads))
        .collect();

    let what = match files {
        Some(_) => "given files".to_string(),
        None => format!("{accounts} accounts"),
    };
    println!("credwatch replay benchmark: {what}, {threads} threads for the parallel replay, median of 3 rounds");
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
