//! The session's life in the browser: restored per server at start, kept fresh before its
//! token expires, ended in every tab when one tab signs out, and ended when the server
//! refuses the token (revoked, expired, signed out elsewhere).

use std::cell::{Cell, RefCell};

use leptos::prelude::*;
use leptos::task::spawn_local;
use persona_chat_protocol::http::SessionResponse;
use wasm_bindgen::closure::Closure;
use wasm_bindgen::JsCast;

use crate::api;
use crate::state::Engine;

/// What the sign-in page tells the user about how they got there.
#[derive(Clone, Copy)]
pub struct SessionNotice {
    /// Why the last session ended ("You signed out in another tab." and the like).
    pub ended: RwSignal<Option<String>>,
    /// A `?server=` link naming a server this app may not use.
    pub refused_server: RwSignal<Option<String>>,
}

impl SessionNotice {
    pub fn expect() -> Self {
        expect_context::<SessionNotice>()
    }
}

thread_local! {
    static REFRESH_TIMER: RefCell<Option<gloo_timers::callback::Timeout>> = const { RefCell::new(None) };
    static REFRESHING: Cell<bool> = const { Cell::new(false) };
}

/// Seconds from now to refresh a token that expires in `remaining_s`: well before it expires
/// (two minutes, or half its remaining life when shorter), never sooner than 1 s. None for a
/// token without an expiry (`expires_at` 0: an older server).
pub fn refresh_delay_s(now_s: f64, expires_at_s: i64) -> Option<f64> {
    if expires_at_s <= 0 {
        return None;
    }
    let remaining = expires_at_s as f64 - now_s;
    Some((remaining - (remaining / 2.0).min(120.0)).max(1.0))
}

/// Restores the session this tab had with its server, and watches the other tabs and the
/// server for its end. Called once, by the app's root.
pub fn start(ctx: Engine, refused_server: Option<String>) -> SessionNotice {
    let notice = SessionNotice { ended: RwSignal::new(None), refused_server: RwSignal::new(refused_server) };
    provide_context(notice);
    api::on_token_refused(move || token_refused(ctx, notice));
    listen_to_other_tabs(ctx, notice);
    if let Some(session) = crate::storage::load_session(&ctx.base()) {
        begin(ctx, session);
    }
    notice
}

/// A session from signing in or up (or restored): stored for this server, connected, and
/// refreshed before it expires.
pub fn begin(ctx: Engine, session: SessionResponse) {
    crate::storage::save_session(&ctx.base(), &session);
    schedule_refresh(ctx, session.expires_at);
    ctx.open_session(session);
}

/// Signs out on the server (`everywhere`: every device and tab of this user), then here. The
/// other tabs hear it from storage and from the server closing their sockets.
pub fn sign_out(ctx: Engine, everywhere: bool) {
    let token = ctx.token();
    let base = ctx.base();
    // What was never sent goes with the session: nobody else signing in here sends it.
    if let Some(user_id) = ctx.session.with_untracked(|s| s.as_ref().map(|s| s.user.id.clone())) {
        crate::socket::shared_outbox::store::clear_all(&user_id);
    }
    end_here(ctx);
    if let Some(token) = token {
        spawn_local(async move {
            if let Err(e) = api::sign_out(&base, &token, everywhere).await {
                // The token is forgotten here either way; it expires by itself.
                leptos::logging::warn!("sign-out did not reach the server: {e}");
            }
        });
    }
}

/// Forgets the session in this tab and its stored copy.
fn end_here(ctx: Engine) {
    REFRESH_TIMER.with(|t| t.borrow_mut().take());
    crate::storage::clear_session(&ctx.base());
    ctx.close_session();
}

fn schedule_refresh(ctx: Engine, expires_at: i64) {
    let timer = refresh_delay_s(js_sys::Date::now() / 1000.0, expires_at).map(|delay| {
        gloo_timers::callback::Timeout::new((delay * 1000.0).min(2_147_483_647.0) as u32, move || refresh(ctx, None))
    });
    REFRESH_TIMER.with(|t| *t.borrow_mut() = timer);
}

/// Trades the session's refresh token for a fresh token of the same session. If the server
/// refuses, the session is over: back to the sign-in page, with `ended`'s words said there.
fn refresh(ctx: Engine, ended: Option<(SessionNotice, &'static str)>) {
    let Some(session) = ctx.session.get_untracked() else { return };
    let token = session.token.clone();
    if REFRESHING.with(|r| r.replace(true)) {
        return;
    }
    let base = ctx.base();
    spawn_local(async move {
        let answer = api::refresh_session(&base, &session).await;
        REFRESHING.with(|r| r.set(false));
        if ctx.token().as_deref() != Some(token.as_str()) {
            return; // signed out or in again meanwhile
        }
        match answer {
            Ok(session) => {
                crate::storage::update_session(&base, &session);
                schedule_refresh(ctx, session.expires_at);
                ctx.replace_token(session);
            }
            Err(e) if e.status == 401 || e.status == 403 => {
                if let Some((notice, why)) = ended {
                    notice.ended.set(Some(why.to_owned()));
                }
                end_here(ctx);
            }
            // Unreachable or busy: try again shortly (the token may still be good).
            Err(_) => REFRESH_TIMER.with(|t| {
                *t.borrow_mut() = Some(gloo_timers::callback::Timeout::new(5_000, move || refresh(ctx, None)));
            }),
        }
    });
}

/// The server refused the token: a refresh tells whether the session still lives (the token
/// only expired) or has ended (signed out, revoked).
fn token_refused(ctx: Engine, notice: SessionNotice) {
    refresh(ctx, Some((notice, "Your session has ended. Please sign in again.")));
}

/// Another tab signed out (its session removed from localStorage): so does this one, when it
/// was the same user's session.
fn listen_to_other_tabs(ctx: Engine, notice: SessionNotice) {
    let Some(window) = web_sys::window() else { return };
    let closure = Closure::<dyn FnMut(web_sys::StorageEvent)>::new(move |ev: web_sys::StorageEvent| {
        if ev.key().as_deref() != Some(crate::storage::session_key(&ctx.base()).as_str()) || ev.new_value().is_some() {
            return;
        }
        let removed_user =
            ev.old_value().and_then(|t| serde_json::from_str::<SessionResponse>(&t).ok()).map(|s| s.user.id);
        let my_user = ctx.session.with_untracked(|s| s.as_ref().map(|s| s.user.id.clone()));
        if my_user.is_some() && removed_user == my_user {
            notice.ended.set(Some("You signed out in another tab.".to_owned()));
            end_here(ctx);
        }
    });
    let _ = window.add_event_listener_with_callback("storage", closure.as_ref().unchecked_ref());
    // For the page's lifetime, like the app.
    closure.forget();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refreshes_well_before_expiry_and_never_in_a_tight_loop() {
        // A 15-minute token: two minutes before it expires.
        assert_eq!(refresh_delay_s(1000.0, 1900), Some(780.0));
        // A short one: halfway.
        assert_eq!(refresh_delay_s(1000.0, 1020), Some(10.0));
        // Already expired (a tab that slept): at once, but not in a loop.
        assert_eq!(refresh_delay_s(1000.0, 900), Some(1.0));
        // No expiry given.
        assert_eq!(refresh_delay_s(1000.0, 0), None);
    }
}
