//! The parallel replay: parsing and judging spread over threads, output in
//! input order.
//!
//! ```text
//!  reader ──batches──▶ parsers (P) ──▶ sequencer ──in order──▶ judges (W, one shard of accounts each)
//!                                           │                         │
//!                                           └──────▶ writer ◀─────────┘ (merges by line number)
//! ```
//!
//! Every judge sees every batch in input order and handles the events of
//! its own accounts (whole state shards: see [`crate::state::shard_of`]),
//! so each account's events are judged in order by one thread, and no two
//! judges write the same shard lock of an account table. Detectors that look across accounts
//! (`password_spray`, the breaker) see events of different shards in an
//! order that can vary from run to run: who is locked does not change, but
//! a count in the evidence can. `--threads 1` is strictly sequential.

use std::collections::BTreeMap;
use std::io::{self, BufRead, Write};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Instant;

use super::replay::{deliver, fill, Progress, ReplayOptions, Summary};
use crate::engine::{Engine, WARM_AHEAD};
use crate::policy::Decision;
use crate::sink::JsonLines;
use crate::source::event::{parse_event, Event, ParseLimits, Reject, RejectReason};
use crate::source::lines::{Line, LineReader};
use crate::state::shard_of;

const BATCH_LINES: usize = 2048;

struct RawBatch {
    seq: u64,
    data: Vec<u8>,
    /// (start, end) in `data`, or the skipped length of an oversized line.
    lines: Vec<Result<(usize, usize), usize>>,
    /// Line numbers of the entries (blank lines are not entries).
    numbers: Vec<u64>,
    /// An empty vector for the parser's results, recycled with the batch.
    items: Vec<Result<Event, Reject>>,
}

struct ParsedBatch {
    seq: u64,
    /// The newest event time in the batch.
    max_ts: i64,
    raw: RawBatch,
    items: Vec<Result<Event, Reject>>,
}

enum ToWriter {
    Batch(Arc<ParsedBatch>),
    Part {
        seq: u64,
        decisions: Vec<(usize, Decision)>,
    },
}

fn parse_batch(mut raw: RawBatch, limits: &ParseLimits) -> ParsedBatch {
    let mut items = std::mem::take(&mut raw.items);
    items.extend(raw.lines.iter().map(|l| match *l {
        Ok((s, e)) => parse_event(&raw.data[s..e], limits),
        Err(len) => Err(Reject::too_large(len, limits.max_bytes)),
    }));
    let max_ts = items
        .iter()
        .filter_map(|i| i.as_ref().ok())
        .map(|e| e.ts)
        .max()
        .unwrap_or(i64::MIN);
    ParsedBatch {
        seq: raw.seq,
        max_ts,
        raw,
        items,
    }
}

