//! Browser tests: components mounted into a real DOM in headless Chromium.
#![cfg(target_arch = "wasm32")]

use leptos::prelude::*;
use persona_chat::components::connection_status::ConnectionStatus;
use persona_chat::components::message_list::MessageList;
use persona_chat::socket::{now_ms, LinkState};
use persona_chat::state::reducer::{Delivery, PendingMessage};
use persona_chat::state::SocketContext;
use persona_chat_protocol::{Message, ServerFrame, User};
use wasm_bindgen::JsCast;
use wasm_bindgen_test::*;

wasm_bindgen_test_configure!(run_in_browser);

fn container() -> web_sys::HtmlElement {
    let document = web_sys::window().unwrap().document().unwrap();
    let el = document.create_element("div").unwrap();
    document.body().unwrap().append_child(&el).unwrap();
    el.unchecked_into()
}

fn context() -> SocketContext {
    SocketContext::new("http://127.0.0.1:9".into())
}

#[wasm_bindgen_test]
async fn connection_status_names_each_state_in_words() {
    let el = container();
    let ctx = context();
    let _mounted = leptos::mount::mount_to(el.clone(), move || {
        provide_context(ctx);
        view! { <ConnectionStatus /> }
    });
    let cases = [
        (LinkState::Connecting, "connecting", "Connecting"),
        (LinkState::Connected { since_ms: 0.0, latency_ms: Some(23.0) }, "connected", "Connected · 23 ms"),
        (LinkState::Reconnecting { attempt: 3, retry_at_ms: now_ms() + 3_500.0 }, "disconnected", "Disconnected · retrying in 4 s (attempt 3)"),
        (LinkState::Polling, "polling", "Live via polling"),
        (LinkState::Offline, "offline", "Offline"),
        (LinkState::Disconnected, "disconnected", "Disconnected"),
    ];
    for (status, state, words) in cases {
        ctx.status.set(status);
        leptos::task::tick().await;
        let bar = el.query_selector(".connection").unwrap().expect("the indicator is rendered");
        assert_eq!(bar.get_attribute("data-state").as_deref(), Some(state));
        let text = el.query_selector(".connection-text").unwrap().unwrap().text_content().unwrap();
        assert!(text.starts_with(words), "{text:?} should start with {words:?}");
        assert_eq!(bar.get_attribute("role").as_deref(), Some("status"));
    }
}

#[wasm_bindgen_test]
async fn messages_render_as_text_in_seq_order_with_delivery_state() {
    let el = container();
    let ctx = context();
    let me = User { id: "me".into(), username: "alice".into() };
    ctx.chat.update(|c| c.me = Some(me.clone()));
    let conversation: Signal<Option<String>> = Signal::derive(|| Some("c1".to_owned()));
    let _mounted = leptos::mount::mount_to(el.clone(), move || {
        provide_context(ctx);
        view! { <MessageList conversation_id=conversation /> }
    });
    let message = |seq: i64, sender: &str, content: &str| Message {
        id: format!("m{seq}"),
        seq,
        client_id: None,
        sender_id: sender.into(),
        sender_name: sender.into(),
        content: content.into(),
        timestamp: "2026-11-21T10:00:00.000Z".into(),
        is_ai: false,
    };
    ctx.chat.update(|c| {
        c.apply(ServerFrame::NewMessage { conversation_id: "c1".into(), message: message(2, "bob", "second"), timestamp: "t".into() });
        c.apply(ServerFrame::NewMessage { conversation_id: "c1".into(), message: message(1, "bob", "<img src=x onerror=alert(1)>"), timestamp: "t".into() });
        c.add_pending("c1", PendingMessage { client_id: "k".into(), content: "mine".into(), timestamp: "t".into(), delivery: Delivery::Pending });
    });
    leptos::task::tick().await;
    let items = el.query_selector_all(".message").unwrap();
    assert_eq!(items.length(), 3);
    let content = |i: u32| items.item(i).unwrap().unchecked_into::<web_sys::Element>().query_selector(".content").unwrap().unwrap().text_content().unwrap();
    assert_eq!(content(0), "<img src=x onerror=alert(1)>", "shown literally, in seq order");
    assert_eq!(content(1), "second");
    assert!(el.query_selector(".message img").unwrap().is_none(), "no element made from user content");
    let own = el.query_selector(".message.own").unwrap().expect("own message on its side");
    assert_eq!(own.get_attribute("data-delivery").as_deref(), Some("pending"));

    ctx.chat.update(|c| {
        c.apply(ServerFrame::Error {
            code: persona_chat_protocol::ErrorCode::RateLimited,
            message: "slow down".into(),
            reference: Some("k".into()),
            timestamp: "t".into(),
        })
    });
    leptos::task::tick().await;
    let own = el.query_selector(".message.own").unwrap().unwrap();
    assert_eq!(own.get_attribute("data-delivery").as_deref(), Some("failed"));
    assert!(own.text_content().unwrap().contains("slow down"));
}
