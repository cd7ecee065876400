//! The parallel replay gives the same actions as the sequential one.

use credwatch_testkit::*;

use std::io::Cursor;

use credwatch::cli::parallel::replay_parallel;
use credwatch::cli::replay::{replay, ReplayOptions};
use credwatch::demo::sample::{generate_day, write_lines, DayParams};
use credwatch::source::event::ParseLimits;

fn opts<'a>() -> ReplayOptions<'a> {
    ReplayOptions {
        limits: ParseLimits::new(65_536, T0 + 1000 * 3_600_000),
        rejects: None,
        progress_total: None,
        events_out: None,
        threads: 1,
        report: None,
    }
}

#[test]
fn same_accounts_same_ids_in_input_order() {
    let w = World::new();
    let (lines, expected) = generate_day(&DayParams {
        accounts: 3_000,
        ..DayParams::default()
    });
    let mut data = Vec::new();
    write_lines(&lines, &mut data).unwrap();
    data.extend_from_slice(b"not json\n");

    // The sample's webmail front end is a trusted network, as in its config.
    let trusted = format!(
        "[policy]\ntrusted_networks = [\"{}/32\"]\n",
        ip("London", 1)
    );
    let seq_engine = w.engine(&trusted);
    let mut seq_out = Vec::new();
    let seq = replay(&seq_engine, Cursor::new(&data), &mut seq_out, opts()).unwrap();

    // Repeated: which thread runs ahead differs from run to run.
    for threads in [2, 2, 2, 2, 3, 3] {
        let mut par_engine = w.engine(&trusted);
        par_engine.set_lanes(threads);
        let mut par_out = Vec::new();
        let par = replay_parallel(
            &par_engine,
            Cursor::new(&data),
            &mut par_out,
            opts(),
            threads,
        )
        .unwrap();
        assert_eq!(par.lines, seq.lines);
        assert_eq!(par.rejects, seq.rejects);
        // (id, account, detector) of each action.
        let ids = |out: &[u8]| -> Vec<(String, String, String)> {
            String::from_utf8(out.to_vec())
                .unwrap()
                .lines()
                .map(|l| {
                    let v: serde_json::Value = serde_json::from_str(l).unwrap();
                    (
                        v["id"].as_str().unwrap().to_string(),
                        v["data"]["account"].as_str().unwrap().to_string(),
                        v["data"]["detector"].as_str().unwrap().to_string(),
                    )
                })
                .collect()
        };
        // Actions of one account keep their order; across accounts, a
        // finding triggered by another shard's event may come out at a
        // different place. Every detector agrees exactly, `password_spray`
        // (which looks across accounts judged by different threads)
        // included: its windows count only what is inside them, whatever
        // the order of judging.
        let pairs = |v: Vec<(String, String, String)>| -> Vec<(String, String)> {
            v.into_iter().map(|(id, a, _)| (id, a)).collect()
        };
        let (par_all, seq_all) = (ids(&par_out), ids(&seq_out));
        let (mut p, mut s) = (pairs(par_all), pairs(seq_all));
        let per_account = |v: &[(String, String)], a: &str| -> Vec<String> {
            v.iter()
                .filter(|(_, acc)| acc == a)
                .map(|(id, _)| id.clone())
                .collect()
        };
        for (_, a) in &s {
            assert_eq!(
                per_account(&p, a),
                per_account(&s, a),
                "threads = {threads}, {a}"
            );
        }
        p.sort();
        s.sort();
        assert_eq!(p, s, "threads = {threads}");
    }
    let caught: Vec<String> = locked(&seq_out);
    for e in expected.iter().filter(|e| e.detector.is_some()) {
        assert!(
            caught.contains(&e.account),
            "{} ({}) not locked",
            e.account,
            e.scenario
        );
    }
    for e in expected.iter().filter(|e| e.detector.is_none()) {
        assert!(
            !caught.contains(&e.account),
            "{} ({}) locked",
            e.account,
            e.scenario
        );
    }
}

/// The accounts the output locks.
fn locked(out: &[u8]) -> Vec<String> {
    String::from_utf8(out.to_vec())
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|v| v["type"] == "account.lock")
        .map(|v| v["data"]["account"].as_str().unwrap().to_string())
        .collect()
}
