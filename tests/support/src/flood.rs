//! The username flood: millions of distinct random usernames failing from
//! rotating addresses, fed to the real `credwatch replay` binary through a
//! pipe, with real attacks on two accounts in the middle of it. Measures
//! the process's resident memory as the flood goes on (shared by
//! tests/flood.rs, which asserts on it, and benches/flood.rs, which prints
//! it at full size).

use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};

use credwatch::demo::sample::{auth, city_named, ip_in};
use credwatch::time::MINUTE;

/// 2026-11-05T00:00:00Z
const T0: i64 = 1_793_836_800_000;

pub struct Flood {
    pub events: u64,
    pub max_accounts: usize,
    pub max_sources: usize,
}

pub struct FloodReport {
    /// Resident memory after the first 20,000 events (the binary, its
    /// GeoIP databases and empty tables).
    pub rss_start_kb: u64,
    /// When the junk accounts have filled the caps three times over.
    pub rss_full_kb: u64,
    /// At the end, and the high-water mark of the whole run.
    pub rss_end_kb: u64,
    pub peak_kb: u64,
    pub seconds: f64,
    /// Actions (stdout) and the summary (stderr).
    pub actions: Vec<serde_json::Value>,
    pub summary: String,
}

impl FloodReport {
    /// (evicted expired, evicted at cap) summed over the state tables, from
    /// the summary.
    pub fn evictions(&self) -> (u64, u64) {
        let mut exp = 0;
        let mut cap = 0;
        for l in self.summary.lines() {
            if let Some((_, rest)) = l.split_once("; evicted ") {
                let nums: Vec<u64> = rest
                    .split(|c: char| !c.is_ascii_digit() && c != ',')
                    .filter(|s| !s.is_empty())
                    .filter_map(|s| s.replace(',', "").parse().ok())
                    .collect();
                if let [e, c] = nums[..] {
                    exp += e;
                    cap += c;
                }
            }
        }
        (exp, cap)
    }

    pub fn locked(&self, account: &str, detector: &str) -> bool {
        self.actions.iter().any(|a| {
            a["data"]["account"] == account
                && a["data"]["detector"] == detector
                && a["data"]["action"] == "lock"
        })
    }
}

fn rss(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

pub const GUESSED: &str = "bob@example.net";
pub const TRAVELLER: &str = "alice@example.jp";

/// Runs the flood through `bin replay` with this world's `config` file.
pub fn run(bin: &Path, config: &Path, f: &Flood) -> FloodReport {
    let started = std::time::Instant::now();
    let mut child = Command::new(bin)
        .args(["replay", "--threads", "2", "--config"])
        .arg(config)
        .arg("-")
        .env_remove("RUST_LOG")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start credwatch replay");
    let pid = child.id();
    let stdout = child.stdout.take().expect("stdout");
    let out = std::thread::spawn(move || {
        BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .filter_map(|l| serde_json::from_str(&l).ok())
            .collect::<Vec<serde_json::Value>>()
    });
    let mut stderr = child.stderr.take().expect("stderr");
    let err = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });

    let mut w = std::io::BufWriter::with_capacity(1 << 16, child.stdin.take().expect("stdin"));
    let cities = [
        "Moscow",
        "Lagos",
        "São Paulo",
        "Sydney",
        "New York",
        "Tokyo",
    ];
    let nets: Vec<_> = cities.iter().map(|c| city_named(c)).collect();
    let mut rng: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut rss_start = 0;
    let mut rss_full = 0;
    let full_at = 3 * f.max_accounts.max(f.max_sources) as u64;
    let attack_at = f.events / 2;
    let mut line = String::with_capacity(256);
    for i in 0..f.events {
        // One event per millisecond of event time: the caps, not expiry,
        // have to hold the flood.
        let ts = T0 + i as i64;
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let net = nets[(rng % nets.len() as u64) as usize];
        let ip = ip_in(net, (rng >> 8) as u16);
        line.clear();
        use std::fmt::Write as _;
        let _ = writeln!(
            line,
            "{{\"ts\":{ts},\"kind\":\"auth\",\"account\":\"u{:016x}@example.net\",\"protocol\":\"smtp\",\"src_ip\":\"{ip}\",\"result\":\"failure\",\"mechanism\":\"LOGIN\",\"pwhash\":\"{:08x}\"}}",
            rng,
            rng as u32
        );
        w.write_all(line.as_bytes()).expect("feed replay");
        // Meanwhile, real attacks: a password guessed after a burst of
        // failures from one address, and a phished password used from the
        // other side of the world three minutes after its owner logged in.
        let mut login = |account: &str, city: &str, host: u16, success: bool, pwhash: &str| {
            let l = auth(
                ts,
                account,
                "imap",
                ip_in(city_named(city), host),
                success,
                Some(pwhash),
            );
            writeln!(w, "{}", l.json).expect("feed replay");
        };
        if (attack_at..attack_at + 12_000).contains(&i) && (i - attack_at).is_multiple_of(1_000) {
            login(GUESSED, "Lagos", 1, false, &format!("{i:x}"));
        }
        if i == attack_at + 12_000 {
            login(GUESSED, "Lagos", 1, true, "c0ffee00");
            login(TRAVELLER, "London", 5, true, "c0ffee01");
        }
        if i == attack_at + 12_000 + 3 * MINUTE as u64 {
            login(TRAVELLER, "Changchun", 5, true, "c0ffee01");
        }
        if i == 20_000 {
            w.flush().expect("feed");
            std::thread::sleep(std::time::Duration::from_millis(300));
            rss_start = rss(pid).0;
        }
        if i == full_at {
            w.flush().expect("feed");
            std::thread::sleep(std::time::Duration::from_millis(300));
            rss_full = rss(pid).0;
        }
    }
    w.flush().expect("feed");
    std::thread::sleep(std::time::Duration::from_millis(500));
    let (rss_end, peak) = rss(pid);
    drop(w);
    let status = child.wait().expect("replay exits");
    let summary = err.join().expect("stderr");
    assert!(status.success(), "replay failed: {summary}");
    FloodReport {
        rss_start_kb: rss_start,
        rss_full_kb: rss_full,
        rss_end_kb: rss_end,
        peak_kb: peak,
        seconds: started.elapsed().as_secs_f64(),
        actions: out.join().expect("stdout"),
        summary,
    }
}
