//! Browser tests: components mounted into a real DOM in headless Chromium, one state at a
//! time: the connection bar per state, the badge per status, the typing line for 1, 2, 3 and 5
//! typists, and messages pending, sent, failed (with Retry), streaming and notices.
#![cfg(target_arch = "wasm32")]

use leptos::prelude::*;
use persona_chat::clock::Clock;
use persona_chat::components::avatar::Avatar;
use persona_chat::components::connection_status::ConnectionStatus;
use persona_chat::components::message_list::MessageList;
use persona_chat::components::typing_indicator::TypingIndicator;
use persona_chat::socket::{now_ms, LinkState};
use persona_chat::state::Engine;
use persona_chat_protocol::{Message, PersonaState, ServerFrame, User};
use wasm_bindgen::JsCast;
use wasm_bindgen_test::*;

wasm_bindgen_test_configure!(run_in_browser);

/// The app's real stylesheet, so that computed styles are the app's.
const CSS: &str = include_str!("../style/main.css");

fn container() -> web_sys::HtmlElement {
    let document = web_sys::window().unwrap().document().unwrap();
    if document.get_element_by_id("app-css").is_none() {
        let style = document.create_element("style").unwrap();
        style.set_id("app-css");
        style.set_text_content(Some(CSS));
        document.head().unwrap().append_child(&style).unwrap();
    }
    let el = document.create_element("div").unwrap();
    document.body().unwrap().append_child(&el).unwrap();
    el.unchecked_into()
}

fn context() -> Engine {
    Engine::new("http://127.0.0.1:9".into())
}

fn provide(ctx: Engine) {
    persona_chat::state::contexts::provide_engine(ctx);
    provide_context(Clock(RwSignal::new(js_sys::Date::now())));
}

fn text(el: &web_sys::Element, css: &str) -> String {
    el.query_selector(css).unwrap().map(|e| e.text_content().unwrap_or_default()).unwrap_or_default()
}

#[wasm_bindgen_test]
async fn connection_status_names_each_state_in_words_with_its_action() {
    let el = container();
    let ctx = context();
    let _mounted = leptos::mount::mount_to(el.clone(), move || {
        provide(ctx);
        view! { <ConnectionStatus /> }
    });
    let cases = [
        (LinkState::Connecting, "connecting", "Connecting", Some("Retry now")),
        (LinkState::Connected { since_ms: 0.0, latency_ms: Some(23.0) }, "connected", "Connected · 23 ms", None),
        (
            LinkState::Reconnecting { attempt: 3, retry_at_ms: now_ms() + 3_500.0 },
            "disconnected",
            "Reconnecting in 4 s (attempt 3)",
            Some("Retry now"),
        ),
        (LinkState::Polling, "polling", "Live via polling", None),
        (LinkState::Offline, "offline", "Offline", None),
        (LinkState::Disconnected, "disconnected", "Disconnected", Some("Reconnect")),
    ];
    for (status, state, words, action) in cases {
        ctx.status.set(status);
        leptos::task::tick().await;
        let bar = el.query_selector(".connection").unwrap().expect("the indicator is rendered");
        assert_eq!(bar.get_attribute("data-state").as_deref(), Some(state));
        let shown = text(&el, ".connection-text");
        assert!(shown.starts_with(words), "{shown:?} should start with {words:?}");
        assert_eq!(bar.get_attribute("role").as_deref(), Some("status"));
        assert!(bar.query_selector("svg").unwrap().is_some(), "an icon for {state}");
        let button = bar.query_selector("button").unwrap().map(|b| b.text_content().unwrap());
        assert_eq!(button.as_deref(), action, "the action for {words}");
    }
}

#[wasm_bindgen_test]
async fn a_badge_shows_each_status_in_color_and_words() {
    let el = container();
    let status = RwSignal::new(Some(PersonaState::Online));
    let _mounted =
        leptos::mount::mount_to(el.clone(), move || view! { <Avatar name="Ada Lovelace".to_owned() status=status /> });
    assert_eq!(text(&el, ".initials"), "AL");
    let mut colors = Vec::new();
    for (s, name, words) in [
        (PersonaState::Online, "online", "Online"),
        (PersonaState::Busy, "busy", "Busy"),
        (PersonaState::Responding, "responding", "Responding"),
        (PersonaState::Offline, "offline", "Offline"),
    ] {
        status.set(Some(s));
        leptos::task::tick().await;
        let badge = el.query_selector(".badge").unwrap().expect("a badge");
        assert_eq!(badge.get_attribute("data-status").as_deref(), Some(name));
        assert_eq!(text(&el, ".badge .visually-hidden"), words, "the status in words for screen readers");
        let color = web_sys::window()
            .unwrap()
            .get_computed_style(&badge)
            .unwrap()
            .unwrap()
            .get_property_value("background-color")
            .unwrap();
        assert!(!color.is_empty() && color != "rgba(0, 0, 0, 0)", "{name} has a color: {color}");
        colors.push(color);
    }
    // Distinct as a set, not only next to each other (dedup alone would pass A, B, A, C).
    let distinct: std::collections::BTreeSet<&String> = colors.iter().collect();
    assert_eq!(distinct.len(), 4, "each status its own color: {colors:?}");
    status.set(None);
    leptos::task::tick().await;
    assert!(el.query_selector(".badge").unwrap().is_none(), "no status, no badge");
}

