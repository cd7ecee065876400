//! A webhook receiver on loopback (tests/webhook_receiver.py) that verifies
//! every request with an independent Standard Webhooks implementation
//! (PyPI `standardwebhooks`).

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use serde_json::Value;

pub const SECRET_A: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
pub const SECRET_B: &str = "whsec_c2Vjb25kIHNlY3JldCBmb3Igcm90YXRpb24=";

pub struct Receiver {
    child: Child,
    pub port: u16,
    out: PathBuf,
}

impl Receiver {
    pub fn start(dir: &std::path::Path, name: &str, args: &[&str], port: u16) -> Receiver {
        let out = dir.join(format!("{name}.jsonl"));
        let mut child = Command::new("python3")
            .arg(crate::repo_root().join("tests/webhook_receiver.py"))
            .arg("--out")
            .arg(&out)
            .args([
                "--secret",
                SECRET_A,
                "--secret",
                SECRET_B,
                "--port",
                &port.to_string(),
            ])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("python3 tests/webhook_receiver.py (tests/run installs standardwebhooks)");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("receiver port");
        let port = line
            .trim()
            .strip_prefix("PORT ")
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| {
                panic!("the receiver did not start: {line:?} (is standardwebhooks installed?)")
            });
        Receiver { child, port, out }
    }

    pub fn requests(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.out)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).expect("receiver line"))
            .collect()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// 2xx answers per id.
pub fn delivered(r: &Receiver) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for q in r.requests() {
        if q["answered"]
            .as_u64()
            .is_some_and(|s| (200..300).contains(&s))
        {
            *m.entry(q["id"].as_str().unwrap_or_default().to_string())
                .or_default() += 1;
        }
    }
    m
}

impl Receiver {
    /// Stops the receiver (SIGKILL): the port refuses connections until
    /// [`Receiver::start`] is called again with it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
