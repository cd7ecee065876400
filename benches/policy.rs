//! `cargo bench --bench policy`: both policy servers under load on
//! loopback, everything real and local: two `credwatch run` services in
//! one group on the tansu broker, each with its Dovecot and Postfix
//! policy servers, and a lock view holding CREDWATCH_BENCH_POLICY_LOCKED
//! (default 1,000,000) locked accounts.
//!
//! 1. Latency at a steady CREDWATCH_BENCH_POLICY_RATE requests/s (default
//!    5,000) for CREDWATCH_BENCH_POLICY_SECS (default 10), open loop over 8
//!    kept-alive connections: Dovecot `allow` (half the accounts asked are
//!    locked), Dovecot `report` (each one an event produced to Kafka), and
//!    Postfix END-OF-MESSAGE. Latency runs from each request's scheduled
//!    time to its whole answer, so a stall is not hidden.
//! 2. Throughput: the same requests as fast as 8 connections can send them.
//! 3. Lock to refusal across the two instances: an impossible-travel pair
//!    is produced for a fresh account, and both instances are asked until
//!    they refuse it; the time from producing the pair to each refusal.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

use credwatch::cli::service::{start, Started};
use credwatch::enforce::Change;
use credwatch::http::{Endpoint, HttpConfig};
use credwatch::metrics::Metrics;
use credwatch::time::now_millis;
use credwatch_testkit::kafka::{self, create_topics, produce_keyed, Broker, Tansu, INPUT};
use credwatch_testkit::{ip, World};

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Allow,
    Report,
    Postfix,
}

/// One kept-alive client connection.
struct Client {
    r: BufReader<TcpStream>,
    w: TcpStream,
    kind: Kind,
}

impl Client {
    fn new(addr: &str, kind: Kind) -> Client {
        let s = TcpStream::connect(addr).expect("connect");
        s.set_nodelay(true).ok();
        Client {
            r: BufReader::new(s.try_clone().unwrap()),
            w: s,
            kind,
        }
    }

