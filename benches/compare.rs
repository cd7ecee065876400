//! credwatch side by side with what mail operators run today, on the same
//! events: fail2ban (its `dovecot` and `postfix-sasl` jails, through
//! `fail2ban-regex`) and CrowdSec (the `crowdsecurity/dovecot` and
//! `crowdsecurity/postfix` collections, in replay mode). The sample day is
//! written as the Dovecot and Postfix log lines the servers write for it
//! (`source::maillog::render`: a login is one line or two, a message four);
//! every tool reads that same file, and credwatch also reads the same
//! events as its JSON. Prints two tables (speed, and what each caught);
//! asserts nothing.
//!
//!     benches/compare-setup            # once, as root: apt fail2ban crowdsec
//!     cargo bench --bench compare      # 5,000 accounts (about 140k events)
//!     CREDWATCH_BENCH_ACCOUNTS=20000 cargo bench --bench compare
//!     CREDWATCH_BENCH_KEEP=/tmp/cmp cargo bench --bench compare   # keep the files
//!
//! A tool that is not installed is reported as such and skipped.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::io::Write as _;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use credwatch::demo::sample::{self, DayParams, Expected};
use credwatch::source::event::{parse_event, ParseLimits};
use credwatch::source::maillog::render::{lines_stamped, Stamp};
use serde_json::Value;

struct Run {
    tool: String,
    lines: usize,
    seconds: f64,
    note: String,
}

impl Run {
    fn rate(&self) -> f64 {
        self.lines as f64 / self.seconds
    }
}

