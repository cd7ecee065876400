//! credwatch's test kit: what the integration tests and benchmarks share,
//! compiled once as a library (a dev-dependency) instead of being stitched
//! into every test binary. At the top: a generated GeoIP world, an engine
//! built from TOML, a way to feed it events and read its actions, and small
//! HTTP and process helpers; [`kafka`] (brokers, topics, the `credwatch`
//! binary), [`receiver`] (the verifying webhook receiver), [`prometheus`]
//! (a real Prometheus), [`flood`] (the junk-username flood) and
//! [`parser_contract`] (the parsers' promises, also run by the fuzzers).

/// The repository (this kit lives in `tests/support`).
pub fn repo_root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The `credwatch` binary cargo built beside the running test or bench
/// (`target/<profile>/credwatch`; the test runs from `target/<profile>/deps`).
/// A bench's setting from the environment (`CREDWATCH_BENCH_*`), or
/// `default` when it is unset or not a whole number.
pub fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

pub fn credwatch_exe() -> std::path::PathBuf {
    let me = std::env::current_exe().expect("the test's own path");
    let profile = me
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target/<profile>/deps");
    profile.join("credwatch")
}

pub mod browser;
pub mod flood;
pub mod kafka;
pub mod mailstack;
pub mod parser_contract;
pub mod policy;
pub mod prometheus;
pub mod receiver;
pub mod report;

use std::net::IpAddr;
use std::sync::Arc;

use credwatch::action::Action;
use credwatch::config::Config;
use credwatch::demo::sample::{self, GeoFiles, Line};
use credwatch::engine::Engine;
use credwatch::geo::GeoIp;
use credwatch::policy::Decision;
use credwatch::source::event::{parse_event, ParseLimits};
use credwatch::time::{Millis, HOUR};

pub use credwatch::demo::sample::{auth, bounce, city_named, ip6_in, ip6_in_64, ip_in, submission};
pub use credwatch::time::{MINUTE, SECOND};

/// 2026-11-05T00:00:00Z
pub const T0: Millis = 1_793_836_800_000;

pub struct World {
    pub dir: tempfile::TempDir,
    pub geo: GeoFiles,
}

impl Default for World {
    fn default() -> World {
        World::new()
    }
}

impl World {
    pub fn new() -> World {
        let dir = tempfile::tempdir().expect("tempdir");
        let geo = sample::write_geoip(dir.path()).expect("write GeoIP databases");
        World { dir, geo }
    }

    /// A config with this world's databases and `extra` TOML appended.
    pub fn toml(&self, extra: &str) -> String {
        format!(
            "[geoip]\ncity_db = {:?}\nasn_db = {:?}\nanonymous_db = {:?}\n{extra}\n",
            self.geo.city.display().to_string(),
            self.geo.asn.display().to_string(),
            self.geo.anonymous.display().to_string(),
        )
    }

    pub fn engine(&self, extra: &str) -> Engine {
        let settings =
            Config::from_toml_with_env(&self.toml(extra), "test.toml", &[]).expect("valid config");
        let geo = Arc::new(GeoIp::open(&settings.config.geoip).expect("open GeoIP"));
        Engine::with_geo(&settings, geo)
    }
}

/// Runs lines through the engine in the order given; returns the actions.
pub fn run(engine: &Engine, lines: &[Line]) -> Vec<Action> {
    run_decisions(engine, lines)
        .into_iter()
        .filter_map(|d| match d {
            Decision::Emit(a) => Some(*a),
            Decision::Enrich { .. } => None,
        })
        .collect()
}

pub fn run_decisions(engine: &Engine, lines: &[Line]) -> Vec<Decision> {
    let limits =
        ParseLimits::new(65_536, T0 + 1000 * HOUR).with_form(engine.account_form().clone());
    let mut out = Vec::new();
    for l in lines {
        let ev = parse_event(l.json.as_bytes(), &limits).expect("test events are valid");
        engine.process(&ev, None, &mut out);
    }
    out
}

/// Sorts by time, as a platform would send them.
pub fn sorted(mut lines: Vec<Line>) -> Vec<Line> {
    lines.sort_by_key(|l| l.ts);
    lines
}

pub fn ip(city: &str, host: u16) -> IpAddr {
    ip_in(city_named(city), host)
}

/// A login attempt naming its client program (IMAP ID, user agent).
#[allow(clippy::too_many_arguments)]
pub fn auth_with(
    ts: Millis,
    account: &str,
    protocol: &str,
    ip: IpAddr,
    success: bool,
    pwhash: Option<&str>,
    client: Option<&str>,
) -> Line {
    let mut line = auth(ts, account, protocol, ip, success, pwhash);
    if let Some(c) = client {
        let mut v: serde_json::Value = serde_json::from_str(&line.json).expect("an event");
        v["client"] = c.into();
        line.json = v.to_string();
    }
    line
}

pub fn ok(ts: Millis, account: &str, ip: IpAddr) -> Line {
    auth(ts, account, "imap", ip, true, Some("c0ffee00"))
}

pub fn fail(ts: Millis, account: &str, ip: IpAddr, pwhash: Option<&str>) -> Line {
    auth(ts, account, "imap", ip, false, pwhash)
}

/// The provider's account system lifts a lock (contract §7).
pub fn unlock(ts: Millis, account: &str, reason: Option<&str>) -> Line {
    let mut v = serde_json::json!({"ts": ts, "kind": "unlock", "account": account});
    if let Some(r) = reason {
        v["reason"] = r.into();
    }
    Line {
        ts,
        json: v.to_string(),
    }
}

pub fn for_account<'a>(actions: &'a [Action], account: &str) -> Vec<&'a Action> {
    actions
        .iter()
        .filter(|a| a.data.account == account)
        .collect()
}

/// Runs the `openssl` command line (Debian package openssl) in `dir`; a
/// failure fails the test (private CAs and certificates for TLS tests).
pub fn openssl(dir: &std::path::Path, args: &[&str]) {
    let ok = std::process::Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .expect("openssl (Debian package openssl)")
        .success();
    assert!(ok, "openssl {args:?}");
}

/// A free loopback port (free when asked: whoever binds it first wins).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

/// `GET path` on `addr`: the status code (0 when nothing answers) and the
/// body. Gives up on an answer after 10 s.
pub fn http_get(addr: &str, path: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect(addr) else {
        return (0, String::new());
    };
    let _ = s.set_read_timeout(Some(std::time::Duration::from_secs(10)));
    let _ = write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    );
    let mut answer = String::new();
    let _ = s.read_to_string(&mut answer);
    let code = answer
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = answer
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (code, body)
}

/// The sum of every sample in a Prometheus text page whose line starts
/// with `series` (a name, or a name with the opening of its labels).
pub fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(series))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// A child process killed when dropped.
pub struct Kill(pub std::process::Child);

impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// How many of the events a log reader made are of this kind, account and
/// result (`None` for submissions and bounces).
pub fn count_log_events(
    events: &[credwatch::source::maillog::LogEvent],
    kind: &str,
    account: &str,
    result: Option<&str>,
) -> usize {
    events
        .iter()
        .filter(|e| {
            e.fields.kind == kind && e.fields.account == account && e.fields.result == result
        })
        .count()
}
