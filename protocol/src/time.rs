//! Points in time and durations as they appear in records.
//!
//! A [`Timestamp`] is whole seconds since the Unix epoch: records are signed, so they carry no
//! sub-second noise. Human formats show RFC 3339 (`2026-11-26T10:57:27Z`); the binary form is a
//! varint. A [`Span`] is a duration in whole seconds, written like `30d` or `12h 30m` by humans.

use std::fmt;
use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};

/// Why a string is not a valid time or duration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct TimeParseError(String);

/// Seconds since the Unix epoch (UTC).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug, Default)]
pub struct Timestamp(u64);

impl Timestamp {
    /// The Unix epoch.
    pub const EPOCH: Timestamp = Timestamp(0);

    /// The current time of the system clock (the epoch if the clock is set before 1970).
    pub fn now() -> Self {
        Self(
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
        )
    }

    /// A timestamp `secs` seconds after the epoch.
    pub const fn from_unix_secs(secs: u64) -> Self {
        Self(secs)
    }

    /// Seconds since the epoch.
    pub const fn as_unix_secs(self) -> u64 {
        self.0
    }

    /// This time plus `span`, saturating at the far future instead of overflowing.
    pub const fn saturating_add(self, span: Span) -> Self {
        Self(self.0.saturating_add(span.0))
    }

    /// How long after `earlier` this is; zero if it is not after it.
    pub const fn saturating_since(self, earlier: Timestamp) -> Span {
        Span(self.0.saturating_sub(earlier.0))
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let t = UNIX_EPOCH
            .checked_add(Duration::from_secs(self.0))
            .ok_or(fmt::Error)?;
        write!(f, "{}", humantime::format_rfc3339_seconds(t))
    }
}

impl FromStr for Timestamp {
    type Err = TimeParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = humantime::parse_rfc3339_weak(s)
            .map_err(|e| TimeParseError(format!("not an RFC 3339 time ({e}): {s:?}")))?;
        let d = t
            .duration_since(UNIX_EPOCH)
            .map_err(|_| TimeParseError(format!("time before 1970: {s:?}")))?;
        Ok(Self(d.as_secs()))
    }
}

/// A duration in whole seconds.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug, Default)]
pub struct Span(u64);

impl Span {
    /// A span of `secs` seconds.
    pub const fn from_secs(secs: u64) -> Self {
        Self(secs)
    }

    /// The span in seconds.
    pub const fn as_secs(self) -> u64 {
        self.0
    }
}

impl From<Span> for Duration {
    fn from(span: Span) -> Duration {
        Duration::from_secs(span.0)
    }
}

impl fmt::Display for Span {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}",
            humantime::format_duration(Duration::from_secs(self.0))
        )
    }
}

impl FromStr for Span {
    type Err = TimeParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let d = humantime::parse_duration(s)
            .map_err(|e| TimeParseError(format!("not a duration ({e}): {s:?}")))?;
        if d.subsec_nanos() != 0 {
            return Err(TimeParseError(format!(
                "durations are whole seconds: {s:?}"
            )));
        }
        Ok(Self(d.as_secs()))
    }
}

/// Serde for types that are a string for humans and a `u64` on the wire.
macro_rules! string_or_u64_serde {
    ($name:ident, $expecting:literal) => {
        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                if serializer.is_human_readable() {
                    serializer.collect_str(self)
                } else {
                    serializer.serialize_u64(self.0)
                }
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                if deserializer.is_human_readable() {
                    struct StrVisitor;
                    impl Visitor<'_> for StrVisitor {
                        type Value = $name;
                        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                            f.write_str($expecting)
                        }
                        fn visit_str<E: de::Error>(self, v: &str) -> Result<$name, E> {
                            v.parse().map_err(E::custom)
                        }
                    }
                    deserializer.deserialize_str(StrVisitor)
                } else {
                    u64::deserialize(deserializer).map($name)
                }
            }
        }
    };
}

string_or_u64_serde!(
    Timestamp,
    "an RFC 3339 time such as \"2026-11-26T10:57:27Z\""
);
string_or_u64_serde!(Span, "a duration such as \"30d\" or \"12h 30m\"");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamp_round_trips_as_rfc3339() {
        let t: Timestamp = "2026-11-26T10:57:27Z".parse().unwrap();
        assert_eq!(t.as_unix_secs(), 1_795_690_647);
        assert_eq!(t.to_string(), "2026-11-26T10:57:27Z");
        assert_eq!(
            postcard::to_stdvec(&t).unwrap(),
            postcard::to_stdvec(&t.0).unwrap()
        );
    }

    #[test]
    fn span_parses_human_durations() {
        assert_eq!("30d".parse::<Span>().unwrap().as_secs(), 30 * 86_400);
        assert_eq!("1h 30m".parse::<Span>().unwrap().as_secs(), 5_400);
        assert!("soon".parse::<Span>().is_err());
        assert!("1500ms".parse::<Span>().is_err());
    }
}
