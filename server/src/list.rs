//! Each user's conversation list, kept the same in every tab (issue 11): the live frames that
//! change it (`conversation_upserted`, `conversation_removed`) and the resync exchange's
//! answer (`sync_state`, for `sync` over the socket and `POST /api/sync`).
//!
//! Every change to someone's list takes the next list version in the store's write
//! transaction (see [`crate::store`]); these functions run under the store's lock, right
//! after the change, so the frames go out in version order.

use persona_chat_protocol::{RemovalReason, ServerFrame, SyncState, User};

use crate::clock::now_rfc3339;
use crate::store::{Result, Store};
use crate::Shared;

/// Sends each of `user_ids` their own summary of a conversation (unread counts differ) as
/// `conversation_upserted`, to all their sockets and polls.
pub fn upsert(store: &Store, shared: &Shared, conversation_id: &str, user_ids: &[String], version: u64) -> Result<()> {
    for user_id in user_ids {
        if let Some(frame) = upserted_frame(store, shared, conversation_id, user_id, version)? {
            shared.hub.send_to_users([user_id.as_str()], &frame);
        }
    }
    Ok(())
}

/// A user's read mark moved: every socket and poll of theirs gets the conversation again, so
/// its unread count drops in every tab.
pub fn read_moved(store: &Store, shared: &Shared, conversation_id: &str, user_id: &str, version: u64) -> Result<()> {
    if let Some(frame) = upserted_frame(store, shared, conversation_id, user_id, version)? {
        shared.hub.send_to_users([user_id], &frame);
    }
    Ok(())
}

fn upserted_frame(
    store: &Store,
    shared: &Shared,
    conversation_id: &str,
    user_id: &str,
    version: u64,
) -> Result<Option<ServerFrame>> {
    let Some(mut summary) = store.conversation_of(user_id, conversation_id)? else { return Ok(None) };
    if let Some(p) = summary.persona.as_mut() {
        shared.personas.overlay(p);
    }
    Ok(Some(ServerFrame::ConversationUpserted { conversation: Box::new(summary), version, timestamp: now_rfc3339() }))
}

/// Ends `user`'s membership of a conversation (they left, or were removed): stored with a
/// tombstone, the hub forgets it at once (their sockets stop getting the room's frames), the
/// members are told `user_left`, the user `conversation_removed` in every tab, and the members
/// who stay the conversation again (its members changed). False if they were not a member.
pub fn end_membership(
    store: &mut Store,
    shared: &Shared,
    conversation_id: &str,
    user: &User,
    reason: RemovalReason,
) -> Result<bool> {
    let members = store.user_members(conversation_id)?;
    let Some(version) = store.remove_member(conversation_id, &user.id, reason)? else { return Ok(false) };
    shared.hub.remove_member(conversation_id, &user.id);
    shared.hub.send_to_users(
        members.iter().map(String::as_str),
        &ServerFrame::UserLeft {
            conversation_id: conversation_id.to_owned(),
            user_id: user.id.clone(),
            username: user.username.clone(),
        },
    );
    shared.hub.send_to_users(
        [user.id.as_str()],
        &ServerFrame::ConversationRemoved {
            conversation_id: conversation_id.to_owned(),
            reason,
            version,
            timestamp: now_rfc3339(),
        },
    );
    let staying: Vec<String> = members.into_iter().filter(|m| *m != user.id).collect();
    upsert(store, shared, conversation_id, &staying, version)?;
    Ok(true)
}

/// The answer to `sync {since}`: see [`SyncState`]. The version is read before anything else,
/// so a change committed meanwhile is either in this answer or newer than its version (then
/// in the next answer): nothing falls between two answers.
pub fn answer(store: &Store, shared: &Shared, user_id: &str, since: u64) -> Result<SyncState> {
    let version = store.list_version()?;
    let full = since == 0 || since > version || since < store.tombstones_pruned_upto()?;
    let (mut conversations, removed) = if full {
        (store.conversations_of(user_id)?, Vec::new())
    } else {
        (store.conversations_changed_since(user_id, since)?, store.tombstones_since(user_id, since)?)
    };
    conversations.iter_mut().filter_map(|c| c.persona.as_mut()).for_each(|p| shared.personas.overlay(p));
    Ok(SyncState {
        since,
        version,
        full,
        conversations,
        removed,
        personas: shared.personas.statuses(),
        online: shared.hub.online_users_for(user_id),
        replies: shared.personas.replies_in_progress(|conversation| shared.hub.is_member(conversation, user_id)),
        timestamp: now_rfc3339(),
    })
}
