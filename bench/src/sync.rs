//! `persona-chat-bench --sync`: the resync exchange's figures of issue 11. For a user with 50
//! and with 500 conversations (rooms with a message each, and the Lobby): the `sync_state`
//! answer's size in bytes and its round-trip time (p50, p99 over many requests), unchanged
//! (`since` = the current version) and with a few changed (3 conversations got a message
//! after `since`), over the socket (`sync`) and over HTTP (`POST /api/sync`).

use std::time::Instant;

use futures_util::{SinkExt, StreamExt};
use persona_chat_protocol::http::PostMessageRequest;
use persona_chat_protocol::{ClientFrame, ServerFrame, SyncState};
use tokio_tungstenite::tungstenite::Message as WsMessage;

use crate::client::{connect_one, create_room, http_client, lobby_id, sign_in, Ws};
use crate::progress;
use crate::server::{ServerFlags, ServerGuard};

/// Conversations per user measured.
const SIZES: [usize; 2] = [50, 500];
/// Conversations changed in the "a few changed" case.
const CHANGED: usize = 3;
/// The target of issue 11: an unchanged answer for 50 conversations under 1 KB.
const TARGET_BYTES: usize = 1024;

struct Figure {
    conversations: usize,
    case: &'static str,
    transport: &'static str,
    bytes: usize,
    answered: usize,
    p50_us: f64,
    p99_us: f64,
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[(((sorted.len() - 1) as f64) * p).round() as usize]
}

pub async fn run(server_bin: &std::path::Path, flags: &ServerFlags, requests: usize) -> Result<(), String> {
    let mut figures = Vec::new();
    for n in SIZES {
        let server = ServerGuard::start(server_bin, flags, &format!("sync-{n}")).await?;
        let base = server.base_url();
        let http = http_client();
        let alice = sign_in(&http, &base, "alice").await?;
        let bob = sign_in(&http, &base, "bob").await?;
        progress(&format!("{n} conversations: creating {} rooms with a message each", n - 1));
        let mut rooms = Vec::with_capacity(n);
        for i in 0..n - 1 {
            let room = create_room(&http, &base, &alice.token, &format!("room {i}"), vec![bob.user.id.clone()]).await?;
            post(&http, &base, &alice.token, &room, &format!("hello {i}")).await?;
            rooms.push(room);
        }
        let lobby = lobby_id(&http, &base, &bob.token).await?;
        let mut ws = connect_one(server.addr, &bob.token, &lobby).await?;
        let (full, full_bytes) = sync_ws(&mut ws, 0).await?;
        if full.conversations.len() != n {
            return Err(format!("bob has {} conversations, not {n}", full.conversations.len()));
        }
        figures.push(Figure {
            conversations: n,
            case: "first (since 0, full)",
            transport: "socket",
            bytes: full_bytes,
            answered: 1,
            p50_us: f64::NAN,
            p99_us: f64::NAN,
        });
        let since = full.version;
        progress(&format!("{n} conversations: {requests} unchanged syncs"));
        figures.push(measure_ws(&mut ws, since, requests, n, "unchanged", 0).await?);
        figures.push(measure_http(&http, &base, &bob.token, since, requests, n, "unchanged", 0).await?);
        for room in rooms.iter().step_by(rooms.len() / CHANGED).take(CHANGED) {
            post(&http, &base, &alice.token, room, "news").await?;
        }
        progress(&format!("{n} conversations: {requests} syncs with {CHANGED} changed"));
        figures.push(measure_ws(&mut ws, since, requests, n, "3 changed", CHANGED).await?);
        figures.push(measure_http(&http, &base, &bob.token, since, requests, n, "3 changed", CHANGED).await?);
        drop(server);
    }
    println!();
    println!("| conversations | case | transport | answer bytes | requests | p50 | p99 |");
    println!("|---:|---|---|---:|---:|---:|---:|");
    for f in &figures {
        let ms = |us: f64| if us.is_nan() { "-".to_owned() } else { format!("{:.2} ms", us / 1e3) };
        println!(
            "| {} | {} | {} | {} | {} | {} | {} |",
            f.conversations,
            f.case,
            f.transport,
            f.bytes,
            f.answered,
            ms(f.p50_us),
            ms(f.p99_us)
        );
    }
    let unchanged_50 =
        figures.iter().find(|f| f.conversations == 50 && f.case == "unchanged" && f.transport == "socket");
    if let Some(f) = unchanged_50 {
        println!();
        println!(
            "target: an unchanged sync of 50 conversations under {TARGET_BYTES} bytes in one round trip: {} bytes, {}",
            f.bytes,
            if f.bytes < TARGET_BYTES { "met" } else { "MISSED" }
        );
    }
    Ok(())
}

