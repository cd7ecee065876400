//! `credwatch replay`: the detectors over JSON-lines events from a file or
//! standard input; actions to standard output, a summary to standard error.

use std::collections::BTreeMap;
use std::fmt;
use std::io::{self, BufRead, IsTerminal, Write};
use std::time::{Duration, Instant};

use crate::engine::Engine;
use crate::policy::Decision;
use crate::sink::JsonLines;
use crate::source::event::{parse_event, ParseLimits, Reject, RejectReason};
use crate::source::lines::{Line, LineReader};
use crate::state::TableStats;

/// What a replay saw and did.
#[derive(Debug, Default, Clone)]
pub struct Summary {
    pub lines: u64,
    pub events: u64,
    pub events_by_kind: BTreeMap<&'static str, u64>,
    pub rejects: BTreeMap<RejectReason, u64>,
    /// What each detector did, in registration order.
    pub detectors: Vec<DetectorSummary>,
    pub actions: u64,
    pub accounts_tracked: usize,
    /// Every state table's size and evictions.
    pub tables: Vec<TableStats>,
    pub breaker_open: bool,
    pub breaker_opened: u64,
    pub geo_lookups: u64,
    pub geo_cache_hits: u64,
    pub elapsed: Duration,
    /// `--format maillog`: what the log lines gave.
    pub log: Option<crate::source::maillog::LogCounts>,
}

/// What one detector did in a replay.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct DetectorSummary {
    pub name: &'static str,
    pub dry_run: bool,
    pub findings: u64,
    pub locks: u64,
    pub alerts: u64,
    /// Findings that joined an incident already open.
    pub enriched: u64,
}

impl Summary {
    pub fn rejected(&self) -> u64 {
        self.rejects.values().sum()
    }
    pub fn events_per_second(&self) -> f64 {
        self.lines as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

fn n(v: u64) -> String {
    crate::detect::thousands(v)
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "credwatch replay: {} lines in {:.2} s ({} {}/s)",
            n(self.lines),
            self.elapsed.as_secs_f64(),
            n(self.events_per_second() as u64),
            if self.log.is_some() {
                "lines"
            } else {
                "events"
            }
        )?;
        let kinds: Vec<String> = ["auth", "submission", "bounce"]
            .iter()
            .map(|k| format!("{k} {}", n(*self.events_by_kind.get(k).unwrap_or(&0))))
            .collect();
        writeln!(f, "  events:    {}", kinds.join(", "))?;
        if let Some(log) = &self.log {
            writeln!(
                f,
                "  log lines: {} used, {} gave no event",
                n(log.used),
                n(log.skipped.values().sum::<u64>())
            )?;
            for (why, count) in &log.skipped {
                writeln!(f, "    {:<18}{:>9}", why.as_str(), n(*count))?;
            }
            for (why, count) in &log.invalid {
                writeln!(f, "    invalid: {:<9}{:>9}", why.as_str(), n(*count))?;
            }
        }
        if self.rejects.is_empty() {
            writeln!(f, "  rejected:  0")?;
        } else {
            let r: Vec<String> = self
                .rejects
                .iter()
                .map(|(k, v)| format!("{k} {}", n(*v)))
                .collect();
            writeln!(f, "  rejected:  {} ({})", n(self.rejected()), r.join(", "))?;
        }
        writeln!(f, "  detectors: findings  locks  alerts  joined-incident")?;
        for d in &self.detectors {
            let dry = if d.dry_run { " (dry run)" } else { "" };
            writeln!(
                f,
                "    {:<20}{:>7} {:>6} {:>7} {:>8}{dry}",
                d.name, d.findings, d.locks, d.alerts, d.enriched
            )?;
        }
        writeln!(f, "  actions:   {}", n(self.actions))?;
        writeln!(f, "  accounts tracked: {}", n(self.accounts_tracked as u64))?;
        for t in &self.tables {
            writeln!(
                f,
                "    {:<16} {:>9} of {} {}s; evicted {} expired, {} at cap",
                t.name,
                t.len,
                t.cap,
                t.keyed_by.as_str(),
                t.evicted_expired,
                t.evicted_cap
            )?;
        }
        if self.geo_lookups > 0 {
            writeln!(
                f,
                "  geoip: {} lookups, {:.1} % from cache",
                n(self.geo_lookups),
                100.0 * self.geo_cache_hits as f64 / self.geo_lookups as f64
            )?;
        }
        write!(
            f,
            "  breaker: {} (opened {} time(s))",
            if self.breaker_open {
                "OPEN: locks suspended"
            } else {
                "closed"
            },
            self.breaker_opened
        )
    }
}

