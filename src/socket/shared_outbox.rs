//! The outbox shared by every tab of a user, which no tab can overwrite.
//!
//! Each message is its own browser-storage record, keyed by user and client_id
//! (`persona-chat.outbox.{user}.{client_id}`), never one blob for the whole queue: a tab only
//! ever writes the records of messages it holds, and removes a record only once the message
//! was acknowledged or discarded. Every tab merges what storage holds into its own
//! [`Outbox`] (at start, on each `storage` event, before sending), so the tab that holds the
//! connection sends every tab's messages, even those of a tab closed meanwhile. Each record
//! carries an order key, increasing per writing tab: adopted records are appended in that
//! order, so each tab's messages go out in the order that tab wrote them.
//!
//! Plain Rust: [`Shared`] decides what to write and what to change in memory; the glue in
//! [`store`] reads and writes localStorage.

use std::collections::{HashMap, HashSet};

use serde::{Deserialize, Serialize};

use super::outbox::{OutStatus, Outbox, Outgoing};

/// The key prefix of a user's records.
pub fn record_prefix(user_id: &str) -> String {
    format!("persona-chat.outbox.{user_id}.")
}

pub fn record_key(user_id: &str, client_id: &str) -> String {
    format!("{}{client_id}", record_prefix(user_id))
}

/// One message as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    pub v: u32,
    /// Increasing per writing tab (the wall clock in µs, bumped past the last one); a retry
    /// takes a new one.
    pub order: u64,
    /// Its status is `Queued` or `Failed`: in flight and rate-limited are one tab's business.
    pub item: Outgoing,
}

impl Record {
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    pub fn from_json(text: &str) -> Option<Record> {
        serde_json::from_str(text).ok()
    }
}

fn stored_status(status: &OutStatus) -> OutStatus {
    match status {
        OutStatus::Failed { .. } => status.clone(),
        _ => OutStatus::Queued,
    }
}

/// A change to storage.
#[derive(Debug, Clone, PartialEq)]
pub enum Write {
    Put { client_id: String, record: Record },
    Remove { client_id: String },
}

/// What a merge changed in this tab's outbox (for the chat view).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Merged {
    /// Another tab's messages, now held here too.
    pub added: Vec<Outgoing>,
    /// Gone from storage: acknowledged or discarded in another tab.
    pub removed: Vec<String>,
    /// Refused in another tab: (client_id, reason).
    pub failed: Vec<(String, String)>,
    /// Retried in another tab.
    pub requeued: Vec<String>,
    /// Records to remove again (a message this tab saw acknowledged, written back by a
    /// tab that had not heard yet).
    pub writes: Vec<Write>,
}

impl Merged {
    pub fn is_empty(&self) -> bool {
        self.added.is_empty()
            && self.removed.is_empty()
            && self.failed.is_empty()
            && self.requeued.is_empty()
            && self.writes.is_empty()
    }
}

/// One tab's knowledge of the stored records.
#[derive(Debug, Clone, Default)]
pub struct Shared {
    /// The record as this tab last wrote or read it.
    known: HashMap<String, Record>,
    /// Acknowledged or discarded here: never adopted again.
    gone: HashSet<String>,
    last_order: u64,
}

impl Shared {
    pub fn new() -> Self {
        Shared::default()
    }

    fn next_order(&mut self, now_ms: f64) -> u64 {
        let order = ((now_ms.max(0.0) * 1000.0) as u64).max(self.last_order + 1);
        self.last_order = order;
        order
    }

    /// This tab changed its outbox: the records to write (new messages, status changes) and
    /// to remove (acknowledged or discarded here). `now_ms`: the wall clock.
    pub fn sync(&mut self, outbox: &Outbox, now_ms: f64) -> Vec<Write> {
        let mut writes = Vec::new();
        for item in outbox.items() {
            let status = stored_status(&item.status);
            let order = match self.known.get(&item.client_id) {
                Some(r) if r.item.status == status => continue,
                // Retried: it goes after everything written so far.
                Some(r) if matches!(r.item.status, OutStatus::Failed { .. }) => self.next_order(now_ms),
                Some(r) => r.order,
                None => self.next_order(now_ms),
            };
            let mut stored = item.clone();
            stored.status = status;
            let record = Record { v: 1, order, item: stored };
            self.known.insert(item.client_id.clone(), record.clone());
            writes.push(Write::Put { client_id: item.client_id.clone(), record });
        }
        let held: HashSet<&str> = outbox.items().iter().map(|i| i.client_id.as_str()).collect();
        let mut removed: Vec<String> = self.known.keys().filter(|k| !held.contains(k.as_str())).cloned().collect();
        removed.sort();
        for client_id in removed {
            self.known.remove(&client_id);
            self.gone.insert(client_id.clone());
            writes.push(Write::Remove { client_id });
        }
        writes
    }

