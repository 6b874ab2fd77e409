//! The event log behind the long poll (`GET /api/events`): every frame the hub fans out to
//! users is also kept here, with an id and its audience, so a client without a socket gets
//! the same frames by polling.
//!
//! Kept in memory, the newest `capacity` events. Ids start from the boot time in
//! microseconds-ish (unix ms x 1000), so ids from before a restart are older than anything
//! kept now and get `resync`, and they stay below 2^53 so JavaScript reads them exactly.

use std::collections::VecDeque;
use std::sync::Mutex;

use axum::extract::ws::Utf8Bytes;
use tokio::sync::watch;

/// Who may read an event.
#[derive(Debug, Clone)]
pub enum Audience {
    All { except: Option<String> },
    Users(Vec<String>),
}

impl Audience {
    fn includes(&self, user_id: &str) -> bool {
        match self {
            Audience::All { except } => except.as_deref() != Some(user_id),
            Audience::Users(ids) => ids.iter().any(|id| id == user_id),
        }
    }
}

struct Stored {
    id: u64,
    audience: Audience,
    frame: Utf8Bytes,
}

struct Inner {
    events: VecDeque<Stored>,
    next_id: u64,
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
            inner: Mutex::new(Inner { events: VecDeque::with_capacity(capacity.min(4096)), next_id: first_id }),
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
                inner.events.pop_front();
            }
            inner.events.push_back(Stored { id, audience, frame });
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
        let oldest = inner.events.front().map_or(inner.next_id, |e| e.id);
        // Something between the cursor and the oldest kept event is gone, or the cursor is
        // not one this server handed out.
        if after + 1 < oldest || after > last {
            return Read::Resync { next: last };
        }
        let start = (after + 1 - oldest) as usize;
        let mut events = Vec::new();
        let mut next = after;
        for e in inner.events.iter().skip(start) {
            next = e.id;
            if e.audience.includes(user_id) {
                events.push((e.id, e.frame.clone()));
                if events.len() == max {
                    break;
                }
            }
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
        assert_eq!(log.read("ann", 99, 10), Read::Events { events: vec![(100, text("1")), (102, text("3"))], next: 102 });
        assert_eq!(log.read("bob", 99, 10), Read::Events { events: vec![(101, text("2")), (102, text("3"))], next: 102 });
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
}
