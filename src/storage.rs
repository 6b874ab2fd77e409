//! Small persisted values in browser storage.
//!
//! The session is kept twice, under a key naming its server: in sessionStorage, so a tab keeps
//! its own user across reloads even when another tab signs in as someone else, and in
//! localStorage, so a new tab starts signed in as whoever signed in last.

use persona_chat_protocol::http::SessionResponse;

const SESSION_PREFIX: &str = "persona-chat.session@";

/// The storage key of the session for one server: a session is only ever read back for the
/// server that issued it, so its token never goes to another.
pub fn session_key(base: &str) -> String {
    format!("{SESSION_PREFIX}{base}")
}

fn local() -> Option<web_sys::Storage> {
    web_sys::window()?.local_storage().ok()?
}

fn per_tab() -> Option<web_sys::Storage> {
    web_sys::window()?.session_storage().ok()?
}

fn read(storage: Option<web_sys::Storage>, key: &str) -> Option<String> {
    storage?.get_item(key).ok()?
}

/// The session this tab uses with `base`: its own, else the one signed in last in any tab.
pub fn load_session(base: &str) -> Option<SessionResponse> {
    let key = session_key(base);
    let text = read(per_tab(), &key).or_else(|| read(local(), &key))?;
    serde_json::from_str(&text).ok()
}

/// The session the other tabs hold for `base` (localStorage), if any.
pub fn shared_session(base: &str) -> Option<SessionResponse> {
    serde_json::from_str(&read(local(), &session_key(base))?).ok()
}

pub fn save_session(base: &str, session: &SessionResponse) {
    let Ok(text) = serde_json::to_string(session) else { return };
    for storage in [per_tab(), local()].into_iter().flatten() {
        let _ = storage.set_item(&session_key(base), &text);
    }
}

/// A refreshed token of this tab's session: kept for the tab, and for new tabs when the
/// shared copy is the same user's.
pub fn update_session(base: &str, session: &SessionResponse) {
    let Ok(text) = serde_json::to_string(session) else { return };
    let key = session_key(base);
    if let Some(storage) = per_tab() {
        let _ = storage.set_item(&key, &text);
    }
    if shared_session(base).is_some_and(|s| s.user.id == session.user.id) {
        if let Some(storage) = local() {
            let _ = storage.set_item(&key, &text);
        }
    }
}

/// Forgets this tab's session with `base`, and the shared copy when it is the same user's.
pub fn clear_session(base: &str) {
    let key = session_key(base);
    let user_of =
        |text: Option<String>| text.and_then(|t| serde_json::from_str::<SessionResponse>(&t).ok()).map(|s| s.user.id);
    let mine = user_of(read(per_tab(), &key));
    if let Some(storage) = per_tab() {
        let _ = storage.remove_item(&key);
        let _ = storage.remove_item(ACTIVE_KEY);
    }
    if let Some(storage) = local() {
        let shared = user_of(read(Some(storage.clone()), &key));
        if mine.is_none() || shared == mine {
            let _ = storage.remove_item(&key);
        }
        let _ = storage.remove_item(ACTIVE_KEY);
    }
    // Sessions stored by older builds, under one key for every server.
    for storage in [per_tab(), local()].into_iter().flatten() {
        let _ = storage.remove_item("persona-chat.session");
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

pub fn forget_server() {
    if let Some(storage) = per_tab() {
        let _ = storage.remove_item(SERVER_KEY);
    }
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