#[wasm_bindgen_test]
async fn the_typing_line_for_one_two_three_and_five_typists() {
    let el = container();
    let ctx = context();
    let conversation: Signal<Option<String>> = Signal::derive(|| Some("c1".to_owned()));
    let _mounted = leptos::mount::mount_to(el.clone(), move || {
        provide(ctx);
        view! { <TypingIndicator conversation_id=conversation /> }
    });
    let names = |n: &[&str]| n.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    for (typists, expected) in [
        (names(&["Ada"]), "Ada is typing"),
        (names(&["Ada", "Bob"]), "Ada and Bob are typing"),
        (names(&["Ada", "Bob", "Cy"]), "Ada, Bob and Cy are typing"),
        (names(&["Ada", "Bob", "Cy", "Di", "Ed"]), "Ada, Bob and 3 others are typing"),
    ] {
        ctx.typists.set([("c1".to_owned(), typists)].into_iter().collect());
        leptos::task::tick().await;
        assert_eq!(text(&el, ".typing-text"), expected);
        assert_eq!(el.query_selector_all(".dots span").unwrap().length(), 3, "animated dots");
    }
    ctx.typists.set(Default::default());
    leptos::task::tick().await;
    assert!(el.query_selector(".typing-text").unwrap().is_none(), "nobody typing, no line");
}

fn message(seq: i64, sender: &str, content: &str) -> Message {
    Message {
        id: format!("m{seq}"),
        seq,
        client_id: None,
        sender_id: sender.into(),
        sender_name: sender.into(),
        content: content.into(),
        timestamp: "2026-11-21T10:00:00.000Z".into(),
        is_ai: false,
        interrupted: false,
    }
}