    /// Sends one request about `account` and reads the whole answer;
    /// whether it was a refusal.
    fn ask(&mut self, account: &str, buf: &mut Vec<u8>) -> bool {
        buf.clear();
        match self.kind {
            Kind::Allow | Kind::Report => {
                let body = if self.kind == Kind::Allow {
                    format!(
                        r#"{{"device_id":"","login":"{account}","protocol":"imap","pwhash":"0262","remote":"198.51.100.7","session_id":"b","tls":false}}"#
                    )
                } else {
                    format!(
                        r#"{{"device_id":"","login":"{account}","protocol":"imap","pwhash":"0262","remote":"198.51.100.7","session_id":"b","success":true,"policy_reject":false,"tls":false}}"#
                    )
                };
                let cmd = if self.kind == Kind::Allow {
                    "allow"
                } else {
                    "report"
                };
                write!(
                    buf,
                    "POST /?command={cmd} HTTP/1.1\r\nHost: b\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                    body.len()
                )
                .unwrap();
                self.w.write_all(buf).unwrap();
                let mut len = 0;
                let mut line = String::new();
                loop {
                    line.clear();
                    self.r.read_line(&mut line).unwrap();
                    if line == "\r\n" {
                        break;
                    }
                    if let Some(v) = line.strip_prefix("content-length: ") {
                        len = v.trim().parse().unwrap();
                    }
                }
                let mut body = vec![0; len];
                self.r.read_exact(&mut body).unwrap();
                body.windows(11).any(|w| w == br#""status":-1"#)
            }
            Kind::Postfix => {
                write!(
                    buf,
                    "request=smtpd_access_policy\nprotocol_state=END-OF-MESSAGE\nclient_address=198.51.100.7\nsender={account}\nrecipient_count=1\nqueue_id=ABC\nsasl_method=PLAIN\nsasl_username={account}\n\n"
                )
                .unwrap();
                self.w.write_all(buf).unwrap();
                let mut action = String::new();
                self.r.read_line(&mut action).unwrap();
                let mut blank = String::new();
                self.r.read_line(&mut blank).unwrap();
                action.starts_with("action=REJECT")
            }
        }
    }
}

fn account(i: usize) -> String {
    format!("user{i}@bench.example")
}

/// Open loop at `rate` for `secs` over `conns` connections: latencies in µs.
fn steady(
    addr: &str,
    kind: Kind,
    rate: usize,
    secs: usize,
    conns: usize,
    locked: usize,
) -> (Vec<u64>, usize) {
    let start = Instant::now() + Duration::from_millis(100);
    let per = rate / conns;
    let interval = Duration::from_secs_f64(1.0 / per as f64);
    let handles: Vec<_> = (0..conns)
        .map(|c| {
            let addr = addr.to_string();
            std::thread::spawn(move || {
                let mut client = Client::new(&addr, kind);
                let mut lat = Vec::with_capacity(per * secs);
                let mut refused = 0;
                let mut buf = Vec::new();
                let mut x = (c as u64 + 1) * 0x9e37_79b9_7f4a_7c15;
                for n in 0..per * secs {
                    let due = start + interval * n as u32 + interval * c as u32 / conns as u32;
                    if let Some(w) = due.checked_duration_since(Instant::now()) {
                        std::thread::sleep(w);
                    }
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    // Half the accounts asked about are locked.
                    let i = (x as usize) % (2 * locked);
                    refused += client.ask(&account(i), &mut buf) as usize;
                    lat.push(due.elapsed().as_micros() as u64);
                }
                (lat, refused)
            })
        })
        .collect();
    let mut all = Vec::new();
    let mut refused = 0;
    for h in handles {
        let (l, r) = h.join().unwrap();
        all.extend(l);
        refused += r;
    }
    all.sort_unstable();
    (all, refused)
}

/// Closed loop for `secs`: requests per second.
fn flat_out(addr: &str, kind: Kind, secs: u64, conns: usize, locked: usize) -> f64 {
    let until = Instant::now() + Duration::from_secs(secs);
    let handles: Vec<_> = (0..conns)
        .map(|c| {
            let addr = addr.to_string();
            std::thread::spawn(move || {
                let mut client = Client::new(&addr, kind);
                let mut buf = Vec::new();
                let mut n = 0usize;
                while Instant::now() < until {
                    client.ask(&account((n * 7919 + c) % (2 * locked)), &mut buf);
                    n += 1;
                }
                n
            })
        })
        .collect();
    let total: usize = handles.into_iter().map(|h| h.join().unwrap()).sum();
    total as f64 / secs as f64
}

fn pct(v: &[u64], p: f64) -> f64 {
    v[((v.len() as f64 * p) as usize).min(v.len() - 1)] as f64 / 1000.0
}

fn main() {
    let rate = env("CREDWATCH_BENCH_POLICY_RATE", 5000);
    let secs = env("CREDWATCH_BENCH_POLICY_SECS", 10);
    let locked = env("CREDWATCH_BENCH_POLICY_LOCKED", 1_000_000);
    let world = World::new();
    let broker = Tansu::start();
    create_topics(&broker, 2);
    let brokers = broker.brokers();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let mut instances: Vec<Started> = Vec::new();
    for _ in 0..2 {
        let mut s = kafka::settings(&world, &brokers, "bench-policy", "");
        s.config.dovecot_policy.listen = "127.0.0.1:0".into();
        s.config.postfix_policy.listen = "127.0.0.1:0".into();
        let metrics = Arc::new(Metrics::new());
        let http = HttpConfig {
            listen: "127.0.0.1:0".into(),
            ..Default::default()
        };
        let endpoint = rt.block_on(Endpoint::bind(&http, metrics.clone())).unwrap();
        instances.push(start(&rt, &s, &metrics, &endpoint).expect("start"));
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while !instances.iter().all(|i| i.service.ready()) {
        assert!(Instant::now() < deadline, "not ready in 60 s");
        std::thread::sleep(Duration::from_millis(50));
    }
    let a = &instances[0];
    let view = a.service.locks().expect("a lock view");
    let t = Instant::now();
    for i in 0..locked {
        view.apply(&Change {
            account: account(i).into(),
            lock: true,
            order: 0,
            at: now_millis(),
            detector: "impossible_travel".into(),
            id: format!("cw_{i:016x}").into(),
        });
    }
    eprintln!(
        "{locked} locks loaded into the lock view in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    let policy = a.policy.as_ref().unwrap();
    let dovecot = policy.dovecot.unwrap().to_string();
    let postfix = policy.postfix.clone().unwrap();

    println!("\n## Policy servers at {rate} requests/s for {secs} s, {locked} locked accounts in the lock view (8 connections, open loop)\n");
    println!("| request | answered | refused | p50 ms | p99 ms | p99.9 ms | max ms |");
    println!("|---|---:|---:|---:|---:|---:|---:|");
    for (name, addr, kind) in [
        ("Dovecot allow", &dovecot, Kind::Allow),
        ("Dovecot report (an event to Kafka)", &dovecot, Kind::Report),
        ("Postfix END-OF-MESSAGE", &postfix, Kind::Postfix),
    ] {
        let (lat, refused) = steady(addr, kind, rate, secs, 8, locked);
        println!(
            "| {name} | {} | {refused} | {:.3} | {:.3} | {:.3} | {:.3} |",
            lat.len(),
            pct(&lat, 0.5),
            pct(&lat, 0.99),
            pct(&lat, 0.999),
            *lat.last().unwrap() as f64 / 1000.0
        );
    }
    println!("\n## Throughput, 8 connections, closed loop, 5 s each\n");
    println!("| request | requests/s |");
    println!("|---|---:|");
    for (name, addr, kind) in [
        ("Dovecot allow", &dovecot, Kind::Allow),
        ("Postfix END-OF-MESSAGE", &postfix, Kind::Postfix),
    ] {
        println!("| {name} | {:.0} |", flat_out(addr, kind, 5, 8, locked));
    }

    // Lock to refusal, across both instances.
    let addrs: Vec<String> = instances
        .iter()
        .map(|i| i.policy.as_ref().unwrap().dovecot.unwrap().to_string())
        .collect();
    let mut clients: Vec<Client> = addrs.iter().map(|a| Client::new(a, Kind::Allow)).collect();
    let mut times: Vec<(f64, f64)> = Vec::new();
    let mut buf = Vec::new();
    for k in 0..20 {
        let who = format!("traveller{k}@bench.example");
        let now = now_millis();
        let pair = [
            format!(
                r#"{{"ts":{},"account":"{who}","protocol":"imap","src_ip":"{}","result":"success"}}"#,
                now - 60_000,
                ip("London", 1000 + k)
            ),
            format!(
                r#"{{"ts":{now},"account":"{who}","protocol":"smtp","src_ip":"{}","result":"success"}}"#,
                ip("Changchun", 5 + k)
            ),
        ];
        let t0 = Instant::now();
        produce_keyed(&brokers, INPUT, &[(&who, &pair[0]), (&who, &pair[1])]);
        let mut done = [None, None];
        let deadline = Instant::now() + Duration::from_secs(20);
        while done.iter().any(Option::is_none) && Instant::now() < deadline {
            for (i, c) in clients.iter_mut().enumerate() {
                if done[i].is_none() && c.ask(&who, &mut buf) {
                    done[i] = Some(t0.elapsed().as_secs_f64() * 1000.0);
                }
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        let first = done[0].unwrap_or(f64::NAN).min(done[1].unwrap_or(f64::NAN));
        let last = done[0].unwrap_or(f64::NAN).max(done[1].unwrap_or(f64::NAN));
        times.push((first, last));
    }
    times.sort_by(|x, y| x.1.total_cmp(&y.1));
    let firsts: Vec<f64> = {
        let mut f: Vec<f64> = times.iter().map(|t| t.0).collect();
        f.sort_by(f64::total_cmp);
        f
    };
    println!("\n## Lock to refusal across two instances (20 impossible-travel pairs, from producing the pair)\n");
    println!("| | median ms | max ms |");
    println!("|---|---:|---:|");
    println!(
        "| first instance refuses | {:.0} | {:.0} |",
        firsts[10], firsts[19]
    );
    println!(
        "| both instances refuse | {:.0} | {:.0} |",
        times[10].1, times[19].1
    );
    for i in instances {
        let _ = i.service.shutdown();
    }
}
