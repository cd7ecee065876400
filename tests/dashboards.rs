//! Every query of every dashboard panel returns data from a real
//! Prometheus server (Debian package prometheus) scraping a running
//! `credwatch demo --follow`. A panel whose query returns nothing is a
//! broken panel.

use credwatch_testkit::prometheus;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use credwatch_testkit::{free_port, Kill};
use prometheus::Prometheus;
use serde_json::Value;

#[test]
fn every_dashboard_query_returns_data_from_a_real_prometheus() {
    let dir = tempfile::tempdir().expect("tempdir");
    let demo_port = free_port();
    let _demo = Kill(
        Command::new(env!("CARGO_BIN_EXE_credwatch"))
            .args([
                "demo",
                "--follow",
                "--seconds",
                "8",
                "--listen",
                &format!("127.0.0.1:{demo_port}"),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("credwatch demo"),
    );
    let prom = Prometheus::start(dir.path(), &format!("127.0.0.1:{demo_port}"), None);
    let dashboard: Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/dashboards/credwatch-overview.json"
        ))
        .expect("dashboard"),
    )
    .expect("dashboard JSON");
    let mut queries = Vec::new();
    for p in dashboard["panels"].as_array().expect("panels") {
        for t in p["targets"].as_array().expect("targets") {
            let expr = t["expr"]
                .as_str()
                .expect("expr")
                .replace("$__rate_interval", "1m");
            queries.push((p["title"].as_str().unwrap_or("?").to_string(), expr));
        }
    }
    // Scrape long enough for rates and increases: wait until every query
    // answers with data, or report the ones that never do.
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut empty: Vec<String> = Vec::new();
    while Instant::now() < deadline {
        empty.clear();
        for (title, q) in &queries {
            let answer = prom.query(q);
            let has_data = answer
                .as_ref()
                .and_then(|a| a["data"]["result"].as_array())
                .is_some_and(|r| !r.is_empty());
            if !has_data {
                empty.push(format!("{title}: {q} -> {answer:?}"));
            }
        }
        if empty.is_empty() {
            break;
        }
        std::thread::sleep(Duration::from_secs(2));
    }
    assert!(
        empty.is_empty(),
        "panels whose query returns nothing:\n{}",
        empty.join("\n")
    );
    assert!(queries.len() >= 15, "{} queries checked", queries.len());
}