    /// Storage holds `stored` (every tab's records of this user): brought into `outbox`.
    pub fn merge(&mut self, outbox: &mut Outbox, mut stored: Vec<Record>) -> Merged {
        let mut merged = Merged::default();
        stored.sort_by(|a, b| a.order.cmp(&b.order).then_with(|| a.item.client_id.cmp(&b.item.client_id)));
        let in_storage: HashSet<String> = stored.iter().map(|r| r.item.client_id.clone()).collect();
        // Held here and known to storage before, gone from it now: another tab had it
        // acknowledged or discarded it.
        let vanished: Vec<String> = outbox
            .items()
            .iter()
            .map(|i| i.client_id.clone())
            .filter(|id| self.known.contains_key(id) && !in_storage.contains(id))
            .collect();
        for id in vanished {
            outbox.ack(&id);
            self.known.remove(&id);
            self.gone.insert(id.clone());
            merged.removed.push(id);
        }
        for record in stored {
            let id = record.item.client_id.clone();
            self.last_order = self.last_order.max(record.order);
            if self.gone.contains(&id) {
                merged.writes.push(Write::Remove { client_id: id });
                continue;
            }
            match outbox.get(&id).map(Outgoing::is_pending) {
                None => {
                    let mut item = record.item.clone();
                    item.status = stored_status(&item.status);
                    outbox.adopt(item.clone());
                    merged.added.push(item);
                }
                Some(_) if self.known.get(&id) == Some(&record) => continue,
                Some(pending) => {
                    let newer = self.known.get(&id).is_none_or(|k| record.order > k.order);
                    match &record.item.status {
                        OutStatus::Failed { reason, .. } if pending => {
                            outbox.set_status(&id, record.item.status.clone());
                            merged.failed.push((id.clone(), reason.clone()));
                        }
                        OutStatus::Queued if !pending && newer => {
                            outbox.set_status(&id, OutStatus::Queued);
                            merged.requeued.push(id.clone());
                        }
                        _ => {}
                    }
                }
            }
            self.known.insert(id, record);
        }
        merged
    }
}

/// localStorage glue (the browser only).
pub mod store {
    use super::*;

    fn local() -> Option<web_sys::Storage> {
        web_sys::window()?.local_storage().ok()?
    }

    /// Every record of the user; None without storage (then nothing is merged).
    pub fn load(user_id: &str) -> Option<Vec<Record>> {
        let storage = local()?;
        let prefix = record_prefix(user_id);
        let len = storage.length().ok()?;
        let keys: Vec<String> =
            (0..len).filter_map(|i| storage.key(i).ok().flatten()).filter(|k| k.starts_with(&prefix)).collect();
        Some(
            keys.iter()
                .filter_map(|k| storage.get_item(k).ok().flatten())
                .filter_map(|t| Record::from_json(&t))
                .collect(),
        )
    }

    pub fn apply(user_id: &str, writes: &[Write]) {
        let Some(storage) = local() else { return };
        for write in writes {
            let _ = match write {
                Write::Put { client_id, record } => {
                    storage.set_item(&record_key(user_id, client_id), &record.to_json())
                }
                Write::Remove { client_id } => storage.remove_item(&record_key(user_id, client_id)),
            };
        }
    }

    /// Calls `changed` when another tab writes or removes one of the user's records; stops
    /// listening when dropped.
    pub struct Listener {
        closure: wasm_bindgen::closure::Closure<dyn FnMut(web_sys::StorageEvent)>,
    }

    impl Drop for Listener {
        fn drop(&mut self) {
            use wasm_bindgen::JsCast;
            if let Some(window) = web_sys::window() {
                let _ = window.remove_event_listener_with_callback("storage", self.closure.as_ref().unchecked_ref());
            }
        }
    }

    pub fn listen(user_id: &str, changed: impl Fn() + 'static) -> Option<Listener> {
        use wasm_bindgen::JsCast;
        let prefix = record_prefix(user_id);
        let closure =
            wasm_bindgen::closure::Closure::<dyn FnMut(web_sys::StorageEvent)>::new(move |e: web_sys::StorageEvent| {
                // A null key: storage was cleared.
                if e.key().is_none_or(|k| k.starts_with(&prefix)) {
                    changed();
                }
            });
        web_sys::window()?.add_event_listener_with_callback("storage", closure.as_ref().unchecked_ref()).ok()?;
        Some(Listener { closure })
    }

