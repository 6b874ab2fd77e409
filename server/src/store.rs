//! SQLite storage: one database file under the data dir, WAL mode, migrations at start.
//!
//! All access goes through one connection behind a mutex, used from blocking threads. The
//! mutex also orders message inserts, so seq is gap-free and fan-out follows seq order.

use std::path::Path;

use persona_chat_protocol::http::{ConversationKind, ConversationSummary, Persona};
use persona_chat_protocol::{LastMessage, Message, PersonaState, RemovalReason, User};
use rusqlite::{params, Connection, OptionalExtension};

use crate::clock::now_rfc3339;

pub type Result<T> = std::result::Result<T, StoreError>;

#[derive(Debug)]
pub enum StoreError {
    Sqlite(rusqlite::Error),
    NotFound,
}

impl std::fmt::Display for StoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoreError::Sqlite(e) => write!(f, "database error: {e}"),
            StoreError::NotFound => write!(f, "not found"),
        }
    }
}

impl std::error::Error for StoreError {}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        StoreError::Sqlite(e)
    }
}

/// Each entry moves the schema one version up; `PRAGMA user_version` records where it is.
const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE users (
    id TEXT PRIMARY KEY,
    username TEXT NOT NULL UNIQUE COLLATE NOCASE,
    password_hash TEXT NOT NULL,
    created_at TEXT NOT NULL,
    last_seen TEXT
);
CREATE TABLE personas (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    tagline TEXT NOT NULL,
    enabled INTEGER NOT NULL DEFAULT 1,
    last_seen TEXT
);
CREATE TABLE conversations (
    id TEXT PRIMARY KEY,
    kind TEXT NOT NULL CHECK (kind IN ('direct', 'room')),
    title TEXT NOT NULL,
    persona_id TEXT REFERENCES personas(id),
    owner_id TEXT,
    is_lobby INTEGER NOT NULL DEFAULT 0,
    last_seq INTEGER NOT NULL DEFAULT 0,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE TABLE members (
    conversation_id TEXT NOT NULL REFERENCES conversations(id),
    member_id TEXT NOT NULL,
    member_kind TEXT NOT NULL CHECK (member_kind IN ('user', 'persona')),
    joined_at TEXT NOT NULL,
    last_read_seq INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (conversation_id, member_id)
);
CREATE INDEX members_by_member ON members(member_id);
CREATE TABLE messages (
    id TEXT PRIMARY KEY,
    conversation_id TEXT NOT NULL REFERENCES conversations(id),
    seq INTEGER NOT NULL,
    sender_id TEXT NOT NULL,
    sender_name TEXT NOT NULL,
    client_id TEXT,
    content TEXT NOT NULL,
    created_at TEXT NOT NULL,
    is_ai INTEGER NOT NULL DEFAULT 0,
    UNIQUE (conversation_id, seq),
    UNIQUE (sender_id, client_id)
);
"#,
    r#"
CREATE TABLE sessions (
    id TEXT PRIMARY KEY,
    user_id TEXT NOT NULL REFERENCES users(id),
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    revoked_at INTEGER
);
CREATE INDEX sessions_by_user ON sessions(user_id);
ALTER TABLE users ADD COLUMN canonical TEXT;
ALTER TABLE users ADD COLUMN skeleton TEXT;
CREATE INDEX users_by_canonical ON users(canonical);
CREATE INDEX users_by_skeleton ON users(skeleton);
CREATE INDEX conversations_by_owner ON conversations(owner_id);
"#,
    r#"
ALTER TABLE messages ADD COLUMN interrupted INTEGER NOT NULL DEFAULT 0;
"#,
    // The list version (issue 11): one server-wide counter, allocated in the write transaction
    // of each change to someone's list; `pruned_upto` is the newest tombstone version pruned.
    r#"
CREATE TABLE list_version (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    version INTEGER NOT NULL,
    pruned_upto INTEGER NOT NULL DEFAULT 0
);
INSERT INTO list_version (id, version) VALUES (1, 0);
ALTER TABLE conversations ADD COLUMN version INTEGER NOT NULL DEFAULT 0;
ALTER TABLE members ADD COLUMN version INTEGER NOT NULL DEFAULT 0;
CREATE TABLE membership_tombstones (
    conversation_id TEXT NOT NULL,
    member_id TEXT NOT NULL,
    reason TEXT NOT NULL CHECK (reason IN ('left', 'removed')),
    version INTEGER NOT NULL,
    ended_at INTEGER NOT NULL,
    PRIMARY KEY (conversation_id, member_id)
);
CREATE INDEX tombstones_by_member ON membership_tombstones(member_id, version);
CREATE TABLE reply_drafts (
    message_id TEXT PRIMARY KEY,
    conversation_id TEXT NOT NULL,
    persona_id TEXT NOT NULL,
    content TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
"#,
];

/// Tombstones of ended memberships are kept this long; a `since` older than the newest one
/// pruned gets the whole list.
pub const TOMBSTONE_DAYS: i64 = 30;

/// Allocates the next list version inside the caller's transaction.
fn next_version(conn: &Connection) -> Result<u64> {
    let v: i64 =
        conn.query_row("UPDATE list_version SET version = version + 1 WHERE id = 1 RETURNING version", [], |r| {
            r.get(0)
        })?;
    Ok(v as u64)
}

pub struct Store {
    conn: Connection,
}

/// What inserting a message did.
pub enum Inserted {
    /// Stored now, with the next seq.
    New(Message),
    /// This (sender, client_id) was stored before in this conversation: the original,
    /// nothing new stored.
    Duplicate(Message),
    /// This sender used this client_id for a message of another conversation: nothing stored.
    ClientIdTaken,
}

/// The database file inside the data dir.
pub const DB_FILE: &str = "persona-chat.sqlite3";

/// Checkpoints the WAL from a thread and connection of its own, so a checkpoint's disk flush
/// never holds up a send (with SQLite's automatic checkpoints, the commit that crosses the
/// threshold pays for it: hundreds of milliseconds on a slow disk). Stops when dropped.
pub struct Checkpointer {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

/// How often the background checkpointer runs.
const CHECKPOINT_EVERY: std::time::Duration = std::time::Duration::from_millis(500);

impl Store {
    /// Hands WAL checkpoints to a background thread (see [`Checkpointer`]).
    pub fn checkpoint_in_background(&self, data_dir: &Path) -> Result<Checkpointer> {
        let conn = Connection::open(data_dir.join(DB_FILE))?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        self.conn.pragma_update(None, "wal_autocheckpoint", 0)?;
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        let spawned = std::thread::Builder::new().name("wal-checkpoint".into()).spawn(move || {
            while !flag.load(std::sync::atomic::Ordering::Relaxed) {
                std::thread::sleep(CHECKPOINT_EVERY);
                // PASSIVE: copies what it can without blocking the writer.
                if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
                    tracing::warn!("WAL checkpoint failed: {e}");
                }
            }
        });
        if let Err(e) = spawned {
            // No thread: SQLite checkpoints as usual.
            tracing::warn!("cannot start the checkpoint thread ({e}); checkpoints stay automatic");
            self.conn.pragma_update(None, "wal_autocheckpoint", 1000)?;
        }
        Ok(Checkpointer { stop })
    }

    /// A read-only connection to the same database (WAL: reads never wait for the writer).
    pub fn open_reader(data_dir: &Path) -> Result<Store> {
        use rusqlite::OpenFlags;
        let conn = Connection::open_with_flags(
            data_dir.join(DB_FILE),
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX | OpenFlags::SQLITE_OPEN_URI,
        )?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        Ok(Store { conn })
    }

    pub fn open(data_dir: &Path) -> Result<Store> {
        std::fs::create_dir_all(data_dir)
            .map_err(|e| StoreError::Sqlite(rusqlite::Error::ToSqlConversionFailure(Box::new(e))))?;
        let conn = Connection::open(data_dir.join(DB_FILE))?;
        Self::init(conn)
    }

    fn init(conn: Connection) -> Result<Store> {
        // WAL: readers never block the writer. synchronous=NORMAL in WAL keeps every commit
        // across a process crash (SIGKILL); only an OS crash can lose the last commits.
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        let mut store = Store { conn };
        store.migrate()?;
        Ok(store)
    }

    fn migrate(&mut self) -> Result<()> {
        let version: usize = self.conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(version) {
            let tx = self.conn.transaction()?;
            tx.execute_batch(sql)?;
            tx.pragma_update(None, "user_version", i + 1)?;
            tx.commit()?;
        }
        // Names from before normalization: their compared forms.
        let unnamed: Vec<(String, String)> =
            self.rows("SELECT id, username FROM users WHERE canonical IS NULL OR skeleton IS NULL", [], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })?;
        for (id, username) in unnamed {
            self.conn.execute(
                "UPDATE users SET canonical = ?2, skeleton = ?3 WHERE id = ?1",
                params![id, crate::names::canonical(&username), crate::names::skeleton(&username)],
            )?;
        }
        Ok(())
    }

    pub fn meta(&self, key: &str) -> Result<Option<String>> {
        Ok(self.conn.query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0)).optional()?)
    }

    pub fn set_meta(&self, key: &str, value: &str) -> Result<()> {
        self.conn.execute(
            "INSERT INTO meta (key, value) VALUES (?1, ?2)
             ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            [key, value],
        )?;
        Ok(())
    }

    // ---- users ----

    /// The user and their password hash, by username (compared after NFKC and case folding).
    /// Two older accounts may share a compared form: the exact name wins.
    pub fn user_by_name(&self, username: &str) -> Result<Option<(User, String)>> {
        Ok(self
            .conn
            .query_row(
                "SELECT id, username, password_hash FROM users WHERE canonical = ?1
                 ORDER BY username = ?2 DESC LIMIT 1",
                params![crate::names::canonical(username), username],
                |r| Ok((User { id: r.get(0)?, username: r.get(1)? }, r.get(2)?)),
            )
            .optional()?)
    }

    pub fn user_by_id(&self, user_id: &str) -> Result<Option<User>> {
        Ok(self
            .conn
            .query_row("SELECT id, username FROM users WHERE id = ?1", [user_id], |r| {
                Ok(User { id: r.get(0)?, username: r.get(1)? })
            })
            .optional()?)
    }

    /// Whether a new account may take this name: no existing name is equal to it or looks
    /// like it.
    pub fn name_free(&self, username: &str) -> Result<bool> {
        let taken: Option<i64> = self
            .conn
            .query_row(
                "SELECT 1 FROM users WHERE canonical = ?1 OR skeleton = ?2 OR username = ?3 LIMIT 1",
                params![crate::names::canonical(username), crate::names::skeleton(username), username],
                |r| r.get(0),
            )
            .optional()?;
        Ok(taken.is_none())
    }

    /// Registers a user and makes them a member of the Lobby; None if the name is not free.
    pub fn create_user(&mut self, username: &str, password_hash: &str) -> Result<Option<User>> {
        if !self.name_free(username)? {
            return Ok(None);
        }
        let now = now_rfc3339();
        let user = User { id: new_id(), username: username.to_owned() };
        let tx = self.conn.transaction()?;
        tx.execute(
            "INSERT INTO users (id, username, password_hash, created_at, canonical, skeleton) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![user.id, user.username, password_hash, now, crate::names::canonical(username), crate::names::skeleton(username)],
        )?;
        let lobby: String = tx.query_row("SELECT id FROM conversations WHERE is_lobby = 1", [], |r| r.get(0))?;
        let version = next_version(&tx)?;
        tx.execute(
            "INSERT INTO members (conversation_id, member_id, member_kind, joined_at, version)
             VALUES (?1, ?2, 'user', ?3, ?4)",
            params![lobby, user.id, now, version as i64],
        )?;
        tx.commit()?;
        Ok(Some(user))
    }

    // ---- sessions ----

    pub fn create_session(&self, session_id: &str, user_id: &str, created_at: i64, expires_at: i64) -> Result<()> {
        self.conn.execute(
            "INSERT INTO sessions (id, user_id, created_at, expires_at) VALUES (?1, ?2, ?3, ?4)",
            params![session_id, user_id, created_at, expires_at],
        )?;
        Ok(())
    }

    pub fn revoke_session(&self, session_id: &str, at: i64) -> Result<()> {
        self.conn.execute(
            "UPDATE sessions SET revoked_at = ?2 WHERE id = ?1 AND revoked_at IS NULL",
            params![session_id, at],
        )?;
        Ok(())
    }

    pub fn revoke_sessions_of(&self, user_id: &str, at: i64) -> Result<()> {
        self.conn.execute(
            "UPDATE sessions SET revoked_at = ?2 WHERE user_id = ?1 AND revoked_at IS NULL",
            params![user_id, at],
        )?;
        Ok(())
    }

    /// Sessions neither revoked nor ended by `now`: (id, user id, expires_at). Ended ones are
    /// deleted.
    pub fn live_sessions(&self, now: i64) -> Result<Vec<(String, String, i64)>> {
        self.conn.execute("DELETE FROM sessions WHERE expires_at <= ?1", [now])?;
        self.rows(
            "SELECT id, user_id, expires_at FROM sessions WHERE revoked_at IS NULL AND expires_at > ?1",
            [now],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
    }

    /// Rooms this user created.
    pub fn rooms_owned(&self, user_id: &str) -> Result<i64> {
        Ok(self.conn.query_row(
            "SELECT COUNT(*) FROM conversations WHERE owner_id = ?1 AND kind = 'room'",
            [user_id],
            |r| r.get(0),
        )?)
    }

    /// How many users and personas a conversation has.
    pub fn member_count(&self, conversation_id: &str) -> Result<i64> {
        Ok(self
            .conn
            .query_row("SELECT COUNT(*) FROM members WHERE conversation_id = ?1", [conversation_id], |r| r.get(0))?)
    }

    pub fn set_last_seen(&self, user_id: &str, at: &str) -> Result<()> {
        self.conn.execute("UPDATE users SET last_seen = ?2 WHERE id = ?1", [user_id, at])?;
        Ok(())
    }

    // ---- personas and the lobby ----

    /// Creates the Lobby and the personas on first start; later starts change nothing.
    pub fn seed(&mut self, personas: &[(&str, &str)]) -> Result<()> {
        let now = now_rfc3339();
        let tx = self.conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let has_lobby: bool =
            tx.query_row("SELECT EXISTS (SELECT 1 FROM conversations WHERE is_lobby = 1)", [], |r| r.get(0))?;
        if !has_lobby {
            tx.execute(
                "INSERT INTO conversations (id, kind, title, is_lobby, created_at, updated_at)
                 VALUES (?1, 'room', 'Lobby', 1, ?2, ?2)",
                params![new_id(), now],
            )?;
        }
        for (name, tagline) in personas {
            tx.execute(
                "INSERT INTO personas (id, name, tagline, last_seen) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT(name) DO NOTHING",
                params![new_id(), name, tagline, now],
            )?;
        }
        tx.commit()?;
        Ok(())
    }

    pub fn personas(&self) -> Result<Vec<Persona>> {
        let mut stmt =
            self.conn.prepare_cached("SELECT id, name, tagline, enabled, last_seen FROM personas ORDER BY name")?;
        let rows = stmt.query_map([], |r| {
            let enabled: bool = r.get(3)?;
            Ok(Persona {
                id: r.get(0)?,
                name: r.get(1)?,
                tagline: r.get(2)?,
                status: if enabled { PersonaState::Online } else { PersonaState::Offline },
                last_seen: r.get(4)?,
            })
        })?;
        Ok(rows.collect::<std::result::Result<_, _>>()?)
    }

    // ---- conversations ----

    pub fn is_member(&self, conversation_id: &str, user_id: &str) -> Result<bool> {
        Ok(self.conn.query_row(
            "SELECT EXISTS (SELECT 1 FROM members WHERE conversation_id = ?1 AND member_id = ?2)",
            [conversation_id, user_id],
            |r| r.get(0),
        )?)
    }

    /// Runs a query and collects every row through `map`.
    fn rows<T, P: rusqlite::Params>(
        &self,
        sql: &str,
        params: P,
        map: impl FnMut(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
    ) -> Result<Vec<T>> {
        let mut stmt = self.conn.prepare_cached(sql)?;
        let rows = stmt.query_map(params, map)?;
        Ok(rows.collect::<std::result::Result<_, _>>()?)
    }

    fn members_of_kind(&self, conversation_id: &str, kind: &str) -> Result<Vec<String>> {
        self.rows(
            "SELECT member_id FROM members WHERE conversation_id = ?1 AND member_kind = ?2",
            [conversation_id, kind],
            |r| r.get(0),
        )
    }

    /// The user ids that are members of a conversation.
    pub fn user_members(&self, conversation_id: &str) -> Result<Vec<String>> {
        self.members_of_kind(conversation_id, "user")
    }

    pub fn last_seq(&self, conversation_id: &str) -> Result<i64> {
        self.conn
            .query_row("SELECT last_seq FROM conversations WHERE id = ?1", [conversation_id], |r| r.get(0))
            .optional()?
            .ok_or(StoreError::NotFound)
    }

    /// The user's conversations, most recently active first: one query (each with its last
    /// message), `offset` skipped, at most `limit`.
    pub fn conversations_of(&self, user_id: &str) -> Result<Vec<ConversationSummary>> {
        self.conversations_page(user_id, None, usize::MAX, 0)
    }

    /// The user's conversations whose conversation or membership changed after list version
    /// `since`, most recently active first.
    pub fn conversations_changed_since(&self, user_id: &str, since: u64) -> Result<Vec<ConversationSummary>> {
        self.conversations_query(user_id, None, Some(since), usize::MAX, 0)
    }

    /// A page of [`Store::conversations_of`]; with `only`, just that conversation.
    pub fn conversations_page(
        &self,
        user_id: &str,
        only: Option<&str>,
        limit: usize,
        offset: usize,
    ) -> Result<Vec<ConversationSummary>> {
        self.conversations_query(user_id, only, None, limit, offset)
    }

    fn conversations_query(
        &self,
        user_id: &str,
        only: Option<&str>,
        since: Option<u64>,
        limit: usize,
        offset: usize,
    ) -> Result<Vec<ConversationSummary>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT c.id, c.kind, c.title, c.persona_id, c.last_seq, m.last_read_seq,
                    msg.id, msg.seq, msg.sender_name, msg.content, msg.created_at
             FROM members m JOIN conversations c ON c.id = m.conversation_id
             LEFT JOIN messages msg ON msg.conversation_id = c.id AND msg.seq = c.last_seq
             WHERE m.member_id = ?1 AND (?2 IS NULL OR c.id = ?2)
               AND (?5 IS NULL OR c.version > ?5 OR m.version > ?5)
             ORDER BY c.updated_at DESC, c.id
             LIMIT ?3 OFFSET ?4",
        )?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let offset = i64::try_from(offset).unwrap_or(i64::MAX);
        let since = since.map(|s| i64::try_from(s).unwrap_or(i64::MAX));
        let rows = stmt
            .query_map(params![user_id, only, limit, offset, since], |r| {
                let last_message = match r.get::<_, Option<String>>(6)? {
                    Some(id) => Some(LastMessage {
                        id,
                        seq: r.get(7)?,
                        sender_name: r.get(8)?,
                        content: r.get(9)?,
                        timestamp: r.get(10)?,
                    }),
                    None => None,
                };
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, Option<String>>(3)?,
                    r.get::<_, i64>(4)?,
                    r.get::<_, i64>(5)?,
                    last_message,
                ))
            })?
            .collect::<std::result::Result<Vec<_>, _>>()?;
        let personas = if rows.iter().any(|r| r.3.is_some()) { self.personas()? } else { Vec::new() };
        Ok(rows
            .into_iter()
            .map(|(id, kind, title, persona_id, last_seq, last_read, last_message)| ConversationSummary {
                kind: if kind == "direct" { ConversationKind::Direct } else { ConversationKind::Room },
                persona: persona_id.and_then(|p| personas.iter().find(|x| x.id == p).cloned()),
                id,
                title,
                last_message,
                last_seq,
                unread_count: (last_seq - last_read).max(0),
            })
            .collect())
    }

    pub fn persona(&self, persona_id: &str) -> Result<Option<Persona>> {
        Ok(self.personas()?.into_iter().find(|p| p.id == persona_id))
    }

    /// The user's direct conversation with a persona, created on first ask (then with the list
    /// version of its creation). NotFound if there is no such persona.
    pub fn direct_conversation(&mut self, user: &User, persona_id: &str) -> Result<(String, Option<u64>)> {
        let persona = self.persona(persona_id)?.ok_or(StoreError::NotFound)?;
        let existing: Option<String> = self
            .conn
            .query_row(
                "SELECT c.id FROM conversations c JOIN members m ON m.conversation_id = c.id
                 WHERE c.kind = 'direct' AND c.persona_id = ?1 AND m.member_id = ?2",
                [persona_id, &user.id],
                |r| r.get(0),
            )
            .optional()?;
        if let Some(id) = existing {
            return Ok((id, None));
        }
        let now = now_rfc3339();
        let id = new_id();
        let tx = self.conn.transaction()?;
        let version = next_version(&tx)? as i64;
        tx.execute(
            "INSERT INTO conversations (id, kind, title, persona_id, owner_id, created_at, updated_at, version)
             VALUES (?1, 'direct', ?2, ?3, ?4, ?5, ?5, ?6)",
            params![id, persona.name, persona_id, user.id, now, version],
        )?;
        for (member, kind) in [(&user.id, "user"), (&persona.id, "persona")] {
            tx.execute(
                "INSERT INTO members (conversation_id, member_id, member_kind, joined_at, version)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
                params![id, member, kind, now, version],
            )?;
        }
        tx.execute(
            "DELETE FROM membership_tombstones WHERE conversation_id = ?1 AND member_id = ?2",
            params![id, user.id],
        )?;
        tx.commit()?;
        Ok((id, Some(version as u64)))
    }

    /// A new room owned by `owner`, with these users and personas as members (unknown ids are
    /// skipped).
    pub fn create_room(
        &mut self,
        owner: &User,
        title: &str,
        user_ids: &[String],
        persona_ids: &[String],
    ) -> Result<String> {
        let now = now_rfc3339();
        let id = new_id();
        {
            let tx = self.conn.transaction()?;
            let version = next_version(&tx)? as i64;
            tx.execute(
                "INSERT INTO conversations (id, kind, title, owner_id, created_at, updated_at, version)
                 VALUES (?1, 'room', ?2, ?3, ?4, ?4, ?5)",
                params![id, title, owner.id, now, version],
            )?;
            tx.execute(
                "INSERT INTO members (conversation_id, member_id, member_kind, joined_at, version)
                 VALUES (?1, ?2, 'user', ?3, ?4)",
                params![id, owner.id, now, version],
            )?;
            tx.commit()?;
        }
        self.add_members(&id, user_ids, persona_ids)?;
        Ok(id)
    }

    /// Adds existing users and personas to a conversation. Returns the users and personas
    /// that were not members before (as User: id and display name). When someone was added,
    /// the conversation and the new memberships get a new list version.
    pub fn add_members(
        &mut self,
        conversation_id: &str,
        user_ids: &[String],
        persona_ids: &[String],
    ) -> Result<Vec<User>> {
        let now = now_rfc3339();
        let tx = self.conn.transaction()?;
        let mut added = Vec::new();
        let mut version: Option<i64> = None;
        for (ids, kind, table, name_col) in
            [(user_ids, "user", "users", "username"), (persona_ids, "persona", "personas", "name")]
        {
            for member_id in ids {
                let name: Option<String> = tx
                    .query_row(&format!("SELECT {name_col} FROM {table} WHERE id = ?1"), [member_id], |r| r.get(0))
                    .optional()?;
                let Some(name) = name else { continue };
                let already: bool = tx.query_row(
                    "SELECT EXISTS (SELECT 1 FROM members WHERE conversation_id = ?1 AND member_id = ?2)",
                    [conversation_id, member_id],
                    |r| r.get(0),
                )?;
                if already {
                    continue;
                }
                let v = match version {
                    Some(v) => v,
                    None => *version.insert(next_version(&tx)? as i64),
                };
                tx.execute(
                    "INSERT INTO members (conversation_id, member_id, member_kind, joined_at, version)
                     VALUES (?1, ?2, ?3, ?4, ?5)",
                    params![conversation_id, member_id, kind, now, v],
                )?;
                tx.execute(
                    "DELETE FROM membership_tombstones WHERE conversation_id = ?1 AND member_id = ?2",
                    [conversation_id, member_id],
                )?;
                added.push(User { id: member_id.clone(), username: name });
            }
        }
        if let Some(v) = version {
            tx.execute("UPDATE conversations SET version = ?2 WHERE id = ?1", params![conversation_id, v])?;
        }
        tx.commit()?;
        Ok(added)
    }

    /// Ends a membership (left or removed): the membership goes, a tombstone with a new list
    /// version stays, and the conversation gets that version (its members changed). The
    /// version, or None if they were not a member.
    pub fn remove_member(
        &mut self,
        conversation_id: &str,
        member_id: &str,
        reason: RemovalReason,
    ) -> Result<Option<u64>> {
        let tx = self.conn.transaction()?;
        if tx.execute(
            "DELETE FROM members WHERE conversation_id = ?1 AND member_id = ?2",
            [conversation_id, member_id],
        )? == 0
        {
            return Ok(None);
        }
        let version = next_version(&tx)?;
        let reason = match reason {
            RemovalReason::Left => "left",
            RemovalReason::Removed => "removed",
        };
        tx.execute(
            "INSERT INTO membership_tombstones (conversation_id, member_id, reason, version, ended_at)
             VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT (conversation_id, member_id) DO UPDATE
             SET reason = excluded.reason, version = excluded.version, ended_at = excluded.ended_at",
            params![conversation_id, member_id, reason, version as i64, crate::clock::unix_now()],
        )?;
        tx.execute("UPDATE conversations SET version = ?2 WHERE id = ?1", params![conversation_id, version as i64])?;
        tx.commit()?;
        Ok(Some(version))
    }

    /// Who created a room (None: no such conversation, or nobody, as for the Lobby).
    pub fn conversation_owner(&self, conversation_id: &str) -> Result<Option<Option<String>>> {
        Ok(self
            .conn
            .query_row("SELECT owner_id FROM conversations WHERE id = ?1", [conversation_id], |r| r.get(0))
            .optional()?)
    }

    // ---- the list version and the resync exchange ----

    /// The newest list version allocated.
    pub fn list_version(&self) -> Result<u64> {
        Ok(self.conn.query_row("SELECT version FROM list_version WHERE id = 1", [], |r| r.get::<_, i64>(0))? as u64)
    }

    /// The newest tombstone version pruned: a `since` older than it cannot be answered with
    /// a delta.
    pub fn tombstones_pruned_upto(&self) -> Result<u64> {
        Ok(self.conn.query_row("SELECT pruned_upto FROM list_version WHERE id = 1", [], |r| r.get::<_, i64>(0))? as u64)
    }

    /// Forgets tombstones that ended before `before` (unix seconds), recording the newest
    /// version forgotten. How many were forgotten.
    pub fn prune_tombstones(&mut self, before: i64) -> Result<usize> {
        let tx = self.conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let newest: Option<i64> =
            tx.query_row("SELECT MAX(version) FROM membership_tombstones WHERE ended_at < ?1", [before], |r| r.get(0))?;
        let Some(newest) = newest else { return Ok(0) };
        let n = tx.execute("DELETE FROM membership_tombstones WHERE ended_at < ?1", [before])?;
        tx.execute("UPDATE list_version SET pruned_upto = MAX(pruned_upto, ?1) WHERE id = 1", [newest])?;
        tx.commit()?;
        Ok(n)
    }

    /// The conversations that left this user's list after version `since`.
    pub fn tombstones_since(&self, user_id: &str, since: u64) -> Result<Vec<String>> {
        self.rows(
            "SELECT conversation_id FROM membership_tombstones WHERE member_id = ?1 AND version > ?2 ORDER BY version",
            params![user_id, since as i64],
            |r| r.get(0),
        )
    }

    /// The list version of a conversation (its last change seen by every member).
    pub fn conversation_version(&self, conversation_id: &str) -> Result<u64> {
        Ok(self
            .conn
            .query_row("SELECT version FROM conversations WHERE id = ?1", [conversation_id], |r| r.get::<_, i64>(0))
            .optional()?
            .ok_or(StoreError::NotFound)? as u64)
    }

    pub fn conversation_kind(&self, conversation_id: &str) -> Result<Option<(ConversationKind, bool)>> {
        Ok(self
            .conn
            .query_row("SELECT kind, is_lobby FROM conversations WHERE id = ?1", [conversation_id], |r| {
                let kind: String = r.get(0)?;
                Ok((if kind == "direct" { ConversationKind::Direct } else { ConversationKind::Room }, r.get(1)?))
            })
            .optional()?)
    }

    /// One conversation as the user's list shows it; None if they are not a member.
    pub fn conversation_of(&self, user_id: &str, conversation_id: &str) -> Result<Option<ConversationSummary>> {
        Ok(self.conversations_page(user_id, Some(conversation_id), 1, 0)?.into_iter().next())
    }

    /// The persona ids that are members of a conversation.
    pub fn persona_members(&self, conversation_id: &str) -> Result<Vec<String>> {
        self.members_of_kind(conversation_id, "persona")
    }

    /// Every (conversation, user) membership, to warm the hub's cache at start.
    pub fn user_memberships(&self) -> Result<Vec<(String, String)>> {
        self.rows("SELECT conversation_id, member_id FROM members WHERE member_kind = 'user'", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
    }

    /// Every member of a conversation: (id, display name, is a persona).
    pub fn members(&self, conversation_id: &str) -> Result<Vec<(String, String, bool)>> {
        self.rows(
            "SELECT m.member_id, COALESCE(u.username, p.name, '?'), m.member_kind = 'persona'
             FROM members m LEFT JOIN users u ON u.id = m.member_id LEFT JOIN personas p ON p.id = m.member_id
             WHERE m.conversation_id = ?1",
            [conversation_id],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
    }

    /// The (conversation, user) memberships of one user.
    pub fn user_memberships_of(&self, user_id: &str) -> Result<Vec<(String, String)>> {
        self.rows("SELECT conversation_id, member_id FROM members WHERE member_id = ?1", [user_id], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
    }

    /// Users whose name starts with `prefix` (case-insensitive), by name, at most `limit`.
    pub fn users(&self, prefix: &str, limit: usize, offset: usize) -> Result<Vec<User>> {
        let escaped = prefix.replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_");
        let mut stmt = self.conn.prepare_cached(
            "SELECT id, username FROM users WHERE username LIKE ?1 ESCAPE '\\' ORDER BY username, id LIMIT ?2 OFFSET ?3",
        )?;
        let rows = stmt.query_map(params![format!("{escaped}%"), limit as i64, offset as i64], |r| {
            Ok(User { id: r.get(0)?, username: r.get(1)? })
        })?;
        Ok(rows.collect::<std::result::Result<_, _>>()?)
    }

    // ---- messages ----

    /// Stores a message with the conversation's next seq, unless this sender already stored
    /// this client_id: then the original comes back and nothing is stored. Committed before
    /// it returns, so an ack built from it survives a crash.
    pub fn insert_message(
        &mut self,
        conversation_id: &str,
        sender: &User,
        client_id: &str,
        content: &str,
        is_ai: bool,
    ) -> Result<Inserted> {
        self.insert_message_with_id(conversation_id, sender, client_id, content, is_ai, &new_id())
    }

    /// As [`Store::insert_message`], with the message id chosen by the caller (a persona's
    /// reply is announced by id before it is stored).
    pub fn insert_message_with_id(
        &mut self,
        conversation_id: &str,
        sender: &User,
        client_id: &str,
        content: &str,
        is_ai: bool,
        message_id: &str,
    ) -> Result<Inserted> {
        if let Some((existing_conversation, existing)) = self.message_by_client_id(&sender.id, client_id)? {
            return Ok(if existing_conversation == conversation_id {
                Inserted::Duplicate(existing)
            } else {
                Inserted::ClientIdTaken
            });
        }
        let now = now_rfc3339();
        let tx = self.conn.transaction()?;
        let version = next_version(&tx)? as i64;
        let seq: i64 = tx
            .query_row(
                "UPDATE conversations SET last_seq = last_seq + 1, updated_at = ?2, version = ?3
                 WHERE id = ?1 RETURNING last_seq",
                params![conversation_id, now, version],
                |r| r.get(0),
            )
            .optional()?
            .ok_or(StoreError::NotFound)?;
        let message = Message {
            id: message_id.to_owned(),
            seq,
            client_id: Some(client_id.to_owned()),
            sender_id: sender.id.clone(),
            sender_name: sender.username.clone(),
            content: content.to_owned(),
            timestamp: now,
            is_ai,
            interrupted: false,
        };
        tx.execute(
            "INSERT INTO messages (id, conversation_id, seq, sender_id, sender_name, client_id,
                                   content, created_at, is_ai)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            params![
                message.id,
                conversation_id,
                message.seq,
                message.sender_id,
                message.sender_name,
                message.client_id,
                message.content,
                message.timestamp,
                message.is_ai
            ],
        )?;
        // The sender has read their own message.
        tx.execute(
            "UPDATE members SET last_read_seq = ?3 WHERE conversation_id = ?1 AND member_id = ?2",
            params![conversation_id, sender.id, seq],
        )?;
        tx.commit()?;
        Ok(Inserted::New(message))
    }

    /// Marks a stored persona reply as cut short.
    pub fn mark_interrupted(&self, message_id: &str) -> Result<()> {
        self.conn.execute("UPDATE messages SET interrupted = 1 WHERE id = ?1", [message_id])?;
        Ok(())
    }

    pub fn message_by_client_id(&self, sender_id: &str, client_id: &str) -> Result<Option<(String, Message)>> {
        let mut stmt = self.conn.prepare_cached(&format!(
            "SELECT {MESSAGE_COLUMNS}, conversation_id FROM messages WHERE sender_id = ?1 AND client_id = ?2"
        ))?;
        Ok(stmt.query_row([sender_id, client_id], |r| Ok((r.get(9)?, message_from_row(r)?))).optional()?)
    }

    /// Messages of a conversation in ascending seq: after `after_seq`, or the newest ones
    /// before `before_seq`; at most `limit`. The bool says whether more lie beyond.
    pub fn messages(
        &self,
        conversation_id: &str,
        after_seq: Option<i64>,
        before_seq: Option<i64>,
        limit: usize,
    ) -> Result<(Vec<Message>, bool)> {
        let fetch = (limit + 1) as i64;
        // Without after_seq the newest messages are wanted: read backwards, then reverse.
        let descending = after_seq.is_none();
        let sql = if descending {
            format!(
                "SELECT {MESSAGE_COLUMNS} FROM messages
                 WHERE conversation_id = ?1 AND seq < ?2 ORDER BY seq DESC LIMIT ?3"
            )
        } else {
            format!(
                "SELECT {MESSAGE_COLUMNS} FROM messages
                 WHERE conversation_id = ?1 AND seq > ?2 AND seq < ?4 ORDER BY seq ASC LIMIT ?3"
            )
        };
        let mut stmt = self.conn.prepare_cached(&sql)?;
        let before = before_seq.unwrap_or(i64::MAX);
        let mut rows = if descending {
            stmt.query_map(params![conversation_id, before, fetch], message_from_row)?
                .collect::<std::result::Result<Vec<_>, _>>()?
        } else {
            stmt.query_map(params![conversation_id, after_seq.unwrap_or(0), fetch, before], message_from_row)?
                .collect::<std::result::Result<Vec<_>, _>>()?
        };
        let has_more = rows.len() > limit;
        rows.truncate(limit);
        if descending {
            rows.reverse();
        }
        Ok((rows, has_more))
    }

    /// Records that a user has seen a conversation up to `seq` (never backwards). When that
    /// moved their read mark, the membership gets a new list version, returned.
    pub fn mark_read(&mut self, conversation_id: &str, user_id: &str, seq: i64) -> Result<Option<u64>> {
        let tx = self.conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let behind: bool = tx.query_row(
            "SELECT EXISTS (SELECT 1 FROM members WHERE conversation_id = ?1 AND member_id = ?2 AND last_read_seq < ?3)",
            params![conversation_id, user_id, seq],
            |r| r.get(0),
        )?;
        if !behind {
            return Ok(None);
        }
        let version = next_version(&tx)?;
        tx.execute(
            "UPDATE members SET last_read_seq = ?3, version = ?4 WHERE conversation_id = ?1 AND member_id = ?2",
            params![conversation_id, user_id, seq, version as i64],
        )?;
        tx.commit()?;
        Ok(Some(version))
    }

    // ---- persona reply drafts (the text so far of replies in progress) ----

    /// Records the text so far of a reply in progress (replacing the previous draft).
    pub fn save_draft(&self, message_id: &str, conversation_id: &str, persona_id: &str, content: &str) -> Result<()> {
        self.conn.execute(
            "INSERT INTO reply_drafts (message_id, conversation_id, persona_id, content, updated_at)
             VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT (message_id) DO UPDATE SET content = excluded.content, updated_at = excluded.updated_at",
            params![message_id, conversation_id, persona_id, content, now_rfc3339()],
        )?;
        Ok(())
    }

    pub fn delete_draft(&self, message_id: &str) -> Result<()> {
        self.conn.execute("DELETE FROM reply_drafts WHERE message_id = ?1", [message_id])?;
        Ok(())
    }

    /// At start: every draft left by a server that died mid-reply becomes a stored message
    /// (its seq and list version allocated now), marked interrupted. Returns them with their
    /// conversation.
    pub fn recover_drafts(&mut self) -> Result<Vec<(String, Message)>> {
        let drafts: Vec<(String, String, String, String, String)> = self.rows(
            "SELECT d.message_id, d.conversation_id, d.persona_id, COALESCE(p.name, '?'), d.content
             FROM reply_drafts d LEFT JOIN personas p ON p.id = d.persona_id ORDER BY d.updated_at",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
        )?;
        let mut recovered = Vec::new();
        for (message_id, conversation_id, persona_id, name, content) in drafts {
            let sender = User { id: persona_id, username: name };
            let content = if content.trim().is_empty() { "…".to_owned() } else { content };
            // Stored already (the server died between storing the reply and dropping its
            // draft): that message stands as it is.
            let stored = match self.insert_message_with_id(
                &conversation_id,
                &sender,
                &message_id,
                &content,
                true,
                &message_id,
            ) {
                Ok(Inserted::New(m)) => Some(m),
                Ok(Inserted::Duplicate(_) | Inserted::ClientIdTaken) | Err(StoreError::NotFound) => None,
                Err(e) => return Err(e),
            };
            if let Some(mut message) = stored {
                self.mark_interrupted(&message.id)?;
                message.interrupted = true;
                recovered.push((conversation_id, message));
            }
            self.delete_draft(&message_id)?;
        }
        Ok(recovered)
    }

    // ---- personas ----

    /// Records whether a persona is enabled (configuration decides at each start).
    pub fn set_persona_enabled(&self, persona_id: &str, enabled: bool) -> Result<()> {
        self.conn.execute("UPDATE personas SET enabled = ?2 WHERE id = ?1", params![persona_id, enabled])?;
        Ok(())
    }

    /// Records when a persona was last active.
    pub fn set_persona_last_seen(&self, persona_id: &str, at: &str) -> Result<()> {
        self.conn.execute("UPDATE personas SET last_seen = ?2 WHERE id = ?1", [persona_id, at])?;
        Ok(())
    }

    /// The persona of a direct conversation: None if there is no such conversation,
    /// Some(None) for a room.
    pub fn conversation_persona(&self, conversation_id: &str) -> Result<Option<Option<String>>> {
        Ok(self
            .conn
            .query_row(
                "SELECT CASE WHEN kind = 'direct' THEN persona_id END FROM conversations WHERE id = ?1",
                [conversation_id],
                |r| r.get(0),
            )
            .optional()?)
    }
}

const MESSAGE_COLUMNS: &str = "id, seq, client_id, sender_id, sender_name, content, created_at, is_ai, interrupted";

fn message_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Message> {
    Ok(Message {
        id: r.get(0)?,
        seq: r.get(1)?,
        client_id: r.get(2)?,
        sender_id: r.get(3)?,
        sender_name: r.get(4)?,
        content: r.get(5)?,
        timestamp: r.get(6)?,
        is_ai: r.get(7)?,
        interrupted: r.get(8)?,
    })
}

pub fn new_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> Store {
        let mut s = Store::init(Connection::open_in_memory().unwrap()).unwrap();
        s.seed(&[("Ada", "a mathematician")]).unwrap();
        s
    }

    #[test]
    fn seq_is_gap_free_and_resend_is_idempotent() {
        let mut s = store();
        let u = s.create_user("alice", "h").unwrap().unwrap();
        let lobby = s.conversations_of(&u.id).unwrap()[0].id.clone();
        let a = s.insert_message(&lobby, &u, "c1", "one", false).unwrap();
        let b = s.insert_message(&lobby, &u, "c2", "two", false).unwrap();
        let again = s.insert_message(&lobby, &u, "c1", "one", false).unwrap();
        let (Inserted::New(a), Inserted::New(b), Inserted::Duplicate(again)) = (a, b, again) else {
            panic!("expected new, new, duplicate");
        };
        assert_eq!((a.seq, b.seq), (1, 2));
        assert_eq!(again.id, a.id);
        assert_eq!(s.last_seq(&lobby).unwrap(), 2);
        let (all, more) = s.messages(&lobby, Some(0), None, 10).unwrap();
        assert_eq!(all.iter().map(|m| m.seq).collect::<Vec<_>>(), vec![1, 2]);
        assert!(!more);
    }

    #[test]
    fn history_pages_backwards_in_ascending_order() {
        let mut s = store();
        let u = s.create_user("bob", "h").unwrap().unwrap();
        let lobby = s.conversations_of(&u.id).unwrap()[0].id.clone();
        for i in 0..5 {
            s.insert_message(&lobby, &u, &format!("c{i}"), "x", false).unwrap();
        }
        let (page, more) = s.messages(&lobby, None, None, 2).unwrap();
        assert_eq!(page.iter().map(|m| m.seq).collect::<Vec<_>>(), vec![4, 5]);
        assert!(more);
        let (page, more) = s.messages(&lobby, None, Some(4), 10).unwrap();
        assert_eq!(page.iter().map(|m| m.seq).collect::<Vec<_>>(), vec![1, 2, 3]);
        assert!(!more);
        let (page, more) = s.messages(&lobby, Some(2), None, 2).unwrap();
        assert_eq!(page.iter().map(|m| m.seq).collect::<Vec<_>>(), vec![3, 4]);
        assert!(more);
    }
}