/// Where rejected lines go, with their reason.
pub trait RejectSink {
    fn reject(&mut self, line_no: u64, reject: &Reject, raw: Option<&[u8]>) -> io::Result<()>;
}

/// Writes each rejected line as `{"line":N,"reason":"...","detail":"...","raw":"..."}`.
pub struct RejectFile<W: Write>(pub W);

impl<W: Write> RejectSink for RejectFile<W> {
    fn reject(&mut self, line_no: u64, reject: &Reject, raw: Option<&[u8]>) -> io::Result<()> {
        let mut m = serde_json::Map::new();
        m.insert("line".into(), line_no.into());
        m.insert("reason".into(), reject.reason.as_str().into());
        m.insert("detail".into(), reject.detail.clone().into());
        if let Some(raw) = raw {
            m.insert(
                "raw".into(),
                String::from_utf8_lossy(raw).into_owned().into(),
            );
        }
        serde_json::to_writer(&mut self.0, &m)?;
        self.0.write_all(b"\n")
    }
}

/// Options of one replay.
pub struct ReplayOptions<'a> {
    pub limits: ParseLimits,
    pub rejects: Option<&'a mut (dyn RejectSink + Send)>,
    /// Total input size, for a progress bar on a terminal.
    pub progress_total: Option<u64>,
    /// `--format maillog`: every event the log lines made, as the
    /// contract's JSON (one per line), for checking or for feeding a topic.
    pub events_out: Option<&'a mut (dyn Write + Send)>,
    /// `--format maillog`: more than 1 reads and joins the lines on one
    /// thread while another judges the events (in the same order: the
    /// results are those of 1).
    pub threads: usize,
    /// `--report`: gathers every event's hour and kind and every action and
    /// joined finding for the HTML report.
    pub report: Option<&'a mut crate::report::Collector>,
}

/// Replays `input` through `engine`, writing actions to `out`.
pub fn replay<R: BufRead, W: Write>(
    engine: &Engine,
    input: R,
    out: W,
    mut opts: ReplayOptions<'_>,
) -> io::Result<Summary> {
    let start = Instant::now();
    let mut reader = LineReader::new(input, opts.limits.max_bytes);
    let mut sink = JsonLines::new(out);
    let mut buf = Vec::with_capacity(1024);
    let mut decisions = Vec::new();
    let mut summary = Summary::default();
    let mut progress = Progress::new(opts.progress_total);
    while let Some(line) = reader.next_line(&mut buf)? {
        let parsed = match line {
            Line::TooLong(len) => Err(Reject::too_large(len, opts.limits.max_bytes)),
            Line::Data if buf.iter().all(u8::is_ascii_whitespace) => continue,
            Line::Data => parse_event(&buf, &opts.limits),
        };
        summary.lines += 1;
        match parsed {
            Ok(event) => {
                summary.events += 1;
                engine.process(&event, None, &mut decisions);
                let mut report = opts.report.as_deref_mut();
                if let Some(r) = report.as_deref_mut() {
                    r.event(event.ts, event.kind);
                }
                for d in decisions.drain(..) {
                    deliver(d, &mut sink, report.as_deref_mut(), event.ts)?;
                }
            }
            Err(reject) => {
                *summary.rejects.entry(reject.reason).or_default() += 1;
                if let Some(r) = opts.rejects.as_deref_mut() {
                    let raw = matches!(line, Line::Data).then_some(&buf[..]);
                    r.reject(reader.line_no, &reject, raw)?;
                }
            }
        }
        progress.tick(reader.bytes_read, summary.lines);
    }
    progress.finish();
    sink.flush()?;
    summary.elapsed = start.elapsed();
    summary.actions = sink.written;
    fill(engine, &mut summary);
    Ok(summary)
}

