//! The sample day written as the log lines Dovecot and Postfix write for
//! it (`source::maillog::render`, what `credwatch demo --format maillog`
//! shows and the comparison benchmark feeds every tool), read back: the
//! same events, and the same actions with the same ids, as the day's JSON
//! says them in the servers' terms. Two things logs cannot say otherwise:
//! a webmail login is an IMAP login (from the webmail host, with the
//! user's address forwarded), and every message Postfix queues for an
//! authenticated client is also that client's SMTP login (its `client=`
//! line), unless Dovecot's submission service logged that login already.

use std::collections::BTreeMap;

use credwatch::demo::sample::{self, DayParams};
use credwatch::source::event::{parse_event, ParseLimits};
use credwatch::source::maillog::{render, Joiner, MaillogConfig};
use credwatch_testkit::{run, World};

#[test]
fn the_sample_day_as_log_lines_gives_the_same_actions() {
    let (mut day, _) = sample::generate_day(&DayParams {
        accounts: 300,
        ..Default::default()
    });
    day.sort_by_key(|l| l.ts);
    let limits = ParseLimits::new(65_536, i64::MAX / 4);
    let mut text = String::new();
    for (n, l) in day.iter().enumerate() {
        let e = parse_event(l.json.as_bytes(), &limits).unwrap();
        render::lines(&e, n as u64, &mut text);
    }
    let cfg = MaillogConfig::default();
    let clock = cfg.clock(0);
    let mut j = Joiner::new(&cfg);
    let mut made = Vec::new();
    for (n, line) in text.lines().enumerate() {
        j.feed(line, n as u64, &clock, &mut made);
    }
    j.finish(&mut made);
    assert!(
        j.counts
            .skipped
            .keys()
            .all(|s| s.as_str() == "not_used" || s.as_str() == "unauthenticated"),
        "{:?}",
        j.counts
    );
    let back: Vec<sample::Line> = made
        .iter()
        .map(|e| sample::Line {
            ts: e.fields.ts,
            json: String::from_utf8(e.fields.to_json()).unwrap(),
        })
        .collect();
    // The day in the servers' terms.
    let mut want_day = Vec::new();
    let mut smtp_logins: BTreeMap<(String, String), i64> = BTreeMap::new();
    for l in &day {
        let mut v: serde_json::Value = serde_json::from_str(&l.json).unwrap();
        if v["protocol"] == "webmail" {
            v["protocol"] = "imap".into();
        }
        let who = (
            v["account"].as_str().unwrap().to_string(),
            v["src_ip"].as_str().unwrap_or("").to_string(),
        );
        if v["kind"] == "auth" && v["protocol"] == "smtp" && v["result"] == "success" {
            smtp_logins.insert(who.clone(), l.ts);
        }
        if v["kind"] == "submission" && smtp_logins.get(&who).is_none_or(|t| *t + 60_000 < l.ts) {
            let login = serde_json::json!({"ts": l.ts, "kind": "auth", "account": who.0, "protocol": "smtp",
                "src_ip": who.1, "result": "success", "mechanism": v["mechanism"].as_str().unwrap_or("PLAIN")});
            want_day.push(sample::Line {
                ts: l.ts,
                json: login.to_string(),
            });
        }
        want_day.push(sample::Line {
            ts: l.ts,
            json: v.to_string(),
        });
    }
    // The same events, one for one.
    let shapes = |lines: &[sample::Line]| {
        let mut m: BTreeMap<String, usize> = BTreeMap::new();
        for l in lines {
            let v: serde_json::Value = serde_json::from_str(&l.json).unwrap();
            let k = format!(
                "{} {} {} {} {} {} {}",
                l.ts,
                v["kind"],
                v["account"],
                v["protocol"],
                v["result"],
                v["src_ip"],
                v["rcpt_count"]
            );
            *m.entry(k).or_default() += 1;
        }
        m
    };
    let (got, want) = (shapes(&back), shapes(&want_day));
    let diff: Vec<_> = got
        .iter()
        .filter(|(k, n)| want.get(*k) != Some(n))
        .map(|(k, n)| (k, n, want.get(k)))
        .take(4)
        .collect();
    assert!(
        diff.is_empty() && got.len() == want.len(),
        "events differ: {diff:?}"
    );
    let day = want_day;
    let world = World::new();
    let ids = |lines: &[sample::Line]| {
        let mut v: Vec<String> = run(&world.engine(""), lines)
            .iter()
            .map(|a| {
                format!(
                    "{} {} {} {}",
                    a.id,
                    a.data.account,
                    a.data.detector,
                    a.data.action.as_str()
                )
            })
            .collect();
        v.sort();
        v
    };
    let want = ids(&day);
    assert!(want.len() > 10, "the sample day has attacks: {want:?}");
    assert_eq!(ids(&back), want);
}
