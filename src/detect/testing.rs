//! A bench for the detectors' own unit tests: one detector, built from its
//! own config section, fed events over a generated GeoIP world, its
//! findings returned as they are (no policy in between, so a finding that
//! the policy would merge into an open incident is still seen).

use std::net::IpAddr;

use super::{Context, Detector, Finding, Registration};
use crate::demo::sample::{self, ip_in, Line};
use crate::geo::{GeoIp, GeoIpConfig};
use crate::source::event::{parse_event, ParseLimits};
use crate::state::profile::{Profile, ProfileConfig};
use crate::state::StateConfig;
use crate::time::{Millis, HOUR};

/// 2026-11-05T00:00:00Z
pub const T0: Millis = 1_793_836_800_000;

pub struct Bench {
    _dir: tempfile::TempDir,
    geo: GeoIp,
    /// Accounts' profiles, learned as the engine learns them.
    profile: Profile,
}

impl Bench {
    pub fn new() -> Bench {
        let dir = tempfile::tempdir().expect("tempdir");
        let files = sample::write_geoip(dir.path()).expect("write GeoIP databases");
        let geo = GeoIp::open(&GeoIpConfig {
            city_db: files.city.display().to_string(),
            asn_db: files.asn.display().to_string(),
            anonymous_db: files.anonymous.display().to_string(),
            ..GeoIpConfig::default()
        })
        .expect("open the generated databases");
        Bench {
            _dir: dir,
            geo,
            profile: Profile::new(&ProfileConfig::default(), &StateConfig::default()),
        }
    }

    /// `D` built from its section's TOML (`""`: its defaults).
    pub fn detector<D: Registration>(section: &str) -> D {
        let cfg: D::Config = toml::from_str(section).expect("valid section");
        D::new(&cfg, &StateConfig::default(), &Default::default())
    }

    /// Every finding of `d` on `lines`, in order.
    pub fn observe(&self, d: &dyn Detector, lines: &[Line]) -> Vec<Finding> {
        let limits = ParseLimits::new(65_536, T0 + 1000 * HOUR);
        let mut out = Vec::new();
        for l in lines {
            let ev = parse_event(l.json.as_bytes(), &limits).expect("test events are valid");
            let ctx = Context::new(&self.geo, &[], &ev).with_profile(Some(&self.profile));
            ctx.hold_profile(); // as the engine does
            d.observe(&ev, &ctx, &mut out);
            ctx.learn(&ev);
        }
        out
    }
}

/// An address of a generated network in `city`.
pub fn ip(city: &str, host: u16) -> IpAddr {
    ip_in(sample::city_named(city), host)
}
