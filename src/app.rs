//! The root: provides the SocketContext, restores the session and routes.

use leptos::prelude::*;
use leptos_router::components::{Route, Router, Routes};
use leptos_router::path;

use crate::pages::chat::ChatPage;
use crate::pages::login::LoginPage;
use crate::state::SocketContext;

#[component]
pub fn App() -> impl IntoView {
    let ctx = SocketContext::new(crate::config::server_base());
    provide_context(ctx);
    if let Some(session) = crate::storage::load_session() {
        ctx.open_session(session);
    }
    view! {
        <Router>
            <Routes fallback=|| view! { <p class="notice">"Page not found."</p> }>
                <Route path=path!("/") view=ChatPage />
                <Route path=path!("/login") view=LoginPage />
            </Routes>
        </Router>
    }
}
