//! Instants as nanoseconds since the Unix epoch, with a fast parser for the three input forms of
//! SPEC §1 and a formatter for the RFC 3339 `Z` form of SPEC §2.
//!
//! Hand-written rather than chrono's `parse_from_str` because timestamp parsing sits on the hot
//! path of every reading (about 20 ns here against several hundred for a format string), and
//! the grammar is small enough to check exhaustively in tests.

use std::fmt;
use std::sync::RwLock;
use std::sync::atomic::{AtomicBool, Ordering};

use chrono::TimeZone;

/// The zone of offset-less timestamps (`--timezone`), set once by the command at start. A
/// process-wide setting rather than a parameter of every parser: offset-less times are read
/// in readings, queries and series alike, and the setting is the plant's, not a request's.
static LOCAL_ZONE: RwLock<chrono_tz::Tz> = RwLock::new(chrono_tz::Tz::UTC);
/// True while the zone is UTC: the hot path then needs no lock and no zone arithmetic.
static LOCAL_IS_UTC: AtomicBool = AtomicBool::new(true);

/// Makes offset-less timestamps read in `zone` from now on (SPEC §1's `--timezone`).
pub fn set_local_zone(zone: chrono_tz::Tz) {
    *LOCAL_ZONE.write().unwrap_or_else(|e| e.into_inner()) = zone;
    LOCAL_IS_UTC.store(zone == chrono_tz::Tz::UTC, Ordering::Release);
}

/// The zone offset-less timestamps are read in.
pub fn local_zone() -> chrono_tz::Tz {
    *LOCAL_ZONE.read().unwrap_or_else(|e| e.into_inner())
}

/// An instant in UTC, in nanoseconds since 1970-01-01T00:00:00Z (covers 1677 to 2262).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(i64);

const NANOS_PER_SEC: i64 = 1_000_000_000;

/// The most whole seconds from the epoch, either way, that a timestamp takes as a number.
pub const MAX_UNIX_SECONDS: i64 = i64::MAX / NANOS_PER_SEC;
const SECS_PER_DAY: i64 = 86_400;

impl Timestamp {
    /// The earliest representable instant.
    pub const MIN: Timestamp = Timestamp(i64::MIN);
    /// The latest representable instant.
    pub const MAX: Timestamp = Timestamp(i64::MAX);

    /// Wraps nanoseconds since the Unix epoch.
    pub const fn from_nanos(nanos: i64) -> Self {
        Timestamp(nanos)
    }

    /// Nanoseconds since the Unix epoch.
    pub const fn as_nanos(self) -> i64 {
        self.0
    }

    /// The current time of the system clock.
    pub fn now() -> Self {
        let nanos = chrono::Utc::now().timestamp_nanos_opt().unwrap_or(i64::MAX);
        Timestamp(nanos)
    }

    /// Seconds since the epoch as a number (integer or fraction), as SPEC §1 allows.
    ///
    /// The fraction is taken from the shortest decimal that reads back as the same `f64` (the
    /// digits the sender most likely wrote), so `1732771800.1` is 100 ms past the second, not
    /// the 99.999904 ms that the nearest binary fraction would give.
    pub fn from_unix_seconds(secs: f64) -> Result<Self, String> {
        // The whole seconds that fit: the same bound for integers and fractions, and the one
        // the OpenAPI document declares.
        const MAX: f64 = MAX_UNIX_SECONDS as f64;
        let out_of_range = || format!("{secs} seconds since the epoch is outside 1677..2262");
        if !secs.is_finite() {
            return Err("seconds since the epoch must be finite".into());
        }
        if secs.abs() > MAX {
            return Err(out_of_range());
        }
        let mut buf = ryu::Buffer::new();
        let text = buf.format_finite(secs);
        let (whole, frac) = match text.split_once('.') {
            Some((w, f)) if !f.contains('e') => (w, f),
            // Tiny magnitudes print with an exponent; plain arithmetic is exact enough there.
            _ => return Ok(Timestamp((secs * 1e9).round() as i64)),
        };
        let negative = whole.starts_with('-');
        let whole: i64 = whole.parse().map_err(|_| out_of_range())?;
        let mut nanos: i64 = 0;
        let mut scale = 100_000_000;
        for c in frac.bytes().take(9) {
            nanos += i64::from(c - b'0') * scale;
            scale /= 10;
        }
        let nanos = if negative { -nanos } else { nanos };
        whole
            .checked_mul(NANOS_PER_SEC)
            .and_then(|n| n.checked_add(nanos))
            .map(Timestamp)
            .ok_or_else(out_of_range)
    }

