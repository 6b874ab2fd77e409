//! Wall-clock timestamps as the protocol writes them: RFC 3339, UTC, milliseconds.

use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

pub fn now_rfc3339() -> String {
    format_rfc3339(OffsetDateTime::now_utc())
}

pub fn format_rfc3339(t: OffsetDateTime) -> String {
    // Millisecond precision keeps timestamps short and sortable as text.
    let t = t.replace_nanosecond(t.millisecond() as u32 * 1_000_000).unwrap_or(t);
    t.format(&Rfc3339).expect("RFC 3339 formats every UTC time")
}

pub fn unix_now() -> i64 {
    OffsetDateTime::now_utc().unix_timestamp()
}
