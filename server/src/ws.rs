//! `GET /ws?token=TOKEN`: one task reads frames and answers them, one writes the socket's
//! queue. Bad frames get an `error` frame and the socket stays open.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message as WsMessage, WebSocket, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use futures_util::{SinkExt, StreamExt};
use persona_chat_protocol::{ClientFrame, ErrorCode, ServerFrame, User, MAX_FRAME_BYTES, PROTOCOL_VERSION};
use serde::Deserialize;
use tokio::sync::mpsc;

use crate::chat;
use crate::clock::now_rfc3339;
use crate::http::error::HttpError;
use crate::hub::{ConnId, Kick, Outbound, KICK_SLOW, SOCKET_QUEUE};
use crate::refusal::Refusal;
use crate::AppState;

/// Close codes (RFC 6455 and its IANA registry).
pub const CLOSE_GOING_AWAY: u16 = 1001;
/// The server is shutting down to restart: clients come back after a short random wait.
pub const CLOSE_SERVICE_RESTART: u16 = 1012;
pub const CLOSE_POLICY: u16 = 1008;
pub const CLOSE_TOO_BIG: u16 = 1009;
pub const CLOSE_INVALID_DATA: u16 = 1007;

#[derive(Deserialize)]
pub struct WsQuery {
    token: Option<String>,
}

pub async fn upgrade(State(app): State<AppState>, Query(query): Query<WsQuery>, ws: WebSocketUpgrade) -> Response {
    if app.config.disable_websocket {
        return HttpError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::Internal,
            "WebSocket is disabled on this server",
        )
        .into_response();
    }
    let Some(verified) = query.token.as_deref().and_then(|t| app.authenticate(t)) else {
        return HttpError::unauthorized().into_response();
    };
    let (user, session) = (verified.user, verified.session_id);
    if let Err(wait) = app.socket_opens.take(&user.id, std::time::Instant::now()) {
        crate::metrics::inc(&app.metrics.sockets_refused);
        return HttpError::rate_limited(
            format!("too many new sockets: at most {} a minute per user", app.config.socket_opens_per_minute),
            wait,
        )
        .into_response();
    }
    // Small buffers keep each idle connection cheap.
    ws.read_buffer_size(4 * 1024)
        .write_buffer_size(4 * 1024)
        .max_message_size(MAX_FRAME_BYTES)
        .max_frame_size(MAX_FRAME_BYTES)
        .on_upgrade(move |socket| run(socket, app, user, session))
}

/// Longest a single write to a socket (one batch of frames) may take before it counts as too slow.
pub const SEND_TIMEOUT: Duration = Duration::from_secs(10);

/// Most frames the writer feeds before it flushes: what is queued goes out in one write.
pub const WRITE_BATCH: usize = 64;

/// How long a socket may send nothing: two heartbeats and a margin (half a heartbeat, at
/// least 2 s). The app pings every heartbeat.
pub fn idle_limit(heartbeat_ms: u64) -> Duration {
    Duration::from_millis(2 * heartbeat_ms + (heartbeat_ms / 2).max(2_000))
}

