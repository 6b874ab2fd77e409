//! `GET /api/events?after=EVENT_ID&timeout_ms=25000`: the long poll, the polling fallback.
//! Answers as soon as this user has an event after the cursor, or with none at the timeout;
//! `{resync: true, next}` when the cursor is older than what is kept. Without `after`, it
//! answers at once with the current cursor: load state over HTTP, then poll from there.

use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use persona_chat_protocol::ErrorCode;
use serde::Deserialize;

use super::error::HttpError;
use super::extractor::AuthSession;
use crate::events::Read;
use crate::AppState;

pub const DEFAULT_TIMEOUT_MS: u64 = 25_000;
pub const MAX_TIMEOUT_MS: u64 = 60_000;
/// Most events in one answer; the client asks again from `next` for the rest.
pub const MAX_EVENTS: usize = 500;

#[derive(Deserialize)]
pub struct EventsQuery {
    after: Option<u64>,
    timeout_ms: Option<u64>,
}

pub async fn poll(
    State(app): State<AppState>,
    session: AuthSession,
    query: Result<Query<EventsQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, HttpError> {
    let user = session.user.clone();
    let Query(q) = query.map_err(|e| HttpError::bad_request(ErrorCode::InvalidField, e.body_text()))?;
    crate::metrics::inc(&app.metrics.polls);
    let Some(after) = q.after else {
        return Ok(json(format!("{{\"events\":[],\"next\":{}}}", app.hub.events.last_id())));
    };
    // While polling (and shortly after), the user counts as online, as with a socket.
    let Some(_present) = Presence::begin(&app, &user) else {
        crate::metrics::inc(&app.metrics.rate_limited);
        return Err(HttpError::rate_limited(
            format!("at most {} long polls open at once per user", app.config.max_polls_per_user),
            Duration::from_secs(1),
        ));
    };
    let mut revocations = app.sessions.subscribe();
    let timeout = Duration::from_millis(q.timeout_ms.unwrap_or(DEFAULT_TIMEOUT_MS).min(MAX_TIMEOUT_MS));
    let deadline = tokio::time::Instant::now() + timeout;
    let mut changes = app.hub.events.subscribe();
    let mut shutdown = app.shutdown.clone();
    loop {
        // Subscribe before reading, so an event appended in between still wakes us.
        changes.borrow_and_update();
        revocations.borrow_and_update();
        if !app.sessions.is_live(&session.session_id, &user.id) {
            return Err(HttpError::unauthorized());
        }
        match app.hub.events.read(&user.id, after, MAX_EVENTS) {
            Read::Resync { next } => return Ok(json(format!("{{\"resync\":true,\"events\":[],\"next\":{next}}}"))),
            Read::Events { events, next }
                if !events.is_empty() || tokio::time::Instant::now() >= deadline || *shutdown.borrow() =>
            {
                let mut body = String::with_capacity(64 + events.iter().map(|(_, f)| f.len() + 32).sum::<usize>());
                body.push_str("{\"events\":[");
                for (i, (id, frame)) in events.iter().enumerate() {
                    if i > 0 {
                        body.push(',');
                    }
                    // Frames are stored as JSON text already: embed them as they are.
                    body.push_str(&format!("{{\"id\":{id},\"frame\":{}}}", frame.as_str()));
                }
                body.push_str(&format!("],\"next\":{next}}}"));
                return Ok(json(body));
            }
            Read::Events { .. } => {}
        }
        tokio::select! {
            _ = changes.changed() => {}
            _ = tokio::time::sleep_until(deadline) => {}
            _ = shutdown.changed() => {}
            _ = revocations.changed() => {}
        }
    }
}

/// Marks a user present for the life of one long poll (ended however it ends, including the
/// client going away mid-poll).
struct Presence {
    app: AppState,
    user_id: String,
}

impl Presence {
    fn begin(app: &AppState, user: &persona_chat_protocol::User) -> Option<Presence> {
        app.hub
            .try_poll_started(user, app.config.max_polls_per_user)
            .then(|| Presence { app: app.clone(), user_id: user.id.clone() })
    }
}

impl Drop for Presence {
    fn drop(&mut self) {
        let grace = Duration::from_millis(self.app.config.poll_presence_grace_ms);
        self.app.hub.poll_ended(&self.user_id, grace);
    }
}

fn json(body: String) -> Response {
    ([(header::CONTENT_TYPE, "application/json"), (header::CACHE_CONTROL, "no-store")], body).into_response()
}
