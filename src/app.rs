//! The root: provides the contexts and a clock, restores the session and routes.

use leptos::prelude::*;
use leptos_router::components::{ProtectedRoute, Route, Router, Routes};
use leptos_router::path;
use wasm_bindgen::closure::Closure;
use wasm_bindgen::JsCast;

use crate::clock::Clock;
use crate::pages::chat::ChatPage;
use crate::pages::diagnostics::DiagnosticsPage;
use crate::pages::login::LoginPage;
use crate::state::Engine;

#[component]
pub fn App() -> impl IntoView {
    let server = crate::config::server_choice();
    let ctx = crate::state::contexts::provide(server.base);
    let clock = Clock(RwSignal::new(js_sys::Date::now()));
    provide_context(clock);
    let ticker = gloo_timers::callback::Interval::new(1000, move || clock.0.set(js_sys::Date::now()));
    // Ticks for the page's lifetime, like the app.
    ticker.forget();
    crate::session::start(ctx, server.refused);
    // The unread total in the title (seen from other tabs and the task bar).
    Effect::new(move |_| {
        let unread = ctx.chat.with(|c| c.unread_total());
        if let Some(doc) = web_sys::window().and_then(|w| w.document()) {
            doc.set_title(&crate::notify::title_for(unread));
        }
    });
    listen_visibility(ctx);
    install_state_hook(ctx);
    // The pages but the sign-in page need a session: without one (never signed in, signed out
    // here or in another tab, the session refused) they go to /login. A memo, so a refreshed
    // token (a new session value) does not build the page again.
    let signed_in = Memo::new(move |_| ctx.session.with(Option::is_some));
    let signed_in = move || Some(signed_in.get());
    view! {
        <Router>
            <Routes fallback=|| view! { <p class="notice">"Page not found." <a href="/">"Back to the chats"</a></p> }>
                <ProtectedRoute path=path!("/") view=ChatPage condition=signed_in redirect_path=|| "/login" />
                <ProtectedRoute path=path!("/c/:id") view=ChatPage condition=signed_in redirect_path=|| "/login" />
                <ProtectedRoute
                    path=path!("/diagnostics")
                    view=DiagnosticsPage
                    condition=signed_in
                    redirect_path=|| "/login"
                />
                <Route path=path!("/login") view=LoginPage />
            </Routes>
        </Router>
    }
}

/// While the tab is hidden nothing counts as read (and new messages notify).
fn listen_visibility(ctx: Engine) {
    let Some(doc) = web_sys::window().and_then(|w| w.document()) else { return };
    let d = doc.clone();
    let closure = Closure::<dyn FnMut()>::new(move || ctx.visibility_changed(d.hidden()));
    let _ = doc.add_event_listener_with_callback("visibilitychange", closure.as_ref().unchecked_ref());
    // For the page's lifetime, like the app.
    closure.forget();
}

/// `window.personaChatState()`: what this tab holds, as JSON, for end-to-end checks and for
/// looking at from devtools. Read-only.
fn install_state_hook(ctx: Engine) {
    let Some(window) = web_sys::window() else { return };
    let hook = Closure::<dyn Fn() -> String>::new(move || ctx.snapshot_json());
    let _ = js_sys::Reflect::set(&window, &"personaChatState".into(), hook.as_ref());
    hook.forget();
}
