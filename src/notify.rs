//! Browser notifications while the tab is hidden, after the user allowed them.

use wasm_bindgen::JsCast;

/// Whether the tab is hidden (another tab in front, window minimised).
pub fn hidden() -> bool {
    web_sys::window().and_then(|w| w.document()).is_some_and(|d| d.hidden())
}

fn supported() -> bool {
    web_sys::window().is_some_and(|w| js_sys::Reflect::has(&w, &"Notification".into()).unwrap_or(false))
}

/// Whether notifications may be shown.
pub fn permitted() -> bool {
    supported() && web_sys::Notification::permission() == web_sys::NotificationPermission::Granted
}

/// Whether the browser can still ask the user (not yet answered).
pub fn can_ask() -> bool {
    supported() && web_sys::Notification::permission() == web_sys::NotificationPermission::Default
}

/// Asks the user; true if they allowed notifications.
pub async fn ask() -> bool {
    if !supported() {
        return false;
    }
    let Ok(promise) = web_sys::Notification::request_permission() else { return false };
    match wasm_bindgen_futures::JsFuture::from(promise).await {
        Ok(answer) => answer.as_string().as_deref() == Some("granted"),
        Err(_) => false,
    }
}

/// Shows one notification per conversation (a newer one replaces it); clicking it brings the
/// tab to the front.
pub fn show(title: &str, body: &str, conversation_id: &str) {
    if !permitted() {
        return;
    }
    let options = web_sys::NotificationOptions::new();
    options.set_body(&body.chars().take(140).collect::<String>());
    options.set_tag(conversation_id);
    if let Ok(n) = web_sys::Notification::new_with_options(title, &options) {
        let onclick = wasm_bindgen::closure::Closure::<dyn FnMut()>::new(move || {
            if let Some(w) = web_sys::window() {
                let _ = w.focus();
            }
        });
        n.set_onclick(Some(onclick.as_ref().unchecked_ref()));
        // Lives as long as the notification may be clicked: a small, bounded leak per
        // notification shown, only while hidden.
        onclick.forget();
    }
}

/// The document title with the unread total: "(3) persona-chat".
pub fn title_for(unread: i64) -> String {
    if unread > 0 {
        format!("({unread}) persona-chat")
    } else {
        "persona-chat".to_owned()
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_title_carries_the_unread_total() {
        assert_eq!(super::title_for(0), "persona-chat");
        assert_eq!(super::title_for(3), "(3) persona-chat");
    }
}
