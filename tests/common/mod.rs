//! Shared helpers of the scenario tests: a generated GeoIP world, an engine
//! built from TOML, and a way to feed it events and read its actions.
#![allow(dead_code, unused_imports)]

use std::net::IpAddr;
use std::sync::Arc;

use credwatch::action::Action;
use credwatch::config::Config;
use credwatch::engine::Engine;
use credwatch::geo::GeoIp;
use credwatch::policy::Decision;
use credwatch::sample::{self, GeoFiles, Line};
use credwatch::source::event::{parse_event, ParseLimits};
use credwatch::time::{Millis, HOUR};

pub use credwatch::sample::{auth, bounce, city_named, ip6_in, ip_in, submission};
pub use credwatch::time::{MINUTE, SECOND};

/// 2026-11-05T00:00:00Z
pub const T0: Millis = 1_793_836_800_000;

pub struct World {
    pub dir: tempfile::TempDir,
    pub geo: GeoFiles,
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
    let limits = ParseLimits::new(65_536, T0 + 1000 * HOUR);
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

pub fn ok(ts: Millis, account: &str, ip: IpAddr) -> Line {
    auth(ts, account, "imap", ip, true, Some("c0ffee00"))
}

pub fn fail(ts: Millis, account: &str, ip: IpAddr, pwhash: Option<&str>) -> Line {
    auth(ts, account, "imap", ip, false, pwhash)
}

pub fn for_account<'a>(actions: &'a [Action], account: &str) -> Vec<&'a Action> {
    actions
        .iter()
        .filter(|a| a.data.account == account)
        .collect()
}