/// Sends an action to standard output; a finding that joined an open
/// incident is logged instead. Both go to the report, if there is one
/// (`ts`: the time of the event judged).
pub fn deliver<W: Write>(
    d: Decision,
    sink: &mut JsonLines<W>,
    report: Option<&mut crate::report::Collector>,
    ts: crate::time::Millis,
) -> io::Result<()> {
    match d {
        Decision::Emit(action) => {
            if let Some(r) = report {
                r.action(&action);
            }
            sink.send(&action)
        }
        joined @ Decision::Enrich { .. } => {
            joined.log_joined();
            if let (
                Some(r),
                Decision::Enrich {
                    account,
                    detector,
                    incident,
                    reason,
                },
            ) = (report, &joined)
            {
                r.joined(incident, account, detector, reason, ts);
            }
            Ok(())
        }
    }
}

/// Copies the engine's counters into a summary.
pub fn fill(engine: &Engine, summary: &mut Summary) {
    use std::sync::atomic::Ordering::Relaxed;
    let by_kind = engine.events_by_kind();
    for (i, k) in crate::source::event::Kind::ALL.iter().enumerate() {
        // Unlocks only when there were some (most replays have none).
        if by_kind[i] > 0 || i < 3 {
            summary.events_by_kind.insert(k.as_str(), by_kind[i]);
        }
    }
    summary.detectors = engine
        .detector_counts()
        .map(|(name, dry_run, c)| DetectorSummary {
            name,
            dry_run,
            findings: c.findings.load(Relaxed),
            locks: c.locks.load(Relaxed),
            alerts: c.alerts.load(Relaxed),
            enriched: c.enriched.load(Relaxed),
        })
        .collect();
    summary.accounts_tracked = engine.accounts_tracked();
    summary.tables = engine.tables();
    summary.breaker_open = engine.breaker_open();
    summary.breaker_opened = engine.breaker_opened_total();
    (summary.geo_lookups, summary.geo_cache_hits) = engine.geo_lookups();
}

/// A progress bar on standard error, for a file of known size, only when
/// standard error is a terminal.
pub struct Progress {
    total: Option<u64>,
    start: Instant,
    last: Instant,
}

impl Progress {
    pub fn new(total: Option<u64>) -> Progress {
        Progress {
            total: total.filter(|_| io::stderr().is_terminal()),
            start: Instant::now(),
            last: Instant::now(),
        }
    }

    /// Redraws at most five times a second.
    pub fn tick(&mut self, done: u64, lines: u64) {
        let Some(total) = self.total else { return };
        if !lines.is_multiple_of(4096) || self.last.elapsed() < Duration::from_millis(200) {
            return;
        }
        self.last = Instant::now();
        let frac = (done as f64 / total.max(1) as f64).min(1.0);
        let width = 30;
        let filled = (frac * width as f64) as usize;
        eprint!(
            "\r\x1b[2K[{}{}] {:>5.1} %  {} lines  {} lines/s",
            "#".repeat(filled),
            " ".repeat(width - filled),
            frac * 100.0,
            n(lines),
            n((lines as f64 / self.start.elapsed().as_secs_f64().max(1e-9)) as u64)
        );
    }

    pub fn finish(&self) {
        if self.total.is_some() {
            eprint!("\r\x1b[2K");
        }
    }
}

