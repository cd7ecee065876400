//! Kafka for the service tests: the real `tansu` broker (a Kafka-protocol
//! broker, started per test on a free loopback port) and librdkafka's
//! in-process mock cluster; producing events and reading topics back.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use credwatch::config::{Config, Settings};
use credwatch::demo::broker::EmbeddedBroker;
use credwatch::demo::sample::Line;
use credwatch::metrics::Metrics;
use credwatch::service::Service;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Headers;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};

use crate::{free_port, World};

pub trait Broker {
    fn brokers(&self) -> String;
    fn create_topic(&self, name: &str, partitions: i32);
}

impl Broker for EmbeddedBroker {
    fn brokers(&self) -> String {
        self.bootstrap_servers()
    }
    fn create_topic(&self, name: &str, partitions: i32) {
        EmbeddedBroker::create_topic(self, name, partitions).expect("create topic");
    }
}

/// A `tansu` broker process, with in-memory storage or, for the fault
/// tests, durable storage in S3 (a local `moto` server that outlives the
/// broker, so a broker killed with `kill -9` comes back with its topics,
/// records and committed offsets).
pub struct Tansu {
    child: Child,
    pub port: u16,
    bin: PathBuf,
    s3: Option<Moto>,
}

pub fn tansu_bin() -> PathBuf {
    if let Ok(p) = std::env::var("TANSU_BIN") {
        return PathBuf::from(p);
    }
    let p = crate::repo_root().join("target/tools/tansu");
    assert!(
        p.exists(),
        "The Kafka tests need the tansu broker at {} (or TANSU_BIN=path). Run tests/run once: it downloads and checks it.",
        p.display()
    );
    p
}

/// A local S3 (PyPI `moto[server]`, which tests/run installs) holding one
/// bucket, `tansu`.
pub struct Moto {
    child: Child,
    pub port: u16,
}

impl Moto {
    pub fn start() -> Moto {
        for _ in 0..5 {
            let port = free_port();
            let child = Command::new("python3")
                .args([
                    "-m",
                    "moto.server",
                    "-H",
                    "127.0.0.1",
                    "-p",
                    &port.to_string(),
                ])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("python3 -m moto.server (tests/run installs moto[server])");
            let mut m = Moto { child, port };
            let made = wait_until(Duration::from_secs(30), || {
                m.child.try_wait().ok().flatten().is_some() || m.create_bucket()
            });
            if made && m.child.try_wait().ok().flatten().is_none() {
                return m;
            }
        }
        panic!(
            "moto did not start (5 attempts); is moto[server] installed? (tests/run installs it)"
        );
    }

    /// `PUT /tansu`: moto accepts unsigned requests.
    fn create_bucket(&self) -> bool {
        use std::io::{Read, Write};
        let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", self.port)) else {
            return false;
        };
        let _ = s.write_all(
            b"PUT /tansu HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        );
        let mut answer = String::new();
        let _ = s.read_to_string(&mut answer);
        answer.starts_with("HTTP/1.1 200") || answer.starts_with("HTTP/1.0 200")
    }

    fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ACCESS_KEY_ID", "test".into()),
            ("AWS_SECRET_ACCESS_KEY", "test".into()),
            ("AWS_DEFAULT_REGION", "eu-west-2".into()),
            ("AWS_REGION", "eu-west-2".into()),
            ("AWS_ENDPOINT", format!("http://127.0.0.1:{}", self.port)),
            ("AWS_ALLOW_HTTP", "true".into()),
        ]
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Tansu {
    /// Starts a broker with in-memory storage on a free port (again on
    /// another port if another process took that one first).
    pub fn start() -> Tansu {
        Self::start_with(None)
    }

    /// Starts a broker whose storage survives it (S3 on a local moto).
    pub fn start_durable() -> Tansu {
        Self::start_with(Some(Moto::start()))
    }

    fn start_with(mut s3: Option<Moto>) -> Tansu {
        for _ in 0..5 {
            match Self::spawn(free_port(), s3.take()) {
                Ok(t) => return t,
                Err(back) => s3 = back,
            }
        }
        panic!("tansu did not start (5 attempts)");
    }

    /// Kills the broker with SIGKILL: no flush, no goodbye.
    pub fn kill_9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts the broker again on the same port and storage.
    pub fn restart(&mut self) {
        let s3 = self.s3.take();
        let port = self.port;
        let bin = self.bin.clone();
        for _ in 0..50 {
            let child = Self::command(&bin, port, s3.as_ref())
                .spawn()
                .expect("start tansu");
            self.child = child;
            if self.wait_answers() {
                self.s3 = s3;
                return;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        panic!("tansu did not start again on port {port}");
    }

    fn command(bin: &PathBuf, port: u16, s3: Option<&Moto>) -> Command {
        let url = format!("tcp://127.0.0.1:{port}");
        let storage = if s3.is_some() {
            "s3://tansu/"
        } else {
            "memory://tansu/"
        };
        // CREDWATCH_TANSU_NICE=N runs the broker at that niceness: on a
        // 2-core bench machine the broker otherwise competes with the
        // process measured for the same cores (a production broker has
        // its own machines). BENCHMARKS.md gives the kafka bench both ways.
        let mut c = match std::env::var("CREDWATCH_TANSU_NICE") {
            Ok(n) if n.parse::<i32>().is_ok() => {
                let mut c = Command::new("nice");
                c.args(["-n", &n]).arg(bin);
                c
            }
            _ => Command::new(bin),
        };
        c.args([
            "broker",
            "--listener-url",
            &url,
            "--advertised-listener-url",
            &url,
            "--storage-engine",
            storage,
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null());
        if let Some(m) = s3 {
            c.envs(m.env());
        }
        c
    }

    fn spawn(port: u16, s3: Option<Moto>) -> Result<Tansu, Option<Moto>> {
        let bin = tansu_bin();
        let child = Self::command(&bin, port, s3.as_ref())
            .spawn()
            .expect("start tansu");
        let mut t = Tansu {
            child,
            port,
            bin,
            s3,
        };
        if t.wait_answers() {
            Ok(t)
        } else {
            let _ = t.child.kill();
            let _ = t.child.wait();
            Err(t.s3.take())
        }
    }

    /// Waits until the broker answers; false if it exited (the port was
    /// taken meanwhile, and whoever answers on it is not ours) or never
    /// answered.
    fn wait_answers(&mut self) -> bool {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if self.child.try_wait().ok().flatten().is_some() {
                return false;
            }
            if self.answers() {
                return true;
            }
            if Instant::now() > deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn url(&self) -> String {
        format!("tcp://127.0.0.1:{}", self.port)
    }

    fn answers(&self) -> bool {
        Command::new(&self.bin)
            .args(["topic", "list", "--broker", &self.url()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }
}

impl Broker for Tansu {
    fn brokers(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
    fn create_topic(&self, name: &str, partitions: i32) {
        let ok = Command::new(&self.bin)
            .args([
                "topic",
                "create",
                name,
                "--partitions",
                &partitions.to_string(),
                "--broker",
                &self.url(),
            ])
            .stdout(Stdio::null())
            .status()
            .expect("run tansu topic create")
            .success();
        assert!(ok, "tansu topic create {name}");
    }
}

impl Drop for Tansu {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub const INPUT: &str = "mail.events";
pub const ACTIONS: &str = "credwatch.actions";
pub const DLQ: &str = "credwatch.dlq";
pub const SOURCES: &str = "credwatch.sources";

pub fn create_topics(b: &dyn Broker, input_partitions: i32) {
    b.create_topic(INPUT, input_partitions);
    b.create_topic(SOURCES, input_partitions);
    b.create_topic(ACTIONS, 1);
    b.create_topic(DLQ, 1);
}

/// Service settings for this world and broker.
pub fn settings(world: &World, brokers: &str, group: &str, extra: &str) -> Settings {
    settings_with_properties(world, brokers, group, extra, "")
}

/// [`settings`] with more `[kafka.properties]` lines (`"key" = "value"`).
pub fn settings_with_properties(
    world: &World,
    brokers: &str,
    group: &str,
    extra: &str,
    properties: &str,
) -> Settings {
    let text = world.toml(&kafka_toml(
        brokers,
        group,
        &format!("commit_interval_ms = 200\n{extra}"),
        &format!("\"heartbeat.interval.ms\" = \"500\"\n{properties}"),
    ));
    Config::from_toml_with_env(&text, "test.toml", &[]).expect("valid config")
}

/// The `[kafka]` and `[kafka.properties]` sections of a test config for
/// this broker and group, on the test topics, with a short session so a
/// killed member leaves the group quickly; `keys` and `properties` are
/// added to each.
fn kafka_toml(brokers: &str, group: &str, keys: &str, properties: &str) -> String {
    format!(
        "[kafka]\nbrokers = {brokers:?}\ngroup_id = {group:?}\ninput_topics = [{INPUT:?}]\n\
         actions_topic = {ACTIONS:?}\ndead_letter_topic = {DLQ:?}\n{keys}\n\
         [kafka.properties]\n\"session.timeout.ms\" = \"6000\"\n{properties}"
    )
}

pub fn start(settings: Settings) -> Service {
    init_logs();
    Service::start(settings, Arc::new(Metrics::new())).expect("start the service")
}

/// The service's log, shown when a test fails.
pub fn init_logs() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("credwatch=info")),
        )
        .with_test_writer()
        .try_init();
}

/// The recommended key of a generated line: its account.
pub fn account_of(json: &str) -> String {
    serde_json::from_str::<serde_json::Value>(json)
        .ok()
        .and_then(|v| v["account"].as_str().map(str::to_string))
        .unwrap_or_default()
}

/// librdkafka properties every client of the kit adds (a test binary that
/// talks TLS to its broker sets them once).
static CLIENT_PROPERTIES: std::sync::Mutex<Vec<(String, String)>> =
    std::sync::Mutex::new(Vec::new());

/// Makes every client of the kit in this process use `props` too.
pub fn set_client_properties(props: &[(&str, &str)]) {
    *CLIENT_PROPERTIES.lock().unwrap_or_else(|e| e.into_inner()) = props
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
}

/// A client config for `brokers` with the kit's properties.
fn client(brokers: &str) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", brokers);
    for (k, v) in CLIENT_PROPERTIES
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
    {
        c.set(k, v);
    }
    c
}

/// Produces lines (keyed by account) and waits until all are acknowledged.
pub fn produce(brokers: &str, topic: &str, lines: &[Line]) {
    produce_at(brokers, topic, lines, false)
}

/// [`produce`], with each message's Kafka timestamp its event's time when
/// `stamped` (as a shipper forwarding events as they happen stamps them).
pub fn produce_at(brokers: &str, topic: &str, lines: &[Line], stamped: bool) {
    let p: ThreadedProducer<DefaultProducerContext> = client(brokers)
        .set("linger.ms", "5")
        .set("enable.idempotence", "true")
        .create()
        .expect("producer");
    for l in lines {
        let key = account_of(&l.json);
        let mut rec = BaseRecord::to(topic).key(&key).payload(&l.json);
        if stamped {
            rec = rec.timestamp(l.ts);
        }
        loop {
            match p.send(rec) {
                Ok(()) => break,
                Err((_, r)) => {
                    rec = r;
                    std::thread::sleep(Duration::from_millis(5));
                }
            }
        }
    }
    p.flush(Duration::from_secs(60))
        .expect("events acknowledged");
}

/// The sample day for `accounts` customers, in time order.
pub fn sample_day(accounts: usize) -> Vec<Line> {
    let (mut lines, _) =
        credwatch::demo::sample::generate_day(&credwatch::demo::sample::DayParams {
            accounts,
            ..Default::default()
        });
    lines.sort_by_key(|l| l.ts);
    lines
}

/// Produces `lines` (keyed by account) at a steady `rate` per second,
/// calling `before_send(i, account)` right before each is handed over;
/// returns the seconds it took.
pub fn produce_paced(
    brokers: &str,
    lines: &[Line],
    rate: usize,
    before_send: impl FnMut(usize, &str),
) -> f64 {
    produce_paced_lingering(brokers, lines, rate, 1, before_send)
}

/// [`produce_paced`] with the producer waiting up to `linger_ms` to batch
/// (fewer, larger batches: what a broker on S3 needs).
pub fn produce_paced_lingering(
    brokers: &str,
    lines: &[Line],
    rate: usize,
    linger_ms: u32,
    before_send: impl FnMut(usize, &str),
) -> f64 {
    produce_paced_at(brokers, lines, rate, linger_ms, false, before_send)
}

/// [`produce_paced_lingering`], with each message's Kafka timestamp set
/// to its event's time when `stamped` (as a shipper that forwards events
/// as they happen does: a history produced at once then still spans days
/// of message time).
pub fn produce_paced_at(
    brokers: &str,
    lines: &[Line],
    rate: usize,
    linger_ms: u32,
    stamped: bool,
    mut before_send: impl FnMut(usize, &str),
) -> f64 {
    let p: ThreadedProducer<DefaultProducerContext> = client(brokers)
        .set("linger.ms", linger_ms.to_string())
        .create()
        .expect("producer");
    let start = Instant::now();
    for (i, l) in lines.iter().enumerate() {
        let due = Duration::from_secs_f64(i as f64 / rate as f64);
        if let Some(w) = due.checked_sub(start.elapsed()) {
            std::thread::sleep(w);
        }
        let key = account_of(&l.json);
        before_send(i, &key);
        let mut rec = BaseRecord::to(INPUT).key(&key).payload(&l.json);
        if stamped {
            rec = rec.timestamp(l.ts);
        }
        while let Err((_, r)) = p.send(rec) {
            rec = r;
            std::thread::sleep(Duration::from_micros(100));
        }
    }
    let took = start.elapsed().as_secs_f64();
    p.flush(Duration::from_secs(120)).expect("flush");
    took
}

/// Produces raw payloads (for the dead-letter tests).
pub fn produce_raw(brokers: &str, topic: &str, payloads: &[&[u8]]) {
    let p: ThreadedProducer<DefaultProducerContext> = client(brokers).create().expect("producer");
    for pl in payloads {
        p.send(BaseRecord::<(), [u8]>::to(topic).payload(pl))
            .map_err(|(e, _)| e)
            .expect("send");
    }
    p.flush(Duration::from_secs(60)).expect("acknowledged");
}

/// Produces (key, payload) pairs in order (log lines keyed by host, as a
/// log shipper does).
pub fn produce_keyed(brokers: &str, topic: &str, records: &[(&str, &str)]) {
    let p: ThreadedProducer<DefaultProducerContext> = client(brokers).create().expect("producer");
    for (k, v) in records {
        let mut rec = BaseRecord::to(topic).key(*k).payload(*v);
        while let Err((_, r)) = p.send(rec) {
            rec = r;
            std::thread::sleep(Duration::from_micros(100));
        }
    }
    p.flush(Duration::from_secs(60)).expect("acknowledged");
}

/// A record read back.
#[derive(Debug, Clone)]
pub struct Record {
    pub key: String,
    pub payload: String,
    pub headers: Vec<(String, String)>,
}

/// Reads partition 0 of `topic` from the start until `want` records are
/// there or `timeout` passes (counting records: tansu's high watermark is
/// not to be trusted). Then keeps reading for `settle` to catch extras.
pub fn read(
    brokers: &str,
    topic: &str,
    want: usize,
    timeout: Duration,
    settle: Duration,
) -> Vec<Record> {
    read_partitions(brokers, topic, 1, want, timeout, settle)
}

/// [`read`] over the first `partitions` partitions of `topic`.
pub fn read_partitions(
    brokers: &str,
    topic: &str,
    partitions: i32,
    want: usize,
    timeout: Duration,
    settle: Duration,
) -> Vec<Record> {
    let c: BaseConsumer = client(brokers)
        .set("group.id", "credwatch-test-reader")
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition_offset(topic, p, Offset::Beginning)
            .expect("tpl");
    }
    c.assign(&tpl).expect("assign");
    let mut out = Vec::new();
    let deadline = Instant::now() + timeout;
    let mut settle_until: Option<Instant> = None;
    loop {
        let now = Instant::now();
        if out.len() >= want && settle_until.is_none() {
            settle_until = Some(now + settle);
        }
        if settle_until.is_some_and(|s| now >= s) || now >= deadline {
            break;
        }
        if let Some(Ok(m)) = c.poll(Duration::from_millis(100)) {
            let headers = m
                .headers()
                .map(|h| {
                    h.iter()
                        .map(|x| {
                            (
                                x.key.to_string(),
                                String::from_utf8_lossy(x.value.unwrap_or_default()).into_owned(),
                            )
                        })
                        .collect()
                })
                .unwrap_or_default();
            out.push(Record {
                key: String::from_utf8_lossy(m.key().unwrap_or_default()).into_owned(),
                payload: String::from_utf8_lossy(m.payload().unwrap_or_default()).into_owned(),
                headers,
            });
        }
    }
    out
}

/// Everything on the actions topic (read for 5 s: the count is not known).
pub fn read_actions(brokers: &str) -> Vec<Record> {
    read(
        brokers,
        ACTIONS,
        usize::MAX,
        Duration::from_secs(5),
        Duration::ZERO,
    )
}

/// (id, account, detector, action) of each action record.
pub fn action_set(records: &[Record]) -> BTreeSet<(String, String, String, String)> {
    records
        .iter()
        .map(|r| {
            let v: serde_json::Value = serde_json::from_str(&r.payload).expect("action JSON");
            let d = &v["data"];
            assert_eq!(
                r.key,
                d["account"].as_str().unwrap_or_default(),
                "an action's key is its account"
            );
            (
                v["id"].as_str().unwrap_or_default().to_string(),
                d["account"].as_str().unwrap_or_default().to_string(),
                d["detector"].as_str().unwrap_or_default().to_string(),
                d["action"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

/// The same for actions from `replay`'s engine.
pub fn replay_set(
    actions: &[credwatch::action::Action],
) -> BTreeSet<(String, String, String, String)> {
    actions
        .iter()
        .map(|a| {
            let v: serde_json::Value = serde_json::from_str(&a.to_json()).expect("action JSON");
            (
                a.id.clone(),
                a.data.account.clone(),
                a.data.detector.to_string(),
                v["data"]["action"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

pub fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    f()
}

/// A `credwatch run` process (the real binary), killed when dropped.
pub struct Binary {
    child: std::sync::Mutex<Child>,
    log: PathBuf,
}

impl Binary {
    /// Starts `credwatch run` on this world and broker, with `env`.
    pub fn start(world: &World, brokers: &str, name: &str, env: &[(&str, &str)]) -> Binary {
        Self::start_with(world, brokers, name, "", env)
    }

    /// The same with `extra` TOML sections (webhooks, say) in its config.
    pub fn start_with(
        world: &World,
        brokers: &str,
        name: &str,
        extra: &str,
        env: &[(&str, &str)],
    ) -> Binary {
        Self::start_keyed(world, brokers, name, "", extra, env)
    }

    /// The same with `kafka_keys` in its `[kafka]` section.
    pub fn start_keyed(
        world: &World,
        brokers: &str,
        name: &str,
        kafka_keys: &str,
        extra: &str,
        env: &[(&str, &str)],
    ) -> Binary {
        let config = world.dir.path().join(format!("{name}.toml"));
        std::fs::write(
            &config,
            world.toml(&format!(
                "{}[http]\nlisten = \"127.0.0.1:0\"\n{extra}\n",
                kafka_toml(brokers, "binary", kafka_keys, "")
            )),
        )
        .expect("write config");
        let log = world.dir.path().join(format!("{name}.log"));
        let child = Command::new(crate::credwatch_exe())
            .args(["run", "--config"])
            .arg(&config)
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log file"))
            .spawn()
            .expect("start credwatch run");
        Binary {
            child: std::sync::Mutex::new(child),
            log,
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([sig, &self.child.lock().expect("child").id().to_string()])
            .status()
            .expect("kill")
            .success();
        assert!(ok, "kill {sig}");
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.lock().expect("child").id()
    }

    pub fn exited(&self) -> Option<std::process::ExitStatus> {
        self.child.lock().expect("child").try_wait().expect("wait")
    }

    /// The address its HTTP endpoint listens on, from its log (waits up to
    /// 30 s for the line).
    pub fn http_addr(&self) -> String {
        let mut addr = None;
        wait_until(Duration::from_secs(30), || {
            addr = self
                .log()
                .lines()
                .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
                .find_map(|v| v["addr"].as_str().map(str::to_string));
            addr.is_some()
        });
        addr.unwrap_or_else(|| panic!("the run binary logged no HTTP address:\n{}", self.log()))
    }
}

impl Drop for Binary {
    fn drop(&mut self) {
        let mut c = self.child.lock().unwrap_or_else(|e| e.into_inner());
        let _ = c.kill();
        let _ = c.wait();
        // TESTKIT_LOGS=<dir> keeps every run binary's whole log
        // there (the tests print only a tail): for a failure in CI.
        if let Some(dir) = std::env::var_os("TESTKIT_LOGS") {
            let name = self.log.file_name().unwrap_or_default().to_string_lossy();
            let to = std::path::Path::new(&dir).join(format!("{}-{name}", c.id()));
            let _ = std::fs::create_dir_all(&dir);
            let _ = std::fs::copy(&self.log, to);
        }
    }
}

pub type Actions = BTreeSet<(String, String, String, String)>;

/// Every action of replay is on the topic with the same id, and nothing
/// else, `password_spray` included: its windows count only what is inside
/// them, so the order in which partitions are judged does not change who
/// is locked.
pub fn assert_same_as_replay(got: &Actions, want: &Actions) {
    let missing: Vec<_> = want.difference(got).collect();
    assert!(
        missing.is_empty(),
        "replay's actions missing on the topic: {missing:?}"
    );
    let extra: Vec<_> = got.difference(want).collect();
    assert!(extra.is_empty(), "actions replay does not give: {extra:?}");
}

/// [`assert_same_as_replay`] but for `password_spray`, for a pipeline that
/// sees only part of a spray (one of several instances without a source
/// stage).
pub fn assert_same_except_spray(got: &Actions, want: &Actions) {
    let not_spray = |a: &&(String, String, String, String)| a.2 != "password_spray";
    let missing: Vec<_> = want.difference(got).filter(not_spray).collect();
    assert!(
        missing.is_empty(),
        "replay's actions missing on the topic: {missing:?}"
    );
    let extra: Vec<_> = got.difference(want).filter(not_spray).collect();
    assert!(extra.is_empty(), "actions replay does not give: {extra:?}");
}

/// librdkafka's default partitioner (`consistent_random`): CRC-32 of the
/// key, modulo the partition count.
pub fn partition_of(key: &str, partitions: i32) -> i32 {
    let mut crc = !0u32;
    for &b in key.as_bytes() {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    ((!crc) % partitions as u32) as i32
}

/// One account `{prefix}{k}@{domain}` per input partition, so that
/// whichever partitions a fault moves, one of them moves with it.
pub fn one_per_partition(prefix: &str, domain: &str, partitions: i32) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for k in 0.. {
        let a = format!("{prefix}{k}@{domain}");
        if !out
            .iter()
            .any(|o| partition_of(o, partitions) == partition_of(&a, partitions))
        {
            out.push(a);
        }
        if out.len() == partitions as usize {
            return out;
        }
    }
    unreachable!()
}

impl Binary {
    /// Waits up to 60 s for its first restore (it joined the group and got
    /// partitions); panics with its log if it did not.
    pub fn wait_joined(&self, who: &str) {
        assert!(
            wait_until(Duration::from_secs(60), || self
                .log()
                .contains("State restored")),
            "{who} got no partition within 60 s:\n{}",
            self.log()
        );
    }

    /// SIGTERM, then waits up to 40 s for it to leave; panics with its log
    /// if it did not.
    pub fn stop(&self, who: &str) {
        self.signal("-TERM");
        assert!(
            wait_until(Duration::from_secs(40), || self.exited().is_some()),
            "{who} did not leave within 40 s of SIGTERM:\n{}",
            self.log()
        );
    }
}