async fn run(socket: WebSocket, app: AppState, user: User, session: String) {
    let (mut sink, mut stream) = socket.split();
    let (tx, mut rx) = mpsc::channel::<Outbound>(SOCKET_QUEUE);
    let kick = Arc::new(Kick::default());

    let registration =
        match app.hub.register(&user, &session, tx.clone(), kick.clone(), app.config.max_sockets_per_user) {
            Ok(r) => r,
            Err(_) => {
                crate::metrics::inc(&app.metrics.sockets_refused);
                let reason = format!("too many connections: at most {} per user", app.config.max_sockets_per_user);
                let _ = tokio::time::timeout(
                    SEND_TIMEOUT,
                    sink.send(WsMessage::Close(Some(CloseFrame { code: CLOSE_POLICY, reason: reason.into() }))),
                )
                .await;
                return;
            }
        };
    let conn = registration.id;
    crate::metrics::inc(&app.metrics.sockets_opened);

    let writer_kick = kick.clone();
    let mut writer = tokio::spawn(async move {
        while let Some(first) = rx.recv().await {
            // Feeds the frames already queued (up to a batch), then flushes once: a burst of
            // fan-out goes out in a few writes instead of one write and flush per frame.
            let mut last = false;
            let batch = async {
                let mut next = Some(first);
                let mut fed = 0;
                while let Some(out) = next.take() {
                    let msg = match out {
                        Outbound::Text(text) => WsMessage::Text(text),
                        Outbound::Close(code, reason) => {
                            last = true;
                            WsMessage::Close(Some(CloseFrame { code, reason: reason.into() }))
                        }
                    };
                    sink.feed(msg).await?;
                    fed += 1;
                    if !last && fed < WRITE_BATCH {
                        next = rx.try_recv().ok();
                    }
                }
                sink.flush().await
            };
            match tokio::time::timeout(SEND_TIMEOUT, batch).await {
                Ok(Ok(())) if !last => {}
                Ok(Ok(())) | Ok(Err(_)) => break,
                Err(_) => {
                    writer_kick.kick(KICK_SLOW.0, KICK_SLOW.1);
                    return;
                }
            }
        }
        let _ = tokio::time::timeout(Duration::from_secs(1), sink.close()).await;
    });

    // online_users first, then hello: the order the Gator design expects.
    let now = now_rfc3339();
    let reply = |frame: ServerFrame| app.hub.send_to_conn(conn, &frame);
    reply(ServerFrame::OnlineUsers { users: app.hub.online_users_for(&user.id), timestamp: now.clone() });
    reply(ServerFrame::Hello {
        protocol: PROTOCOL_VERSION,
        connection_id: conn.to_string(),
        user: user.clone(),
        heartbeat_ms: app.config.heartbeat_ms,
        server_time: now,
    });

    let mut shutdown = app.shutdown.clone();
    let idle = idle_limit(app.config.heartbeat_ms);
    let idle_timer = tokio::time::sleep(idle);
    tokio::pin!(idle_timer);
    // The frame budget: a token bucket, 10 seconds' worth at once.
    let per_sec = app.config.socket_frames_per_sec.max(1.0);
    let burst = per_sec * 10.0;
    let (mut budget, mut budget_at) = (burst, tokio::time::Instant::now());
    let close: Option<(u16, &'static str)> = loop {
        tokio::select! {
            incoming = stream.next() => {
                idle_timer.as_mut().reset(tokio::time::Instant::now() + idle);
                let now = tokio::time::Instant::now();
                budget = (budget + now.duration_since(budget_at).as_secs_f64() * per_sec).min(burst);
                budget_at = now;
                if budget < 1.0 {
                    crate::metrics::inc(&app.metrics.sockets_closed_for_abuse);
                    break Some((CLOSE_POLICY, "too many frames: slow down"));
                }
                budget -= 1.0;
                match incoming {
                    Some(Ok(WsMessage::Text(text))) => handle_text(&app, conn, &user, text.as_str()).await,
                    Some(Ok(WsMessage::Binary(_))) => reply(error_frame(ErrorCode::InvalidJson, "frames are JSON text, not binary", None)),
                    Some(Ok(WsMessage::Close(_))) | None => break None,
                    Some(Ok(_)) => {} // ping/pong are answered by the library
                    Some(Err(e)) => {
                        let text = e.to_string();
                        if text.contains("too long") || text.contains("Space limit") || text.contains("capacity") {
                            break Some((CLOSE_TOO_BIG, "frame too large: at most 64 KiB"));
                        }
                        if text.to_ascii_lowercase().contains("utf-8") || text.contains("Utf8") {
                            crate::metrics::inc(&app.metrics.sockets_closed_for_abuse);
                            break Some((CLOSE_INVALID_DATA, "text frames must be valid UTF-8"));
                        }
                        break None;
                    }
                }
            }
            _ = &mut idle_timer => {
                crate::metrics::inc(&app.metrics.sockets_closed_for_abuse);
                break Some((CLOSE_POLICY, "silent for two heartbeats: send pings"));
            }
            reason = kick.kicked() => break Some(reason),
            _ = stopping(&mut shutdown) => break Some((CLOSE_SERVICE_RESTART, "server is restarting")),
        }
    };

    let shutting_down = matches!(close, Some((CLOSE_SERVICE_RESTART, _)));
    let went_offline = app.hub.unregister(conn, !shutting_down);
    for ended in app.typing.socket_closed(conn) {
        chat::announce_typing_stopped(&app, ended);
    }
    match close {
        // Too slow: its queue is full, a close frame would only wait behind it. Drop it all.
        Some(KICK_SLOW) => writer.abort(),
        Some((code, reason))
            if tokio::time::timeout(Duration::from_millis(500), tx.send(Outbound::Close(code, reason)))
                .await
                .is_err() =>
        {
            writer.abort()
        }
        Some(_) => {}
        None => {}
    }
    drop(tx);
    // The writer gets a moment to flush the close frame; then the connection is dropped,
    // whatever is still queued.
    if tokio::time::timeout(Duration::from_secs(2), &mut writer).await.is_err() {
        writer.abort();
    }
    drop(stream);

    if let Some(last_seen) = went_offline {
        let user_id = user.id.clone();
        if let Err(e) = app.db(move |store, _| store.set_last_seen(&user_id, &last_seen)).await {
            tracing::warn!("could not record last_seen: {e}");
        }
    }
}

