//! send_volume: a sudden flood of recipients is caught (also from the
//! customer's usual address and place); the newsletter the account always
//! sends, and a one-off invitation, are not.

use credwatch_testkit::*;

const HOUR: i64 = 60 * MINUTE;

/// An account's ordinary week: `per_hour` recipients in each working hour.
fn usual_week(a: &str, per_hour: u32) -> Vec<credwatch::demo::sample::Line> {
    let home = ip("Berlin", 5);
    let mut v = Vec::new();
    for day in 0..7 {
        for h in 9..17 {
            v.push(submission(
                T0 - (7 - day) * 24 * HOUR + h * HOUR,
                a,
                home,
                a,
                Some(a),
                per_hour,
            ));
        }
    }
    v
}

fn of<'a>(
    actions: &'a [credwatch::action::Action],
    detector: &str,
) -> Vec<&'a credwatch::action::Action> {
    actions
        .iter()
        .filter(|x| x.data.detector == detector)
        .collect()
}

#[test]
fn malware_on_the_customers_own_pc_is_caught() {
    let w = World::new();
    let e = w.engine("");
    let a = "infected@example.de";
    let mut lines = usual_week(a, 5);
    // The same address, the same place: 40 messages of 10 recipients in an hour.
    for i in 0..40 {
        lines.push(submission(
            T0 + 9 * HOUR + i * MINUTE,
            a,
            ip("Berlin", 5),
            a,
            Some(a),
            10,
        ));
    }
    let actions = run(&e, &lines);
    let found = of(&actions, "send_volume");
    assert_eq!(found.len(), 1, "{actions:?}");
    let ev = &found[0].data.evidence;
    assert_eq!(ev["trigger"], "baseline");
    assert!(ev["recipients_last_hour"].as_u64().unwrap() >= 100);
    assert_eq!(ev["usual_peak_per_hour"].as_f64().unwrap().round(), 5.0);
    assert_eq!(found[0].kind, "account.alert", "a surge alone alerts");
}

#[test]
fn bounces_raise_a_surge_but_never_make_it_a_lock() {
    // Bounces are sent by third parties and anyone can forge them: a surge
    // against the account's habits stays an alert with bounces coming back
    // (its severity rises); only the account's own sending over a ceiling
    // locks.
    let w = World::new();
    let e = w.engine("");
    let a = "infected@example.de";
    let mut lines = usual_week(a, 5);
    for i in 0..40 {
        let t = T0 + 9 * HOUR + i * MINUTE;
        lines.push(submission(t, a, ip("Berlin", 5), a, Some(a), 10));
        for k in 0..3 {
            lines.push(bounce(t + (10 + k) * SECOND, a));
        }
    }
    let actions = run(&e, &sorted(lines));
    let found = of(&actions, "send_volume");
    assert_eq!(found.len(), 1, "{actions:?}");
    assert_eq!(found[0].kind, "account.alert", "{actions:?}");
    assert!(
        actions.iter().all(|a| a.kind != "account.lock"),
        "{actions:?}"
    );
    assert!(
        of(&actions, "backscatter").is_empty(),
        "the sender of the spam is not a victim"
    );

    // The same account sending over the hourly ceiling locks, critical with
    // the bounces.
    let e = w.engine("");
    let mut lines = usual_week(a, 5);
    for i in 0..40 {
        let t = T0 + 9 * HOUR + i * MINUTE;
        lines.push(submission(t, a, ip("Berlin", 5), a, Some(a), 30));
        lines.push(bounce(t + 30 * SECOND, a));
    }
    let actions = run(&e, &sorted(lines));
    let locks: Vec<_> = of(&actions, "send_volume")
        .into_iter()
        .filter(|a| a.kind == "account.lock")
        .collect();
    assert_eq!(locks.len(), 1, "{actions:?}");
    assert_eq!(locks[0].data.evidence["trigger"], "hourly_ceiling");
    assert_eq!(
        serde_json::to_value(locks[0].data.severity).unwrap(),
        "critical"
    );
}

#[test]
fn the_newsletter_it_always_sends_is_fine() {
    let w = World::new();
    let e = w.engine("");
    let a = "club@example.org";
    let home = ip("Paris", 3);
    let mut lines = Vec::new();
    // Every morning for a week, 600 recipients at 08:00, a little mail otherwise.
    for day in 0..8 {
        let d = T0 - 7 * 24 * HOUR + day * 24 * HOUR;
        for i in 0..12 {
            lines.push(submission(
                d + 8 * HOUR + i * MINUTE,
                a,
                home,
                a,
                Some(a),
                50,
            ));
        }
        lines.push(submission(d + 14 * HOUR, a, home, a, Some(a), 2));
    }
    let actions = run(&e, &lines);
    // The very first newsletter, with no history yet, is an alert; the
    // following seven are not.
    let found = of(&actions, "send_volume");
    assert_eq!(found.len(), 1, "{actions:?}");
    assert!(
        found[0].data.first_event_ts.starts_with("2026-10-29"),
        "{:?}",
        found[0].data.first_event_ts
    );
}

#[test]
fn a_quiet_account_sending_one_invitation_is_fine() {
    let w = World::new();
    let e = w.engine("");
    let a = "quiet@example.fr";
    let mut lines = usual_week(a, 1);
    lines.push(submission(
        T0 + 10 * HOUR,
        a,
        ip("Paris", 9),
        a,
        Some(a),
        30,
    ));
    assert!(run(&e, &lines).is_empty());
}

#[test]
fn the_hourly_ceiling_fires_whatever_the_history() {
    let w = World::new();
    let e = w.engine("");
    let a = "bulk@example.com";
    let mut lines = usual_week(a, 400);
    for i in 0..30 {
        lines.push(submission(
            T0 + 10 * HOUR + i * MINUTE,
            a,
            ip("Berlin", 5),
            a,
            Some(a),
            40,
        ));
    }
    let actions = run(&e, &lines);
    let found: Vec<_> = of(&actions, "send_volume")
        .into_iter()
        .filter(|x| x.data.evidence["trigger"] == "hourly_ceiling")
        .collect();
    assert_eq!(found.len(), 1, "{actions:?}");
    assert_eq!(found[0].kind, "account.lock");
    assert!(found[0].data.last_event_ts.starts_with("2026-11-05"));
}