async fn post(http: &reqwest::Client, base: &str, token: &str, room: &str, text: &str) -> Result<(), String> {
    let body = PostMessageRequest { content: text.into(), client_id: uuid_like() };
    let r = http
        .post(format!("{base}/api/conversations/{room}/messages"))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .map_err(|e| e.to_string())?;
    if !r.status().is_success() {
        return Err(format!("POST message: {}", r.status()));
    }
    Ok(())
}

fn uuid_like() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    format!("sync-bench-{}-{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed))
}

/// One `sync` over the socket: the answer and its size on the wire.
async fn sync_ws(ws: &mut Ws, since: u64) -> Result<(SyncState, usize), String> {
    ws.send(WsMessage::text(ClientFrame::Sync { since }.to_json())).await.map_err(|e| e.to_string())?;
    loop {
        match ws.next().await {
            Some(Ok(WsMessage::Text(text))) => match ServerFrame::parse(text.as_str()) {
                Ok(Some(ServerFrame::SyncState(state))) => return Ok((*state, text.len())),
                Ok(Some(ServerFrame::Error { message, .. })) => return Err(format!("sync refused: {message}")),
                _ => {}
            },
            Some(Ok(_)) => {}
            other => return Err(format!("the socket ended: {other:?}")),
        }
    }
}

async fn measure_ws(
    ws: &mut Ws,
    since: u64,
    requests: usize,
    n: usize,
    case: &'static str,
    changed: usize,
) -> Result<Figure, String> {
    let mut times = Vec::with_capacity(requests);
    let mut bytes = 0;
    for _ in 0..requests {
        let t0 = Instant::now();
        let (state, size) = sync_ws(ws, since).await?;
        times.push(t0.elapsed().as_secs_f64() * 1e6);
        if state.conversations.len() != changed || state.full {
            return Err(format!(
                "{case}: {} conversations in the answer (full: {})",
                state.conversations.len(),
                state.full
            ));
        }
        bytes = size;
    }
    times.sort_by(f64::total_cmp);
    Ok(Figure {
        conversations: n,
        case,
        transport: "socket",
        bytes,
        answered: requests,
        p50_us: percentile(&times, 0.5),
        p99_us: percentile(&times, 0.99),
    })
}

#[allow(clippy::too_many_arguments)]
async fn measure_http(
    http: &reqwest::Client,
    base: &str,
    token: &str,
    since: u64,
    requests: usize,
    n: usize,
    case: &'static str,
    changed: usize,
) -> Result<Figure, String> {
    let mut times = Vec::with_capacity(requests);
    let mut bytes = 0;
    for _ in 0..requests {
        let t0 = Instant::now();
        let r = http
            .post(format!("{base}/api/sync"))
            .bearer_auth(token)
            .json(&serde_json::json!({ "since": since }))
            .send()
            .await
            .map_err(|e| e.to_string())?;
        if !r.status().is_success() {
            return Err(format!("POST /api/sync: {}", r.status()));
        }
        let body = r.bytes().await.map_err(|e| e.to_string())?;
        times.push(t0.elapsed().as_secs_f64() * 1e6);
        let state: SyncState = serde_json::from_slice(&body).map_err(|e| e.to_string())?;
        if state.conversations.len() != changed || state.full {
            return Err(format!("{case}: {} conversations in the HTTP answer", state.conversations.len()));
        }
        bytes = body.len();
    }
    times.sort_by(f64::total_cmp);
    Ok(Figure {
        conversations: n,
        case,
        transport: "HTTP",
        bytes,
        answered: requests,
        p50_us: percentile(&times, 0.5),
        p99_us: percentile(&times, 0.99),
    })
}
