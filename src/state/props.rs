//! Property tests with seeded random cases (no extra crate): every arrival order and every
//! duplication of frames gives the reducer the same state; stream deltas however repeated or
//! reordered never show anything but a prefix of the reply; `gaps::missing` finds exactly
//! the absent seqs. Each test prints its seed; `PROPS_SEED=<n>` replays one, `PROPS_CASES`
//! sets how many cases.

use persona_chat_protocol::http::{ConversationKind, ConversationSummary};
use persona_chat_protocol::{Message, ServerFrame};

use super::gaps;
use super::reducer::ChatState;

/// SplitMix64: small, seeded, good enough to pick cases.
pub(crate) struct Rng(pub(crate) u64);

impl Rng {
    pub(crate) fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in 0..n (n > 0).
    pub(crate) fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    pub(crate) fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }

    pub(crate) fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            v.swap(i, self.below(i + 1));
        }
    }
}

/// The seed of a property test (printed, so a failure can be replayed) and its case count.
pub(crate) fn seed(name: &str) -> (u64, usize) {
    let seed = std::env::var("PROPS_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(1, |d| d.as_nanos() as u64)
    });
    let cases = std::env::var("PROPS_CASES").ok().and_then(|s| s.parse().ok()).unwrap_or(300);
    eprintln!("{name}: seed {seed} ({cases} cases; replay with PROPS_SEED={seed})");
    (seed, cases)
}

fn message(seq: i64) -> Message {
    Message {
        id: format!("m{seq}"),
        seq,
        client_id: None,
        sender_id: format!("u{}", seq % 3),
        sender_name: format!("user{}", seq % 3),
        content: format!("message {seq} ✓"),
        timestamp: format!("2026-11-21T10:{:02}:{:02}.000Z", seq / 60, seq % 60),
        is_ai: false,
        interrupted: false,
    }
}

fn fresh() -> ChatState {
    let mut s = ChatState::default();
    s.set_conversations(vec![ConversationSummary {
        id: "c".into(),
        kind: ConversationKind::Room,
        title: "c".into(),
        persona: None,
        last_message: None,
        last_seq: 0,
        unread_count: 0,
    }]);
    s
}

/// How a stored message may reach a tab.
#[derive(Debug, Clone)]
enum Arrival {
    Frame(i64),
    /// A page fetched over HTTP (history, a gap fill, a replay).
    Page(Vec<i64>),
}

fn deliver(s: &mut ChatState, arrival: &Arrival) {
    match arrival {
        Arrival::Frame(seq) => {
            s.apply(ServerFrame::NewMessage {
                conversation_id: "c".into(),
                message: message(*seq),
                timestamp: "t".into(),
            });
        }
        Arrival::Page(seqs) => s.add_history("c", seqs.iter().map(|&q| message(q)).collect()),
    }
}

/// What must not depend on the order: the messages held (seq, id, content), in order, and the
/// conversation's newest message.
fn observable(s: &ChatState) -> (Vec<(i64, String, String)>, Option<i64>, i64) {
    let held =
        s.log("c").map(|l| l.stored().map(|m| (m.seq, m.id.clone(), m.content.clone())).collect()).unwrap_or_default();
    let c = s.conversation("c").expect("the conversation");
    (held, c.last_message.as_ref().map(|m| m.seq), c.last_seq)
}

#[test]
fn the_reducer_ends_the_same_whatever_the_order_and_the_repeats() {
    let (seed, cases) = seed("reducer order");
    let mut rng = Rng(seed);
    for case in 0..cases {
        let n = 1 + rng.below(25) as i64;
        // Every message comes at least once, as a frame or in a page; some again, some pages
        // overlap.
        let mut arrivals: Vec<Arrival> = Vec::new();
        for seq in 1..=n {
            arrivals.push(if rng.chance(70) { Arrival::Frame(seq) } else { Arrival::Page(vec![seq]) });
            while rng.chance(30) {
                arrivals.push(Arrival::Frame(seq));
            }
        }
        for _ in 0..rng.below(4) {
            let from = 1 + rng.below(n as usize) as i64;
            let to = (from + rng.below(6) as i64).min(n);
            arrivals.push(Arrival::Page((from..=to).collect()));
        }
        rng.shuffle(&mut arrivals);
        let mut reference = fresh();
        for seq in 1..=n {
            deliver(&mut reference, &Arrival::Frame(seq));
        }
        let mut s = fresh();
        for a in &arrivals {
            deliver(&mut s, a);
        }
        let (held, newest, _) = observable(&s);
        let (want, want_newest, _) = observable(&reference);
        assert_eq!(held, want, "case {case} (seed {seed}): arrivals {arrivals:?}");
        // The list's newest message: pages do not touch the list, so compare when every
        // message came at least once as a frame.
        let all_framed = (1..=n).all(|q| arrivals.iter().any(|a| matches!(a, Arrival::Frame(x) if *x == q)));
        if all_framed {
            assert_eq!(
                newest, want_newest,
                "case {case} (seed {seed}): the list's newest message, arrivals {arrivals:?}"
            );
        }
        // Applying everything again changes nothing.
        let before = observable(&s);
        for a in &arrivals {
            deliver(&mut s, a);
        }
        assert_eq!(observable(&s).0, before.0, "case {case} (seed {seed}): a second delivery changed the state");
    }
}