/// Resolves once the server begins shutting down (without holding the watch's lock).
async fn stopping(shutdown: &mut tokio::sync::watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stopping| *stopping).await;
}

fn error_frame(code: ErrorCode, message: impl Into<String>, reference: Option<String>) -> ServerFrame {
    ServerFrame::Error { code, message: message.into(), reference, timestamp: now_rfc3339() }
}

async fn handle_text(app: &AppState, conn: ConnId, user: &User, text: &str) {
    crate::metrics::inc(&app.metrics.frames_received);
    let reply = |frame: ServerFrame| {
        if matches!(frame, ServerFrame::Error { .. }) {
            crate::metrics::inc(&app.metrics.error_frames);
        }
        app.hub.send_to_conn(conn, &frame)
    };
    let frame = match ClientFrame::parse(text) {
        Ok(f) => f,
        Err(e) => return reply(error_frame(e.code, e.message, e.reference)),
    };
    let refusal_frame = |r: Refusal, reference: Option<String>| error_frame(r.code, r.message, reference);
    match frame {
        ClientFrame::Ping { ts } => reply(ServerFrame::Pong { ts, server_time: now_rfc3339() }),
        ClientFrame::JoinConversation { conversation_id, after_seq } => {
            if let Err(r) = join(app, conn, user, conversation_id.clone(), after_seq).await {
                reply(refusal_frame(r, Some(conversation_id)));
            }
        }
        ClientFrame::LeaveConversation { conversation_id } => {
            app.hub.leave(conn, &conversation_id);
            reply(ServerFrame::ConversationLeft { conversation_id });
        }
        ClientFrame::SendMessage { conversation_id, content, client_id, persona_id } => {
            let reference = client_id.clone();
            if let Err(r) =
                chat::send_message(app, user, conversation_id, &content, client_id, persona_id, Some(conn)).await
            {
                reply(refusal_frame(r, reference));
            }
        }
        ClientFrame::TypingStart { conversation_id } | ClientFrame::TypingStop { conversation_id }
            if !app.hub.is_member(&conversation_id, &user.id) =>
        {
            reply(refusal_frame(Refusal::not_member(), Some(conversation_id)));
        }
        ClientFrame::TypingStart { conversation_id } => chat::set_typing(app, user, &conversation_id, true, Some(conn)),
        ClientFrame::TypingStop { conversation_id } => chat::set_typing(app, user, &conversation_id, false, Some(conn)),
        ClientFrame::GetOnlineStatus { user_ids } => {
            let users =
                app.hub.online_users_for(&user.id).into_iter().filter(|u| user_ids.contains(&u.user_id)).collect();
            reply(ServerFrame::OnlineUsers { users, timestamp: now_rfc3339() });
        }
        ClientFrame::StopResponse { conversation_id, message_id } => {
            if let Err(r) = crate::personas::stop_response(app, user, &conversation_id, &message_id) {
                reply(refusal_frame(r, Some(message_id)));
            }
        }
        ClientFrame::Sync { since } => match sync(app, user, since).await {
            Ok(state) => reply(ServerFrame::SyncState(Box::new(state))),
            Err(r) => reply(refusal_frame(r, Some("sync".into()))),
        },
    }
}

