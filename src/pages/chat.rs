//! The chat screen: the open conversation, its messages and the composer.

use leptos::prelude::*;
use leptos_router::hooks::use_navigate;

use crate::components::composer::Composer;
use crate::components::connection_status::ConnectionStatus;
use crate::components::message_list::MessageList;
use crate::components::typing_indicator::TypingIndicator;
use crate::state::SocketContext;

#[component]
pub fn ChatPage() -> impl IntoView {
    let ctx = SocketContext::expect();
    let navigate = use_navigate();
    // Not signed in: go to the sign-in page.
    Effect::new(move |_| {
        if ctx.session.with(Option::is_none) {
            navigate("/login", Default::default());
        }
    });
    let active: Signal<Option<String>> = ctx.active.into();
    let title = Memo::new(move |_| {
        let id = active.get();
        ctx.chat.with(|c| c.conversations.iter().find(|x| Some(&x.id) == id.as_ref()).map(|x| x.title.clone()))
    });
    let me = Memo::new(move |_| ctx.chat.with(|c| c.me.as_ref().map(|u| u.username.clone())));
    // Who is online is only known on a socket (pollers are not counted as present yet).
    let online = Memo::new(move |_| {
        matches!(ctx.status.get(), crate::socket::LinkState::Connected { .. }).then(|| ctx.chat.with(|c| c.online.len()))
    });
    let sign_out = move |_| {
        crate::storage::clear_session();
        ctx.close_session();
    };
    view! {
        <div class="shell">
            <header class="topbar">
                <span class="brand">"persona-chat"</span>
                <ConnectionStatus />
                <span class="spacer"></span>
                <span class="whoami">{move || me.get().map(|m| format!("Signed in as {m}"))}</span>
                <button class="link" on:click=sign_out>"Sign out"</button>
            </header>
            <main class="chat">
                <header class="chat-header">
                    <h2>{move || title.get().unwrap_or_else(|| "Loading…".into())}</h2>
                    <span class="online-count">{move || online.get().map(|n| format!("{n} online"))}</span>
                </header>
                {move || ctx.notice.get().map(|n| view! { <p class="notice" role="alert">{n}</p> })}
                <MessageList conversation_id=active />
                <TypingIndicator conversation_id=active />
                <Composer conversation_id=active />
            </main>
        </div>
    }
}