#[test]
fn stream_deltas_never_show_more_or_other_than_the_reply() {
    let (seed, cases) = seed("stream deltas");
    let mut rng = Rng(seed);
    let alphabet: Vec<char> = "ab é✓漢🙂 ,.".chars().collect();
    for case in 0..cases {
        let full: String = (0..1 + rng.below(40)).map(|_| alphabet[rng.below(alphabet.len())]).collect();
        let chars: Vec<char> = full.chars().collect();
        // Cut into deltas with their offsets.
        let mut deltas: Vec<(u64, String)> = Vec::new();
        let mut at = 0;
        while at < chars.len() {
            let len = 1 + rng.below(4).min(chars.len() - at - 1);
            deltas.push((at as u64, chars[at..at + len].iter().collect()));
            at += len;
        }
        // In order, with repeats of earlier ones (a replay after a reconnect), and sometimes
        // a later one early (a lost frame).
        let mut sent: Vec<(u64, String)> = Vec::new();
        for (i, d) in deltas.iter().enumerate() {
            if rng.chance(20) && i + 1 < deltas.len() {
                sent.push(deltas[i + 1 + rng.below(deltas.len() - i - 1)].clone());
            }
            sent.push(d.clone());
            if rng.chance(25) {
                sent.push(deltas[rng.below(i + 1)].clone());
            }
        }
        let mut s = fresh();
        s.apply(ServerFrame::StreamStart {
            conversation_id: "c".into(),
            message_id: "r".into(),
            persona_id: "p".into(),
        });
        for (offset, text) in &sent {
            s.apply(ServerFrame::StreamDelta {
                conversation_id: "c".into(),
                message_id: "r".into(),
                offset: *offset,
                text: text.clone(),
            });
            let shown = &s.streams["r"];
            assert!(
                full.starts_with(&shown.text),
                "case {case} (seed {seed}): {:?} is not a prefix of {full:?} (sent {sent:?})",
                shown.text
            );
            assert_eq!(
                shown.chars as usize,
                shown.text.chars().count(),
                "case {case} (seed {seed}): the count matches the text"
            );
        }
        // Every delta came at least once, and an early one is sent again in its place: whole.
        assert_eq!(s.streams["r"].text, full, "case {case} (seed {seed}): sent {sent:?}");
        let stored = Message { id: "r".into(), content: full.clone(), is_ai: true, ..message(1) };
        s.apply(ServerFrame::StreamEnd {
            conversation_id: "c".into(),
            message_id: "r".into(),
            interrupted: false,
            message: stored,
        });
        assert!(s.streams.is_empty());
        assert_eq!(s.log("c").unwrap().stored().map(|m| m.content.clone()).collect::<Vec<_>>(), vec![full.clone()]);
    }
}

#[test]
fn gaps_are_exactly_the_absent_seqs() {
    let (seed, cases) = seed("gaps::missing");
    let mut rng = Rng(seed);
    for case in 0..cases {
        let top = rng.below(60) as i64;
        let known: Vec<i64> = (-2..=top + 3).filter(|_| rng.chance(50)).collect();
        let last_seq = rng.below(70) as i64;
        let ranges = gaps::missing(known.iter().copied(), last_seq);
        let held: std::collections::BTreeSet<i64> = known.iter().copied().filter(|&s| s >= 1).collect();
        let missing: Vec<i64> = ranges.iter().flat_map(|r| r.first..=r.last).collect();
        let expected: Vec<i64> = match held.first() {
            None => (1..=last_seq).collect(),
            Some(&low) => (low..=last_seq.max(*held.last().unwrap())).filter(|s| !held.contains(s)).collect(),
        };
        assert_eq!(
            missing, expected,
            "case {case} (seed {seed}): known {known:?}, last_seq {last_seq}, ranges {ranges:?}"
        );
        // Ranges ascend, are not empty and do not touch (else they would be one).
        for w in ranges.windows(2) {
            assert!(w[0].last + 1 < w[1].first, "case {case} (seed {seed}): {ranges:?}");
        }
        assert!(ranges.iter().all(|r| !r.is_empty()));
        // The queries fetch exactly those seqs, none over the page size.
        let page = 1 + rng.below(7) as u32;
        let mut fetched = Vec::new();
        for q in gaps::queries(&ranges, page) {
            assert!(q.limit >= 1 && q.limit <= page, "case {case} (seed {seed}): {q:?}");
            fetched.extend((q.after_seq + 1..q.before_seq).take(q.limit as usize));
        }
        let wanted: std::collections::BTreeSet<i64> = missing.iter().copied().collect();
        let got: std::collections::BTreeSet<i64> = fetched.iter().copied().filter(|s| wanted.contains(s)).collect();
        assert_eq!(got, wanted, "case {case} (seed {seed}): the queries miss some: {ranges:?} page {page}");
    }
}
