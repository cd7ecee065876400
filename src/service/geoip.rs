//! Reloads the GeoIP databases when a file changes (geoipupdate replaces
//! them in place), verified before use.

use std::sync::atomic::Ordering;
use std::time::Duration;

use crate::geo::{GeoIp, GeoIpConfig};
use crate::source::kafka::Input;

/// The size and modification time of each configured GeoIP file.
fn stamp(cfg: &GeoIpConfig) -> Vec<Option<(u64, std::time::SystemTime)>> {
    [&cfg.city_db, &cfg.asn_db, &cfg.anonymous_db]
        .iter()
        .filter(|p| !p.is_empty())
        .map(|p| {
            std::fs::metadata(p)
                .ok()
                .and_then(|m| Some((m.len(), m.modified().ok()?)))
        })
        .collect()
}

/// Reloads the GeoIP databases when a file changes (geoipupdate replaces
/// them in place), verified before use; until the service stops.
pub(super) fn watch(s: &Input) {
    let cfg = &s.geoip;
    let every = Duration::from_secs(cfg.reload_check_secs);
    let mut seen = stamp(cfg);
    let mut slept = Duration::ZERO;
    while !s.shutdown.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(200));
        slept += Duration::from_millis(200);
        if slept < every {
            continue;
        }
        slept = Duration::ZERO;
        let now = stamp(cfg);
        if now == seen {
            continue;
        }
        match GeoIp::open(cfg) {
            Ok(geo) => {
                s.engine.reload_geo(geo);
                seen = now;
                if s.primary {
                    s.metrics.geoip_reloads.with_label_values(&["ok"]).inc();
                }
                tracing::info!("GeoIP databases changed on disk: reloaded and in use.");
            }
            Err(e) => {
                // The old databases stay in use until the files change
                // again (geoipupdate replaces a file whole; a bad copy by
                // hand is reported here, once).
                if s.primary {
                    s.metrics.geoip_reloads.with_label_values(&["failed"]).inc();
                }
                tracing::error!(error = %e, "GeoIP databases changed on disk but cannot be used; the previous ones stay in use.");
                seen = now;
            }
        }
    }
}
