//! The main screen: the conversation list on the left, the open conversation on the right;
//! on narrow screens one of them at a time (the route says which).

use leptos::prelude::*;
use leptos::task::spawn_local;
use leptos_router::hooks::{use_navigate, use_params_map};
use persona_chat_protocol::http::ConversationKind;

use crate::clock::Clock;
use crate::components::avatar::{status_line, Avatar};
use crate::components::composer::Composer;
use crate::components::connection_status::{ConnectionStatus, Toast};
use crate::components::conversation_list::{online_in, ConversationList, OnlineStrip};
use crate::components::icons::{Icon, BACK, GAUGE, PLUS, USERS};
use crate::components::members::MembersPanel;
use crate::components::message_list::MessageList;
use crate::components::new_conversation::NewConversationDialog;
use crate::components::typing_indicator::TypingIndicator;
use crate::state::contexts::{ChatCtx, ConnectionCtx, SessionCtx};

#[component]
pub fn ChatPage() -> impl IntoView {
    let ctx = ChatCtx::expect();
    let session = SessionCtx::expect();
    let navigate = use_navigate();
    let params = use_params_map();
    let route_id = Memo::new(move |_| params.with(|p| p.get("id")));
    // The route names the conversation: open it (reload keeps you where you were).
    Effect::new(move |_| {
        if let Some(id) = route_id.get() {
            if session.session.with_untracked(Option::is_some) {
                ctx.open_conversation(id);
            }
        }
    });
    // The open conversation left the list (left here or elsewhere, or removed): back to the list.
    Effect::new(move |_| {
        if let Some((_, id)) = ctx.closed.get() {
            if route_id.get_untracked().as_deref() == Some(id.as_str()) {
                navigate("/", Default::default());
            }
        }
    });
    let selected = Memo::new(move |_| route_id.get().or_else(|| ctx.active.get()));
    let dialog = RwSignal::new(false);
    view! {
        <div class="shell" data-pane=move || if route_id.with(Option::is_some) { "chat" } else { "list" }>
            <TopBar />
            <div class="panes">
                <aside class="sidebar">
                    <div class="sidebar-header">
                        <h2>"Chats"</h2>
                        <button class="icon-button" on:click=move |_| dialog.set(true) aria-label="New conversation" title="New conversation">
                            <Icon svg=PLUS /><span class="button-text">"New"</span>
                        </button>
                    </div>
                    // With no conversation open (one just left the list), notices show here.
                    {move || selected.with(Option::is_none).then(|| ctx.notice.get().map(|n| view! {
                        <p class="notice" role="alert">{n}<button class="link" on:click=move |_| ctx.notice.set(None)>"Dismiss"</button></p>
                    }))}
                    <ConversationList selected=selected />
                    <OnlineStrip />
                </aside>
                <main class="chat-pane">
                    {move || match selected.get() {
                        Some(id) => view! { <ChatView conversation_id=id /> }.into_any(),
                        None => view! { <p class="empty-chat">"Pick a conversation, or start a new one."</p> }.into_any(),
                    }}
                </main>
            </div>
            <Toast />
            {move || dialog.get().then(|| view! { <NewConversationDialog on_close=Callback::new(move |_| dialog.set(false)) /> })}
        </div>
    }
}

#[component]
fn TopBar() -> impl IntoView {
    let ctx = ChatCtx::expect();
    let session = SessionCtx::expect();
    let me = Memo::new(move |_| ctx.chat.with(|c| c.me.as_ref().map(|u| u.username.clone())));
    let can_ask = RwSignal::new(crate::notify::can_ask());
    let ask = move |_| {
        spawn_local(async move {
            let allowed = crate::notify::ask().await;
            ctx.notify.set(allowed);
            can_ask.set(crate::notify::can_ask());
        });
    };
    view! {
        <header class="topbar">
            <a class="brand" href="/">"persona-chat"</a>
            <ConnectionStatus />
            <span class="spacer"></span>
            {move || can_ask.get().then(|| view! { <button class="link hide-narrow enable-notifications" on:click=ask>"Enable notifications"</button> })}
            <a class="icon-button" href="/diagnostics" aria-label="Diagnostics" title="Diagnostics"><Icon svg=GAUGE /></a>
            <span class="whoami hide-narrow">{move || me.get().map(|m| format!("Signed in as {m}"))}</span>
            <button class="link" id="sign-out" on:click=move |_| session.sign_out(false)>"Sign out"</button>
            <button class="link hide-narrow" id="sign-out-everywhere" title="End every session of this account, on every device"
                on:click=move |_| session.sign_out(true)>"Sign out everywhere"</button>
        </header>
    }
}

