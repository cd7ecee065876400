//! A real Prometheus server (Debian package prometheus; tests/run installs
//! it) on a free loopback port, scraping one target every second and
//! evaluating rules every second; killed when dropped.

use std::path::Path;
use std::process::{Command, Stdio};

use serde_json::Value;

use crate::{free_port, http_get, Kill};

pub struct Prometheus {
    _child: Kill,
    pub addr: String,
}

impl Prometheus {
    /// Scrapes `target` (host:port); loads `rules` (a rules file) if given.
    /// Its config and data live in `dir`.
    pub fn start(dir: &Path, target: &str, rules: Option<&Path>) -> Prometheus {
        let rule_files = rules
            .map(|r| format!("rule_files:\n  - {}\n", r.display()))
            .unwrap_or_default();
        let config = dir.join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n{rule_files}\
                 scrape_configs:\n  - job_name: credwatch\n    static_configs:\n      - targets: ['{target}']\n"
            ),
        )
        .expect("prometheus.yml");
        let addr = format!("127.0.0.1:{}", free_port());
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("tsdb").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("prometheus (Debian package prometheus; tests/run installs it)");
        Prometheus {
            _child: Kill(child),
            addr,
        }
    }

    /// The answer to an instant query, or `None` while Prometheus does not
    /// answer.
    pub fn query(&self, expr: &str) -> Option<Value> {
        let (code, body) = http_get(&self.addr, &format!("/api/v1/query?query={}", encode(expr)));
        (code == 200)
            .then(|| serde_json::from_str(&body).ok())
            .flatten()
    }

    /// True when the query answers with at least one series.
    pub fn has_data(&self, expr: &str) -> bool {
        self.query(expr)
            .and_then(|a| a["data"]["result"].as_array().map(|r| !r.is_empty()))
            .unwrap_or(false)
    }
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