#[cfg(test)]
mod version_tests {
    use super::*;

    #[test]
    fn every_change_to_a_list_takes_the_next_version_and_ended_memberships_leave_tombstones() {
        let mut s = Store::init(Connection::open_in_memory().unwrap()).unwrap();
        s.seed(&[("Ada", "a mathematician")]).unwrap();
        let alice = s.create_user("alice", "h").unwrap().unwrap();
        let bob = s.create_user("bob", "h").unwrap().unwrap();
        let v0 = s.list_version().unwrap();
        let room = s.create_room(&alice, "room", std::slice::from_ref(&bob.id), &[]).unwrap();
        let v1 = s.list_version().unwrap();
        assert!(v1 > v0);
        let changed = s.conversations_changed_since(&bob.id, v0).unwrap();
        assert_eq!(changed.iter().map(|c| c.id.as_str()).collect::<Vec<_>>(), vec![room.as_str()]);
        assert!(s.conversations_changed_since(&bob.id, v1).unwrap().is_empty());
        s.insert_message(&room, &alice, "c1", "hi", false).unwrap();
        let v2 = s.list_version().unwrap();
        assert_eq!(s.conversation_version(&room).unwrap(), v2);
        assert_eq!(s.conversations_changed_since(&bob.id, v1).unwrap()[0].unread_count, 1);
        // A read that moves the mark takes a version; one that does not, none.
        assert_eq!(s.mark_read(&room, &bob.id, 1).unwrap(), Some(v2 + 1));
        assert_eq!(s.mark_read(&room, &bob.id, 1).unwrap(), None);
        assert!(s.conversations_changed_since(&alice.id, v2 + 1).unwrap().is_empty(), "bob's read is his alone");
        let v3 = s.remove_member(&room, &bob.id, RemovalReason::Removed).unwrap().expect("was a member");
        assert_eq!(s.remove_member(&room, &bob.id, RemovalReason::Removed).unwrap(), None);
        assert_eq!(s.tombstones_since(&bob.id, v3 - 1).unwrap(), vec![room.clone()]);
        assert!(s.tombstones_since(&bob.id, v3).unwrap().is_empty());
        assert!(s.conversations_changed_since(&bob.id, v0).unwrap().is_empty(), "no longer in his list");
        // Added back: the tombstone goes.
        s.add_members(&room, std::slice::from_ref(&bob.id), &[]).unwrap();
        assert!(s.tombstones_since(&bob.id, 0).unwrap().is_empty());
        // Pruning records how far back deltas can be answered.
        s.remove_member(&room, &bob.id, RemovalReason::Left).unwrap();
        assert_eq!(s.prune_tombstones(crate::clock::unix_now() + 1).unwrap(), 1);
        assert_eq!(s.tombstones_pruned_upto().unwrap(), s.list_version().unwrap());
    }

