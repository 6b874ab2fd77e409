//! The event log behind the long poll (`GET /api/events`): every frame the hub fans out to
//! users is also kept here, with an id and its audience, so a client without a socket gets
//! the same frames by polling.
//!
//! Kept in memory, the newest `capacity` events. Ids start from the boot time in
//! microseconds-ish (unix ms x 1000), so ids from before a restart are older than anything
//! kept now and get `resync`, and they stay below 2^53 so JavaScript reads them exactly.

use std::collections::{HashSet, VecDeque};
use std::sync::{Arc, Mutex};

use axum::extract::ws::Utf8Bytes;
use tokio::sync::watch;

/// Who may read an event.
#[derive(Debug, Clone)]
pub enum Audience {
    All {
        except: Option<String>,
    },
    Users(Vec<String>),
    /// The members of some conversations: each set is the hub's own, shared (one copy per
    /// conversation, however many events name it).
    Members {
        sets: Vec<Arc<HashSet<String>>>,
        except: Option<String>,
    },
}

impl Audience {
    fn includes(&self, user_id: &str) -> bool {
        match self {
            Audience::All { except } => except.as_deref() != Some(user_id),
            Audience::Users(ids) => ids.iter().any(|id| id == user_id),
            Audience::Members { sets, except } => {
                except.as_deref() != Some(user_id) && sets.iter().any(|s| s.contains(user_id))
            }
        }
    }
}

/// Ephemeral events (typing) kept for pollers: a small ring of their own, never a reason to
/// resync when it overflows.
pub const EPHEMERAL_CAPACITY: usize = 512;

struct Stored {
    id: u64,
    audience: Audience,
    frame: Utf8Bytes,
}

struct Inner {
    events: VecDeque<Stored>,
    ephemeral: VecDeque<Stored>,
    next_id: u64,
    /// The newest durable event id dropped for space: a cursor before it missed something.
    dropped_upto: u64,
}

pub struct EventLog {
    inner: Mutex<Inner>,
    capacity: usize,
    latest: watch::Sender<u64>,
}

/// What a poll gets.
#[derive(Debug, PartialEq)]
pub enum Read {
    /// Events after the cursor for this user (possibly none) and the cursor to ask from next.
    Events { events: Vec<(u64, Utf8Bytes)>, next: u64 },
    /// The cursor is older than what is kept (or from another boot): reload, then poll from `next`.
    Resync { next: u64 },
}