    /// The outbox as one blob, as builds before this one kept it: taken over once.
    pub fn take_legacy(user_id: &str) -> Option<Outbox> {
        let storage = local()?;
        let key = super::super::outbox::storage_key(user_id);
        let text = storage.get_item(&key).ok().flatten()?;
        let _ = storage.remove_item(&key);
        Outbox::from_json(&text, Default::default()).ok()
    }

    /// Signing out: forgets every unsent message of the user, in every tab's records.
    pub fn clear_all(user_id: &str) {
        let Some(storage) = local() else { return };
        let prefix = record_prefix(user_id);
        let len = storage.length().unwrap_or(0);
        let keys: Vec<String> =
            (0..len).filter_map(|i| storage.key(i).ok().flatten()).filter(|k| k.starts_with(&prefix)).collect();
        for k in keys {
            let _ = storage.remove_item(&k);
        }
        let _ = storage.remove_item(&super::super::outbox::storage_key(user_id));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::socket::outbox::OutboxConfig;
    use persona_chat_protocol::ErrorCode;
    use std::collections::BTreeMap;

    fn msg(id: &str) -> Outgoing {
        Outgoing::new(id, "c", format!("text {id}"), "2026-11-30T10:00:00.000Z")
    }

    /// localStorage of one origin: a map every tab shares.
    #[derive(Default)]
    struct Storage(BTreeMap<String, Record>);

    impl Storage {
        fn apply(&mut self, writes: &[Write]) {
            for w in writes {
                match w {
                    Write::Put { client_id, record } => {
                        self.0.insert(client_id.clone(), record.clone());
                    }
                    Write::Remove { client_id } => {
                        self.0.remove(client_id);
                    }
                }
            }
        }
        fn records(&self) -> Vec<Record> {
            self.0.values().cloned().collect()
        }
    }

    struct Tab {
        outbox: Outbox,
        shared: Shared,
    }

    impl Tab {
        fn new() -> Tab {
            Tab { outbox: Outbox::new(OutboxConfig::default()), shared: Shared::new() }
        }
        fn change(&mut self, storage: &mut Storage, now: f64, f: impl FnOnce(&mut Outbox)) {
            f(&mut self.outbox);
            let writes = self.shared.sync(&self.outbox, now);
            storage.apply(&writes);
        }
        fn merge(&mut self, storage: &mut Storage) -> Merged {
            let m = self.shared.merge(&mut self.outbox, storage.records());
            storage.apply(&m.writes);
            m
        }
    }

    #[test]
    fn the_issue_case_two_tabs_write_offline_the_second_closes_and_the_first_sends_all_once() {
        let mut storage = Storage::default();
        let (mut a, mut b) = (Tab::new(), Tab::new());
        a.change(&mut storage, 1.0, |o| o.push(msg("a1")).unwrap());
        b.change(&mut storage, 2.0, |o| o.push(msg("b1")).unwrap());
        a.change(&mut storage, 3.0, |o| o.push(msg("a2")).unwrap());
        b.change(&mut storage, 4.0, |o| o.push(msg("b2")).unwrap());
        drop(b); // the second tab is closed
        a.change(&mut storage, 5.0, |o| o.push(msg("a3")).unwrap());
        assert_eq!(storage.0.len(), 5, "no tab's write erased another's");
        // The server is back: the tab with the connection merges, then sends.
        let m = a.merge(&mut storage);
        assert_eq!(m.added.iter().map(|i| i.client_id.as_str()).collect::<Vec<_>>(), vec!["b1", "b2"]);
        let sent: Vec<String> = a.outbox.take_sendable(10.0).into_iter().map(|i| i.client_id).collect();
        assert_eq!(sent, vec!["a1", "a2", "a3", "b1", "b2"]);
        for id in &sent {
            a.change(&mut storage, 11.0, |o| drop(o.ack(id)));
        }
        assert!(storage.0.is_empty(), "acknowledged: every record removed");
        assert!(a.merge(&mut storage).is_empty());
    }

    #[test]
    fn acks_failures_and_retries_reach_the_writing_tab() {
        let mut storage = Storage::default();
        let (mut writer, mut leader) = (Tab::new(), Tab::new());
        writer.change(&mut storage, 1.0, |o| {
            o.push(msg("w1")).unwrap();
            o.push(msg("w2")).unwrap();
        });
        leader.merge(&mut storage);
        leader.change(&mut storage, 2.0, |o| drop(o.take_sendable(2.0)));
        assert!(storage.0.values().all(|r| r.item.status == OutStatus::Queued), "in flight is not stored");
        leader.change(&mut storage, 3.0, |o| {
            o.ack("w1");
            o.refuse("w2", ErrorCode::TooLong, "too long", 3.0);
        });
        let m = writer.merge(&mut storage);
        assert_eq!(m.removed, vec!["w1".to_string()]);
        assert_eq!(m.failed, vec![("w2".to_string(), "too long (too_long)".to_string())]);
        assert!(!writer.outbox.get("w2").unwrap().is_pending());
        // The writer retries: the leader sees it queued again and sends it.
        writer.change(&mut storage, 4.0, |o| o.retry("w2").unwrap());
        let m = leader.merge(&mut storage);
        assert_eq!(m.requeued, vec!["w2".to_string()]);
        assert_eq!(ids_of(leader.outbox.take_sendable(5.0)), vec!["w2"]);
        // Discarded in one tab: gone in the other.
        leader.change(&mut storage, 6.0, |o| drop(o.refuse("w2", ErrorCode::TooLong, "too long", 6.0)));
        writer.merge(&mut storage);
        writer.change(&mut storage, 7.0, |o| drop(o.discard("w2")));
        assert_eq!(leader.merge(&mut storage).removed, vec!["w2".to_string()]);
        assert!(leader.outbox.is_empty() && storage.0.is_empty());
    }

    fn ids_of(items: Vec<Outgoing>) -> Vec<String> {
        items.into_iter().map(|i| i.client_id).collect()
    }

    #[test]
    fn a_stale_tab_cannot_bring_back_an_acknowledged_message() {
        let mut storage = Storage::default();
        let (mut a, mut b) = (Tab::new(), Tab::new());
        a.change(&mut storage, 1.0, |o| o.push(msg("m")).unwrap());
        b.merge(&mut storage);
        a.change(&mut storage, 2.0, |o| drop(o.ack("m")));
        // b has not merged yet and writes the record back (its own refusal arrived late).
        b.change(&mut storage, 3.0, |o| drop(o.refuse("m", ErrorCode::NotMember, "no", 3.0)));
        assert_eq!(storage.0.len(), 1);
        let m = a.merge(&mut storage);
        assert!(m.added.is_empty(), "not adopted again");
        assert!(storage.0.is_empty(), "and removed again");
        assert!(a.outbox.is_empty());
    }

    #[test]
    fn records_round_trip_and_keys_are_per_user_and_message() {
        let r = Record { v: 1, order: 7, item: msg("k") };
        assert_eq!(Record::from_json(&r.to_json()), Some(r));
        assert_eq!(Record::from_json("nope"), None);
        assert_eq!(record_key("u1", "k"), "persona-chat.outbox.u1.k");
        assert!(!record_key("u1", "k").starts_with(&record_prefix("u2")));
        assert!(
            !crate::socket::outbox::storage_key("u1").starts_with(&record_prefix("u1")),
            "the old blob is not a record"
        );
    }

    /// Random interleavings of several tabs writing, merging, sending, acking, refusing,
    /// retrying and closing: every message written is sent, each tab's in its order, and
    /// acknowledged exactly once by the server; nothing stays behind.
    #[test]
    fn randomized_tabs_never_lose_or_reorder_a_message() {
        let seed = std::env::var("OUTBOX_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(1)
        });
        println!("randomized_tabs_never_lose_or_reorder_a_message seed {seed} (OUTBOX_SEED={seed} to repeat)");
        let mut rng = seed;
        let mut next = move |n: u64| {
            rng = rng.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = rng;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            (z ^ (z >> 31)) % n
        };
        for round in 0..200 {
            let mut storage = Storage::default();
            let mut tabs: Vec<Option<Tab>> = (0..3).map(|_| Some(Tab::new())).collect();
            // The server: what it stored, in order; refuses some once.
            let mut stored: Vec<String> = Vec::new();
            let mut written: Vec<(usize, String)> = Vec::new();
            let mut counter = 0;
            let mut now = 1.0;
            for _ in 0..60 {
                now += 1.0;
                let t = next(tabs.len() as u64) as usize;
                let Some(tab) = tabs[t].as_mut() else {
                    if next(4) == 0 {
                        let mut fresh = Tab::new();
                        fresh.merge(&mut storage);
                        tabs[t] = Some(fresh);
                    }
                    continue;
                };
                match next(6) {
                    0 | 1 => {
                        counter += 1;
                        let id = format!("t{t}-{counter:03}");
                        written.push((t, id.clone()));
                        tab.change(&mut storage, now, |o| o.push(msg(&id)).unwrap());
                    }
                    2 => {
                        tab.merge(&mut storage);
                    }
                    3 => {
                        // This tab holds the connection: merge, send, the server answers.
                        tab.merge(&mut storage);
                        let sent = tab.outbox.take_sendable(now);
                        for item in sent {
                            if !stored.contains(&item.client_id) && next(5) == 0 {
                                tab.change(&mut storage, now, |o| {
                                    drop(o.refuse(&item.client_id, ErrorCode::NotMember, "no", now))
                                });
                            } else {
                                if !stored.contains(&item.client_id) {
                                    stored.push(item.client_id.clone());
                                }
                                tab.change(&mut storage, now, |o| drop(o.ack(&item.client_id)));
                            }
                        }
                    }
                    4 => {
                        tab.merge(&mut storage);
                        let failed: Vec<String> = tab
                            .outbox
                            .items()
                            .iter()
                            .filter(|i| !i.is_pending())
                            .map(|i| i.client_id.clone())
                            .collect();
                        for id in failed {
                            tab.change(&mut storage, now, |o| o.retry(&id).unwrap());
                        }
                    }
                    _ => {
                        if next(3) == 0 {
                            tabs[t] = None; // closed (or reloaded: a fresh one comes later)
                        }
                    }
                }
            }
            // The end: one tab is left; it retries every failure and sends until empty.
            let mut last = Tab::new();
            for _ in 0..5 {
                now += 1.0;
                last.merge(&mut storage);
                let failed: Vec<String> =
                    last.outbox.items().iter().filter(|i| !i.is_pending()).map(|i| i.client_id.clone()).collect();
                for id in failed {
                    last.change(&mut storage, now, |o| o.retry(&id).unwrap());
                }
                for item in last.outbox.take_sendable(now) {
                    if !stored.contains(&item.client_id) {
                        stored.push(item.client_id.clone());
                    }
                    last.change(&mut storage, now, |o| drop(o.ack(&item.client_id)));
                }
            }
            assert!(
                storage.0.is_empty(),
                "seed {seed} round {round}: left behind {:?}",
                storage.0.keys().collect::<Vec<_>>()
            );
            let mut all: Vec<String> = written.iter().map(|(_, id)| id.clone()).collect();
            all.sort();
            let mut got = stored.clone();
            got.sort();
            assert_eq!(got, all, "seed {seed} round {round}: every message stored once");
        }
    }

