//! Durable state, in-process: an engine's accounts written as a base and a
//! delta (`state::snapshot`), read back by a fresh engine, which goes on
//! from there, gives exactly the actions of one engine that never stopped.
//! Over three days of the sample platform with every planted attack and
//! look-alike (travel, bursts, spraying, sender mismatch, volume, bounces,
//! unlocks, open incidents), cut at many points: every table's entries and
//! every incident make the trip.

use std::collections::BTreeSet;

use credwatch::demo::sample::{generate_day, DayParams, Line};
use credwatch::engine::Engine;
use credwatch::source::event::{parse_event, ParseLimits};
use credwatch::state::codec::Reader;
use credwatch::state::snapshot::{load_chunk, Header, Writer};
use credwatch::state::Swept;
use credwatch_testkit::*;

const DAY: i64 = 24 * 60 * MINUTE;

fn three_days() -> Vec<Line> {
    let mut lines = Vec::new();
    for d in 0..3 {
        let (day, _) = generate_day(&DayParams {
            accounts: 300,
            start: T0 + d * DAY,
            // The same platform every day (its people where they were
            // yesterday): a new seed would move every account to another
            // city overnight, a storm of travel that opens the lock-storm
            // breaker, which is the instance's, not the accounts' (it is
            // not durable, see docs/durable-state.md).
            seed: 7,
            ..Default::default()
        });
        lines.extend(day);
    }
    // An incident open across the cut: a travel that locks, then the
    // traveller's flight home, which joins it (no second lock).
    let t = T0 + DAY + 12 * 60 * MINUTE;
    lines.extend([
        ok(t, "straddle@example.jp", ip("London", 77)),
        ok(t + 40 * MINUTE, "straddle@example.jp", ip("Sydney", 77)),
        ok(t + 240 * MINUTE, "straddle@example.jp", ip("London", 78)),
    ]);
    lines.extend([
        unlock(T0 + DAY + 5 * 60 * MINUTE, "nobody@example.com", None),
        unlock(T0 + 2 * DAY, "user3@example.com", Some("password reset")),
    ]);
    sorted(lines)
}

fn keys(engine: &Engine, lines: &[Line]) -> Vec<u64> {
    let limits =
        ParseLimits::new(65_536, T0 + 1000 * 60 * MINUTE).with_form(engine.account_form().clone());
    let set: BTreeSet<u64> = lines
        .iter()
        .map(|l| parse_event(l.json.as_bytes(), &limits).expect("valid").key)
        .collect();
    set.into_iter().collect()
}

/// Writes `accounts` of `from` as one checkpoint and reads it into `into`.
fn carry(from: &Engine, into: &Engine, accounts: &[u64], base: bool, seq: u64) -> usize {
    let tables = from.durable_tables();
    let mut w = Writer::new(&tables, base, seq, if base { seq } else { seq - 1 }, 0, 0);
    for k in accounts {
        w.account(*k);
    }
    let chunks = w.finish();
    let target: Vec<&dyn Swept> = into.durable_tables();
    let mut n = 0;
    for c in &chunks {
        let mut r = Reader::new(c);
        let h = Header::read(&mut r).expect("header");
        n += load_chunk(&target, &h, &mut r).expect("chunk");
    }
    n
}

fn ids(actions: &[credwatch::action::Action]) -> Vec<(String, String, String)> {
    actions
        .iter()
        .map(|a| {
            (
                a.id.clone(),
                a.data.account.clone(),
                a.data.detector.to_string(),
            )
        })
        .collect()
}

#[test]
fn a_base_and_a_delta_carry_every_table_across_a_restart() {
    let w = World::new();
    let lines = three_days();
    let whole = ids(&run(&w.engine(""), &lines));
    assert!(whole.len() >= 10, "the days have attacks: {whole:?}");
    let n = lines.len();
    let home = lines
        .iter()
        .rposition(|l| l.json.contains("straddle@"))
        .expect("the flight home");
    for (c1, c2) in [
        (n / 5, n / 3),
        (n / 3, n / 2),
        (n / 2, 2 * n / 3),
        (n / 2, n - 10),
        (home - 1, home),
        (home, home + 1),
    ] {
        let a = w.engine("");
        let mut got = ids(&run(&a, &lines[..c1]));
        // The base: every account so far. The delta: the accounts touched
        // since, as the worker's changed set holds them.
        let b = w.engine("");
        let based = carry(&a, &b, &keys(&a, &lines[..c1]), true, 1);
        assert!(based > 0);
        got.extend(ids(&run(&a, &lines[c1..c2])));
        let c = w.engine("");
        carry(&a, &c, &keys(&a, &lines[..c1]), true, 1);
        carry(&a, &c, &keys(&a, &lines[c1..c2]), false, 2);
        got.extend(ids(&run(&c, &lines[c2..])));
        let first = got.iter().zip(&whole).position(|(g, w)| g != w);
        assert!(
            got.len() == whole.len() && first.is_none(),
            "cut at {c1} and {c2} of {n}: {} actions against {}; first difference at {first:?}: {:?} against {:?}",
            got.len(),
            whole.len(),
            first.map(|i| &got[i]),
            first.map(|i| &whole[i]),
        );
    }
}

#[test]
fn a_fresh_engine_without_the_state_does_decide_differently() {
    // The control: the comparison above can fail. Without the carried
    // state, the rest of the days is judged from nothing.
    let w = World::new();
    let lines = three_days();
    let whole = ids(&run(&w.engine(""), &lines));
    let n = lines.len();
    let a = w.engine("");
    let mut got = ids(&run(&a, &lines[..n / 2]));
    got.extend(ids(&run(&w.engine(""), &lines[n / 2..])));
    assert_ne!(got, whole);
}
