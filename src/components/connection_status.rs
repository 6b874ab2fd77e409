//! Always-visible connection indicator: an icon and the state in words.

use leptos::prelude::*;

use crate::socket::LinkStatus;
use crate::state::SocketContext;

/// The words and the machine-readable state name for a status.
pub fn describe(status: &LinkStatus) -> (&'static str, String) {
    match status {
        LinkStatus::Connected => ("connected", "Connected".to_owned()),
        LinkStatus::Connecting => ("connecting", "Connecting…".to_owned()),
        LinkStatus::Reconnecting { attempt, retry_in_ms } => (
            "disconnected",
            format!("Disconnected · retrying in {} s (attempt {attempt})", retry_in_ms.div_ceil(1000)),
        ),
        LinkStatus::Disconnected => ("disconnected", "Disconnected".to_owned()),
    }
}

#[component]
pub fn ConnectionStatus() -> impl IntoView {
    let ctx = SocketContext::expect();
    let described = Memo::new(move |_| describe(&ctx.status.get()));
    view! {
        <div class="connection" data-state=move || described.get().0 role="status" aria-live="polite">
            <svg class="connection-icon" viewBox="0 0 16 16" width="14" height="14" aria-hidden="true">
                <circle cx="8" cy="8" r="6" />
            </svg>
            <span class="connection-text">{move || described.get().1}</span>
        </div>
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_state_has_words() {
        assert_eq!(describe(&LinkStatus::Connected), ("connected", "Connected".into()));
        let (state, text) = describe(&LinkStatus::Reconnecting { attempt: 2, retry_in_ms: 1500 });
        assert_eq!(state, "disconnected");
        assert!(text.starts_with("Disconnected") && text.contains("2 s") && text.contains("attempt 2"));
    }
}
