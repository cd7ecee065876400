//! What `replay --report` costs, and how big its page gets. Prints tables;
//! asserts nothing.
//!
//!     cargo bench --bench report                 # 1,000,000 accounts
//!     CREDWATCH_BENCH_ACCOUNTS=20000 cargo bench --bench report
//!
//! 1. The day of `benches/replay.rs` (every account logs in 3 times, with
//!    the seed's attacks), replayed with `--threads 2` in memory, without
//!    and with the report (its hour counters, its incidents, then the page
//!    written), alternately, three rounds each.
//! 2. Pages of 1,000, 10,000 and 100,000 incidents: the sample day's real
//!    actions, copied onto other accounts and spread over 30 days; where
//!    their bytes are. CREDWATCH_BENCH_REPORT_SAVE=/tmp/p saves them as
//!    /tmp/p-<n>.html to look at.

use std::io::{self, Cursor};
use std::sync::Arc;
use std::time::Instant;

use credwatch::cli::parallel::replay_parallel;
use credwatch::cli::replay::{replay, ReplayOptions};
use credwatch::config::{Config, Settings};
use credwatch::demo::sample;
use credwatch::engine::Engine;
use credwatch::geo::GeoIp;
use credwatch::report::{detector_facts, Collector, Facts};
use credwatch::source::event::ParseLimits;
use serde_json::Value;

#[global_allocator]
static A: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn engine(settings: &Settings, lanes: usize) -> Engine {
    let geo = Arc::new(GeoIp::open(&settings.config.geoip).expect("GeoIP"));
    let mut e = Engine::with_geo(settings, geo);
    e.set_lanes(lanes);
    e
}

fn options(report: Option<&mut Collector>) -> ReplayOptions<'_> {
    ReplayOptions {
        limits: ParseLimits::new(65_536, i64::MAX / 4),
        rejects: None,
        progress_total: None,
        events_out: None,
        threads: 2,
        report,
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// The sample day's actions (the demo's day), as JSON.
fn sample_actions(settings: &Settings) -> Vec<Value> {
    let (lines, _) = sample::generate_day(&sample::DayParams::default());
    let mut data = Vec::new();
    sample::write_lines(&lines, &mut data).expect("in memory");
    let e = engine(settings, 1);
    let mut out = Vec::new();
    let mut o = options(None);
    o.threads = 1;
    replay(&e, Cursor::new(&data), &mut out, o).expect("replay");
    String::from_utf8_lossy(&out)
        .lines()
        .map(|l| serde_json::from_str(l).expect("an action"))
        .collect()
}

/// Where a page's bytes are: the world map's section, and the cards
/// written as HTML and carried as data, per card.
struct Parts {
    map: usize,
    written_each: f64,
    scripted_each: f64,
}

impl Parts {
    fn of(page: &str) -> Parts {
        let section = |id: &str| {
            let start = page.find(&format!("<section id=\"{id}\">")).unwrap_or(0);
            let len = page[start..].find("</section>").unwrap_or(0);
            &page[start..start + len]
        };
        let cards = section("incidents");
        let written = cards.matches("<article ").count().max(1);
        let written_bytes: usize = cards
            .split("<article ")
            .skip(1)
            .map(|c| c.find("</article>").unwrap_or(c.len()))
            .sum();
        let data = cards
            .split("id=\"more-cards\">")
            .nth(1)
            .and_then(|d| d.split("</script>").next())
            .unwrap_or("[]");
        let items = serde_json::from_str::<Vec<Value>>(data)
            .map_or(0, |v| v.len())
            .max(1);
        Parts {
            map: section("map").len(),
            written_each: written_bytes as f64 / written as f64,
            scripted_each: data.len() as f64 / items as f64,
        }
    }
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let accounts: usize = credwatch_testkit::env_usize("CREDWATCH_BENCH_ACCOUNTS", 1_000_000);
    let dir = tempfile::tempdir().expect("tempdir");
    let geo_files = sample::write_geoip(dir.path()).expect("GeoIP");
    let settings =
        Config::from_toml_with_env(&sample::config_toml(&geo_files), "bench", &[]).expect("config");

    // 1. The cost next to the replay.
    let (lines, _) = sample::generate_day(&sample::DayParams {
        accounts,
        logins_per_account: 3,
        ..Default::default()
    });
    let mut data = Vec::with_capacity(lines.len() * 200);
    sample::write_lines(&lines, &mut data).expect("in memory");
    let events = lines.len();
    drop(lines);
    let (mut plain, mut with, mut write) = (Vec::new(), Vec::new(), Vec::new());
    let (mut size, mut incidents) = (0usize, 0usize);
    for _ in 0..3 {
        let e = engine(&settings, 2);
        let t = Instant::now();
        replay_parallel(&e, Cursor::new(&data), io::sink(), options(None), 2).expect("replay");
        plain.push(t.elapsed().as_secs_f64());
        drop(e);

        let e = engine(&settings, 2);
        let mut c = Collector::new();
        let t = Instant::now();
        let summary = replay_parallel(&e, Cursor::new(&data), io::sink(), options(Some(&mut c)), 2)
            .expect("replay");
        with.push(t.elapsed().as_secs_f64());
        let t = Instant::now();
        let facts = Facts::of_replay(&summary, &["day.jsonl".into()], 0);
        let mut page = Vec::new();
        c.write(&facts, Some(&e.geo()), &mut page)
            .expect("in memory");
        write.push(t.elapsed().as_secs_f64());
        size = page.len();
        incidents = c.incidents().len();
    }
    let (plain, with, write) = (median(plain), median(with), median(write));
    println!("credwatch report benchmark: {accounts} accounts, {events} events, replay --threads 2 in memory, median of 3 rounds");
    println!();
    println!("| measure | value |");
    println!("|---|---|");
    println!("| replay, no report, s | {plain:.2} |");
    println!("| replay gathering the report, s | {with:.2} |");
    println!("| writing the page, s | {write:.3} |");
    println!(
        "| **report cost / replay** (goal < 20 %) | **{:.1} %** |",
        100.0 * ((with - plain).max(0.0) + write) / plain
    );
    println!("| incidents on the page | {incidents} |");
    println!("| page size, bytes | {size} |");
    println!();

    // 2. Pages of many incidents.
    let actions = sample_actions(&settings);
    println!("Pages of many incidents (the sample day's {} actions, copied onto other accounts over 30 days):", actions.len());
    println!();
    println!("| incidents | page MB | bytes per incident | world map KB | written cards, bytes each | scripted cards, bytes each | write s |");
    println!("|---|---|---|---|---|---|---|");
    for n in [1_000usize, 10_000, 100_000] {
        let c = credwatch_testkit::report::many_incidents(&actions, n);
        let facts = Facts {
            source: "synthetic".into(),
            detectors: detector_facts(c.incidents()),
            ..Facts::default()
        };
        let t = Instant::now();
        let mut page = Vec::new();
        c.write(&facts, None, &mut page).expect("in memory");
        let secs = t.elapsed().as_secs_f64();
        if let Ok(p) = std::env::var("CREDWATCH_BENCH_REPORT_SAVE") {
            std::fs::write(format!("{p}-{n}.html"), &page).expect("save the page");
        }
        let text = String::from_utf8_lossy(&page);
        let parts = Parts::of(&text);
        println!(
            "| {} | {:.2} | {:.0} | {:.0} | {:.0} | {:.0} | {secs:.3} |",
            c.incidents().len(),
            page.len() as f64 / 1e6,
            page.len() as f64 / c.incidents().len().max(1) as f64,
            parts.map as f64 / 1e3,
            parts.written_each,
            parts.scripted_each,
        );
    }
}
