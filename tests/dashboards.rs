//! Every query of every dashboard panel returns data from a real
//! Prometheus server (Debian package prometheus) scraping a running
//! `credwatch demo --follow`. A panel whose query returns nothing is a
//! broken panel.

use std::io::{Read, Write};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

struct Kill(Child);
impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

fn get(addr: &str, path: &str) -> Option<String> {
    let mut s = std::net::TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut body = String::new();
    s.read_to_string(&mut body).ok()?;
    body.split_once("\r\n\r\n").map(|(_, b)| b.to_string())
}

fn encode(q: &str) -> String {
    q.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

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
    let prom_port = free_port();
    let config = dir.path().join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: credwatch\n    static_configs:\n      - targets: ['127.0.0.1:{demo_port}']\n"
        ),
    )
    .expect("config");
    let _prom = Kill(
        Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{prom_port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("prometheus (Debian package prometheus; tests/run installs it)"),
    );
    let prom = format!("127.0.0.1:{prom_port}");
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
            let answer = get(&prom, &format!("/api/v1/query?query={}", encode(q)))
                .and_then(|b| serde_json::from_str::<Value>(&b).ok());
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
