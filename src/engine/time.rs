//! Millisecond timestamps. Kubernetes object times have 1 s resolution and AgentRun status times 1 ms, so
//! milliseconds lose nothing and keep every tracked time in eight bytes.

use std::{fmt, time::SystemTime};

/// Milliseconds since the Unix epoch.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Ts(pub i64);

impl Ts {
    pub fn parse(s: &str) -> Option<Self> {
        s.parse::<jiff::Timestamp>().ok().map(|t| Ts(t.as_millisecond()))
    }

    pub fn now() -> Self {
        Ts(jiff::Timestamp::now().as_millisecond())
    }

    pub fn from_secs(secs: i64) -> Self {
        Ts(secs.saturating_mul(1000))
    }

    // Saturating: a TTL or a time from an object can be anything an int64 holds.
    pub fn add_secs(self, secs: i64) -> Self {
        Ts(self.0.saturating_add(secs.saturating_mul(1000)))
    }

    pub fn add_millis(self, ms: i64) -> Self {
        Ts(self.0.saturating_add(ms))
    }

    /// Seconds from `earlier` to `self` (negative when `earlier` is later).
    pub fn secs_since(self, earlier: Ts) -> f64 {
        (self.0 as f64 - earlier.0 as f64) / 1000.0
    }

    pub fn to_system_time(self) -> SystemTime {
        let d = std::time::Duration::from_millis(self.0.unsigned_abs());
        let t = if self.0 >= 0 {
            SystemTime::UNIX_EPOCH.checked_add(d)
        } else {
            SystemTime::UNIX_EPOCH.checked_sub(d)
        };
        t.unwrap_or(SystemTime::UNIX_EPOCH)
    }

    /// Saturating at jiff's range (years -9999..=9999): a far-future time must not become 1970, which
    /// would put it before everything else.
    pub fn to_timestamp(self) -> jiff::Timestamp {
        jiff::Timestamp::from_millisecond(self.0).unwrap_or(if self.0 > 0 {
            jiff::Timestamp::MAX
        } else {
            jiff::Timestamp::MIN
        })
    }

    pub fn from_timestamp(t: jiff::Timestamp) -> Self {
        Ts(t.as_millisecond())
    }
}

/// RFC 3339 on the wire, with milliseconds (AgentRun status times have them; `metav1.Time` would drop them).
impl serde::Serialize for Ts {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Ts {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        // invalid_value, not a custom message: callers that log it can drop the value and keep the type.
        Ts::parse(&s).ok_or_else(|| {
            serde::de::Error::invalid_value(serde::de::Unexpected::Str(&s), &"an RFC 3339 time")
        })
    }
}

impl fmt::Display for Ts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match jiff::Timestamp::from_millisecond(self.0) {
            Ok(t) => write!(f, "{t:.3}"),
            Err(_) => write!(f, "{}ms", self.0),
        }
    }
}

/// Where a span end's time came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum TimeSource {
    /// The object's own timestamp.
    #[default]
    Object,
    /// When the exporter saw the change; the object carried no timestamp for it.
    Observed,
    /// The object vanished while no watch was running; only an upper bound is known.
    UnknownGap,
}

impl TimeSource {
    pub fn as_str(self) -> &'static str {
        match self {
            TimeSource::Object => "object",
            TimeSource::Observed => "observed",
            TimeSource::UnknownGap => "unknown_gap",
        }
    }
}

/// A lifecycle time with its provenance, after clamping.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stamp {
    pub at: Ts,
    pub source: TimeSource,
    /// Raised by the clamping rules because the raw time lay before an earlier lifecycle point.
    pub clamped: bool,
}

impl Stamp {
    pub fn object(at: Ts) -> Self {
        Stamp { at, source: TimeSource::Object, clamped: false }
    }

    pub fn observed(at: Ts) -> Self {
        Stamp { at, source: TimeSource::Observed, clamped: false }
    }

    /// This stamp, raised to `floor` if it lies before it.
    pub fn not_before(self, floor: Ts) -> Self {
        if self.at < floor { Stamp { at: floor, clamped: true, ..self } } else { self }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_second_and_millisecond_times() {
        assert_eq!(Ts::parse("2026-08-20T12:00:01Z"), Some(Ts(1_787_227_201_000)));
        assert_eq!(Ts::parse("2026-08-20T12:00:01.412Z"), Some(Ts(1_787_227_201_412)));
        assert_eq!(Ts::parse("yesterday"), None);
    }

    /// Times anywhere in the i64 range: no panic, order kept through every conversion.
    #[test]
    fn extreme_times_keep_their_order() {
        let times = [
            Ts(i64::MIN),
            Ts(-62_135_596_800_001),
            Ts(0),
            Ts(1_787_227_201_000),
            Ts(253_402_300_800_000),
            Ts(i64::MAX),
        ];
        for w in times.windows(2) {
            let (a, b) = (w[0], w[1]);
            assert!(a.to_timestamp() <= b.to_timestamp(), "{a:?} {b:?}");
            assert!(a.to_system_time() <= b.to_system_time(), "{a:?} {b:?}");
            assert!(b.secs_since(a) >= 0.0 && b.secs_since(a).is_finite());
            assert!(!a.to_string().is_empty());
        }
        assert!(Ts(i64::MAX).to_timestamp() > Ts(0).to_timestamp());
        assert!(Ts(i64::MIN).to_timestamp() < Ts(0).to_timestamp());
        assert_eq!(Ts(i64::MAX).add_secs(i64::MAX), Ts(i64::MAX));
        assert_eq!(Ts(i64::MIN).add_millis(i64::MIN), Ts(i64::MIN));
        assert_eq!(Ts::from_secs(i64::MIN), Ts(i64::MIN));
    }

    #[test]
    fn clamping_raises_and_marks() {
        let s = Stamp::object(Ts(1000)).not_before(Ts(1500));
        assert_eq!(s.at, Ts(1500));
        assert!(s.clamped);
        let s = Stamp::object(Ts(2000)).not_before(Ts(1500));
        assert_eq!(s.at, Ts(2000));
        assert!(!s.clamped);
    }
}
