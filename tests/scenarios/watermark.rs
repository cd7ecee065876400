//! The engine's event-time watermark and sweeps with several lanes: one
//! event far ahead moves a lane by one sweep interval only, the slowest
//! active lane holds the watermark, a reset lane starts afresh, and a
//! sweep forgets nothing a slow lane still needs.
use credwatch::config::Config;
use credwatch::engine::Engine;
use credwatch::source::event::{parse_event, Event, ParseLimits};
use credwatch::time::{Millis, HOUR, MINUTE};

/// 2026-11-05T00:00:00Z
const T0: Millis = 1_793_836_800_000;

fn engine(lanes: usize) -> Engine {
    let s = Config::from_toml_with_env(
        "[geoip]\ncity_db = \"\"\n[detectors.impossible_travel]\nenabled = false\n",
        "t",
        &[],
    )
    .unwrap();
    let mut e = Engine::new(&s).unwrap();
    e.set_lanes(lanes);
    e
}

fn failure(ts: Millis, account: &str) -> Event {
    let line = format!(
        r#"{{"ts":{ts},"account":"{account}","protocol":"imap","src_ip":"192.0.2.1","result":"failure"}}"#
    );
    parse_event(line.as_bytes(), &ParseLimits::new(65_536, T0 + 1000 * HOUR)).unwrap()
}

fn burst_entries(e: &Engine) -> usize {
    e.tables()
        .iter()
        .find(|t| t.name == "burst_failures")
        .map(|t| t.len)
        .unwrap()
}

#[test]
fn one_event_far_ahead_moves_a_lane_by_one_sweep_interval_only() {
    let e = engine(1);
    let mut out = Vec::new();
    e.process(&failure(T0, "a@example.net"), None, &mut out);
    assert_eq!(e.low_watermark(), T0);
    e.process(&failure(T0 + 20 * HOUR, "b@example.net"), None, &mut out);
    assert_eq!(e.low_watermark(), T0 + MINUTE, "the default sweep interval");
}

#[test]
fn the_watermark_is_the_slowest_active_lane() {
    let e = engine(2);
    let mut out = Vec::new();
    e.process_in_lane(1, &failure(T0, "a@example.net"), None, &mut out);
    for m in 0..30 {
        e.process_in_lane(
            0,
            &failure(T0 + m * MINUTE, "b@example.net"),
            None,
            &mut out,
        );
    }
    assert_eq!(e.low_watermark(), T0, "lane 1 is still at T0");
    e.lane_idle(1);
    assert_eq!(
        e.low_watermark(),
        T0 + 29 * MINUTE,
        "an idle lane does not hold it"
    );
    e.lane_reset(1);
    e.process_in_lane(1, &failure(T0 + 2 * HOUR, "c@example.net"), None, &mut out);
    assert_eq!(
        e.low_watermark(),
        T0 + 29 * MINUTE,
        "a reset lane starts from its next event, not from its old time"
    );
}

#[test]
fn a_sweep_forgets_what_expired_behind_the_slowest_lane_only() {
    // Lane 0 runs two hours ahead (2,000 events, enough for sweeps);
    // a failure judged in lane 1 at T0 is kept while lane 1 stays at
    // T0, and swept once lane 1 is idle.
    let e = engine(2);
    let mut out = Vec::new();
    e.process_in_lane(1, &failure(T0, "held@example.net"), None, &mut out);
    let drive = |from: Millis| {
        let mut out = Vec::new();
        for i in 0..2000 {
            let ts = from + i * 4 * 1000;
            e.process_in_lane(
                0,
                &failure(ts, &format!("u{}@example.net", i % 3)),
                None,
                &mut out,
            );
        }
    };
    drive(T0);
    assert_eq!(burst_entries(&e), 4, "nothing swept past the slow lane");
    e.lane_idle(1);
    drive(T0 + 2 * HOUR + 15 * MINUTE);
    assert_eq!(burst_entries(&e), 3, "the held account's failure expired");
}
