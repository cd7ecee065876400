//! Reports of many incidents, for the browser test and the report
//! benchmark: the sample day's real actions copied onto other accounts.

use serde_json::Value;

use credwatch::report::Collector;
use credwatch::source::event::Kind;
use credwatch::time::{format_rfc3339, parse_rfc3339};

const DAY: i64 = 24 * 3_600_000;

/// About `incidents` incidents (whole copies of the day's), copy `i` on
/// accounts `local.i@domain` and incidents `id_i`, spread over 30 days,
/// with 30 days of hourly events.
pub fn many_incidents(actions: &[Value], incidents: usize) -> Collector {
    let mut c = Collector::new();
    let mut ids: Vec<&str> = actions
        .iter()
        .filter_map(|a| a["data"]["incident"].as_str())
        .collect();
    ids.sort();
    ids.dedup();
    let per_copy = ids.len().max(1);
    let start = parse_rfc3339("2026-10-01T00:00:00Z").expect("a time");
    for h in 0..30 * 24 {
        for (k, n) in [(Kind::Auth, 3), (Kind::Submission, 2), (Kind::Bounce, 1)] {
            for _ in 0..n {
                c.event(start + h * 3_600_000, k);
            }
        }
    }
    for i in 0..incidents.div_ceil(per_copy) {
        for a in actions {
            let mut a = a.clone();
            let d = &mut a["data"];
            let account = d["account"].as_str().unwrap_or("x@example.jp").to_string();
            let (local, domain) = account.split_once('@').unwrap_or((&account, "example.jp"));
            d["account"] = Value::from(format!("{local}.{i}@{domain}"));
            d["incident"] = Value::from(format!("{}_{i}", d["incident"].as_str().unwrap_or("")));
            let ts = parse_rfc3339(d["last_event_ts"].as_str().unwrap_or("")).unwrap_or(start);
            let moved = start + ts.rem_euclid(DAY) + (i as i64 % 30) * DAY;
            d["last_event_ts"] = Value::from(format_rfc3339(moved));
            c.action_json(&a);
        }
    }
    c
}
