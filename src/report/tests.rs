use serde_json::json;

use super::map::{great_circle, great_circle_path, project, view_box};
use super::*;
use crate::time::{format_rfc3339, parse_rfc3339, HOUR};

fn ts(s: &str) -> Millis {
    parse_rfc3339(s).expect("a good time")
}

fn travel_action(account: &str, incident: &str) -> Value {
    json!({
        "type": "account.lock", "id": "cw_1", "timestamp": "2026-11-05T02:31:00.000Z",
        "data": {
            "account": account, "action": "lock", "detector": "impossible_travel",
            "severity": "high", "reason": "Login from Changchun, CN 8,200 km from London, GB 31 min after the previous one.",
            "dry_run": false, "first_event_ts": "2026-11-05T02:00:00.000Z",
            "last_event_ts": "2026-11-05T02:31:00.000Z", "incident": incident,
            "evidence": {
                "distance_km": 8182.0, "elapsed_seconds": 1860, "speed_kmh": 15720.0,
                "login": {"ip": "175.16.199.1", "lat": 43.88, "lon": 125.3228, "place": "Changchun, CN", "ts": "2026-11-05T02:31:00.000Z"},
                "previous_login": {"ip": "81.2.69.142", "lat": 51.5142, "lon": -0.0931, "place": "London, GB", "ts": "2026-11-05T02:00:00.000Z"}
            }
        }
    })
}

fn alert(
    account: &str,
    incident: &str,
    detector: &str,
    at: &str,
    downgraded: Option<&str>,
) -> Value {
    let mut v = json!({
        "type": "account.alert", "id": "cw_2", "timestamp": at,
        "data": {
            "account": account, "action": "alert", "detector": detector, "severity": "medium",
            "reason": format!("{detector} said so"), "dry_run": downgraded == Some("dry_run"),
            "first_event_ts": at, "last_event_ts": at, "incident": incident,
            "evidence": {"bounces_last_hour": 50, "senders": ["ceo@bank.example"], "source_ip": "95.24.0.66"}
        }
    });
    if let Some(d) = downgraded {
        v["data"]["downgraded_by"] = json!(d);
    }
    v
}

#[test]
fn hours_count_by_kind_in_any_order_and_draw_the_busiest_stretch() {
    let mut h = Hours::default();
    let t = ts("2026-11-05T10:30:00Z");
    // A broken timestamp ten years away comes first: it must not decide
    // where the timeline is.
    h.add(t - 10 * 365 * 24 * HOUR, Kind::Auth);
    h.add(t, Kind::Auth);
    h.add(t + 5 * HOUR, Kind::Bounce);
    h.add(t - 3 * HOUR, Kind::Submission);
    h.add(t, Kind::Auth);
    let s = h.series();
    assert_eq!(s.first, (t - 3 * HOUR).div_euclid(HOUR));
    assert_eq!(s.counts.len(), 9);
    assert_eq!(s.counts[0], [0, 1, 0, 0]);
    assert_eq!(s.counts[3], [2, 0, 0, 0]);
    assert_eq!(s.counts[8], [0, 0, 1, 0]);
    assert_eq!(s.outside, 1);
    // Every event counts in the totals, drawn or not.
    assert_eq!(h.total(Kind::Auth), 3);
    // An hour met again later adds to what it had.
    h.add(t + 20 * HOUR, Kind::Unlock);
    h.add(t, Kind::Auth);
    assert_eq!(h.total(Kind::Auth), 4);
    assert_eq!(h.total(Kind::Unlock), 1);
    let s = h.series();
    assert_eq!(s.counts.len(), 24);
    assert_eq!(s.counts[3], [3, 0, 0, 0]);
}