/// Replays Dovecot and Postfix log lines (`--format maillog`): the inputs
/// merged in time order, joined into events ([`crate::source::maillog`]),
/// judged like JSON events, one judge in the order the lines made them.
/// With `opts.threads > 1` the reading and joining run on this thread and
/// the judging on another, fed in batches: the same events in the same
/// order, so the same actions.
pub fn replay_maillog<W: Write + Send>(
    engine: &Engine,
    mut inputs: crate::source::maillog::Inputs,
    cfg: &crate::source::maillog::MaillogConfig,
    out: W,
    mut opts: ReplayOptions<'_>,
) -> io::Result<Summary> {
    use crate::source::event::Event;
    use crate::source::maillog::{Joiner, LogEvent, Skip};
    let start = Instant::now();
    let mut joiner = Joiner::new(cfg);
    let mut made: Vec<LogEvent> = Vec::new();
    let mut summary = Summary::default();
    let mut progress = Progress::new(opts.progress_total);
    // One judge, in order: on this thread, or on its own fed by a channel.
    let mut judge = Judge {
        engine,
        sink: JsonLines::new(out),
        decisions: Vec::new(),
        events: 0,
        report: opts.report.take(),
    };
    let mut read = |hand_over: &mut dyn FnMut(Vec<Event>) -> io::Result<()>| -> io::Result<()> {
        let mut batch: Vec<Event> = Vec::with_capacity(1024);
        let mut take = |made: &mut Vec<LogEvent>,
                        joiner: &mut Joiner,
                        batch: &mut Vec<Event>|
         -> io::Result<()> {
            for e in made.drain(..) {
                match e.fields.to_event(&opts.limits) {
                    Ok(event) => {
                        if let Some(w) = opts.events_out.as_deref_mut() {
                            w.write_all(&e.fields.to_json())?;
                            w.write_all(b"\n")?;
                        }
                        batch.push(event);
                    }
                    Err(r) => {
                        joiner.counts.skip(Skip::Invalid);
                        *joiner.counts.invalid.entry(r.reason).or_default() += 1;
                    }
                }
            }
            Ok(())
        };
        while let Some(line) = inputs.next_line()? {
            if line.too_long.is_some() {
                joiner.skipped(Skip::TooLong);
            } else {
                let text = String::from_utf8_lossy(&line.text);
                if text.trim().is_empty() {
                    continue;
                }
                joiner.feed(&text, line.reference(), &line.clock, &mut made);
            }
            take(&mut made, &mut joiner, &mut batch)?;
            if batch.len() >= 1024 {
                hand_over(std::mem::replace(&mut batch, Vec::with_capacity(1024)))?;
            }
            progress.tick(inputs.bytes_read(), joiner.counts.lines);
        }
        joiner.finish(&mut made);
        take(&mut made, &mut joiner, &mut batch)?;
        hand_over(batch)
    };
    if opts.threads > 1 {
        let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<Event>>(8);
        std::thread::scope(|s| -> io::Result<()> {
            let judging = s.spawn(|| -> io::Result<()> {
                for batch in rx {
                    judge.batch(&batch)?;
                }
                Ok(())
            });
            let r = read(&mut |batch| {
                tx.send(batch)
                    .map_err(|_| io::Error::other("the judging thread stopped"))
            });
            drop(tx);
            let j = judging
                .join()
                .map_err(|_| io::Error::other("the judging thread panicked"))?;
            r.and(j)
        })?;
    } else {
        // Strictly sequential: each batch is judged as soon as it is full.
        read(&mut |batch| judge.batch(&batch))?;
    }
    judge.sink.flush()?;
    let (events, written) = (judge.events, judge.sink.written);
    progress.finish();
    summary.events = events;
    summary.lines = joiner.counts.lines;
    summary.elapsed = start.elapsed();
    summary.actions = written;
    summary.log = Some(joiner.counts.clone());
    fill(engine, &mut summary);
    Ok(summary)
}

/// The judge of `replay --format maillog`: events in, actions out.
struct Judge<'e, 'r, W: Write> {
    engine: &'e Engine,
    sink: JsonLines<W>,
    decisions: Vec<Decision>,
    events: u64,
    report: Option<&'r mut crate::report::Collector>,
}

impl<W: Write> Judge<'_, '_, W> {
    fn batch(&mut self, batch: &[crate::source::event::Event]) -> io::Result<()> {
        for event in batch {
            self.events += 1;
            self.engine.process(event, None, &mut self.decisions);
            if let Some(r) = self.report.as_deref_mut() {
                r.event(event.ts, event.kind);
            }
            for d in self.decisions.drain(..) {
                deliver(d, &mut self.sink, self.report.as_deref_mut(), event.ts)?;
            }
        }
        Ok(())
    }
}
