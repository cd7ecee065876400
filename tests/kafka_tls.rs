//! Kafka over TLS: the service, built with the `tls` feature (OpenSSL in
//! librdkafka, as the container image is), consumes and produces through a
//! TLS listener whose certificate is checked against a private CA, and
//! locks what `replay` locks. tansu has no TLS listener of its own, so a
//! real TLS terminator (Debian's socat, with OpenSSL) fronts it; the broker
//! advertises the TLS port, so every connection a client makes, bootstrap
//! and partition leaders alike, is TLS. A plaintext client on that port is
//! refused. Run by tests/run as `cargo test --features tls --test kafka_tls`.
#![cfg(feature = "tls")]

use credwatch_testkit::kafka::*;
use credwatch_testkit::{free_port, openssl, World};

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A private CA and a server certificate for 127.0.0.1 signed by it.
fn certificates(dir: &Path) {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "2",
            "-subj",
            "/CN=credwatch test CA",
        ],
    );
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=127.0.0.1",
        ],
    );
    std::fs::write(
        dir.join("ext"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\n",
    )
    .unwrap();
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.pem",
            "-days",
            "2",
            "-extfile",
            "ext",
        ],
    );
}

#[test]
fn the_service_judges_and_locks_over_tls() {
    let world = World::new();
    let dir = world.dir.path();
    certificates(dir);
    let (plain, tls) = (free_port(), free_port());
    let plain_url = format!("tcp://127.0.0.1:{plain}");
    let tls_url = format!("tcp://127.0.0.1:{tls}");
    let _broker = Killed(
        Command::new(tansu_bin())
            .args([
                "broker",
                "--listener-url",
                &plain_url,
                "--advertised-listener-url",
                &tls_url,
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start tansu"),
    );
    let _terminator = Killed(
        Command::new("socat")
            .arg(format!(
                "OPENSSL-LISTEN:{tls},bind=127.0.0.1,reuseaddr,fork,cert={},key={},verify=0",
                dir.join("server.pem").display(),
                dir.join("server.key").display()
            ))
            .arg(format!("TCP:127.0.0.1:{plain}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start socat (Debian package socat)"),
    );
    assert!(
        wait_until(Duration::from_secs(20), || std::net::TcpStream::connect((
            "127.0.0.1",
            plain
        ))
        .is_ok()
            && std::net::TcpStream::connect(("127.0.0.1", tls)).is_ok()),
        "broker and TLS terminator up"
    );
    for (t, n) in [(INPUT, 2), (SOURCES, 2), (ACTIONS, 1), (DLQ, 1)] {
        let ok = Command::new(tansu_bin())
            .args([
                "topic",
                "create",
                t,
                "--partitions",
                &n.to_string(),
                "--broker",
                &plain_url,
            ])
            .stdout(Stdio::null())
            .status()
            .unwrap()
            .success();
        assert!(ok, "create {t}");
    }
    let ca = dir.join("ca.pem").display().to_string();
    let brokers = format!("127.0.0.1:{tls}");
    // The kit's own producer and reader talk TLS too.
    set_client_properties(&[("security.protocol", "SSL"), ("ssl.ca.location", &ca)]);

    let text = world.toml(&format!(
        "[kafka]\nbrokers = {brokers:?}\ngroup_id = \"tls\"\ninput_topics = [{INPUT:?}]\n\
         actions_topic = {ACTIONS:?}\ndead_letter_topic = {DLQ:?}\ncommit_interval_ms = 200\n\
         [kafka.properties]\n\"security.protocol\" = \"SSL\"\n\"ssl.ca.location\" = {ca:?}\n\
         \"session.timeout.ms\" = \"6000\"\n"
    ));
    let settings =
        credwatch::config::Config::from_toml_with_env(&text, "tls.toml", &[]).expect("config");
    let svc = start(settings);
    let lines = sample_day(300);
    produce(&brokers, INPUT, &lines);
    assert!(
        wait_until(Duration::from_secs(120), || svc.processed()
            >= lines.len() as i64),
        "judged {} of {} over TLS",
        svc.processed(),
        lines.len()
    );
    let want = replay_set(&credwatch_testkit::run(&world.engine(""), &lines));
    assert!(!want.is_empty());
    let mut got = action_set(&read_actions(&brokers));
    for _ in 0..20 {
        if got.len() >= want.len() {
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
        got = action_set(&read_actions(&brokers));
    }
    assert_same_as_replay(&got, &want);
    svc.shutdown().expect("clean shutdown");

    // The TLS port speaks only TLS: a plaintext client gets nothing.
    set_client_properties(&[]);
    let plain_read = read(&brokers, ACTIONS, 1, Duration::from_secs(5), Duration::ZERO);
    assert!(
        plain_read.is_empty(),
        "a plaintext client read through the TLS port"
    );
}
