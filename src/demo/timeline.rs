//! The demo's timeline: reads the actions topic and prints each action as
//! it arrives, and tells the summary what each account got.

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::Mutex;
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{ClientConfig, Message};
use serde_json::Value;

use super::ACTIONS;

/// Reads the actions topic and prints each action as it arrives.
pub(super) struct Timeline {
    consumer: BaseConsumer,
    actions: Mutex<Vec<Value>>,
    printed: Mutex<usize>,
}

impl Timeline {
    pub(super) fn start(brokers: &str) -> anyhow::Result<Timeline> {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", brokers)
            .set("group.id", "credwatch-demo-timeline")
            .set("auto.offset.reset", "earliest")
            .set("enable.auto.commit", "false")
            .create()?;
        consumer.subscribe(&[ACTIONS])?;
        Ok(Timeline {
            consumer,
            actions: Mutex::new(Vec::new()),
            printed: Mutex::new(0),
        })
    }

    pub(super) fn seen(&self) -> usize {
        self.actions.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    pub(super) fn print(&self, out: &mut dyn Write) -> anyhow::Result<()> {
        while let Some(m) = self.consumer.poll(Duration::from_millis(1)) {
            let Ok(m) = m else { continue };
            if let Some(v) = m
                .payload()
                .and_then(|p| serde_json::from_slice::<Value>(p).ok())
            {
                self.actions
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(v);
            }
        }
        let actions = self.actions.lock().unwrap_or_else(|e| e.into_inner());
        let mut printed = self.printed.lock().unwrap_or_else(|e| e.into_inner());
        for a in &actions[*printed..] {
            let d = &a["data"];
            let ts = d["last_event_ts"].as_str().unwrap_or("");
            let action = match d["action"].as_str() {
                Some("lock") => "LOCK",
                Some("unlock") => "UNLOCK",
                _ => "alert",
            };
            writeln!(
                out,
                "{:<6} {:<6} {:<30} {:<18} {}",
                ts.get(11..16).unwrap_or("?"),
                action,
                d["account"].as_str().unwrap_or("?"),
                d["detector"].as_str().unwrap_or("?"),
                d["reason"].as_str().unwrap_or("")
            )?;
        }
        *printed = actions.len();
        out.flush()?;
        Ok(())
    }

    /// Every action read back so far, in the order they came.
    pub(super) fn actions(&self) -> Vec<Value> {
        self.actions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Every account's actions, in the order they came.
    pub(super) fn by_account(&self) -> BTreeMap<String, Vec<Seen>> {
        let mut m: BTreeMap<String, Vec<Seen>> = BTreeMap::new();
        for a in self
            .actions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
        {
            let d = &a["data"];
            m.entry(d["account"].as_str().unwrap_or("").to_string())
                .or_default()
                .push(Seen {
                    lock: d["action"].as_str() == Some("lock"),
                    detector: d["detector"].as_str().unwrap_or("").to_string(),
                    last_event_ts: d["last_event_ts"].as_str().unwrap_or("").to_string(),
                });
        }
        m
    }
}

/// One action as the timeline read it back from the actions topic.
pub(super) struct Seen {
    pub(super) lock: bool,
    pub(super) detector: String,
    pub(super) last_event_ts: String,
}