impl EventLog {
    pub fn new(capacity: usize) -> EventLog {
        let boot_ms = (time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as u64;
        Self::starting_at(capacity, boot_ms * 1000)
    }

    pub fn starting_at(capacity: usize, first_id: u64) -> EventLog {
        let (latest, _) = watch::channel(first_id - 1);
        EventLog {
            inner: Mutex::new(Inner {
                events: VecDeque::with_capacity(capacity.min(4096)),
                ephemeral: VecDeque::new(),
                next_id: first_id,
                dropped_upto: first_id - 1,
            }),
            capacity: capacity.max(1),
            latest,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn append(&self, audience: Audience, frame: Utf8Bytes) -> u64 {
        let id = {
            let mut inner = self.lock();
            let id = inner.next_id;
            inner.next_id += 1;
            if inner.events.len() == self.capacity {
                if let Some(gone) = inner.events.pop_front() {
                    inner.dropped_upto = gone.id;
                }
            }
            inner.events.push_back(Stored { id, audience, frame });
            id
        };
        self.latest.send_replace(id);
        id
    }

    /// An event pollers may miss without harm (typing): kept apart, in a small ring, so a
    /// flood of them never pushes real events out.
    pub fn append_ephemeral(&self, audience: Audience, frame: Utf8Bytes) -> u64 {
        let id = {
            let mut inner = self.lock();
            let id = inner.next_id;
            inner.next_id += 1;
            if inner.ephemeral.len() == EPHEMERAL_CAPACITY {
                inner.ephemeral.pop_front();
            }
            inner.ephemeral.push_back(Stored { id, audience, frame });
            id
        };
        self.latest.send_replace(id);
        id
    }

    /// The newest id handed out so far: where a new poller starts.
    pub fn last_id(&self) -> u64 {
        self.lock().next_id - 1
    }

    pub fn read(&self, user_id: &str, after: u64, max: usize) -> Read {
        let inner = self.lock();
        let last = inner.next_id - 1;
        // A durable event after the cursor is gone, or the cursor is not one this server
        // handed out.
        if after < inner.dropped_upto || after > last {
            return Read::Resync { next: last };
        }
        let durable = inner.events.iter().skip(inner.events.partition_point(|e| e.id <= after));
        let ephemeral = inner.ephemeral.iter().skip(inner.ephemeral.partition_point(|e| e.id <= after));
        let mut merged = Merge { a: durable.peekable(), b: ephemeral.peekable() };
        let mut events = Vec::new();
        let mut next = after;
        for e in &mut merged {
            next = e.id;
            if e.audience.includes(user_id) {
                events.push((e.id, e.frame.clone()));
                if events.len() == max {
                    break;
                }
            }
        }
        if events.len() < max {
            next = last.max(next);
        }
        Read::Events { events, next }
    }

    /// Changes whenever an event is appended.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.latest.subscribe()
    }

    pub fn len(&self) -> usize {
        self.lock().events.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Two id-ordered iterators as one.
struct Merge<'a, A: Iterator<Item = &'a Stored>, B: Iterator<Item = &'a Stored>> {
    a: std::iter::Peekable<A>,
    b: std::iter::Peekable<B>,
}

impl<'a, A: Iterator<Item = &'a Stored>, B: Iterator<Item = &'a Stored>> Iterator for Merge<'a, A, B> {
    type Item = &'a Stored;
    fn next(&mut self) -> Option<&'a Stored> {
        match (self.a.peek(), self.b.peek()) {
            (Some(x), Some(y)) if y.id < x.id => self.b.next(),
            (Some(_), _) => self.a.next(),
            (None, _) => self.b.next(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(s: &str) -> Utf8Bytes {
        s.to_owned().into()
    }

    #[test]
    fn readers_see_only_their_events_after_the_cursor() {
        let log = EventLog::starting_at(10, 100);
        assert_eq!(log.last_id(), 99);
        let a = log.append(Audience::Users(vec!["ann".into()]), text("1"));
        log.append(Audience::All { except: Some("ann".into()) }, text("2"));
        let c = log.append(Audience::All { except: None }, text("3"));
        assert_eq!((a, c), (100, 102));
        assert_eq!(
            log.read("ann", 99, 10),
            Read::Events { events: vec![(100, text("1")), (102, text("3"))], next: 102 }
        );
        assert_eq!(
            log.read("bob", 99, 10),
            Read::Events { events: vec![(101, text("2")), (102, text("3"))], next: 102 }
        );
        assert_eq!(log.read("bob", 102, 10), Read::Events { events: vec![], next: 102 });
        // Only events for this reader, but the cursor moves past the others.
        assert_eq!(log.read("ann", 100, 10), Read::Events { events: vec![(102, text("3"))], next: 102 });
        assert_eq!(log.read("ann", 99, 1), Read::Events { events: vec![(100, text("1"))], next: 100 });
    }

    #[test]
    fn a_cursor_older_than_what_is_kept_or_unknown_gets_resync() {
        let log = EventLog::starting_at(2, 100);
        for i in 0..3 {
            log.append(Audience::All { except: None }, text(&i.to_string()));
        }
        // 100 was dropped: a reader at 99 missed it.
        assert_eq!(log.read("ann", 99, 10), Read::Resync { next: 102 });
        assert!(matches!(log.read("ann", 100, 10), Read::Events { ref events, .. } if events.len() == 2));
        assert_eq!(log.read("ann", 5_000, 10), Read::Resync { next: 102 });
    }

    #[test]
    fn ephemeral_floods_never_cause_resync_and_interleave_in_order() {
        let log = EventLog::starting_at(4, 100);
        let a = log.append(Audience::All { except: None }, text("real"));
        for i in 0..(EPHEMERAL_CAPACITY * 3) {
            log.append_ephemeral(Audience::All { except: None }, text(&format!("typing {i}")));
        }
        let b = log.append(Audience::All { except: None }, text("real 2"));
        let Read::Events { events, next } = log.read("ann", a - 1, 10_000) else {
            panic!("no resync after a typing flood")
        };
        assert_eq!(next, b);
        assert_eq!(events.first().map(|e| e.0), Some(a));
        assert_eq!(events.last().map(|e| e.0), Some(b));
        assert_eq!(events.len(), 2 + EPHEMERAL_CAPACITY, "the newest typing events, between the two");
        assert!(events.windows(2).all(|w| w[0].0 < w[1].0));
    }

    #[test]
    fn members_audience_reads_the_shared_set() {
        let log = EventLog::starting_at(10, 1);
        let set: Arc<HashSet<String>> = Arc::new(["ann".to_owned(), "bob".to_owned()].into_iter().collect());
        log.append(Audience::Members { sets: vec![set.clone()], except: Some("bob".into()) }, text("x"));
        assert!(matches!(log.read("ann", 0, 10), Read::Events { ref events, .. } if events.len() == 1));
        assert!(matches!(log.read("bob", 0, 10), Read::Events { ref events, .. } if events.is_empty()));
        assert!(matches!(log.read("cat", 0, 10), Read::Events { ref events, .. } if events.is_empty()));
        assert_eq!(Arc::strong_count(&set), 2, "stored by reference, not copied");
    }
}