#[test]
fn great_circles_end_where_they_start_and_break_at_the_antimeridian() {
    let london = (51.5, -0.09);
    let changchun = (43.88, 125.32);
    let pts = great_circle(london, changchun, 32);
    assert_eq!(pts.len(), 33);
    assert!((pts[0].0 - london.0).abs() < 1e-6 && (pts[0].1 - london.1).abs() < 1e-6);
    let last = pts[32];
    assert!((last.0 - changchun.0).abs() < 1e-6 && (last.1 - changchun.1).abs() < 1e-6);
    // The great circle bows north of both ends (over Russia), unlike a
    // straight line on the map.
    assert!(pts[16].0 > 60.0, "midpoint {:?}", pts[16]);
    // Tokyo to San Francisco crosses the antimeridian: two pieces.
    let d = great_circle_path((35.7, 139.7), (37.8, -122.4), 48);
    assert_eq!(d.matches('M').count(), 2, "{d}");
    assert_eq!(
        great_circle_path(london, changchun, 48)
            .matches('M')
            .count(),
        1
    );
    assert_eq!(project(90.0, -180.0), (0.0, 0.0));
    assert_eq!(project(-90.0, 180.0), (0.0, 360.0));
}

#[test]
fn view_boxes_hold_their_points_inside_the_world() {
    let pts = [project(51.5, -0.09), project(43.88, 125.32)];
    let (x, y, w, h) = view_box(&pts, 60.0);
    assert!((w / h - 2.0).abs() < 1e-9);
    for (px, py) in pts {
        assert!(px >= x && px <= x + w && py >= y && py <= y + h);
    }
    let (x, y, w, h) = view_box(&[project(-89.0, 179.0)], 60.0);
    assert!(x >= 0.0 && y >= 0.0 && x + w <= 720.0 + 1e-9 && y + h <= 360.0 + 1e-9);
}

#[test]
fn an_incident_gathers_its_actions_joined_findings_places_and_journey() {
    let mut c = Collector::new();
    c.action_json(&alert(
        "alice@example.jp",
        "cw_a",
        "send_volume",
        "2026-11-05T01:00:00.000Z",
        None,
    ));
    c.joined(
        "cw_a",
        "alice@example.jp",
        "sender_mismatch",
        "sent as others",
        ts("2026-11-05T01:30:00Z"),
    );
    c.action_json(&travel_action("alice@example.jp", "cw_a"));
    c.action_json(&alert(
        "bob@example.net",
        "cw_b",
        "backscatter",
        "2026-11-05T03:00:00.000Z",
        Some("dry_run"),
    ));
    assert_eq!(c.incidents().len(), 2);
    let a = &c.incidents()[0];
    assert_eq!(
        a.detectors(),
        ["send_volume", "sender_mismatch", "impossible_travel"]
    );
    assert!(a.locked());
    assert_eq!(a.severity(), "high");
    assert_eq!(a.journeys.len(), 1);
    assert_eq!(a.journeys[0].from.label, "London, GB");
    assert_eq!(a.spots.len(), 2);
    assert_eq!(a.bounces, Some(50));
    let b = &c.incidents()[1];
    assert!(!b.locked() && b.dry_run_lock());
    let facts = detector_facts(c.incidents());
    let sv = facts
        .iter()
        .find(|d| d.name == "sender_mismatch")
        .expect("counted");
    assert_eq!((sv.findings, sv.joined, sv.locks), (1, 1, 0));
}

#[test]
fn a_story_fills_in_findings_the_collector_did_not_see_once() {
    let mut c = Collector::new();
    let mut lock = travel_action("carol@example.jp", "cw_c");
    lock["data"]["evidence"]["incident_story"] = json!([
        {"detector": "send_volume", "reason": "sent a lot", "ts": "2026-11-05T01:00:00.000Z"},
        {"detector": "send_volume", "reason": "sent a lot", "ts": "2026-11-05T01:00:00.000Z"}
    ]);
    c.action_json(&lock);
    let inc = &c.incidents()[0];
    assert_eq!(inc.findings.len(), 2);
    assert_eq!(inc.findings[0].detector, "send_volume");
    assert_eq!(inc.findings[0].action, None);
}

