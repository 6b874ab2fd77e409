//! Which messages are missing from a conversation, and the HTTP queries that fetch them.
//!
//! `seq` starts at 1 and has no gaps for stored messages, so given the seqs we hold and the
//! server's `last_seq` (from `conversation_joined` or the conversation list), every absent seq
//! between the lowest one held and `last_seq` is a gap. Older history below the lowest seq held
//! is not a gap: it comes with scrolling.

use std::collections::BTreeSet;

/// Missing seqs `first..=last`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SeqRange {
    pub first: i64,
    pub last: i64,
}

impl SeqRange {
    pub fn len(&self) -> u64 {
        (self.last - self.first + 1) as u64
    }

    pub fn is_empty(&self) -> bool {
        self.last < self.first
    }
}

/// `GET /api/conversations/{id}/messages?after_seq=&before_seq=&limit=` (ascending by seq).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageQuery {
    pub after_seq: i64,
    pub before_seq: i64,
    pub limit: u32,
}

/// The server's largest page.
pub const MAX_PAGE: u32 = 500;

/// The ranges missing between the lowest seq held and `last_seq` (or the highest seq held, if
/// that is newer). Holding nothing, everything up to `last_seq` is missing; a caller that only
/// wants the newest page should ask for that instead.
pub fn missing(known: impl IntoIterator<Item = i64>, last_seq: i64) -> Vec<SeqRange> {
    let known: BTreeSet<i64> = known.into_iter().filter(|&s| s >= 1).collect();
    let Some(&lowest) = known.first() else {
        return if last_seq >= 1 { vec![SeqRange { first: 1, last: last_seq }] } else { Vec::new() };
    };
    let mut out = Vec::new();
    let mut prev = lowest;
    for &seq in known.iter().skip(1) {
        if seq > prev + 1 {
            out.push(SeqRange { first: prev + 1, last: seq - 1 });
        }
        prev = seq;
    }
    if last_seq > prev {
        out.push(SeqRange { first: prev + 1, last: last_seq });
    }
    out
}

/// The queries that fetch `ranges`, each at most `max_page` messages (clamped to 1..=MAX_PAGE).
pub fn queries(ranges: &[SeqRange], max_page: u32) -> Vec<PageQuery> {
    let page = i64::from(max_page.clamp(1, MAX_PAGE));
    let mut out = Vec::new();
    for r in ranges {
        let mut first = r.first;
        while first <= r.last {
            let last = (first + page - 1).min(r.last);
            out.push(PageQuery { after_seq: first - 1, before_seq: last + 1, limit: (last - first + 1) as u32 });
            first = last + 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(first: i64, last: i64) -> SeqRange {
        SeqRange { first, last }
    }

    #[test]
    fn nothing_is_missing_from_a_complete_log() {
        assert_eq!(missing([3, 1, 2], 3), vec![]);
        assert_eq!(missing([], 0), vec![]);
        assert_eq!(missing([5, 6, 7], 7), vec![], "history below the lowest seq held is not a gap");
    }

    #[test]
    fn holes_and_the_tail_are_missing_in_order() {
        assert_eq!(missing([1, 2, 5, 9, 2, 10], 14), vec![r(3, 4), r(6, 8), r(11, 14)]);
        assert_eq!(missing([4], 5), vec![r(5, 5)]);
        assert_eq!(r(6, 8).len(), 3);
    }

    #[test]
    fn a_newer_message_than_last_seq_still_reveals_holes() {
        // conversation_joined said 5, and then 8 arrived live: 6 and 7 are missing.
        assert_eq!(missing([4, 5, 8], 5), vec![r(6, 7)]);
    }

    #[test]
    fn holding_nothing_everything_is_missing_and_bad_seqs_are_ignored() {
        assert_eq!(missing([], 3), vec![r(1, 3)]);
        assert_eq!(missing([0, -2], 2), vec![r(1, 2)]);
    }

    #[test]
    fn queries_cover_each_range_exactly_in_pages() {
        assert_eq!(
            queries(&[r(3, 4), r(11, 17)], 3),
            vec![
                PageQuery { after_seq: 2, before_seq: 5, limit: 2 },
                PageQuery { after_seq: 10, before_seq: 14, limit: 3 },
                PageQuery { after_seq: 13, before_seq: 17, limit: 3 },
                PageQuery { after_seq: 16, before_seq: 18, limit: 1 },
            ]
        );
        let big = queries(&[r(1, 1_200)], 10_000);
        assert_eq!(big.len(), 3, "pages are clamped to the server's maximum");
        assert_eq!(big.iter().map(|q| q.limit).sum::<u32>(), 1_200);
        assert_eq!(big[2], PageQuery { after_seq: 1_000, before_seq: 1_201, limit: 200 });
    }
}