#[wasm_bindgen_test]
async fn messages_render_as_text_in_seq_order_with_each_delivery_state() {
    let el = container();
    let ctx = context();
    ctx.chat.update(|c| c.me = Some(User { id: "me".into(), username: "alice".into() }));
    let conversation: Signal<Option<String>> = Signal::derive(|| Some("c1".to_owned()));
    let _mounted = leptos::mount::mount_to(el.clone(), move || {
        provide(ctx);
        view! { <MessageList conversation_id=conversation /> }
    });
    ctx.chat.update(|c| {
        c.apply(ServerFrame::NewMessage {
            conversation_id: "c1".into(),
            message: message(2, "bob", "second"),
            timestamp: "t".into(),
        });
        c.apply(ServerFrame::NewMessage {
            conversation_id: "c1".into(),
            message: message(1, "bob", "<img src=x onerror=alert(1)>"),
            timestamp: "t".into(),
        });
    });
    // No transport: the message stays pending in the outbox.
    assert!(ctx.send_message("c1".into(), "mine".into()));
    leptos::task::tick().await;
    let items = el.query_selector_all(".message").unwrap();
    assert_eq!(items.length(), 3);
    let content = |i: u32| {
        items
            .item(i)
            .unwrap()
            .unchecked_into::<web_sys::Element>()
            .query_selector(".content")
            .unwrap()
            .unwrap()
            .text_content()
            .unwrap()
    };
    assert_eq!(content(0), "<img src=x onerror=alert(1)>", "shown literally, in seq order");
    assert_eq!(content(1), "second");
    assert!(el.query_selector(".message img").unwrap().is_none(), "no element made from user content");
    let own = el.query_selector(".message.own").unwrap().expect("own message on its side");
    assert_eq!(own.get_attribute("data-delivery").as_deref(), Some("pending"));
    assert!(own.text_content().unwrap().contains("Sending…"));
    assert!(
        el.query_selector(".message:not(.own) + .message.continued").unwrap().is_some(),
        "bob's two messages form one group"
    );

    // Refused: failed with the reason and a Retry button that makes it pending again.
    let client_id = ctx.outbox_items()[0].client_id.clone();
    ctx.chat.update(|c| {
        c.apply(ServerFrame::Error {
            code: persona_chat_protocol::ErrorCode::TooLong,
            message: "too long".into(),
            reference: Some(client_id.clone()),
            timestamp: "t".into(),
        });
    });
    leptos::task::tick().await;
    let own = el.query_selector(".message.own").unwrap().unwrap();
    assert_eq!(own.get_attribute("data-delivery").as_deref(), Some("failed"));
    assert!(own.text_content().unwrap().contains("too long"));
    let retry = own.query_selector("button.inline-action").unwrap().expect("a Retry button");
    assert_eq!(retry.text_content().as_deref(), Some("Retry"));
    retry.unchecked_into::<web_sys::HtmlElement>().click();
    leptos::task::tick().await;
    let own = el.query_selector(".message.own").unwrap().unwrap();
    assert_eq!(own.get_attribute("data-delivery").as_deref(), Some("pending"));

    // Stored with its seq: the echo becomes the message, once.
    ctx.chat.update(|c| {
        let stored = Message {
            client_id: Some(client_id.clone()),
            sender_id: "me".into(),
            sender_name: "alice".into(),
            ..message(3, "me", "mine")
        };
        c.apply(ServerFrame::NewMessage { conversation_id: "c1".into(), message: stored, timestamp: "t".into() });
    });
    leptos::task::tick().await;
    let own = el.query_selector_all(".message.own").unwrap();
    assert_eq!(own.length(), 1);
    let own: web_sys::Element = own.item(0).unwrap().unchecked_into();
    assert_eq!(
        (own.get_attribute("data-delivery").as_deref(), own.get_attribute("data-seq").as_deref()),
        (Some("sent"), Some("3"))
    );

    // A persona's reply streams with a caret and a Stop button; a join shows inline.
    ctx.chat.update(|c| {
        c.apply(ServerFrame::UserJoined {
            conversation_id: "c1".into(),
            user_id: "u9".into(),
            username: "carol".into(),
        });
        c.apply(ServerFrame::StreamStart {
            conversation_id: "c1".into(),
            message_id: "r1".into(),
            persona_id: "p1".into(),
        });
        c.apply(ServerFrame::StreamDelta {
            conversation_id: "c1".into(),
            message_id: "r1".into(),
            offset: 0,
            text: "Thinking".into(),
        });
    });
    leptos::task::tick().await;
    assert_eq!(text(&el, ".notice-line"), "carol joined");
    let streaming = el.query_selector(".message.streaming").unwrap().expect("the reply streams");
    assert!(streaming.query_selector(".caret").unwrap().is_some());
    assert!(streaming.query_selector("button.stop").unwrap().is_some());
    assert!(streaming.text_content().unwrap().contains("Thinking"));
}

#[wasm_bindgen_test]
async fn a_hundred_reconnects_leave_no_socket_handler_or_closure_behind() {
    use persona_chat::socket::websocket::{live_handles, WsEvent, WsHandle};
    use std::rc::Rc;
    let events = Rc::new(std::cell::RefCell::new(0u32));
    let seen = events.clone();
    let handler: Rc<dyn Fn(WsEvent)> = Rc::new(move |_| *seen.borrow_mut() += 1);
    let before = live_handles();
    let mut raws = Vec::new();
    for _ in 0..100 {
        // Nothing listens on port 9: each socket fails, as during an outage.
        let handle = WsHandle::open("ws://127.0.0.1:9/ws", handler.clone()).expect("a socket object");
        raws.push(handle.raw());
        // Let the socket start connecting (and perhaps fail) before it is replaced.
        leptos::task::tick().await;
        drop(handle);
    }
    assert_eq!(live_handles(), before, "every handle was dropped");
    for raw in &raws {
        assert!(
            raw.onopen().is_none() && raw.onmessage().is_none() && raw.onclose().is_none() && raw.onerror().is_none(),
            "handlers unset"
        );
        assert!(raw.ready_state() >= web_sys::WebSocket::CLOSING, "closed");
    }
    // Every closure held a clone of the handler: all freed, only ours is left.
    assert_eq!(Rc::strong_count(&handler), 1, "closures freed");
    let after_drop = *events.borrow();
    gloo_timers::future::TimeoutFuture::new(200).await;
    assert_eq!(*events.borrow(), after_drop, "no event reaches a dropped handle");
}
