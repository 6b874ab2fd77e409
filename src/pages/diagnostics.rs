//! The diagnostics page: the seeds' test dashboard for multi-tab testing with devtools open.
//! Transport, state, latency, counters, the outbox, who is online and the last frames, with
//! buttons to force a disconnect, simulate offline, switch to polling and clear the outbox.

use leptos::prelude::*;

use crate::clock::Clock;
use crate::components::connection_status::ConnectionStatus;
use crate::socket::{now_ms, LinkState};
use crate::state::contexts::{ChatCtx, ConnectionCtx, DiagnosticsCtx, SessionCtx};
use crate::state::Stats;

/// "3 min 12 s", "1 h 4 min", "12 s".
pub fn duration_text(ms: f64) -> String {
    let s = (ms / 1000.0).max(0.0) as u64;
    match s {
        0..=59 => format!("{s} s"),
        60..=3599 => format!("{} min {} s", s / 60, s % 60),
        _ => format!("{} h {} min", s / 3600, (s % 3600) / 60),
    }
}

fn transport_of(state: &LinkState) -> &'static str {
    match state {
        LinkState::Connected { .. } => "WebSocket",
        LinkState::Polling => "HTTP long polling",
        _ => "none",
    }
}

#[component]
pub fn DiagnosticsPage() -> impl IntoView {
    let ctx = DiagnosticsCtx::expect();
    let session = SessionCtx::expect();
    let chat = ChatCtx::expect();
    let connection = ConnectionCtx::expect();
    let clock = Clock::expect();
    let simulated_offline = RwSignal::new(false);
    let outbox = Memo::new(move |_| {
        // The outbox changes with the chat state's pending lines.
        chat.chat.track();
        clock.0.track();
        ctx.outbox_items()
    });
    let latency = move || match connection.status.get() {
        LinkState::Connected { latency_ms: Some(ms), .. } => format!("{} ms", ms.round() as i64),
        LinkState::Connected { .. } => "measuring…".to_owned(),
        _ => "—".to_owned(),
    };
    let since = move || {
        let now = clock.0.get();
        ctx.stats
            .with(|s| s.connected_since)
            .map(|at| {
                let date = js_sys::Date::new(&wasm_bindgen::JsValue::from_f64(at));
                format!("{} ({} ago)", date.to_locale_time_string("en-GB"), duration_text(now - at))
            })
            .unwrap_or_else(|| "—".to_owned())
    };
    view! {
        <div class="diagnostics">
            <header class="topbar">
                <a class="brand" href="/">"← persona-chat"</a>
                <ConnectionStatus />
                <span class="spacer"></span>
                <h1 class="page-title">"Diagnostics"</h1>
            </header>
            <div class="diag-grid">
                <section class="card">
                    <h2>"Connection"</h2>
                    <dl class="facts">
                        <dt>"State"</dt><dd data-diag="state">{move || connection.status.get().describe(now_ms()).1}</dd>
                        <dt>"Transport"</dt><dd data-diag="transport">{move || transport_of(&connection.status.get())}</dd>
                        <dt>"Latency"</dt><dd data-diag="latency">{latency}</dd>
                        <dt>"Connected since"</dt><dd data-diag="since">{since}</dd>
                        <dt>"Frames sent"</dt><dd data-diag="sent">{move || ctx.stats.with(|s| s.sent)}</dd>
                        <dt>"Frames received"</dt><dd data-diag="received">{move || ctx.stats.with(|s| s.received)}</dd>
                        <dt>"Reconnects"</dt><dd data-diag="reconnects">{move || ctx.stats.with(Stats::reconnects)}</dd>
                        <dt>"Server"</dt><dd>{session.base()}</dd>
                        <dt>"This tab"</dt><dd data-diag="tab">{move || ctx.tabs.with(|t| match t.role {
                            Some(role) => format!("{} ({})", t.tab, role.as_str()),
                            None => t.tab.clone(),
                        })}</dd>
                        <dt>"Leading tab"</dt><dd data-diag="leader">{move || ctx.tabs.with(|t| match (&t.leader, t.role) {
                            (_, Some(crate::socket::tabs::Role::Solo)) => "this tab (its own connection: no Web Locks or BroadcastChannel here)".to_owned(),
                            (Some(l), _) if *l == t.tab => format!("{l} (this tab)"),
                            (Some(l), _) => l.clone(),
                            (None, _) => "—".to_owned(),
                        })}</dd>
                    </dl>
                    <div class="actions">
                        <button on:click=move |_| ctx.disconnect()>"Force disconnect"</button>
                        <button on:click=move |_| connection.retry_now()>"Reconnect now"</button>
                        <button aria-pressed=move || simulated_offline.get().to_string()
                            on:click=move |_| { let on = !simulated_offline.get_untracked(); simulated_offline.set(on); ctx.simulate_offline(on); }>
                            {move || if simulated_offline.get() { "Back online" } else { "Simulate offline" }}
                        </button>
                        <button on:click=move |_| ctx.force_polling()>"Switch to polling"</button>
                        <button data-diag="lead-here" disabled=move || ctx.tabs.with(|t| t.role != Some(crate::socket::tabs::Role::Follower))
                            on:click=move |_| ctx.lead_here()>"Lead from this tab"</button>
                    </div>
                </section>
                <section class="card">
                    <h2>{move || format!("Outbox · {}", outbox.with(Vec::len))}</h2>
                    <ul class="outbox">
                        {move || outbox.get().into_iter().map(|item| view! {
                            <li><code>{item.client_id.chars().take(8).collect::<String>()}</code>" "<span>{format!("{:?}", item.status)}</span>" "<span class="muted">{item.content.chars().take(60).collect::<String>()}</span></li>
                        }).collect_view()}
                    </ul>
                    {move || outbox.with(Vec::is_empty).then(|| view! { <p class="muted">"Empty: everything was acknowledged."</p> })}
                    <div class="actions"><button on:click=move |_| ctx.clear_outbox()>"Clear the outbox"</button></div>
                    <h2>{move || format!("Online users · {}", chat.chat.with(|c| c.online.len()))}</h2>
                    <ul class="online-list">
                        {move || chat.chat.with(|c| c.online.iter().map(|u| view! { <li><span class="dot" aria-hidden="true"></span>{u.username.clone()}</li> }).collect_view())}
                    </ul>
                </section>
                <section class="card wide">
                    <h2>"Last 50 frames"</h2>
                    <table class="frames">
                        <thead><tr><th>"#"</th><th>"Time"</th><th>"Dir"</th><th>"Frame"</th></tr></thead>
                        <tbody>
                            {move || ctx.frames.with(|f| f.iter().rev().map(|e| {
                                let date = js_sys::Date::new(&wasm_bindgen::JsValue::from_f64(e.at));
                                let time = format!("{:02}:{:02}:{:02}.{:03}", date.get_hours(), date.get_minutes(), date.get_seconds(), date.get_milliseconds());
                                let (dir, class) = if e.frame.is_in() { ("in ↓", "in") } else { ("out ↑", "out") };
                                view! { <tr class=class><td>{e.number}</td><td>{time}</td><td>{dir}</td><td><code>{e.frame.to_json()}</code></td></tr> }
                            }).collect_view())}
                        </tbody>
                    </table>
                </section>
            </div>
        </div>
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn durations_in_words() {
        assert_eq!(super::duration_text(12_400.0), "12 s");
        assert_eq!(super::duration_text(192_000.0), "3 min 12 s");
        assert_eq!(super::duration_text(3_840_000.0), "1 h 4 min");
    }
}
