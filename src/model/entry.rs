//! One listed object and a key's presence on each side: the records every
//! layer above passes along.

use serde::{Deserialize, Serialize};

use crate::model::checksum::Checksum;

/// A key's presence on each side.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pair {
    SourceOnly(ObjectEntry),
    DestinationOnly(ObjectEntry),
    Both(ObjectEntry, ObjectEntry),
}

impl Pair {
    pub fn key(&self) -> &str {
        match self {
            Pair::SourceOnly(e) | Pair::DestinationOnly(e) | Pair::Both(e, _) => &e.key,
        }
    }
}

/// One listed object. `key` is relative to the listed location's prefix.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectEntry {
    pub key: String,
    pub size: u64,
    /// Without the surrounding quotes.
    pub etag: String,
    /// Milliseconds since the Unix epoch.
    pub last_modified_ms: i64,
    pub storage_class: Option<String>,
    /// The stored checksum, where a HEAD asked for it (listings carry
    /// none): what proves a pair equal when ETags cannot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checksum: Option<Checksum>,
    /// The version a versioned listing chose (`--as-of`): every read of
    /// the source (copy, HEAD, tags, part layout, GET) names it, so what is
    /// written is that version whatever is current. `None` for a listing
    /// of current objects, which reads the current version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version_id: Option<String>,
}

/// A side of a sync: where an object was listed, which bucket of a copy it
/// is in, and the index of that side's cursor in a [`crate::model::keyspace::MovableEnd`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Source = 0,
    Destination = 1,
}

impl Side {
    /// As messages name it: "source", "destination".
    pub fn name(self) -> &'static str {
        match self {
            Side::Source => "source",
            Side::Destination => "destination",
        }
    }
}
