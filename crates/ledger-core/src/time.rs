//! Timestamps with one canonical text form: RFC 3339, UTC, milliseconds, `Z`.

use chrono::{DateTime, SubsecRound, TimeZone, Utc};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;

/// A UTC instant truncated to milliseconds.
///
/// Truncation happens on construction so that a value survives a round trip
/// through its text form unchanged; the hash chain depends on that.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(DateTime<Utc>);

impl Timestamp {
    /// Wraps an instant, dropping anything finer than a millisecond.
    pub fn new(at: DateTime<Utc>) -> Timestamp {
        Timestamp(at.trunc_subsecs(3))
    }
    /// From Unix epoch milliseconds; `None` if out of chrono's range.
    pub fn from_millis(ms: i64) -> Option<Timestamp> {
        Utc.timestamp_millis_opt(ms).single().map(Timestamp)
    }
    /// Unix epoch milliseconds.
    pub fn millis(self) -> i64 {
        self.0.timestamp_millis()
    }
    /// Unix epoch seconds (JWT `iat`).
    pub fn secs(self) -> i64 {
        self.0.timestamp()
    }
    /// The inner chrono value.
    pub fn datetime(self) -> DateTime<Utc> {
        self.0
    }
    /// Parses RFC 3339 with any offset, normalising to UTC milliseconds.
    pub fn parse(s: &str) -> Option<Timestamp> {
        DateTime::parse_from_rfc3339(s)
            .ok()
            .map(|d| Timestamp::new(d.with_timezone(&Utc)))
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0.format("%Y-%m-%dT%H:%M:%S%.3fZ"))
    }
}

impl fmt::Debug for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Timestamp::parse(&s)
            .ok_or_else(|| serde::de::Error::custom("expected an RFC 3339 timestamp"))
    }
}