    #[test]
    fn leftover_drafts_become_interrupted_messages_and_stored_replies_stay_as_they_are() {
        let mut s = Store::init(Connection::open_in_memory().unwrap()).unwrap();
        s.seed(&[("Ada", "a mathematician")]).unwrap();
        let alice = s.create_user("alice", "h").unwrap().unwrap();
        let ada = s.personas().unwrap().remove(0);
        let (direct, _) = s.direct_conversation(&alice, &ada.id).unwrap();
        s.insert_message(&direct, &alice, "q", "question", false).unwrap();
        s.save_draft("m1", &direct, &ada.id, "Half an ans").unwrap();
        s.save_draft("m1", &direct, &ada.id, "Half an answer").unwrap();
        let persona = User { id: ada.id.clone(), username: ada.name.clone() };
        s.insert_message_with_id(&direct, &persona, "m2", "complete", true, "m2").unwrap();
        s.save_draft("m2", &direct, &ada.id, "compl").unwrap();
        let before = s.list_version().unwrap();
        let recovered = s.recover_drafts().unwrap();
        assert_eq!(recovered.len(), 1);
        let (conversation, message) = &recovered[0];
        assert_eq!((conversation.as_str(), message.content.as_str()), (direct.as_str(), "Half an answer"));
        assert!(message.interrupted && message.is_ai);
        assert_eq!(message.seq, 3);
        assert!(s.list_version().unwrap() > before);
        let (all, _) = s.messages(&direct, Some(0), None, 10).unwrap();
        assert!(!all.iter().find(|m| m.id == "m2").unwrap().interrupted, "a stored reply is left alone");
        assert!(s.recover_drafts().unwrap().is_empty(), "drafts are gone");
    }
}