fn have(cmd: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {cmd}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// fail2ban-regex with `filter`; returns the run and (ip, time) per match.
fn fail2ban(log: &Path, lines: usize, name: &str, filter: &str) -> (Run, Vec<(String, f64)>) {
    let start = Instant::now();
    let out = Command::new("fail2ban-regex")
        .args(["-o", "row"])
        .arg(log)
        .arg(filter)
        .output()
        .expect("fail2ban-regex");
    let seconds = start.elapsed().as_secs_f64();
    let text = String::from_utf8_lossy(&out.stdout);
    let matches: Vec<(String, f64)> = text
        .lines()
        .filter_map(|l| {
            let l = l.trim_start_matches('[');
            let mut it = l.splitn(3, ',');
            let ip = it.next()?.trim().trim_matches('\'').to_string();
            let t: f64 = it.next()?.trim().parse().ok()?;
            Some((ip, t))
        })
        .collect();
    (
        Run {
            tool: format!("fail2ban 1.0 `{name}` jail (fail2ban-regex)"),
            lines,
            seconds,
            note: format!("{} failures matched", matches.len()),
        },
        matches,
    )
}

/// The addresses a jail with Debian's defaults (maxretry 5 in findtime
/// 10 min) bans, from fail2ban's own matches.
fn jail_bans(matches: &[(String, f64)]) -> BTreeSet<String> {
    let mut by_ip: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    for (ip, t) in matches {
        by_ip.entry(ip).or_default().push(*t);
    }
    by_ip
        .into_iter()
        .filter(|(_, ts)| ts.windows(5).any(|w| w[4] - w[0] <= 600.0))
        .map(|(ip, _)| ip.to_string())
        .collect()
}

/// CrowdSec in replay mode with a private config and database; returns the
/// run and the banned addresses, or why it could not run.
fn crowdsec(dir: &Path, log: &Path, lines: usize) -> Result<(Run, BTreeSet<String>), String> {
    let base = std::fs::read_to_string("/etc/crowdsec/config.yaml")
        .map_err(|e| format!("/etc/crowdsec/config.yaml: {e} (run benches/compare-setup)"))?;
    let cs = dir.join("crowdsec");
    std::fs::create_dir_all(&cs).map_err(|e| e.to_string())?;
    let creds = cs.join("local_api_credentials.yaml");
    let config = base
        .replace(
            "/etc/crowdsec/local_api_credentials.yaml",
            &creds.display().to_string(),
        )
        .replace(
            "/var/lib/crowdsec/data/crowdsec.db",
            &cs.join("crowdsec.db").display().to_string(),
        )
        .replace("127.0.0.1:8080", "127.0.0.1:18080")
        .replace("listen_port: 6060", "listen_port: 16060")
        .replace("log_dir: /var/log/", &format!("log_dir: {}/", cs.display()))
        .replace("daemonize: true", "daemonize: false")
        // No Central API: nothing leaves the machine.
        .replace(
            "    online_client: # Central API credentials (to push signals and receive bad IPs)\n      credentials_path: /etc/crowdsec/online_api_credentials.yaml\n",
            "",
        );
    let cfg = cs.join("config.yaml");
    std::fs::write(&cfg, config).map_err(|e| e.to_string())?;
    let added = Command::new("cscli")
        .arg("-c")
        .arg(&cfg)
        .args(["machines", "add", "bench", "--auto", "--force", "-f"])
        .arg(&creds)
        .output()
        .map_err(|e| e.to_string())?;
    if !added.status.success() {
        return Err(format!(
            "cscli machines add: {}",
            String::from_utf8_lossy(&added.stderr)
        ));
    }
    // With daemonize off and a file source, CrowdSec reads the file, pours
    // the buckets, logs each overflow to stdout, and exits.
    let start = Instant::now();
    let out = Command::new("crowdsec")
        .arg("-c")
        .arg(&cfg)
        .arg("-dsn")
        .arg(format!("file://{}", log.display()))
        .args(["-type", "syslog"])
        .output()
        .map_err(|e| e.to_string())?;
    let seconds = start.elapsed().as_secs_f64();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    if !text.contains("crowdsec shutdown") {
        return Err(format!(
            "CrowdSec did not finish: {}",
            text.lines().rev().take(5).collect::<Vec<_>>().join(" / ")
        ));
    }
    let mut banned = BTreeSet::new();
    let mut by_scenario: BTreeMap<String, usize> = BTreeMap::new();
    for l in text.lines() {
        // msg="Ip 81.2.0.1 performed 'crowdsecurity/dovecot-spam' (4 events over 6s) at ..."
        let Some(rest) = l.split("msg=\"Ip ").nth(1) else {
            continue;
        };
        let Some((ip, rest)) = rest.split_once(" performed '") else {
            continue;
        };
        let Some((scenario, _)) = rest.split_once('\'') else {
            continue;
        };
        banned.insert(ip.to_string());
        *by_scenario.entry(scenario.to_string()).or_default() += 1;
    }
    let scen: Vec<String> = by_scenario
        .iter()
        .map(|(k, v)| format!("{k} {v}"))
        .collect();
    Ok((
        Run {
            tool: "CrowdSec 1.4.6 (dovecot + postfix collections, replay mode)".into(),
            lines,
            seconds,
            note: format!(
                "overflows: {}",
                if scen.is_empty() {
                    "none".to_string()
                } else {
                    scen.join(", ")
                }
            ),
        },
        banned,
    ))
}

fn main() {
    let accounts: usize = credwatch_testkit::env_usize("CREDWATCH_BENCH_ACCOUNTS", 5_000);
    let dir = tempfile::tempdir().expect("tempdir");
    // CREDWATCH_BENCH_KEEP=DIR: the day's files are written there and kept
    // (events.jsonl, mail.log, credwatch.toml and its GeoIP databases), to
    // measure one side on its own (callgrind, BENCHMARKS.md).
    let kept = std::env::var("CREDWATCH_BENCH_KEEP")
        .ok()
        .map(PathBuf::from);
    let dir_path: PathBuf = match &kept {
        Some(k) => {
            std::fs::create_dir_all(k).expect("CREDWATCH_BENCH_KEEP folder");
            k.clone()
        }
        None => dir.path().to_path_buf(),
    };
    let (mut lines, expected) = sample::generate_day(&DayParams {
        accounts,
        ..Default::default()
    });
    lines.sort_by_key(|l| l.ts);
    let geo = sample::write_geoip(&dir_path).expect("GeoIP");
    let config = dir_path.join("credwatch.toml");
    std::fs::write(&config, sample::config_toml(&geo)).expect("config");

    // The same events, twice: JSON for credwatch, log lines for the others.
    let json = dir_path.join("events.jsonl");
    let log = dir_path.join("mail.log");
    let mut j = std::io::BufWriter::new(std::fs::File::create(&json).expect("json"));
    let mut l = std::io::BufWriter::new(std::fs::File::create(&log).expect("log"));
    let mut ips_of: BTreeMap<String, Vec<(i64, IpAddr)>> = BTreeMap::new();
    let limits = ParseLimits::new(65_536, i64::MAX / 4);
    let mut log_lines = 0usize;
    let mut text = String::new();
    for (n, line) in lines.iter().enumerate() {
        let v: Value = serde_json::from_str(&line.json).expect("event");
        writeln!(j, "{}", line.json).expect("write");
        let e = parse_event(line.json.as_bytes(), &limits).expect("sample events are valid");
        text.clear();
        lines_stamped(&e, n as u64, Stamp::Syslog, &mut text);
        log_lines += text.lines().count();
        l.write_all(text.as_bytes()).expect("write");
        if let (Some(a), Some(ip)) = (v["account"].as_str(), v["src_ip"].as_str()) {
            if let Ok(ip) = ip.parse() {
                ips_of.entry(a.to_string()).or_default().push((line.ts, ip));
            }
        }
    }
    j.flush().expect("flush");
    l.flush().expect("flush");
    drop((j, l));
    let n = lines.len();

    let mut runs = Vec::new();
    let mut banned: Vec<(&str, BTreeSet<String>)> = Vec::new();

    // credwatch replay (the release binary, default threads): the JSON
    // events, then the log file every other tool reads.
    let bin = PathBuf::from(env!("CARGO_BIN_EXE_credwatch"));
    let credwatch = |args: &[&str], input: &Path| -> (f64, Vec<Value>) {
        let start = Instant::now();
        let out = Command::new(&bin)
            .args(["replay", "--config"])
            .arg(&config)
            .args(args)
            .arg(input)
            .env_remove("RUST_LOG")
            // This benchmark's own setting is not one of credwatch's.
            .env_remove("CREDWATCH_BENCH_ACCOUNTS")
            .env_remove("CREDWATCH_BENCH_KEEP")
            .output()
            .expect("credwatch replay");
        assert!(
            out.status.success(),
            "credwatch replay failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let seconds = start.elapsed().as_secs_f64();
        let actions = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect();
        (seconds, actions)
    };
    let lock_set = |actions: &[Value]| -> BTreeSet<String> {
        actions
            .iter()
            .filter(|a| a["type"] == "account.lock")
            .filter_map(|a| a["data"]["account"].as_str().map(str::to_string))
            .collect()
    };
    let note = |actions: &[Value]| {
        let locks = actions
            .iter()
            .filter(|a| a["type"] == "account.lock")
            .count();
        format!("{locks} locks, {} alerts", actions.len() - locks)
    };
    let (json_secs, actions) = credwatch(&[], &json);
    let locked = lock_set(&actions);
    runs.push(Run {
        tool: "credwatch replay, JSON events (all detectors)".into(),
        lines: n,
        seconds: json_secs,
        note: note(&actions),
    });
    let (log_secs, log_actions) = credwatch(&["--format", "maillog"], &log);
    runs.push(Run {
        tool: "credwatch replay --format maillog, the log file".into(),
        lines: log_lines,
        seconds: log_secs,
        note: format!(
            "{}; {:.0} events/s = {:.2} of the JSON path; {} of the JSON path's locked accounts",
            note(&log_actions),
            n as f64 / log_secs,
            json_secs / log_secs,
            if lock_set(&log_actions) == locked {
                "the same"
            } else {
                "NOT the same"
            }
        ),
    });

    if have("fail2ban-regex") {
        let (r1, m1) = fail2ban(
            &log,
            log_lines,
            "dovecot",
            "/etc/fail2ban/filter.d/dovecot.conf",
        );
        let (r2, m2) = fail2ban(&log, log_lines, "postfix-sasl", "postfix[mode=auth]");
        let both = Run {
            tool: "fail2ban, both jails on the same log".into(),
            lines: log_lines,
            seconds: r1.seconds + r2.seconds,
            note: String::new(),
        };
        let bans = jail_bans(&m1)
            .union(&jail_bans(&m2))
            .cloned()
            .collect::<BTreeSet<_>>();
        runs.extend([r1, r2, both]);
        banned.push(("fail2ban", bans));
    } else {
        eprintln!("fail2ban-regex not installed: skipped (benches/compare-setup installs it)");
    }
    if have("crowdsec") {
        match crowdsec(dir.path(), &log, log_lines) {
            Ok((r, b)) => {
                runs.push(r);
                banned.push(("CrowdSec", b));
            }
            Err(e) => eprintln!("CrowdSec could not run: {e}"),
        }
    } else {
        eprintln!("crowdsec not installed: skipped (benches/compare-setup installs it)");
    }

    let mut t = String::new();
    let _ = writeln!(
        t,
        "\n{n} events ({accounts} accounts): as JSON, and as the {log_lines} Dovecot/Postfix log lines the servers write for them\n"
    );
    let _ = writeln!(t, "| tool | lines | seconds | lines/s | result |");
    let _ = writeln!(t, "|---|---:|---:|---:|---|");
    for r in &runs {
        let _ = writeln!(
            t,
            "| {} | {} | {:.2} | {:.0} | {} |",
            r.tool,
            r.lines,
            r.seconds,
            r.rate(),
            r.note
        );
    }

    // What each caught: per attack scenario, did credwatch lock the
    // account, and did the others ban an address the attacker used?
    let _ = writeln!(
        t,
        "\n| attack scenario | credwatch locked the account |{}",
        {
            let mut h = String::new();
            for (name, _) in &banned {
                let _ = write!(h, " {name} banned an attacker address |");
            }
            h
        }
    );
    let _ = writeln!(t, "|---|---|{}", "---|".repeat(banned.len()));
    let mut by_scenario: BTreeMap<&str, Vec<&Expected>> = BTreeMap::new();
    for e in expected.iter().filter(|e| e.detector.is_some()) {
        by_scenario.entry(e.scenario).or_default().push(e);
    }
    for (scenario, es) in &by_scenario {
        let caught = es.iter().filter(|e| locked.contains(&e.account)).count();
        let _ = write!(t, "| {scenario} | {caught} of {} |", es.len());
        for (_, bans) in &banned {
            let hit = es
                .iter()
                .filter(|e| {
                    let from = e.abuse_start.unwrap_or(i64::MIN);
                    ips_of
                        .get(&e.account)
                        .into_iter()
                        .flatten()
                        .any(|(ts, ip)| *ts >= from && bans.contains(&ip.to_string()))
                })
                .count();
            let _ = write!(t, " {hit} of {} |", es.len());
        }
        let _ = writeln!(t);
    }
    for (name, bans) in &banned {
        let _ = writeln!(t, "\n{name}: {} addresses banned in all.", bans.len());
    }
    println!("{t}");
}
