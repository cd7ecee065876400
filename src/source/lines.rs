//! Reads newline-delimited records without ever holding more than
//! `max_bytes` of one record in memory: an oversized line is skipped to its
//! end and reported by its length.

use std::io::{self, BufRead};

/// One record read from the input.
#[derive(Debug, PartialEq, Eq)]
pub enum Line {
    /// The line is in the buffer (newline and `\r` removed).
    Data,
    /// The line was longer than the limit; this many bytes were skipped.
    TooLong(usize),
}

pub struct LineReader<R> {
    inner: R,
    max: usize,
    /// Bytes consumed so far (for progress).
    pub bytes_read: u64,
    /// 1-based number of the line last returned.
    pub line_no: u64,
}

impl<R: BufRead> LineReader<R> {
    pub fn new(inner: R, max: usize) -> Self {
        LineReader {
            inner,
            max,
            bytes_read: 0,
            line_no: 0,
        }
    }

    /// Reads the next line into `buf`; `None` at the end of the input.
    pub fn next_line(&mut self, buf: &mut Vec<u8>) -> io::Result<Option<Line>> {
        buf.clear();
        self.append_line(buf)
    }

    /// Appends the next line to `buf` (what `buf` held stays); on
    /// [`Line::TooLong`] nothing is appended. Saves a copy when lines are
    /// gathered into batches.
    pub fn append_line(&mut self, buf: &mut Vec<u8>) -> io::Result<Option<Line>> {
        let start = buf.len();
        let mut skipped = 0usize;
        let mut any = false;
        loop {
            let chunk = match self.inner.fill_buf() {
                Ok(c) => c,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            if chunk.is_empty() {
                if !any {
                    return Ok(None);
                }
                break;
            }
            any = true;
            let (part, done, newline) = match memchr(chunk) {
                Some(i) => (&chunk[..i], i + 1, true),
                None => (chunk, chunk.len(), false),
            };
            let held = buf.len() - start;
            if skipped > 0 || held + part.len() > self.max {
                skipped += held + part.len();
                buf.truncate(start);
            } else {
                buf.extend_from_slice(part);
            }
            self.inner.consume(done);
            self.bytes_read += done as u64;
            if newline {
                break;
            }
        }
        self.line_no += 1;
        if skipped > 0 {
            return Ok(Some(Line::TooLong(skipped)));
        }
        if buf.len() > start && buf.last() == Some(&b'\r') {
            buf.pop();
        }
        Ok(Some(Line::Data))
    }
}

fn memchr(b: &[u8]) -> Option<usize> {
    memchr::memchr(b'\n', b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_lines_and_skips_oversized_ones() {
        let input = format!("a\r\n{}\nbb\nlast", "x".repeat(100));
        let mut r = LineReader::new(io::BufReader::with_capacity(16, input.as_bytes()), 10);
        let mut buf = Vec::new();
        assert_eq!(r.next_line(&mut buf).unwrap(), Some(Line::Data));
        assert_eq!(buf, b"a");
        assert_eq!(r.next_line(&mut buf).unwrap(), Some(Line::TooLong(100)));
        assert_eq!(r.next_line(&mut buf).unwrap(), Some(Line::Data));
        assert_eq!(buf, b"bb");
        assert_eq!(r.next_line(&mut buf).unwrap(), Some(Line::Data));
        assert_eq!(buf, b"last");
        assert_eq!(r.line_no, 4);
        assert_eq!(r.next_line(&mut buf).unwrap(), None);
    }
}
