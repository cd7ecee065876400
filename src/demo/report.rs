//! The demo's report: the same page as `replay --report`, made of the
//! events the demo played and the actions the service sent, read back from
//! the actions topic.

use std::collections::HashSet;
use std::io::{BufWriter, Write};
use std::path::Path;

use anyhow::Context as _;
use serde_json::Value;

use super::sample::Line;
use crate::report::{detector_facts, Collector, Facts};
use crate::source::event::{parse_event, ParseLimits};

pub(super) struct DayReport {
    collector: Collector,
    /// The keys of the accounts seen.
    accounts: HashSet<u64>,
    limits: ParseLimits,
}

impl Default for DayReport {
    fn default() -> DayReport {
        DayReport {
            collector: Collector::default(),
            accounts: HashSet::new(),
            limits: ParseLimits::new(65_536, crate::time::Millis::MAX / 4),
        }
    }
}

impl DayReport {
    /// The events of a day, as played.
    pub(super) fn events(&mut self, lines: &[Line]) {
        for l in lines {
            // The service's own parser, as demo/maillog.rs reads the day:
            // the kind, and the account's key in its canonical form.
            let Ok(e) = parse_event(l.json.as_bytes(), &self.limits) else {
                continue;
            };
            self.collector.event(e.ts, e.kind);
            self.accounts.insert(e.key);
        }
    }

    /// Writes the page to `path`.
    pub(super) fn write(
        mut self,
        actions: &[Value],
        settings: &crate::config::Settings,
        breaker_open: bool,
        source: String,
        path: &Path,
    ) -> anyhow::Result<usize> {
        for a in actions {
            self.collector.action_json(a);
        }
        let facts = Facts {
            source,
            accounts_seen: Some(self.accounts.len() as u64),
            detectors: detector_facts(self.collector.incidents()),
            breaker_open: Some(breaker_open),
            written_at: crate::time::now_millis(),
            ..Facts::default()
        };
        let geo = crate::geo::GeoIp::open(&settings.config.geoip).ok();
        let file = std::fs::File::create(path)
            .with_context(|| format!("cannot create the report file {}", path.display()))?;
        let mut out = BufWriter::new(file);
        self.collector
            .write(&facts, geo.as_ref(), &mut out)
            .and_then(|_| out.flush())
            .with_context(|| format!("cannot write the report file {}", path.display()))?;
        Ok(self.collector.incidents().len())
    }
}