#[cfg(test)]
mod name_tests {
    use super::*;

    #[test]
    fn confusable_names_are_not_free_and_the_list_carries_the_last_message() {
        let mut s = Store::init(Connection::open_in_memory().unwrap()).unwrap();
        s.seed(&[("Ada", "a mathematician")]).unwrap();
        let alice = s.create_user("alice", "h").unwrap().expect("free");
        assert!(s.create_user("ALICE", "h").unwrap().is_none(), "case");
        assert!(s.create_user("\u{430}lice", "h").unwrap().is_none(), "Cyrillic a");
        assert!(s.create_user("ａｌｉｃｅ", "h").unwrap().is_none(), "fullwidth");
        assert_eq!(s.user_by_name("ALİCE".trim()).unwrap().map(|u| u.0.id), None);
        assert_eq!(s.user_by_name("Alice").unwrap().map(|u| u.0.id), Some(alice.id.clone()));
        let lobby = s.conversations_of(&alice.id).unwrap()[0].id.clone();
        s.insert_message(&lobby, &alice, "c1", "one", false).unwrap();
        s.insert_message(&lobby, &alice, "c2", "two", false).unwrap();
        let list = s.conversations_of(&alice.id).unwrap();
        assert_eq!(list[0].last_message.as_ref().map(|m| (m.seq, m.content.as_str())), Some((2, "two")));
        assert_eq!(s.conversation_of(&alice.id, &lobby).unwrap().map(|c| c.last_seq), Some(2));
        assert!(s.conversations_page(&alice.id, None, 10, 1).unwrap().is_empty(), "offset past the one conversation");
    }
}
