//! Small persisted values in browser storage.
//!
//! The session is kept twice: in sessionStorage, so a tab keeps its own user across reloads
//! even when another tab signs in as someone else, and in localStorage, so a new tab starts
//! signed in as whoever signed in last.

use persona_chat_protocol::http::SessionResponse;

const SESSION_KEY: &str = "persona-chat.session";

fn local() -> Option<web_sys::Storage> {
    web_sys::window()?.local_storage().ok()?
}

fn per_tab() -> Option<web_sys::Storage> {
    web_sys::window()?.session_storage().ok()?
}

fn read(storage: Option<web_sys::Storage>, key: &str) -> Option<String> {
    storage?.get_item(key).ok()?
}

pub fn load_session() -> Option<SessionResponse> {
    let text = read(per_tab(), SESSION_KEY).or_else(|| read(local(), SESSION_KEY))?;
    serde_json::from_str(&text).ok()
}

pub fn save_session(session: &SessionResponse) {
    let Ok(text) = serde_json::to_string(session) else { return };
    for storage in [per_tab(), local()].into_iter().flatten() {
        let _ = storage.set_item(SESSION_KEY, &text);
    }
}

pub fn clear_session() {
    for storage in [per_tab(), local()].into_iter().flatten() {
        let _ = storage.remove_item(SESSION_KEY);
        let _ = storage.remove_item(ACTIVE_KEY);
    }
}

const ACTIVE_KEY: &str = "persona-chat.active";

/// The conversation this tab had open, kept across reloads.
pub fn save_active(conversation_id: &str) {
    for storage in [per_tab(), local()].into_iter().flatten() {
        let _ = storage.set_item(ACTIVE_KEY, conversation_id);
    }
}

pub fn load_active() -> Option<String> {
    read(per_tab(), ACTIVE_KEY).or_else(|| read(local(), ACTIVE_KEY))
}

const SERVER_KEY: &str = "persona-chat.server";

/// A `?server=` override, remembered for this tab so it survives navigation and reloads.
pub fn remember_server(base: &str) {
    if let Some(storage) = per_tab() {
        let _ = storage.set_item(SERVER_KEY, base);
    }
}

pub fn remembered_server() -> Option<String> {
    read(per_tab(), SERVER_KEY)
}

/// The user's unacknowledged messages (the outbox as JSON), kept across reloads.
pub fn save_outbox(key: &str, json: &str) {
    if let Some(storage) = local() {
        let _ = storage.set_item(key, json);
    }
}

pub fn load_outbox(key: &str) -> Option<String> {
    read(local(), key)
}

fn draft_key(user_id: &str, conversation_id: &str) -> String {
    format!("persona-chat.draft.{user_id}.{conversation_id}")
}

/// The unsent text of a conversation, kept across switching and reloads (empty removes it).
pub fn save_draft(user_id: &str, conversation_id: &str, text: &str) {
    let Some(storage) = local() else { return };
    let key = draft_key(user_id, conversation_id);
    let _ = if text.is_empty() { storage.remove_item(&key) } else { storage.set_item(&key, text) };
}

pub fn load_draft(user_id: &str, conversation_id: &str) -> String {
    read(local(), &draft_key(user_id, conversation_id)).unwrap_or_default()
}
