//! Where actions go: `replay` writes JSON lines to standard output
//! ([`JsonLines`]); the service writes them to Kafka ([`kafka`]), from where
//! [`webhook`] delivers them to every endpoint.

pub mod kafka;
pub mod webhook;

use std::io::Write;

use crate::action::Action;

/// Writes actions as JSON lines.
pub struct JsonLines<W: Write> {
    out: W,
    pub written: u64,
}

impl<W: Write> JsonLines<W> {
    pub fn new(out: W) -> Self {
        JsonLines { out, written: 0 }
    }

    pub fn send(&mut self, action: &Action) -> std::io::Result<()> {
        serde_json::to_writer(&mut self.out, action)?;
        self.out.write_all(b"\n")?;
        self.written += 1;
        Ok(())
    }

    pub fn flush(&mut self) -> std::io::Result<()> {
        self.out.flush()
    }
}