    /// Whole seconds since the epoch as an integer (exact, no float rounding).
    pub fn from_unix_seconds_int(secs: i64) -> Result<Self, String> {
        (-MAX_UNIX_SECONDS..=MAX_UNIX_SECONDS)
            .contains(&secs)
            .then(|| Timestamp(secs * NANOS_PER_SEC))
            .ok_or_else(|| format!("{secs} seconds since the epoch is outside 1677..2262"))
    }

    /// Parses RFC 3339 (`2026-11-28T05:30:00Z`, `…+01:00`, fractions of a second) or ISO 8601
    /// without offset (`2024-10-27T12:00:00`, read in the zone of [`set_local_zone`], UTC by
    /// default). `T` may also be `t` or a space.
    pub fn parse(s: &str) -> Result<Self, String> {
        match parse_iso(s.as_bytes()) {
            Some((ts, true)) => Ok(ts),
            Some((ts, false)) if LOCAL_IS_UTC.load(Ordering::Acquire) => Ok(ts),
            Some((ts, false)) => in_zone(s, ts, local_zone()),
            None => Err(not_a_time(s)),
        }
    }

    /// As [`Timestamp::parse`], reading an offset-less time in `zone`.
    pub fn parse_in(s: &str, zone: chrono_tz::Tz) -> Result<Self, String> {
        match parse_iso(s.as_bytes()) {
            Some((ts, true)) => Ok(ts),
            Some((ts, false)) => in_zone(s, ts, zone),
            None => Err(not_a_time(s)),
        }
    }

    /// Writes the RFC 3339 UTC form with `Z`; fractions as 3, 6 or 9 digits, only when present.
    pub fn write_rfc3339(self, out: &mut String) {
        use std::fmt::Write;
        let _ = write!(out, "{self}");
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secs = self.0.div_euclid(NANOS_PER_SEC);
        let nanos = self.0.rem_euclid(NANOS_PER_SEC);
        let days = secs.div_euclid(SECS_PER_DAY);
        let sod = secs.rem_euclid(SECS_PER_DAY);
        let (y, m, d) = civil_from_days(days);
        write!(
            f,
            "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}",
            sod / 3600,
            sod / 60 % 60,
            sod % 60
        )?;
        if nanos != 0 {
            if nanos % 1_000_000 == 0 {
                write!(f, ".{:03}", nanos / 1_000_000)?;
            } else if nanos % 1_000 == 0 {
                write!(f, ".{:06}", nanos / 1_000)?;
            } else {
                write!(f, ".{nanos:09}")?;
            }
        }
        f.write_str("Z")
    }
}