#[test]
fn the_page_is_self_contained_escaped_and_draws_the_journey() {
    let mut c = Collector::new();
    for i in 0..30 {
        c.event(ts("2026-11-05T00:00:00Z") + i * 600_000, Kind::Auth);
    }
    c.event(ts("2026-11-05T02:10:00Z"), Kind::Submission);
    c.action_json(&travel_action("alice@example.jp", "cw_a"));
    c.action_json(&alert(
        "<script>alert(1)</script>@example.jp",
        "cw_x",
        "password_spray",
        "2026-11-05T04:00:00.000Z",
        None,
    ));
    assert_eq!(c.unreadable, 0);
    let facts = Facts {
        source: "day.jsonl".into(),
        detectors: detector_facts(c.incidents()),
        breaker_opened: Some(0),
        breaker_open: Some(false),
        ..Facts::default()
    };
    let page = render(&c, &facts, None);
    assert!(page.starts_with("<!doctype html>"));
    assert!(
        !page.contains("<script>alert(1)"),
        "an account is text, never markup"
    );
    assert!(page.contains("&lt;script&gt;alert(1)&lt;/script&gt;@example.jp"));
    assert!(page.contains("class=\"journey\""));
    assert!(page.contains("id=\"cw_a\"") && page.contains("id=\"cw_x\""));
    assert!(page.contains("<code>impossible_travel</code>"));
    assert!(page.contains("Accounts locked</dt><dd>1</dd>"));
    assert!(page.contains("The breaker never opened"));
    // Nothing to fetch: no address outside the page in any src or href.
    for attr in ["src=\"", "href=\"", "url("] {
        for (i, _) in page.match_indices(attr) {
            let rest = &page[i + attr.len()..];
            assert!(
                rest.starts_with('#') || rest.starts_with("data:"),
                "{attr} leaves the page: {}",
                &rest[..rest.len().min(60)]
            );
        }
    }
    // The one address in the page is the SVG namespace the script names
    // when it draws a card's map (an identifier, never fetched).
    let page_text = page.replace("\"http://www.w3.org/2000/svg\"", "");
    assert!(!page_text.contains("http://") && !page_text.contains("https://"));
    // 31 events: 30 auth and 1 submission, in the summary as text.
    assert!(
        page.contains("Events judged</dt><dd>31</dd>"),
        "{}",
        &page[..0]
    );
}

#[test]
fn a_hostile_account_in_the_scripted_cards_cannot_end_their_data_block() {
    let mut c = Collector::new();
    let n = super::html::HTML_CARDS + 5;
    for i in 0..n {
        let account = if i == n - 1 {
            "</script><script>alert(1)</script>@example.jp".to_string()
        } else {
            format!("user{i}@example.jp")
        };
        let at = format_rfc3339(ts("2026-11-05T00:00:00Z") + i as i64 * 60_000);
        c.action_json(&alert(
            &account,
            &format!("cw_{i}"),
            "backscatter",
            &at,
            None,
        ));
    }
    let page = render(&c, &Facts::default(), None);
    let block = page
        .split("<script type=\"application/json\" id=\"more-cards\">")
        .nth(1)
        .and_then(|rest| rest.split("</script>").next())
        .expect("a data block");
    let items: Vec<Value> = serde_json::from_str(block).expect("the block is whole JSON");
    assert_eq!(items.len(), 5);
    assert_eq!(items[4][1], "</script><script>alert(1)</script>@example.jp");
    assert!(!block.contains('<'));
    assert_eq!(page.matches("<script>alert(1)").count(), 0);
}

#[test]
fn a_long_run_is_drawn_by_day_and_a_short_one_by_hour_at_the_same_width() {
    let start = ts("2026-01-13T20:00:00Z");
    let mut long = Collector::new();
    long.event(start, Kind::Auth);
    long.event(start + 99 * 24 * HOUR, Kind::Submission);
    let page = render(&long, &Facts::default(), None);
    assert!(
        page.contains("Events per day (UTC)"),
        "100 days are drawn by day"
    );
    // Days start at midnight: the first bar is the 13th, from 00:00.
    assert!(page.contains("<title>2026-01-13 00:00 UTC (day): 1 event(s)"));
    assert!(page.contains(">01-13</text>"), "a tick names the first day");
    let mut short = Collector::new();
    short.event(start, Kind::Auth);
    let page = render(&short, &Facts::default(), None);
    assert!(page.contains("Events per hour (UTC)"));
    assert!(
        page.contains("viewBox=\"0 0 1170 184\""),
        "one hour is drawn as wide as a month"
    );
}