/// The resync exchange's answer for `user` (shared with `POST /api/sync`), within the
/// per-user sync rate.
pub async fn sync(app: &AppState, user: &User, since: u64) -> Result<persona_chat_protocol::SyncState, Refusal> {
    if !app.sync_limiter.allow(&user.id, std::time::Instant::now()) {
        crate::metrics::inc(&app.metrics.rate_limited);
        return Err(Refusal::new(
            ErrorCode::RateLimited,
            format!(
                "too many syncs: at most {} per second (bursts of {}); sync again shortly",
                app.config.sync_per_sec, app.config.sync_burst
            ),
        ));
    }
    let (user_id, shared) = (user.id.clone(), app.clone());
    Ok(app.read(move |store| crate::list::answer(store, &shared, &user_id, since)).await?)
}

/// Missed messages replayed per page on join; fewer than the socket queue holds.
pub const JOIN_BACKLOG: usize = SOCKET_QUEUE / 2;

/// Joins the socket to a conversation and sends every message it missed after `after_seq`,
/// then each persona reply in progress there with its text so far. The join and the first
/// page happen under the store lock, so no message can fall between the backlog and the live
/// stream; further pages (up to the last_seq announced) follow with
/// backpressure, interleaving with live messages, which clients order by seq.
async fn join(
    app: &AppState,
    conn: ConnId,
    user: &User,
    conversation_id: String,
    after_seq: Option<i64>,
) -> Result<(), Refusal> {
    let user_id = user.id.clone();
    let conversation = conversation_id.clone();
    let rest = app
        .db(move |store, shared| {
            if !store.is_member(&conversation_id, &user_id)? {
                return Ok(Err(Refusal::not_member()));
            }
            let last_seq = store.last_seq(&conversation_id)?;
            let now = now_rfc3339();
            shared.hub.send_to_conn(
                conn,
                &ServerFrame::ConversationJoined {
                    conversation_id: conversation_id.clone(),
                    last_seq,
                    timestamp: now.clone(),
                },
            );
            let mut rest = None;
            if let Some(after) = after_seq {
                let (page, more) = store.messages(&conversation_id, Some(after), Some(last_seq + 1), JOIN_BACKLOG)?;
                let cursor = page.last().map_or(after, |m| m.seq);
                for message in page {
                    shared.hub.send_to_conn(
                        conn,
                        &ServerFrame::NewMessage {
                            conversation_id: conversation_id.clone(),
                            message,
                            timestamp: now.clone(),
                        },
                    );
                }
                if more {
                    rest = Some((cursor, last_seq));
                }
            }
            // Live from here, with the replies in progress resumed (no message can be stored
            // meanwhile: the store's lock is held).
            shared.personas.join_with_replies(&shared.hub, conn, &conversation_id);
            // A join does not move the read mark: a socket also joins conversations nobody
            // looks at (rejoins after a reconnect, a hidden tab). The app reports what the user
            // saw with `POST /api/conversations/{id}/read`.
            Ok(Ok(rest))
        })
        .await??;
    let (Some((mut cursor, last_seq)), Some(tx)) = (rest, app.hub.sender(conn)) else { return Ok(()) };
    while cursor < last_seq {
        let conv = conversation.clone();
        let (page, _) =
            app.db(move |store, _| store.messages(&conv, Some(cursor), Some(last_seq + 1), JOIN_BACKLOG)).await?;
        if page.is_empty() {
            break;
        }
        let now = now_rfc3339();
        for message in page {
            cursor = message.seq;
            let frame =
                ServerFrame::NewMessage { conversation_id: conversation.clone(), message, timestamp: now.clone() };
            if tx.send(Outbound::Text(frame.to_json().into())).await.is_err() {
                return Ok(()); // the socket went away
            }
        }
    }
    Ok(())
}
