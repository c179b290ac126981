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
        Timestamp::parse_canonical(s).or_else(|| {
            DateTime::parse_from_rfc3339(s)
                .ok()
                .map(|d| Timestamp::new(d.with_timezone(&Utc)))
        })
    }

    /// The canonical form `YYYY-MM-DDTHH:MM:SS.mmmZ` without the general parser:
    /// replays decode millions of these, and chrono's RFC 3339 parser is the
    /// slowest part of an envelope.
    fn parse_canonical(s: &str) -> Option<Timestamp> {
        let b = s.as_bytes();
        if b.len() != 24
            || b[4] != b'-'
            || b[7] != b'-'
            || b[10] != b'T'
            || b[13] != b':'
            || b[16] != b':'
            || b[19] != b'.'
            || b[23] != b'Z'
        {
            return None;
        }
        let num = |from: usize, to: usize| -> Option<u32> {
            b[from..to].iter().try_fold(0u32, |acc, c| {
                c.is_ascii_digit().then(|| acc * 10 + u32::from(c - b'0'))
            })
        };
        let date = chrono::NaiveDate::from_ymd_opt(num(0, 4)? as i32, num(5, 7)?, num(8, 10)?)?;
        let time =
            date.and_hms_milli_opt(num(11, 13)?, num(14, 16)?, num(17, 19)?, num(20, 23)?)?;
        Some(Timestamp(Utc.from_utc_datetime(&time)))
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use chrono::{Datelike, Timelike};
        // Written by hand: chrono's format strings are interpreted on every
        // call, and every event carries at least one timestamp.
        let d = self.0;
        write!(
            f,
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
            d.year(),
            d.month(),
            d.day(),
            d.hour(),
            d.minute(),
            d.second(),
            d.timestamp_subsec_millis()
        )
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

impl fmt::Debug for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_form_round_trips_and_matches_the_general_parser() {
        for s in [
            "2026-11-24T14:26:45.123Z",
            "1970-01-01T00:00:00.000Z",
            "9999-12-31T23:59:59.999Z",
            "2024-02-29T12:00:00.001Z",
        ] {
            let fast = Timestamp::parse_canonical(s).expect(s);
            let slow = DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc);
            assert_eq!(fast.datetime(), slow);
            assert_eq!(fast.to_string(), s);
        }
        for bad in [
            "2023-02-29T12:00:00.000Z",
            "2026-13-01T00:00:00.000Z",
            "2026-11-24T24:00:00.000Z",
            "2026-11-24T14:26:45.12aZ",
        ] {
            assert!(Timestamp::parse(bad).is_none(), "{bad}");
        }
        // Other offsets and precisions still parse, normalised.
        let t = Timestamp::parse("2026-11-24T16:26:45.123456+02:00").unwrap();
        assert_eq!(t.to_string(), "2026-11-24T14:26:45.123Z");
    }
}
