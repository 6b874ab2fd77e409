//! Inline SVG icons from assets/icons (our own files, compiled in: never user content).

use leptos::prelude::*;

pub const CONNECTED: &str = include_str!("../../assets/icons/connected.svg");
pub const DISCONNECTED: &str = include_str!("../../assets/icons/disconnected.svg");
pub const POLLING: &str = include_str!("../../assets/icons/polling.svg");
pub const BACK: &str = include_str!("../../assets/icons/back.svg");
pub const SEND: &str = include_str!("../../assets/icons/send.svg");
pub const PLUS: &str = include_str!("../../assets/icons/plus.svg");
pub const USERS: &str = include_str!("../../assets/icons/users.svg");
pub const STOP: &str = include_str!("../../assets/icons/stop.svg");
pub const GAUGE: &str = include_str!("../../assets/icons/gauge.svg");

/// An icon; decorative (the control around it carries the words).
#[component]
pub fn Icon(svg: &'static str) -> impl IntoView {
    view! { <span class="icon" aria-hidden="true" inner_html=svg></span> }
}
