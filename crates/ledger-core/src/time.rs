//! Timestamps with one canonical text form: RFC 3339, UTC, milliseconds, `Z`.

use chrono::{DateTime, TimeZone, Utc};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;

/// A UTC instant truncated to milliseconds, from year 0 to year 9999.
///
/// Truncation happens on construction so that a value survives a round trip
/// through its text form unchanged; the hash chain depends on that. For the
/// same reason every value has the four-digit-year form and no leap second
/// (`:60`, which chrono keeps as a 1000th millisecond): a value outside
/// that could be written into an event that no reader then parses back.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(DateTime<Utc>);

/// `0000-01-01T00:00:00.000Z`, the first instant a timestamp can hold.
pub const MIN_MILLIS: i64 = -62_167_219_200_000;
/// `9999-12-31T23:59:59.999Z`, the last.
pub const MAX_MILLIS: i64 = 253_402_300_799_999;

impl Timestamp {
    /// Wraps an instant, dropping anything finer than a millisecond; a leap
    /// second becomes the last millisecond before it, and an instant outside
    /// years 0 to 9999 the nearest end of that range.
    pub fn new(at: DateTime<Utc>) -> Timestamp {
        let ms = if at.timestamp_subsec_nanos() >= 1_000_000_000 {
            at.timestamp().saturating_mul(1000).saturating_add(999)
        } else {
            at.timestamp_millis()
        };
        let ms = ms.clamp(MIN_MILLIS, MAX_MILLIS);
        Timestamp::from_millis(ms).expect("clamped into range")
    }
    /// From Unix epoch milliseconds; `None` outside years 0 to 9999.
    pub fn from_millis(ms: i64) -> Option<Timestamp> {
        if !(MIN_MILLIS..=MAX_MILLIS).contains(&ms) {
            return None;
        }
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
    /// Parses RFC 3339 with any offset, normalising to UTC milliseconds;
    /// `None` for a leap second or an instant outside years 0 to 9999.
    pub fn parse(s: &str) -> Option<Timestamp> {
        Timestamp::parse_canonical(s).or_else(|| {
            let at = DateTime::parse_from_rfc3339(s).ok()?.with_timezone(&Utc);
            if at.timestamp_subsec_nanos() >= 1_000_000_000 {
                return None;
            }
            Timestamp::from_millis(at.timestamp_millis())
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

impl Timestamp {
    /// The canonical text as bytes, for years 0 to 9999 (every other year
    /// takes the general path of `Display`). Digits are put in place by
    /// hand: every event and every view carries timestamps, and going through
    /// `fmt` costs several times as much.
    fn canonical_bytes(self) -> Option<[u8; 24]> {
        use chrono::{Datelike, Timelike};
        let d = self.0;
        let year = u32::try_from(d.year()).ok().filter(|y| *y <= 9999)?;
        let mut b = *b"0000-00-00T00:00:00.000Z";
        let mut put = |at: usize, len: usize, mut v: u32| {
            for c in b[at..at + len].iter_mut().rev() {
                *c = b'0' + (v % 10) as u8;
                v /= 10;
            }
        };
        put(0, 4, year);
        put(5, 2, d.month());
        put(8, 2, d.day());
        put(11, 2, d.hour());
        put(14, 2, d.minute());
        put(17, 2, d.second());
        // Truncated to milliseconds on construction; a leap second's
        // nanoseconds (>= 1e9) would not fit three digits: general path.
        let millis = d.timestamp_subsec_millis();
        if millis > 999 {
            return None;
        }
        put(20, 3, millis);
        Some(b)
    }
}

impl Timestamp {
    /// The form through chrono's fields, for what `canonical_bytes` does not
    /// cover (and as its reference in tests).
    fn general_form(&self) -> String {
        use chrono::{Datelike, Timelike};
        let d = self.0;
        format!(
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

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.canonical_bytes() {
            Some(b) => f.write_str(std::str::from_utf8(&b).expect("ASCII")),
            None => f.write_str(&self.general_form()),
        }
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.canonical_bytes() {
            Some(b) => s.serialize_str(std::str::from_utf8(&b).expect("ASCII")),
            None => s.collect_str(self),
        }
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // A visitor rather than `Cow<str>`, whose `Deserialize` always
        // allocates: decoding an event reads several timestamps.
        struct Text;
        impl serde::de::Visitor<'_> for Text {
            type Value = Timestamp;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                // As `Cow<str>` said, so error messages stay the same.
                f.write_str("a string")
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<Timestamp, E> {
                Timestamp::parse(s).ok_or_else(|| E::custom("expected an RFC 3339 timestamp"))
            }
        }
        d.deserialize_str(Text)
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
        // The hand-written form equals the general one, across years.
        for ms in [
            0i64,
            1,
            999,
            86_399_999,
            951_782_400_123,
            1_764_000_000_000,
            253_402_300_799_999,
            -1,
            MIN_MILLIS,
            MAX_MILLIS,
        ] {
            let t = Timestamp::from_millis(ms).unwrap();
            let general = t.general_form();
            assert_eq!(t.to_string(), general, "{ms}");
            assert_eq!(
                serde_json::to_string(&t).unwrap(),
                format!("\"{general}\""),
                "{ms}"
            );
        }
        // Other offsets and precisions still parse, normalised.
        let t = Timestamp::parse("2026-11-24T16:26:45.123456+02:00").unwrap();
        assert_eq!(t.to_string(), "2026-11-24T14:26:45.123Z");
    }

    /// Every timestamp has the canonical form, so none can go into an event
    /// that its readers would refuse.
    #[test]
    fn leap_seconds_and_years_past_9999_or_before_0_are_not_timestamps() {
        assert!(Timestamp::from_millis(MIN_MILLIS - 1).is_none());
        assert!(Timestamp::from_millis(MAX_MILLIS + 1).is_none());
        assert!(Timestamp::from_millis(i64::MAX).is_none());
        assert!(Timestamp::from_millis(i64::MIN).is_none());
        for bad in [
            "2016-12-31T23:59:60.500Z",
            "2016-12-31T23:59:60Z",
            "9999-12-31T23:59:59.999-01:00",
            "0000-01-01T00:00:00.000+01:00",
        ] {
            assert!(Timestamp::parse(bad).is_none(), "{bad}");
        }
        for (good, canonical) in [
            ("9999-12-31T23:59:59.999Z", "9999-12-31T23:59:59.999Z"),
            ("0000-01-01T01:00:00.000+01:00", "0000-01-01T00:00:00.000Z"),
        ] {
            assert_eq!(Timestamp::parse(good).unwrap().to_string(), canonical);
        }
        // The clock's instants are clamped, never out of range.
        let leap = chrono::NaiveDate::from_ymd_opt(2016, 12, 31)
            .unwrap()
            .and_hms_milli_opt(23, 59, 59, 1_500)
            .unwrap()
            .and_utc();
        assert_eq!(Timestamp::new(leap).to_string(), "2016-12-31T23:59:59.999Z");
        let far = Utc.timestamp_millis_opt(MAX_MILLIS + 86_400_000).unwrap();
        assert_eq!(Timestamp::new(far).millis(), MAX_MILLIS);
    }
}
