//! Clocks. Protocol logic never reads the clock itself: the runtime passes `Instant`s in.
//! Calendar decisions (transition windows of retired numbers) use [`WallClock`], which a drill
//! or a test can shift with `HOTLINE_NOW`.

use chrono::{DateTime, Duration as ChronoDuration, FixedOffset, NaiveDate, Utc};
use std::time::Instant;

/// Asia/Shanghai has been UTC+8 without daylight saving since 1991, so a fixed offset is exact
/// for every date this daemon will see and saves a time-zone database.
pub fn shanghai() -> FixedOffset {
    FixedOffset::east_opt(8 * 3600).expect("UTC+8 is a valid offset")
}

/// Wall clock used for dialplan calendar decisions.
#[derive(Debug, Clone)]
pub struct WallClock {
    /// Offset added to the real clock; zero unless `HOTLINE_NOW` was given.
    shift: ChronoDuration,
    fixed_anchor: Option<(DateTime<Utc>, Instant)>,
}

impl WallClock {
    pub fn real() -> Self {
        WallClock {
            shift: ChronoDuration::zero(),
            fixed_anchor: None,
        }
    }

    /// A clock that reads `start` now and advances in real time from there.
    pub fn starting_at(start: DateTime<FixedOffset>) -> Self {
        WallClock {
            shift: start.with_timezone(&Utc) - Utc::now(),
            fixed_anchor: Some((start.with_timezone(&Utc), Instant::now())),
        }
    }

    /// From the `HOTLINE_NOW` environment variable (RFC 3339), if set.
    pub fn from_env() -> Result<Self, String> {
        match std::env::var("HOTLINE_NOW") {
            Ok(v) if !v.trim().is_empty() => DateTime::parse_from_rfc3339(v.trim())
                .map(Self::starting_at)
                .map_err(|e| format!("HOTLINE_NOW={v:?} is not an RFC 3339 time: {e}")),
            _ => Ok(Self::real()),
        }
    }

    pub fn now_utc(&self) -> DateTime<Utc> {
        match self.fixed_anchor {
            // Advance from the anchor by monotonic time so a stepped system clock can't move it.
            Some((at, since)) => at + ChronoDuration::from_std(since.elapsed()).unwrap_or_default(),
            None => Utc::now() + self.shift,
        }
    }

    /// Today's date in Asia/Shanghai.
    pub fn today_shanghai(&self) -> NaiveDate {
        self.now_utc().with_timezone(&shanghai()).date_naive()
    }
}