#[component]
fn ChatView(conversation_id: String) -> impl IntoView {
    let ctx = ChatCtx::expect();
    let connection = ConnectionCtx::expect();
    let clock = Clock::expect();
    let id = conversation_id.clone();
    let summary = {
        let id = id.clone();
        Memo::new(move |_| ctx.chat.with(|c| c.conversation(&id).cloned()))
    };
    let persona = {
        let id = id.clone();
        Memo::new(move |_| ctx.chat.with(|c| c.persona_status_of(&id)))
    };
    let online = {
        let id = id.clone();
        Memo::new(move |_| online_in(&ctx, &connection, &id))
    };
    let members_count = {
        let id = id.clone();
        Memo::new(move |_| ctx.chat.with(|c| c.members.get(&id).map(Vec::len)))
    };
    let show_members = RwSignal::new(false);
    let conversation = Signal::derive({
        let id = id.clone();
        move || Some(id.clone())
    });
    let title = Memo::new(move |_| summary.with(|s| s.as_ref().map(|s| s.title.clone())));
    let subtitle = move || {
        if let Some((status, last_seen)) = persona.get() {
            return status_line(status, last_seen.as_deref(), clock.0.get() as i64);
        }
        let lobby = title.with(|t| t.as_deref() == Some("Lobby"));
        let members = members_count.get().filter(|_| !lobby).map(|n| {
            if n == 1 {
                "1 member".to_owned()
            } else {
                format!("{n} members")
            }
        });
        let online = online.get().map(|n| format!("{n} online"));
        [online, members].into_iter().flatten().collect::<Vec<_>>().join(" · ")
    };
    let is_room = Memo::new(move |_| summary.with(|s| s.as_ref().is_some_and(|s| s.kind == ConversationKind::Room)));
    let badge = Signal::derive(move || persona.get().map(|(s, _)| s));
    let panel_id = id.clone();
    // Rooms can be left, but not the Lobby (everyone is in it) nor direct conversations.
    let can_leave = Memo::new(move |_| is_room.get() && title.with(|t| t.as_deref() != Some("Lobby")));
    let confirming = RwSignal::new(false);
    let leave_id = StoredValue::new(id.clone());
    view! {
        <section class="chat" aria-labelledby="chat-title">
            <header class="chat-header">
                <a class="icon-button back" href="/" aria-label="Back to the conversations"><Icon svg=BACK /></a>
                {move || title.get().map(|t| view! { <Avatar name=t room=is_room.get() status=badge large=true /> })}
                <div class="chat-title">
                    <h1 id="chat-title">{move || title.get().unwrap_or_else(|| "Loading…".into())}</h1>
                    <span class="chat-subtitle online-count">{subtitle}</span>
                </div>
                <span class="spacer"></span>
                {move || is_room.get().then(|| view! {
                    <button class="icon-button" aria-expanded=move || show_members.get().to_string() on:click=move |_| show_members.update(|v| *v = !*v)>
                        <Icon svg=USERS /><span class="button-text">"Members"</span>
                    </button>
                })}
                {move || can_leave.get().then(|| if confirming.get() {
                    view! {
                        <span class="leave-confirm" role="group" aria-label="Leave this room?">
                            <span class="leave-question">"Leave this room?"</span>
                            <button class="icon-button" data-action="leave-confirm" on:click=move |_| { confirming.set(false); ctx.leave(leave_id.get_value()); }>"Leave"</button>
                            <button class="link" on:click=move |_| confirming.set(false)>"Cancel"</button>
                        </span>
                    }.into_any()
                } else {
                    view! {
                        <button class="icon-button leave" data-action="leave" title="Leave this room" on:click=move |_| confirming.set(true)>
                            <span>"Leave"</span>
                        </button>
                    }.into_any()
                })}
            </header>
            {move || ctx.notice.get().map(|n| view! { <p class="notice" role="alert">{n}<button class="link" on:click=move |_| ctx.notice.set(None)>"Dismiss"</button></p> })}
            <div class="chat-body">
                <div class="chat-main">
                    <MessageList conversation_id=conversation />
                    <TypingIndicator conversation_id=conversation />
                    <Composer conversation_id=conversation />
                </div>
                {move || show_members.get().then(|| view! { <MembersPanel conversation_id=panel_id.clone() on_close=Callback::new(move |_| show_members.set(false)) /> })}
            </div>
        </section>
    }
}
