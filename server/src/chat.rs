//! What a user can do in a conversation, shared by the WebSocket and HTTP front doors so
//! both behave the same.

use persona_chat_protocol::{validate_content, Ack, ErrorCode, ServerFrame, User};

use crate::clock::now_rfc3339;
use crate::fanout::publish_message;
use crate::hub::ConnId;
use crate::refusal::Refusal;
use crate::store::Inserted;
use crate::AppState;

/// Stores a message (at most once per sender and client_id) and fans it out: the ack to the
/// sending socket first (if it came over one), `new_message` to every joined socket, and
/// `conversation_update` to every member's sockets. The fan-out happens under the store's
/// lock, so every socket sees a conversation's messages in seq order. A resend gets the
/// original ack and nothing is sent to anyone else.
pub async fn send_message(
    app: &AppState,
    user: &User,
    conversation_id: String,
    content: &str,
    client_id: Option<String>,
    persona_id: Option<String>,
    from_conn: Option<ConnId>,
) -> Result<Ack, Refusal> {
    let content = match validate_content(content) {
        Ok(c) => c.to_owned(),
        Err(ErrorCode::TooLong) => {
            return Err(Refusal::new(
                ErrorCode::TooLong,
                format!("a message has at most {} characters", persona_chat_protocol::MAX_CONTENT_CHARS),
            ))
        }
        Err(code) => return Err(Refusal::new(code, "a message cannot be empty")),
    };
    let client_id = match client_id {
        Some(id) if id.is_empty() || id.len() > 64 => {
            return Err(Refusal::new(ErrorCode::InvalidField, "client_id must be 1 to 64 characters"))
        }
        Some(id) => id,
        // Gator clients send no client_id: each of their sends is a new message.
        None => crate::store::new_id(),
    };
    let user = user.clone();
    let result = app
        .db(move |store, shared| {
            if !store.is_member(&conversation_id, &user.id)? {
                return Ok(Err(Refusal::not_member()));
            }
            // Only new messages count against the rate limit: a resend of a stored one (a
            // client recovering after a lost ack or a restart) gets its original ack below.
            let stored_before = store.message_by_client_id(&user.id, &client_id)?.is_some();
            if !stored_before && !shared.limiter.allow(&user.id, std::time::Instant::now()) {
                crate::metrics::inc(&shared.metrics.rate_limited);
                return Ok(Err(Refusal::new(
                    ErrorCode::RateLimited,
                    format!(
                        "too many messages: at most {} per second (bursts of {}); nothing was stored, send it again shortly",
                        shared.config.rate_limit_per_sec, shared.config.rate_limit_burst
                    ),
                )));
            }
            let (message, new) = match store.insert_message(&conversation_id, &user, &client_id, &content, false)? {
                Inserted::New(m) => (m, true),
                Inserted::Duplicate(m) => (m, false),
                Inserted::ClientIdTaken => {
                    return Ok(Err(Refusal::new(
                        ErrorCode::InvalidField,
                        "this client_id was already used for a message in another conversation",
                    )))
                }
            };
            let ack = Ack {
                client_id: client_id.clone(),
                conversation_id: conversation_id.clone(),
                message_id: message.id.clone(),
                seq: message.seq,
                timestamp: message.timestamp.clone(),
            };
            if let Some(conn) = from_conn {
                shared.hub.send_to_conn(conn, &ServerFrame::MessageAck(ack.clone()));
            }
            crate::metrics::inc(if new { &shared.metrics.messages_stored } else { &shared.metrics.messages_duplicate });
            if new {
                let members = store.user_members(&conversation_id)?;
                publish_message(store, shared, &conversation_id, &message, &members)?;
            }
            Ok(Ok((ack, new.then_some(message))))
        })
        .await?;
    let (ack, stored) = result?;
    if let Some(message) = stored {
        crate::personas::on_user_message(app, &ack.conversation_id, &message, persona_id);
    }
    Ok(ack)
}

/// A user starts or stops typing (over a socket, `conn`, or HTTP). The other members' joined
/// sockets are told; a stop is only told if the start was.
pub fn set_typing(shared: &crate::Shared, user: &User, conversation_id: &str, is_typing: bool, conn: Option<ConnId>) {
    let tell = if is_typing {
        // Told at most once per TYPING_RELAY_EVERY per user and conversation; the starts in
        // between only keep the state alive.
        shared.typing.start(conversation_id, &user.id, &user.username, conn, std::time::Instant::now())
    } else {
        shared.typing.stop(conversation_id, &user.id)
    };
    if tell {
        send_typing(shared, conversation_id, &user.id, &user.username, is_typing);
    }
}

/// Tells the others that a typing state ended (timed out, or its socket closed).
pub fn announce_typing_stopped(shared: &crate::Shared, (conversation_id, user_id, username): crate::typing::Ended) {
    send_typing(shared, &conversation_id, &user_id, &username, false);
}

fn send_typing(shared: &crate::Shared, conversation_id: &str, user_id: &str, username: &str, is_typing: bool) {
    shared.hub.send_ephemeral_to_joined(
        conversation_id,
        &ServerFrame::TypingIndicator {
            conversation_id: conversation_id.to_owned(),
            user_id: user_id.to_owned(),
            username: username.to_owned(),
            is_typing,
            timestamp: now_rfc3339(),
        },
        Some(user_id),
    );
}