/// Replays with `threads` parsing and judging threads (at least 2). The
/// engine must have been given one lane per thread ([`Engine::set_lanes`]).
pub fn replay_parallel<R: BufRead, W: Write + Send>(
    engine: &Engine,
    input: R,
    out: W,
    opts: ReplayOptions<'_>,
    threads: usize,
) -> io::Result<Summary> {
    let start = Instant::now();
    let judges = threads.max(2);
    assert_eq!(
        engine.lanes(),
        judges,
        "set_lanes(threads) before replay_parallel"
    );
    let parsers = threads.max(2);
    let limits = opts.limits;
    let rejects = opts.rejects;
    let report = opts.report;
    let progress_total = opts.progress_total;
    let (raw_tx, raw_rx) = sync_channel::<RawBatch>(parsers * 2);
    // Batches go back to the reader once written: allocating fresh ones
    // made the kernel zero hundreds of megabytes of pages per run.
    let (recycle_tx, recycle_rx) = sync_channel::<RawBatch>(64);
    let raw_rx = Arc::new(Mutex::new(raw_rx));
    let (parsed_tx, parsed_rx) = sync_channel::<ParsedBatch>(parsers * 2);
    let (writer_tx, writer_rx) = sync_channel::<ToWriter>(judges * 8);

    thread::scope(|s| -> io::Result<Summary> {
        for _ in 0..parsers {
            let rx = Arc::clone(&raw_rx);
            let tx = parsed_tx.clone();
            let limits = limits.clone();
            s.spawn(move || loop {
                let next = rx.lock().unwrap_or_else(|p| p.into_inner()).recv();
                let Ok(raw) = next else { break };
                if tx.send(parse_batch(raw, &limits)).is_err() {
                    break;
                }
            });
        }
        drop(parsed_tx);

        let mut judge_txs: Vec<SyncSender<Arc<ParsedBatch>>> = Vec::new();
        for w in 0..judges {
            let (tx, rx) = sync_channel::<Arc<ParsedBatch>>(8);
            judge_txs.push(tx);
            let out = writer_tx.clone();
            s.spawn(move || judge(engine, rx, out, w as u64, judges as u64));
        }

        // The sequencer: parsed batches arrive in any order, leave in order.
        let seq_writer = writer_tx.clone();
        s.spawn(move || {
            let mut pending: BTreeMap<u64, ParsedBatch> = BTreeMap::new();
            let mut next = 0u64;
            for b in parsed_rx {
                pending.insert(b.seq, b);
                while let Some(b) = pending.remove(&next) {
                    let b = Arc::new(b);
                    if seq_writer.send(ToWriter::Batch(Arc::clone(&b))).is_err() {
                        return;
                    }
                    for tx in &judge_txs {
                        if tx.send(Arc::clone(&b)).is_err() {
                            return;
                        }
                    }
                    next += 1;
                }
            }
        });
        drop(writer_tx);

        // The writer runs on its own thread; this one reads.
        let writer =
            s.spawn(move || write_in_order(writer_rx, out, judges, rejects, report, recycle_tx));

        let mut reader = LineReader::new(input, limits.max_bytes);
        let mut progress = Progress::new(progress_total);
        let mut seq = 0u64;
        let mut batch = new_batch(0);
        let mut read_error = None;
        loop {
            let s0 = batch.data.len();
            match reader.append_line(&mut batch.data) {
                Ok(Some(Line::Data)) => {
                    if batch.data[s0..].iter().all(u8::is_ascii_whitespace) {
                        batch.data.truncate(s0);
                        continue;
                    }
                    batch.lines.push(Ok((s0, batch.data.len())));
                    batch.numbers.push(reader.line_no);
                }
                Ok(Some(Line::TooLong(len))) => {
                    batch.lines.push(Err(len));
                    batch.numbers.push(reader.line_no);
                }
                Ok(None) => break,
                Err(e) => {
                    read_error = Some(e);
                    break;
                }
            }
            progress.tick(reader.bytes_read, reader.line_no);
            if batch.lines.len() >= BATCH_LINES {
                seq += 1;
                let next = match recycle_rx.try_recv() {
                    Ok(mut b) => {
                        b.seq = seq;
                        b
                    }
                    Err(_) => new_batch(seq),
                };
                let full = std::mem::replace(&mut batch, next);
                if raw_tx.send(full).is_err() {
                    break;
                }
            }
        }
        if !batch.lines.is_empty() {
            let _ = raw_tx.send(batch);
        }
        drop(raw_tx);
        progress.finish();
        let (lines, rejected, actions) = writer
            .join()
            .map_err(|_| io::Error::other("the writer thread panicked"))??;
        if let Some(e) = read_error {
            return Err(e);
        }
        let mut summary = Summary {
            lines,
            events: lines - rejected.values().sum::<u64>(),
            rejects: rejected,
            actions,
            ..Summary::default()
        };
        summary.elapsed = start.elapsed();
        fill(engine, &mut summary);
        Ok(summary)
    })
}

fn new_batch(seq: u64) -> RawBatch {
    RawBatch {
        seq,
        data: Vec::with_capacity(BATCH_LINES * 200),
        lines: Vec::with_capacity(BATCH_LINES),
        numbers: Vec::with_capacity(BATCH_LINES),
        items: Vec::with_capacity(BATCH_LINES),
    }
}