    #[test]
    fn without_refusals_each_tabs_messages_are_stored_in_its_writing_order() {
        let seed = std::env::var("OUTBOX_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(0x5EED_u64 ^ std::process::id() as u64);
        println!("writing-order seed {seed} (OUTBOX_SEED={seed} to repeat)");
        let mut rng = seed;
        let mut next = move |n: u64| {
            rng = rng.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (rng >> 33) % n
        };
        for round in 0..200 {
            let mut storage = Storage::default();
            let mut tabs: Vec<Tab> = (0..3).map(|_| Tab::new()).collect();
            let mut stored: Vec<String> = Vec::new();
            let mut counters = [0u32; 3];
            for step in 0..80 {
                let now = step as f64;
                let t = next(3) as usize;
                match next(3) {
                    0 | 1 => {
                        counters[t] += 1;
                        let id = format!("t{t}-{:03}", counters[t]);
                        tabs[t].change(&mut storage, now, |o| o.push(msg(&id)).unwrap());
                    }
                    _ => {
                        let tab = &mut tabs[t];
                        tab.merge(&mut storage);
                        // Some sends are lost with the connection and go again later.
                        let sent = tab.outbox.take_sendable(now);
                        let cut = next(sent.len() as u64 + 1) as usize;
                        for item in &sent[..cut] {
                            if !stored.contains(&item.client_id) {
                                stored.push(item.client_id.clone());
                            }
                            tab.change(&mut storage, now, |o| drop(o.ack(&item.client_id)));
                        }
                        tab.outbox.requeue_in_flight();
                    }
                }
            }
            for t in 0..3 {
                let mine: Vec<&String> = stored.iter().filter(|id| id.starts_with(&format!("t{t}-"))).collect();
                let mut sorted = mine.clone();
                sorted.sort();
                assert_eq!(mine, sorted, "seed {seed} round {round}: tab {t}'s messages out of order");
            }
        }
    }
}
