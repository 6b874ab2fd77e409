//! Time for the views: the wall clock as a context, and reading the protocol's timestamps.

use leptos::prelude::*;

/// Wall-clock time (ms since the epoch), ticking every second: countdowns and "last seen 5
/// min ago" follow it.
#[derive(Clone, Copy)]
pub struct Clock(pub RwSignal<f64>);

impl Clock {
    pub fn expect() -> Self {
        expect_context::<Clock>()
    }
}

/// Milliseconds since the epoch of an RFC 3339 UTC timestamp such as
/// `2026-11-21T10:00:00.000Z` (None if it is not one).
pub fn timestamp_ms(ts: &str) -> Option<i64> {
    let b = ts.as_bytes();
    if b.len() < 19 || b[4] != b'-' || b[7] != b'-' || b[10] != b'T' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| ts.get(r).and_then(|x| x.parse::<i64>().ok());
    let (y, mo, d, h, mi, s) = (num(0..4)?, num(5..7)?, num(8..10)?, num(11..13)?, num(14..16)?, num(17..19)?);
    let ms = if b.get(19) == Some(&b'.') { num(20..23).unwrap_or(0) } else { 0 };
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if mo <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (mo + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(((days * 24 + h) * 60 + mi) * 60_000 + s * 1000 + ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_parse_to_epoch_milliseconds() {
        assert_eq!(timestamp_ms("1970-01-01T00:00:00.000Z"), Some(0));
        assert_eq!(timestamp_ms("2026-11-21T10:00:00.250Z"), Some(1_795_255_200_250));
        assert_eq!(timestamp_ms("2000-03-01T00:00:01Z"), Some(951_868_801_000));
        assert_eq!(timestamp_ms("yesterday"), None);
    }
}
