//! The personas at work.
//!
//! Each persona answers one message at a time: triggers wait in the persona's queue (in seq
//! order within a conversation) and one worker task per persona drains it. The status follows
//! the work and is announced to everyone (`persona_status`): `busy` while a reply waits
//! (queued, or waiting for the responder's first words), `responding` while it streams,
//! `online` when the queue is empty, `offline` when configuration disables the persona.
//!
//! A reply streams as `stream_start` (sent with the first words, so an interrupted reply
//! always has some text), `stream_delta`s of a few words at the configured pace, and
//! `stream_end` with the stored message. The message is stored under the streamed id and
//! fanned out like any other (`new_message`, `conversation_update`) before `stream_end`.
//!
//! While it streams, a reply is kept in progress (message id, persona, text so far): sockets
//! joining its conversation get the text so far then the live deltas (see
//! [`Runtime::join_with_replies`]), and `sync_state` lists it. Its text so far is saved as a
//! draft (with the first words, then at most every [`DRAFT_EVERY`]); a server that dies
//! mid-reply leaves the draft, stored as an interrupted message at the next start
//! ([`crate::store::Store::recover_drafts`]). The queues of replies waiting for their turn are
//! in memory only: a restart drops them (the questions stay; nothing is answered twice).

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

use persona_chat_protocol::http::Persona;
use persona_chat_protocol::{
    ErrorCode, Message, PersonaState, PersonaStatusEntry, ReplyInProgress, ServerFrame, User, MAX_CONTENT_CHARS,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::sync::{mpsc, Notify};

use super::builtin::Builtin;
use super::openai::OpenAi;
use super::responder::{Chunks, ReplyRequest, Responder};
use super::{addressed, PersonaInfo};
use crate::clock::now_rfc3339;
use crate::config::Config;
use crate::refusal::Refusal;
use crate::store::{Inserted, Store};
use crate::{AppState, Shared};

/// Replies that may wait per persona, in all; later triggers get no reply (and the sender is
/// told).
pub const MAX_QUEUE: usize = 256;
/// Replies of one persona that may wait per conversation: one user flooding a persona delays
/// only their own conversation. Conversations are served in turn.
pub const MAX_PENDING_PER_CONVERSATION: usize = 2;
/// Messages of the conversation a responder sees, the one answered included.
pub const CONTEXT_MESSAGES: usize = 12;
/// Stored for an interrupted reply that had no text yet (a message cannot be empty). With
/// `stream_start` sent together with the first words this does not happen in practice.
pub const EMPTY_INTERRUPTED: &str = "…";
/// How often a reply's text so far is saved as a draft (stored as an interrupted message if
/// the server dies before the reply ends).
pub const DRAFT_EVERY: Duration = Duration::from_secs(1);
/// Conversations whose kind is remembered (it never changes); the cache restarts when full.
const KIND_CACHE: usize = 100_000;

/// A user's message some persona is to answer.
#[derive(Debug, Clone)]
struct Job {
    conversation_id: String,
    trigger: Message,
}

struct Slot {
    info: PersonaInfo,
    enabled: bool,
    status: PersonaState,
    last_seen: Option<String>,
    /// Waiting replies, per conversation.
    queues: HashMap<String, VecDeque<Job>>,
    /// Conversations with waiting replies, in the order they get their next turn.
    turns: VecDeque<String>,
    /// How many replies wait, in all.
    waiting: usize,
    /// A worker task is draining the queue.
    working: bool,
}

impl Slot {
    /// The next reply due: the first of the conversation whose turn it is.
    fn next_job(&mut self) -> Option<Job> {
        let conversation = self.turns.pop_front()?;
        let queue = self.queues.get_mut(&conversation)?;
        let job = queue.pop_front();
        if queue.is_empty() {
            self.queues.remove(&conversation);
        } else {
            self.turns.push_back(conversation);
        }
        self.waiting -= usize::from(job.is_some());
        job
    }
}

/// A reply being streamed, by message id: its text so far, which joining sockets get before
/// the live deltas (see [`Runtime::join_with_replies`]).
struct Active {
    conversation_id: String,
    persona_id: String,
    text: String,
    /// `text` in chars: the offset of the next delta.
    chars: u64,
    stop: Arc<Notify>,
}

#[derive(Default)]
struct State {
    slots: Vec<Slot>,
    active: HashMap<String, Active>,
}

/// A user's message, on its way to the dispatcher.
struct Trigger {
    conversation_id: String,
    message: Message,
    persona_id: Option<String>,
}

pub struct Runtime {
    state: Mutex<State>,
    responder: Arc<dyn Responder>,
    /// Answers when the configured responder gives no words at all (endpoint down).
    fallback: Option<Arc<dyn Responder>>,
    pace: Duration,
    /// Replies written at once, across personas (--persona-llm-concurrency).
    writers: Arc<tokio::sync::Semaphore>,
    /// Hands triggers to one dispatcher task, so they are looked at in the order they came.
    dispatch: OnceLock<mpsc::UnboundedSender<Trigger>>,
    /// conversation -> the persona of a direct conversation (None: a room).
    kinds: Mutex<HashMap<String, Option<String>>>,
    /// How replies are cut into deltas and paced: seeded (`--persona-seed`), so a test's
    /// run can be replayed.
    rng: Mutex<StdRng>,
}

impl Runtime {
    /// Loads the personas from the store and applies the configuration: personas named by
    /// `--offline-persona` are disabled (stored, so lists show them offline), the others are
    /// online as of now.
    pub fn new(config: &Config, store: &Store) -> Runtime {
        let seed = config.persona_seed.unwrap_or_else(rand::random::<u64>);
        tracing::debug!("persona seed {seed}");
        let mut rng = StdRng::seed_from_u64(seed);
        let builtin: Arc<dyn Responder> =
            Arc::new(Builtin::new(Duration::from_millis(config.persona_think_ms), rng.gen()));
        let (responder, fallback) = match config.persona_llm_url.as_deref().map(str::trim).filter(|u| !u.is_empty()) {
            Some(url) => match OpenAi::new(url, &config.persona_llm_model, config.persona_llm_api_key.clone()) {
                Ok(openai) => {
                    tracing::info!("personas reply through {} (model {})", openai.endpoint(), config.persona_llm_model);
                    (Arc::new(openai) as Arc<dyn Responder>, Some(builtin))
                }
                Err(e) => {
                    tracing::error!(
                        "cannot use the OpenAI-compatible endpoint ({e}); personas use the built-in responder"
                    );
                    (builtin, None)
                }
            },
            None => (builtin, None),
        };
        let runtime = Runtime {
            state: Mutex::default(),
            responder,
            fallback,
            pace: Duration::from_millis(config.persona_pace_ms),
            writers: Arc::new(tokio::sync::Semaphore::new(config.persona_llm_concurrency.max(1))),
            dispatch: OnceLock::new(),
            kinds: Mutex::default(),
            rng: Mutex::new(rng),
        };
        let offline: HashSet<String> =
            config.offline_personas.iter().map(|n| n.trim().to_lowercase()).filter(|n| !n.is_empty()).collect();
        let personas = store.personas().unwrap_or_else(|e| {
            tracing::error!("cannot read the personas: {e}; none will reply");
            Vec::new()
        });
        for name in &offline {
            if !personas.iter().any(|p| p.name.to_lowercase() == *name) {
                tracing::warn!("--offline-persona {name:?}: there is no persona of that name");
            }
        }
        let now = now_rfc3339();
        let mut state = runtime.lock();
        for p in personas {
            let enabled = !offline.contains(&p.name.to_lowercase());
            let mut last_seen = p.last_seen.clone();
            let stored = store.set_persona_enabled(&p.id, enabled).and_then(|()| {
                if enabled {
                    last_seen = Some(now.clone());
                    store.set_persona_last_seen(&p.id, &now)?;
                }
                Ok(())
            });
            if let Err(e) = stored {
                tracing::warn!("cannot record the state of persona {}: {e}", p.name);
            }
            if !enabled {
                tracing::info!("persona {} is offline by configuration", p.name);
            }
            state.slots.push(Slot {
                info: PersonaInfo { id: p.id, name: p.name, tagline: p.tagline },
                enabled,
                status: if enabled { PersonaState::Online } else { PersonaState::Offline },
                last_seen,
                queues: HashMap::new(),
                turns: VecDeque::new(),
                waiting: 0,
                working: false,
            });
        }
        drop(state);
        runtime
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Puts the live status over what the store says of a persona.
    pub fn overlay(&self, persona: &mut Persona) {
        let state = self.lock();
        if let Some(slot) = state.slots.iter().find(|s| s.info.id == persona.id) {
            persona.status = slot.status;
            persona.last_seen = slot.last_seen.clone();
        }
    }

    /// The live status of a persona.
    pub fn status(&self, persona_id: &str) -> Option<PersonaState> {
        self.lock().slots.iter().find(|s| s.info.id == persona_id).map(|s| s.status)
    }

    pub fn personas(&self) -> Vec<PersonaInfo> {
        self.lock().slots.iter().map(|s| s.info.clone()).collect()
    }

    /// A user's message was stored: hand it to the dispatcher (started on first use).
    pub(super) fn trigger(&self, app: &AppState, conversation_id: &str, message: &Message, persona_id: Option<String>) {
        let tx = self.dispatch.get_or_init(|| {
            let (tx, rx) = mpsc::unbounded_channel();
            // A weak reference: the dispatcher must not keep the server alive.
            tokio::spawn(dispatcher(Arc::downgrade(app), rx));
            tx
        });
        let _ = tx.send(Trigger { conversation_id: conversation_id.to_owned(), message: message.clone(), persona_id });
    }

    /// `stop_response` from a member.
    pub(super) fn stop(&self, conversation_id: &str, message_id: &str) -> Result<(), Refusal> {
        match self.lock().active.get(message_id) {
            Some(active) if active.conversation_id == conversation_id => {
                active.stop.notify_one();
                Ok(())
            }
            _ => Err(Refusal::new(ErrorCode::NotFound, "no response is streaming with this id in this conversation")),
        }
    }

    /// Every persona's live status (for `sync_state`).
    pub fn statuses(&self) -> Vec<PersonaStatusEntry> {
        self.lock()
            .slots
            .iter()
            .map(|s| PersonaStatusEntry {
                persona_id: s.info.id.clone(),
                status: s.status,
                last_seen: s.last_seen.clone(),
            })
            .collect()
    }

    /// The replies in progress in the conversations `visible` accepts, with their text so far.
    pub fn replies_in_progress(&self, visible: impl Fn(&str) -> bool) -> Vec<ReplyInProgress> {
        let state = self.lock();
        let mut out: Vec<ReplyInProgress> = state
            .active
            .iter()
            .filter(|(_, a)| visible(&a.conversation_id))
            .map(|(id, a)| ReplyInProgress {
                conversation_id: a.conversation_id.clone(),
                message_id: id.clone(),
                persona_id: a.persona_id.clone(),
                text: a.text.clone(),
            })
            .collect();
        out.sort_by(|a, b| a.message_id.cmp(&b.message_id));
        out
    }

    /// How many replies are streaming now.
    pub fn replies_streaming(&self) -> usize {
        self.lock().active.len()
    }

    /// Joins a socket to a conversation's live frames and resumes each reply in progress there
    /// (`stream_start`, then one `stream_delta {offset: 0, text so far}`), under the runtime's
    /// lock: deltas are sent under the same lock (see [`Runtime::stream_delta`]), so each
    /// delta is either in the text so far or sent live after it, never both, never neither.
    pub fn join_with_replies(&self, hub: &crate::hub::Hub, conn: crate::hub::ConnId, conversation_id: &str) {
        let state = self.lock();
        hub.join(conn, conversation_id);
        let mut here: Vec<(&String, &Active)> =
            state.active.iter().filter(|(_, a)| a.conversation_id == conversation_id).collect();
        here.sort_by(|a, b| a.0.cmp(b.0));
        for (message_id, active) in here {
            hub.send_to_conn(
                conn,
                &ServerFrame::StreamStart {
                    conversation_id: conversation_id.to_owned(),
                    message_id: message_id.clone(),
                    persona_id: active.persona_id.clone(),
                },
            );
            if !active.text.is_empty() {
                hub.send_to_conn(
                    conn,
                    &ServerFrame::StreamDelta {
                        conversation_id: conversation_id.to_owned(),
                        message_id: message_id.clone(),
                        offset: 0,
                        text: active.text.clone(),
                    },
                );
            }
        }
    }

    /// A reply begins: kept as in progress and announced with `stream_start`, atomically.
    fn stream_start(
        &self,
        hub: &crate::hub::Hub,
        conversation_id: &str,
        message_id: &str,
        persona_id: &str,
        stop: Arc<Notify>,
    ) {
        let mut state = self.lock();
        state.active.insert(
            message_id.to_owned(),
            Active {
                conversation_id: conversation_id.to_owned(),
                persona_id: persona_id.to_owned(),
                text: String::new(),
                chars: 0,
                stop,
            },
        );
        hub.send_to_joined(
            conversation_id,
            &ServerFrame::StreamStart {
                conversation_id: conversation_id.to_owned(),
                message_id: message_id.to_owned(),
                persona_id: persona_id.to_owned(),
            },
            None,
        );
    }

    /// Appends to a reply's text so far and sends the delta to the joined sockets, atomically
    /// (see [`Runtime::join_with_replies`]).
    fn stream_delta(&self, hub: &crate::hub::Hub, message_id: &str, text: &str) {
        let mut state = self.lock();
        let Some(active) = state.active.get_mut(message_id) else { return };
        let offset = active.chars;
        active.text.push_str(text);
        active.chars += text.chars().count() as u64;
        hub.send_to_joined(
            &active.conversation_id,
            &ServerFrame::StreamDelta {
                conversation_id: active.conversation_id.clone(),
                message_id: message_id.to_owned(),
                offset,
                text: text.to_owned(),
            },
            None,
        );
    }

    /// A reply is no longer in progress (called under the store's lock once it is stored, so
    /// a socket joining after sees it in the backlog and not as in progress).
    pub fn finish(&self, message_id: &str) {
        self.lock().active.remove(message_id);
    }

    /// The persona of a direct conversation (Some(None): a room; None: no such conversation).
    async fn kind_of(&self, app: &AppState, conversation_id: &str) -> Option<Option<String>> {
        if let Some(kind) = self.kinds.lock().unwrap_or_else(|p| p.into_inner()).get(conversation_id) {
            return Some(kind.clone());
        }
        let id = conversation_id.to_owned();
        let kind = match app.db(move |store, _| store.conversation_persona(&id)).await {
            Ok(kind) => kind?,
            Err(e) => {
                tracing::warn!("cannot read conversation {conversation_id}: {e}");
                return None;
            }
        };
        let mut kinds = self.kinds.lock().unwrap_or_else(|p| p.into_inner());
        if kinds.len() >= KIND_CACHE {
            kinds.clear();
        }
        kinds.insert(conversation_id.to_owned(), kind.clone());
        Some(kind)
    }

    /// Queues a reply of a persona; starts its worker when idle. A conversation with
    /// [`MAX_PENDING_PER_CONVERSATION`] replies waiting gets none for this message, and its
    /// sender is told so in the conversation.
    fn enqueue(&self, app: &AppState, persona_id: &str, job: Job) {
        let mut state = self.lock();
        let Some(slot) = state.slots.iter_mut().find(|s| s.info.id == persona_id) else { return };
        if !slot.enabled {
            tracing::debug!("{} is offline: no reply to message {}", slot.info.name, job.trigger.id);
            return;
        }
        let here = slot.queues.get(&job.conversation_id).map_or(0, VecDeque::len);
        if here >= MAX_PENDING_PER_CONVERSATION || slot.waiting >= MAX_QUEUE {
            let text = if here >= MAX_PENDING_PER_CONVERSATION {
                format!("{} already has {here} replies to write here; this message gets none. Wait for them, then ask again.", slot.info.name)
            } else {
                format!("{} has too many replies to write; this message gets none. Ask again later.", slot.info.name)
            };
            tracing::info!(
                "{}: no reply to message {} in {}: {text}",
                slot.info.name,
                job.trigger.id,
                job.conversation_id
            );
            crate::metrics::inc(&app.metrics.persona_replies_skipped);
            let frame = ServerFrame::Error {
                code: ErrorCode::RateLimited,
                message: text,
                reference: Some(job.conversation_id.clone()),
                timestamp: now_rfc3339(),
            };
            app.hub.send_to_users([job.trigger.sender_id.as_str()], &frame);
            return;
        }
        let conversation_id = job.conversation_id.clone();
        let queue = slot.queues.entry(conversation_id.clone()).or_default();
        // Within a conversation, answer in seq order even if triggers came out of order.
        let at = queue.iter().position(|j| j.trigger.seq > job.trigger.seq).unwrap_or(queue.len());
        queue.insert(at, job);
        slot.waiting += 1;
        if !slot.turns.contains(&conversation_id) {
            slot.turns.push_back(conversation_id);
        }
        if !slot.working {
            slot.working = true;
            set_status(&app.hub, slot, PersonaState::Busy);
            tokio::spawn(worker(app.clone(), persona_id.to_owned()));
        }
    }

    fn random<T>(&self, f: impl FnOnce(&mut StdRng) -> T) -> T {
        f(&mut self.rng.lock().unwrap_or_else(|p| p.into_inner()))
    }

    fn with_slot<T>(&self, persona_id: &str, f: impl FnOnce(&mut Slot) -> T) -> Option<T> {
        self.lock().slots.iter_mut().find(|s| s.info.id == persona_id).map(f)
    }
}

/// Announces a status change to everyone (under the runtime's lock, so announcements of one
/// persona never cross).
fn set_status(hub: &crate::hub::Hub, slot: &mut Slot, status: PersonaState) {
    if slot.status == status {
        return;
    }
    let now = now_rfc3339();
    slot.status = status;
    slot.last_seen = Some(now.clone());
    hub.send_to_all(
        &ServerFrame::PersonaStatus {
            persona_id: slot.info.id.clone(),
            status,
            last_seen: Some(now.clone()),
            timestamp: now,
        },
        None,
    );
}

/// Looks at each stored user message in the order they came and queues the replies due.
async fn dispatcher(app: Weak<Shared>, mut rx: mpsc::UnboundedReceiver<Trigger>) {
    while let Some(trigger) = rx.recv().await {
        let Some(app) = app.upgrade() else { return };
        let runtime = &app.personas;
        let Some(direct) = runtime.kind_of(&app, &trigger.conversation_id).await else { continue };
        let targets = match direct {
            // A direct conversation: its persona answers everything.
            Some(persona_id) => vec![persona_id],
            // A room: the persona asked for, and those mentioned, member or not.
            None => addressed(&runtime.personas(), trigger.persona_id.as_deref(), &trigger.message.content),
        };
        for persona_id in targets {
            let job = Job { conversation_id: trigger.conversation_id.clone(), trigger: trigger.message.clone() };
            runtime.enqueue(&app, &persona_id, job);
        }
    }
}

/// Answers a persona's queue one reply at a time.
async fn worker(app: AppState, persona_id: String) {
    loop {
        let next = app.personas.with_slot(&persona_id, |slot| match slot.next_job() {
            Some(job) => {
                set_status(&app.hub, slot, PersonaState::Busy);
                Some((slot.info.clone(), job))
            }
            None => {
                slot.working = false;
                set_status(&app.hub, slot, PersonaState::Online);
                None
            }
        });
        let Some(Some((persona, job))) = next else { return };
        // At most --persona-llm-concurrency replies are written at once, across personas.
        let Ok(_writer) = app.personas.writers.clone().acquire_owned().await else { return };
        // In a task of its own, so a panic costs one reply, not the persona.
        if let Err(e) = tokio::spawn(reply(app.clone(), persona.clone(), job)).await {
            tracing::error!("a reply of {} failed: {e}", persona.name);
        }
    }
}

/// Waits for the first piece with some text (skipping blank ones). None: the responder failed
/// or had nothing to say, or the server is stopping.
async fn first_words(
    chunks: &mut Chunks,
    persona: &PersonaInfo,
    responder: &dyn Responder,
    app: &AppState,
) -> Option<String> {
    let mut shutdown = app.shutdown.clone();
    loop {
        tokio::select! {
            item = chunks.recv() => match item {
                Some(Ok(text)) if text.trim().is_empty() => continue,
                Some(Ok(text)) => return Some(text),
                Some(Err(e)) => {
                    tracing::warn!("the {} responder failed to answer as {}: {e}", responder.name(), persona.name);
                    return None;
                }
                None => {
                    tracing::warn!("the {} responder had nothing to say as {}", responder.name(), persona.name);
                    return None;
                }
            },
            _ = shutdown.wait_for(|stopping| *stopping) => return None,
        }
    }
}

/// Why streaming stopped.
#[derive(PartialEq)]
enum End {
    Complete,
    /// stop_response, the server stopping, or the responder failing midway.
    Interrupted,
}

/// Streams one reply and stores it.
async fn reply(app: AppState, persona: PersonaInfo, job: Job) {
    let runtime = &app.personas;
    let conversation_id = job.conversation_id.clone();
    let history = {
        let (id, before) = (conversation_id.clone(), job.trigger.seq + 1);
        match app.db(move |store, _| store.messages(&id, None, Some(before), CONTEXT_MESSAGES)).await {
            Ok((messages, _)) if !messages.is_empty() => messages,
            Ok(_) => vec![job.trigger.clone()],
            Err(e) => {
                tracing::warn!("cannot read the context of conversation {conversation_id}: {e}");
                vec![job.trigger.clone()]
            }
        }
    };
    let request = ReplyRequest {
        persona: persona.clone(),
        conversation_id: conversation_id.clone(),
        history,
        trigger: job.trigger,
    };

    // Busy until the first words.
    let mut chunks = runtime.responder.respond(request.clone());
    let mut first = first_words(&mut chunks, &persona, runtime.responder.as_ref(), &app).await;
    if first.is_none() && !*app.shutdown.borrow() {
        if let Some(fallback) = &runtime.fallback {
            chunks = fallback.respond(request);
            first = first_words(&mut chunks, &persona, fallback.as_ref(), &app).await;
        }
    }
    let Some(first) = first else { return };

    let message_id = crate::store::new_id();
    let stop = Arc::new(Notify::new());
    runtime.with_slot(&persona.id, |slot| set_status(&app.hub, slot, PersonaState::Responding));
    let hub = &app.hub;
    runtime.stream_start(hub, &conversation_id, &message_id, &persona.id, stop.clone());

    let mut shutdown = app.shutdown.clone();
    let mut pending: VecDeque<String> = VecDeque::from([first]);
    let mut finished = false; // the responder has no more
    let mut failed = false;
    let mut sent = String::new();
    let mut offset: u64 = 0;
    let mut draft_saved: Option<std::time::Instant> = None;
    let end = 'stream: loop {
        // A few pieces per delta.
        let want = runtime.random(|rng| rng.gen_range(1..=3usize));
        while pending.len() < want && !finished {
            if pending.is_empty() {
                tokio::select! {
                    biased;
                    _ = stop.notified() => break 'stream End::Interrupted,
                    _ = shutdown.wait_for(|stopping| *stopping) => break 'stream End::Interrupted,
                    item = chunks.recv() => match item {
                        Some(Ok(text)) => pending.push_back(text),
                        Some(Err(e)) => {
                            tracing::warn!("the {} responder failed midway as {}: {e}", runtime.responder.name(), persona.name);
                            (finished, failed) = (true, true);
                        }
                        None => finished = true,
                    },
                }
            } else {
                match chunks.try_recv() {
                    Ok(Ok(text)) => pending.push_back(text),
                    Ok(Err(e)) => {
                        tracing::warn!(
                            "the {} responder failed midway as {}: {e}",
                            runtime.responder.name(),
                            persona.name
                        );
                        (finished, failed) = (true, true);
                    }
                    Err(mpsc::error::TryRecvError::Empty) => break,
                    Err(mpsc::error::TryRecvError::Disconnected) => finished = true,
                }
            }
        }
        if pending.is_empty() {
            break if failed { End::Interrupted } else { End::Complete };
        }
        let take = want.min(pending.len());
        let mut text: String = pending.drain(..take).collect();
        // A message holds at most MAX_CONTENT_CHARS: a longer reply ends there.
        let room = MAX_CONTENT_CHARS.saturating_sub(offset as usize);
        if text.chars().count() >= room {
            text = text.chars().take(room).collect();
            (finished, failed) = (true, false);
            pending.clear();
        }
        if !text.is_empty() {
            runtime.stream_delta(hub, &message_id, &text);
            offset += text.chars().count() as u64;
            sent.push_str(&text);
            // The text so far survives a crash: saved at most once per DRAFT_EVERY.
            if draft_saved.is_none_or(|at: std::time::Instant| at.elapsed() >= DRAFT_EVERY) {
                draft_saved = Some(std::time::Instant::now());
                let (mid, cid, pid, text) =
                    (message_id.clone(), conversation_id.clone(), persona.id.clone(), sent.clone());
                if let Err(e) = app.db(move |store, _| store.save_draft(&mid, &cid, &pid, &text)).await {
                    tracing::warn!("cannot save the draft of reply {message_id}: {e}");
                }
            }
        }
        if finished && pending.is_empty() {
            break if failed { End::Interrupted } else { End::Complete };
        }
        let pause = runtime.random(|rng| pace(runtime.pace, rng));
        tokio::select! {
            biased;
            _ = stop.notified() => break End::Interrupted,
            _ = shutdown.wait_for(|stopping| *stopping) => break End::Interrupted,
            _ = tokio::time::sleep(pause), if !pause.is_zero() => {}
            _ = tokio::task::yield_now(), if pause.is_zero() => {}
        }
    };
    // Dropping the pieces stops the responder (and closes its HTTP stream).
    drop(chunks);

    let interrupted = end == End::Interrupted;
    let content = if sent.trim().is_empty() { EMPTY_INTERRUPTED.to_owned() } else { sent };
    let sender = User { id: persona.id.clone(), username: persona.name.clone() };
    let (id, mid, persona_id) = (conversation_id.clone(), message_id.clone(), persona.id.clone());
    let stored = app
        .db(move |store, shared| {
            // The message id doubles as the client_id: unique per sender.
            let mut message = match store.insert_message_with_id(&id, &sender, &mid, &content, true, &mid)? {
                Inserted::New(m) | Inserted::Duplicate(m) => m,
                Inserted::ClientIdTaken => return Err(crate::store::StoreError::NotFound),
            };
            if interrupted {
                store.mark_interrupted(&message.id)?;
                message.interrupted = true;
            }
            crate::metrics::inc(&shared.metrics.messages_stored);
            let members = store.user_members(&id)?;
            crate::fanout::publish_message(store, shared, &id, &message, &members)?;
            shared.personas.finish(&mid);
            store.delete_draft(&mid)?;
            store.set_persona_last_seen(&persona_id, &message.timestamp)?;
            Ok(message)
        })
        .await;
    match stored {
        Ok(message) => hub.send_to_joined(
            &conversation_id,
            &ServerFrame::StreamEnd {
                conversation_id: conversation_id.clone(),
                message_id: message_id.clone(),
                interrupted,
                message,
            },
            None,
        ),
        Err(e) => tracing::error!("cannot store the reply of {} in {conversation_id}: {e}", persona.name),
    }
    runtime.finish(&message_id);
}

/// The pause before the next delta: the configured pace, give or take a third.
fn pace(base: Duration, rng: &mut StdRng) -> Duration {
    if base.is_zero() {
        return base;
    }
    base.mul_f64(rng.gen_range(0.67..1.33))
}