fn judge(
    engine: &Engine,
    rx: Receiver<Arc<ParsedBatch>>,
    out: SyncSender<ToWriter>,
    me: u64,
    of: u64,
) {
    let mut decisions = Vec::new();
    let mut keys = Vec::with_capacity(WARM_AHEAD);
    for b in rx {
        let mut part = Vec::new();
        // This judge's events, with their places in the batch.
        let mine: Vec<(usize, &Event)> = (b.items.iter().enumerate())
            .filter_map(|(i, item)| {
                let ev = item.as_ref().ok()?;
                (shard_of(ev.key) as u64 % of == me).then_some((i, ev))
            })
            .collect();
        for chunk in mine.chunks(WARM_AHEAD) {
            engine.warm(chunk.iter().map(|(_, ev)| *ev), &mut keys);
            for &(i, ev) in chunk {
                engine.process_in_lane(me as usize, ev, None, &mut decisions);
                part.extend(decisions.drain(..).map(|d| (i, d)));
            }
        }
        engine.lane_progress(me as usize, b.max_ts);
        if out
            .send(ToWriter::Part {
                seq: b.seq,
                decisions: part,
            })
            .is_err()
        {
            return;
        }
    }
}

type WriterResult = io::Result<(u64, BTreeMap<RejectReason, u64>, u64)>;

fn write_in_order<W: Write>(
    rx: Receiver<ToWriter>,
    out: W,
    judges: usize,
    mut rejects: Option<&mut (dyn super::replay::RejectSink + Send)>,
    mut report: Option<&mut crate::report::Collector>,
    recycle: SyncSender<RawBatch>,
) -> WriterResult {
    let mut sink = JsonLines::new(out);
    let mut batches: BTreeMap<u64, Arc<ParsedBatch>> = BTreeMap::new();
    let mut parts: BTreeMap<u64, (usize, Vec<(usize, Decision)>)> = BTreeMap::new();
    let mut next = 0u64;
    let mut lines = 0u64;
    let mut rejected: BTreeMap<RejectReason, u64> = BTreeMap::new();
    for msg in rx {
        match msg {
            ToWriter::Batch(b) => {
                batches.insert(b.seq, b);
            }
            ToWriter::Part { seq, decisions } => {
                let e = parts.entry(seq).or_default();
                e.0 += 1;
                e.1.extend(decisions);
            }
        }
        while parts.get(&next).is_some_and(|p| p.0 == judges) && batches.contains_key(&next) {
            let b = batches.remove(&next).expect("checked");
            let (_, mut decisions) = parts.remove(&next).expect("checked");
            decisions.sort_by_key(|(i, _)| *i);
            for (i, item) in b.items.iter().enumerate() {
                if let (Ok(e), Some(r)) = (item, report.as_deref_mut()) {
                    r.event(e.ts, e.kind);
                }
                if let Err(r) = item {
                    *rejected.entry(r.reason).or_default() += 1;
                    if let Some(sink) = rejects.as_deref_mut() {
                        let raw = b.raw.lines[i].ok().map(|(s, e)| &b.raw.data[s..e]);
                        sink.reject(b.raw.numbers[i], r, raw)?;
                    }
                }
            }
            for (i, d) in decisions {
                let ts = b.items[i].as_ref().map_or(0, |e| e.ts);
                deliver(d, &mut sink, report.as_deref_mut(), ts)?;
            }
            lines += b.items.len() as u64;
            next += 1;
            // The judges have sent their parts, so this is usually the last
            // reference; if a judge has not dropped its copy yet, let it go.
            if let Ok(batch) = Arc::try_unwrap(b) {
                let mut raw = batch.raw;
                let mut items = batch.items;
                items.clear();
                raw.items = items;
                raw.data.clear();
                raw.lines.clear();
                raw.numbers.clear();
                let _ = recycle.try_send(raw);
            }
        }
    }
    sink.flush()?;
    Ok((lines, rejected, sink.written))
}
