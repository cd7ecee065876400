//! The log files of one replay, read as one stream in time order:
//! rotated files (`mail.log.2.gz mail.log.1 mail.log`, in any order) and
//! the files of different daemons (Dovecot's `log_path` beside Postfix's
//! `maillog_file`) are merged by their lines' time stamps, so that an
//! auth-process line meets Postfix's line of the same attempt. `.gz` files
//! are read as such (by their magic bytes, whatever their name).

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::path::Path;

use super::{prefix, MaillogConfig};
use crate::source::lines::{Line, LineReader};
use crate::time::{now_millis, Millis};

/// One input: its lines, and the clock its classic stamps are read with.
struct Input {
    name: String,
    reader: LineReader<Box<dyn BufRead + Send>>,
    clock: prefix::Clock,
    /// The next line, read ahead to order the inputs.
    next: Option<MergedLine>,
    /// The time of the last line with a stamp (lines without one keep
    /// their place after it).
    last_ts: Millis,
}

/// A line of the merged stream.
#[derive(Debug, Clone)]
pub struct MergedLine {
    /// The line (newline removed); empty when it was too long.
    pub text: Vec<u8>,
    /// Set when the line was longer than the limit: its length.
    pub too_long: Option<usize>,
    /// Which input (0-based, in the order given) and which line of it.
    pub input: usize,
    pub line_no: u64,
    pub clock: prefix::Clock,
    ts: Millis,
    /// In the same millisecond, Dovecot's lines go first: its auth line of
    /// an attempt is written before Postfix's warning of it.
    after_dovecot: bool,
}

impl MergedLine {
    /// A reference unique in the replay: input and line number.
    pub fn reference(&self) -> u64 {
        ((self.input as u64) << 40) | self.line_no
    }
}

/// The inputs of a replay, merged.
pub struct Inputs {
    inputs: Vec<Input>,
}

/// Opens every input (`-`: standard input). An input that cannot be
/// opened is an error naming it.
pub fn open_inputs(paths: &[String], cfg: &MaillogConfig, max_bytes: usize) -> io::Result<Inputs> {
    let mut inputs = Vec::new();
    for p in paths {
        let (raw, reference): (Box<dyn Read + Send>, Millis) = if p == "-" {
            (Box::new(io::stdin()), now_millis())
        } else {
            let f = File::open(p)
                .map_err(|e| io::Error::new(e.kind(), format!("cannot open {p}: {e}")))?;
            let mtime = f
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map_or_else(now_millis, |d| d.as_millis() as Millis);
            (Box::new(f), mtime)
        };
        let mut buf = BufReader::with_capacity(256 * 1024, raw);
        let gz = buf
            .fill_buf()
            .map(|b| b.starts_with(&[0x1f, 0x8b]))
            .unwrap_or(false)
            || Path::new(p).extension().is_some_and(|e| e == "gz");
        let reader: Box<dyn BufRead + Send> = if gz {
            Box::new(BufReader::with_capacity(
                256 * 1024,
                flate2::bufread::MultiGzDecoder::new(buf),
            ))
        } else {
            Box::new(buf)
        };
        inputs.push(Input {
            name: p.clone(),
            reader: LineReader::new(reader, max_bytes),
            clock: cfg.clock(reference),
            next: None,
            last_ts: Millis::MIN,
        });
    }
    let mut all = Inputs { inputs };
    for i in 0..all.inputs.len() {
        all.advance(i)?;
    }
    Ok(all)
}

impl Inputs {
    fn advance(&mut self, i: usize) -> io::Result<()> {
        // One input needs no order: its lines are not read twice.
        let merging = self.inputs.len() > 1;
        let input = &mut self.inputs[i];
        let mut text = Vec::new();
        let read = input.reader.next_line(&mut text).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!(
                    "{}: line {}: {e} (a damaged .gz file?)",
                    input.name,
                    input.reader.line_no + 1
                ),
            )
        })?;
        input.next = match read {
            None => None,
            Some(l) => {
                let too_long = match l {
                    Line::TooLong(n) => Some(n),
                    Line::Data => None,
                };
                let split = if too_long.is_none() && merging {
                    std::str::from_utf8(&text)
                        .ok()
                        .and_then(|t| prefix::split(t, &input.clock))
                        .map(|p| (p.ts, !super::dovecot::is_dovecot(p.program)))
                } else {
                    None
                };
                let ts = split.map(|(ts, _)| ts);
                if let Some(ts) = ts {
                    input.last_ts = ts;
                }
                Some(MergedLine {
                    text,
                    too_long,
                    input: i,
                    line_no: input.reader.line_no,
                    clock: input.clock,
                    ts: ts.unwrap_or(input.last_ts),
                    after_dovecot: split.is_some_and(|(_, p)| p),
                })
            }
        };
        Ok(())
    }

    /// The next line in time order (ties: the input given first).
    pub fn next_line(&mut self) -> io::Result<Option<MergedLine>> {
        let pick = self
            .inputs
            .iter()
            .enumerate()
            .filter_map(|(i, x)| x.next.as_ref().map(|l| (l.ts, l.after_dovecot, i)))
            .min();
        let Some((_, _, i)) = pick else {
            return Ok(None);
        };
        let line = self.inputs[i].next.take();
        self.advance(i)?;
        Ok(line)
    }

    /// Bytes read so far, in all inputs (compressed files: uncompressed).
    pub fn bytes_read(&self) -> u64 {
        self.inputs.iter().map(|i| i.reader.bytes_read).sum()
    }
}
