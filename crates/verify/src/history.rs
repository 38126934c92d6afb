//! One history line: an event seen by one client. Lines are JSON objects with a `type`, a
//! `client` and a `time` (microseconds since the Unix epoch) and the fields of their type
//! (docs/verify.md has the table). Reading checks that every field a type needs is there, so
//! the checker never meets a half-described event.

use serde::{Deserialize, Serialize};
use std::io::BufRead;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// A producer starts (`topic`, `library`, `idempotent`, `acks`, `compression`).
    Producer,
    /// A consumer starts (`topic`, `library`, `group` or null).
    Consumer,
    /// A record is about to be sent (`topic`, `partition`, `value`).
    Send,
    /// What the producer was told about a record (`outcome`, `offset` when ok, `error`).
    Produce,
    /// The consumer's assignment is now `partitions`; every position in it may have moved.
    Assign,
    /// The consumer moved its position in `partition` to `offset` on purpose.
    Seek,
    /// The consumer was handed the record at `offset` holding `value`.
    Read,
    /// A commit of `offset` (the next to read) for `group`, sent at `sent`, answered at `time`.
    Commit,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// Acknowledged (a produce at `offset`, or a commit).
    Ok,
    /// The client reported an error: the record may or may not have been written.
    Fail,
    /// No answer before the client gave up waiting or the run ended.
    Unknown,
}

/// One line of a history. Fields a type does not use are absent (`None`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    #[serde(rename = "type")]
    pub kind: Kind,
    pub client: String,
    pub time: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topic: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partition: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offset: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<Outcome>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partitions: Option<Vec<i32>>,
    /// The consumer group (`consumer`, `commit`); null on an assigned consumer's line.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// When a commit was sent (µs since the epoch).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sent: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub library: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotent: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acks: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compression: Option<String>,
}

impl Event {
    /// An event of `kind` with no fields but the client and time.
    pub fn new(kind: Kind, client: &str, time: i64) -> Event {
        Event {
            kind,
            client: client.to_string(),
            time,
            topic: None,
            partition: None,
            offset: None,
            value: None,
            outcome: None,
            error: None,
            partitions: None,
            group: None,
            sent: None,
            library: None,
            idempotent: None,
            acks: None,
            compression: None,
        }
    }

    /// Names the first field this event's type needs and lacks.
    pub fn missing_field(&self) -> Option<&'static str> {
        let need: &[(&'static str, bool)] = match self.kind {
            Kind::Producer | Kind::Consumer => &[("topic", self.topic.is_some())],
            Kind::Send => &[
                ("topic", self.topic.is_some()),
                ("partition", self.partition.is_some()),
                ("value", self.value.is_some()),
            ],
            Kind::Produce => &[
                ("topic", self.topic.is_some()),
                ("partition", self.partition.is_some()),
                ("value", self.value.is_some()),
                ("outcome", self.outcome.is_some()),
                ("offset", self.outcome != Some(Outcome::Ok) || self.offset.is_some()),
            ],
            Kind::Assign => &[
                ("topic", self.topic.is_some()),
                ("partitions", self.partitions.is_some()),
            ],
            Kind::Seek => &[
                ("topic", self.topic.is_some()),
                ("partition", self.partition.is_some()),
                ("offset", self.offset.is_some()),
            ],
            Kind::Read => &[
                ("topic", self.topic.is_some()),
                ("partition", self.partition.is_some()),
                ("offset", self.offset.is_some()),
                ("value", self.value.is_some()),
            ],
            Kind::Commit => &[
                ("topic", self.topic.is_some()),
                ("partition", self.partition.is_some()),
                ("offset", self.offset.is_some()),
                ("group", self.group.is_some()),
                ("sent", self.sent.is_some()),
                ("outcome", self.outcome.is_some()),
            ],
        };
        need.iter().find(|(_, present)| !present).map(|(name, _)| *name)
    }

    /// The line as written to a history (no trailing newline).
    pub fn to_line(&self) -> String {
        // Serializing a struct of strings, numbers and enums cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    #[error("{source_name}: {error}")]
    Io { source_name: String, error: std::io::Error },
    #[error("{source_name}:{line}: {message}")]
    Malformed {
        source_name: String,
        line: usize,
        message: String,
    },
}

/// Reads a history's lines in order. Blank lines are skipped; a line cut short at the very end
/// (a client killed while writing it) is skipped too and counted in the returned number, as
/// that is what a killed client leaves. Any other line that is not a valid event is an error
/// naming the line.
pub fn read_history(source_name: &str, input: impl BufRead) -> Result<(Vec<Event>, usize), HistoryError> {
    let mut events = Vec::new();
    let mut bad_last: Option<(usize, String)> = None;
    for (i, line) in input.lines().enumerate() {
        let line = line.map_err(|error| HistoryError::Io {
            source_name: source_name.to_string(),
            error,
        })?;
        if line.trim().is_empty() {
            continue;
        }
        if let Some((n, message)) = bad_last.take() {
            return Err(HistoryError::Malformed {
                source_name: source_name.to_string(),
                line: n,
                message,
            });
        }
        match serde_json::from_str::<Event>(&line) {
            Ok(e) => match e.missing_field() {
                None => events.push(e),
                Some(field) => {
                    return Err(HistoryError::Malformed {
                        source_name: source_name.to_string(),
                        line: i + 1,
                        message: format!("a {:?} event needs `{field}`", e.kind).to_lowercase(),
                    })
                }
            },
            Err(e) => bad_last = Some((i + 1, e.to_string())),
        }
    }
    Ok((events, usize::from(bad_last.is_some())))
}