impl serde::Serialize for Timestamp {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

fn not_a_time(s: &str) -> String {
    format!(
        "{s:?} is not a time: expected RFC 3339 such as 2026-11-28T05:30:00Z, \
         ISO 8601 without offset, or seconds since the epoch"
    )
}

/// The instant at which the wall clock of `zone` shows `wall` (an offset-less time parsed as
/// if it were UTC). A time that a DST change shows twice is the earlier instant; one that it
/// skips does not exist and is an error.
fn in_zone(s: &str, wall: Timestamp, zone: chrono_tz::Tz) -> Result<Timestamp, String> {
    let secs = wall.0.div_euclid(NANOS_PER_SEC);
    let nanos = wall.0.rem_euclid(NANOS_PER_SEC);
    let naive = chrono::DateTime::from_timestamp(secs, 0)
        .ok_or_else(|| not_a_time(s))?
        .naive_utc();
    let local = zone.from_local_datetime(&naive).earliest().ok_or_else(|| {
        format!("{s:?} does not exist in {zone}: a change to daylight saving time skips it")
    })?;
    local
        .timestamp()
        .checked_mul(NANOS_PER_SEC)
        .and_then(|n| n.checked_add(nanos))
        .map(Timestamp)
        .ok_or_else(|| not_a_time(s))
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's `days_from_civil`).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = i64::from((m + 9) % 12);
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The date of a day count since 1970-01-01 (inverse of [`days_from_civil`]).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

fn days_in_month(y: i64, m: u32) -> u32 {
    match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        _ => 28,
    }
}

fn digits(b: &[u8], at: usize, n: usize) -> Option<u32> {
    let s = b.get(at..at + n)?;
    s.iter().try_fold(0u32, |acc, &c| {
        c.is_ascii_digit().then(|| acc * 10 + u32::from(c - b'0'))
    })
}

/// The instant, and whether the text gave an offset (without one, the instant is the wall
/// time read as UTC).
fn parse_iso(b: &[u8]) -> Option<(Timestamp, bool)> {
    // YYYY-MM-DD?HH:MM:SS
    if b.len() < 19 || b[4] != b'-' || b[7] != b'-' || b[13] != b':' || b[16] != b':' {
        return None;
    }
    if !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    let year = i64::from(digits(b, 0, 4)?);
    let month = digits(b, 5, 2)?;
    let day = digits(b, 8, 2)?;
    let hour = i64::from(digits(b, 11, 2)?);
    let minute = i64::from(digits(b, 14, 2)?);
    let second = i64::from(digits(b, 17, 2)?);
    if !(1..=12).contains(&month) || day == 0 || day > days_in_month(year, month) {
        return None;
    }
    if hour > 23 || minute > 59 || second > 59 {
        return None;
    }
    let mut i = 19;
    let mut nanos: i64 = 0;
    if b.get(i) == Some(&b'.') || b.get(i) == Some(&b',') {
        i += 1;
        let start = i;
        let mut scale = 100_000_000;
        while let Some(&c) = b.get(i).filter(|c| c.is_ascii_digit()) {
            // Digits past the ninth are below a nanosecond: truncated, as chrono does.
            nanos += i64::from(c - b'0') * scale;
            scale /= 10;
            i += 1;
        }
        if i == start {
            return None;
        }
    }
    let has_offset = b.get(i).is_some();
    let offset_secs = match b.get(i) {
        None => 0,
        Some(b'Z' | b'z') if i + 1 == b.len() => 0,
        Some(&sign @ (b'+' | b'-')) => {
            let oh = i64::from(digits(b, i + 1, 2)?);
            let om = match b.len() - i {
                6 if b[i + 3] == b':' => i64::from(digits(b, i + 4, 2)?),
                5 => i64::from(digits(b, i + 3, 2)?),
                3 => 0,
                _ => return None,
            };
            if oh > 23 || om > 59 {
                return None;
            }
            let off = oh * 3600 + om * 60;
            if sign == b'+' { off } else { -off }
        }
        _ => return None,
    };
    let days = days_from_civil(year, month, day);
    let secs = days * SECS_PER_DAY + hour * 3600 + minute * 60 + second - offset_secs;
    // In i128: the earliest instants (1677-09-21T00:12:43.145224192Z on) have whole seconds
    // whose nanoseconds alone are below i64::MIN, before the fraction is added.
    let total = i128::from(secs) * i128::from(NANOS_PER_SEC) + i128::from(nanos);
    i64::try_from(total)
        .ok()
        .map(|n| (Timestamp(n), has_offset))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> i64 {
        Timestamp::parse(s).unwrap().as_nanos()
    }

    #[test]
    fn accepted_forms_agree_with_chrono() {
        let cases = [
            ("2026-11-28T05:30:00Z", "2026-11-28T05:30:00+00:00"),
            ("2026-11-28T06:30:00+01:00", "2026-11-28T05:30:00+00:00"),
            ("2026-11-28T00:30:00-05:00", "2026-11-28T05:30:00+00:00"),
            ("2024-10-27T12:00:00", "2024-10-27T12:00:00+00:00"),
            ("2024-10-27 12:00:00.5", "2024-10-27T12:00:00.5+00:00"),
            (
                "2024-02-29t23:59:59.123456789z",
                "2024-02-29T23:59:59.123456789+00:00",
            ),
            ("2024-10-27T12:00:00+0130", "2024-10-27T10:30:00+00:00"),
            ("1969-12-31T23:59:59.9Z", "1969-12-31T23:59:59.9+00:00"),
            ("2000-03-01T00:00:00Z", "2000-03-01T00:00:00+00:00"),
        ];
        for (input, reference) in cases {
            let want = chrono::DateTime::parse_from_rfc3339(reference)
                .unwrap()
                .timestamp_nanos_opt()
                .unwrap();
            assert_eq!(ts(input), want, "{input}");
        }
    }

    #[test]
    fn rejected_forms() {
        for bad in [
            "",
            "yesterday",
            "2024-13-01T00:00:00Z",
            "2023-02-29T00:00:00Z",
            "2024-04-31T00:00:00Z",
            "2024-10-27T24:00:00Z",
            "2024-10-27T12:60:00Z",
            "2024-10-27T12:00:60Z",
            "2024-10-27T12:00:00.Z",
            "2024-10-27T12:00:00ZZ",
            "2024-10-27T12:00:00+1:00",
            "2024-10-27X12:00:00",
            "2024-10-27T12:00",
            "2024-10-27",
            "+2024-10-27T12:00:00Z",
            "3000-01-01T00:00:00Z",
        ] {
            assert!(Timestamp::parse(bad).is_err(), "{bad:?} should be rejected");
        }
    }

    #[test]
    fn unix_seconds() {
        assert_eq!(
            Timestamp::from_unix_seconds_int(1_732_771_800).unwrap(),
            Timestamp::parse("2024-11-28T05:30:00Z").unwrap()
        );
        assert_eq!(
            Timestamp::from_unix_seconds(1_732_771_800.25)
                .unwrap()
                .as_nanos(),
            1_732_771_800_250_000_000
        );
        assert_eq!(
            Timestamp::from_unix_seconds(1_732_771_800.1)
                .unwrap()
                .to_string(),
            "2024-11-28T05:30:00.100Z"
        );
        assert_eq!(
            Timestamp::from_unix_seconds(-0.25).unwrap().to_string(),
            "1969-12-31T23:59:59.750Z"
        );
        assert_eq!(Timestamp::from_unix_seconds(1e-7).unwrap().as_nanos(), 100);
        assert!(Timestamp::from_unix_seconds(1e300).is_err());
        assert!(Timestamp::from_unix_seconds(f64::NAN).is_err());
        assert!(Timestamp::from_unix_seconds_int(i64::MAX / 10).is_err());
    }

    #[test]
    fn formats_rfc3339_with_z() {
        for (input, out) in [
            ("2024-10-27T12:00:00", "2024-10-27T12:00:00Z"),
            ("2024-10-27T12:00:00.5+01:00", "2024-10-27T11:00:00.500Z"),
            ("2024-10-27T12:00:00.000250Z", "2024-10-27T12:00:00.000250Z"),
            (
                "2024-10-27T12:00:00.000000007Z",
                "2024-10-27T12:00:00.000000007Z",
            ),
            ("1969-12-31T23:59:59.9Z", "1969-12-31T23:59:59.900Z"),
        ] {
            assert_eq!(Timestamp::parse(input).unwrap().to_string(), out);
        }
    }

    #[test]
    fn offset_less_times_in_a_zone() {
        let berlin = chrono_tz::Europe::Berlin;
        let t = |s: &str| Timestamp::parse_in(s, berlin).map(|t| t.to_string());
        assert_eq!(t("2024-01-15T12:00:00").unwrap(), "2024-01-15T11:00:00Z");
        assert_eq!(t("2024-07-15T12:00:00").unwrap(), "2024-07-15T10:00:00Z");
        assert_eq!(
            t("2024-07-15T12:00:00.25").unwrap(),
            "2024-07-15T10:00:00.250Z"
        );
        // An offset wins over the zone.
        assert_eq!(t("2024-07-15T12:00:00Z").unwrap(), "2024-07-15T12:00:00Z");
        // 02:30 on 27 October 2024 happened twice in Berlin: the earlier one, still CEST.
        assert_eq!(t("2024-10-27T02:30:00").unwrap(), "2024-10-27T00:30:00Z");
        // 02:30 on 31 March 2024 never happened there.
        let e = t("2024-03-31T02:30:00").unwrap_err();
        assert!(e.contains("does not exist in Europe/Berlin"), "{e}");
        // UTC stays the plain reading.
        assert_eq!(
            Timestamp::parse_in("2024-07-15T12:00:00", chrono_tz::Tz::UTC).unwrap(),
            Timestamp::parse("2024-07-15T12:00:00Z").unwrap()
        );
    }

    #[test]
    fn civil_round_trip_over_four_centuries() {
        for days in -150_000..150_000 {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days);
        }
    }

    /// Found by the `timestamp` fuzz target (against chrono): the earliest representable
    /// instants were refused, since their whole seconds overflowed before the fraction was
    /// added, so `Timestamp::MIN` printed as text that did not read back.
    #[test]
    fn the_earliest_instants_read_back() {
        let min = Timestamp::MIN.to_string();
        assert_eq!(min, "1677-09-21T00:12:43.145224192Z");
        assert_eq!(Timestamp::parse(&min), Ok(Timestamp::MIN));
        assert_eq!(
            Timestamp::parse("1677-09-21T00:12:43.9Z").map(Timestamp::as_nanos),
            Ok(i64::MIN + 754_775_808)
        );
        assert!(Timestamp::parse("1677-09-21T00:12:43.145224191Z").is_err());
        assert_eq!(
            Timestamp::parse(&Timestamp::MAX.to_string()),
            Ok(Timestamp::MAX)
        );
    }
}
