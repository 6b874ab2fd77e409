//! Passwords (argon2) and session tokens (HMAC-SHA256 signed, with an expiry).
//!
//! A token is `base64url(payload) "." base64url(hmac(secret, payload))`, the payload being
//! `{"sub": user id, "name": username, "sid": session id, "exp": unix seconds}`. A token is
//! good while it is unexpired AND its session is live ([`Sessions`]): signing out revokes the
//! session, and every token of it is refused at once.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use argon2::password_hash::{rand_core::OsRng, PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use hmac::{Hmac, Mac};
use persona_chat_protocol::User;
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use tokio::sync::watch;

use crate::clock::unix_now;

pub fn hash_password(password: &str) -> String {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .expect("argon2 hashes any password with a fresh salt")
        .to_string()
}

pub fn verify_password(password: &str, hash: &str) -> bool {
    PasswordHash::new(hash)
        .map(|parsed| Argon2::default().verify_password(password.as_bytes(), &parsed).is_ok())
        .unwrap_or(false)
}

#[derive(Serialize, Deserialize)]
struct Claims {
    sub: String,
    name: String,
    /// The server-side session this token belongs to.
    #[serde(default)]
    sid: String,
    exp: i64,
}

#[derive(Serialize, Deserialize)]
struct RefreshClaims {
    sid: String,
    sub: String,
    name: String,
}

/// What a good token says.
#[derive(Debug, Clone, PartialEq)]
pub struct Verified {
    pub user: User,
    pub session_id: String,
    pub expires_at: i64,
}

/// Signs and checks tokens with the server's secret.
pub struct Tokens {
    secret: Vec<u8>,
    ttl_secs: i64,
}

impl Tokens {
    pub fn new(secret: Vec<u8>, ttl_secs: i64) -> Self {
        Tokens { secret, ttl_secs }
    }

    /// The secret from `PERSONA_SECRET` if set, else the one kept in the data dir, made at
    /// first start.
    pub fn load_secret(env_secret: Option<&str>, data_dir: &Path) -> std::io::Result<Vec<u8>> {
        if let Some(s) = env_secret.filter(|s| !s.is_empty()) {
            return Ok(s.as_bytes().to_vec());
        }
        let path = data_dir.join("secret.key");
        match std::fs::read(&path) {
            Ok(bytes) if bytes.len() >= 32 => Ok(bytes),
            _ => {
                std::fs::create_dir_all(data_dir)?;
                let mut bytes = vec![0u8; 32];
                rand::thread_rng().fill_bytes(&mut bytes);
                write_private(&path, &bytes)?;
                Ok(bytes)
            }
        }
    }

    /// A token for `user` in session `session_id`, good for the token lifetime but never past
    /// `session_expires_at`; with the unix second it expires.
    pub fn issue(&self, user: &User, session_id: &str, session_expires_at: i64) -> (String, i64) {
        let exp = (unix_now() + self.ttl_secs).min(session_expires_at);
        let claims = Claims { sub: user.id.clone(), name: user.username.clone(), sid: session_id.to_owned(), exp };
        let payload = B64.encode(serde_json::to_vec(&claims).expect("claims serialize"));
        let sig = B64.encode(self.mac(payload.as_bytes()));
        (format!("{payload}.{sig}"), exp)
    }

    /// What a token says, if it is signed by this server and not expired. Whether its session
    /// is still live is [`Sessions::is_live`]'s question.
    pub fn verify(&self, token: &str) -> Option<Verified> {
        let (payload, sig) = token.split_once('.')?;
        let sig = B64.decode(sig).ok()?;
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.secret).expect("any key length");
        mac.update(payload.as_bytes());
        mac.verify_slice(&sig).ok()?; // constant-time comparison
        let claims: Claims = serde_json::from_slice(&B64.decode(payload).ok()?).ok()?;
        (claims.exp > unix_now() && !claims.sid.is_empty()).then_some(Verified {
            user: User { id: claims.sub, username: claims.name },
            session_id: claims.sid,
            expires_at: claims.exp,
        })
    }

    /// The session's refresh token: it names the session and its user, signed apart from
    /// access tokens (`refresh:` before the payload, so neither passes for the other). It has
    /// no expiry of its own: it is good while its session lives, so an app that slept past its
    /// access token's expiry still refreshes. It only ever travels in a request body, never
    /// in a URL.
    pub fn refresh_token(&self, user: &User, session_id: &str) -> String {
        let claims = RefreshClaims { sid: session_id.to_owned(), sub: user.id.clone(), name: user.username.clone() };
        let payload = B64.encode(serde_json::to_vec(&claims).expect("claims serialize"));
        let sig = B64.encode(self.mac(format!("refresh:{payload}").as_bytes()));
        format!("{payload}.{sig}")
    }

    /// The user and session a refresh token names, if this server signed it. Whether the
    /// session still lives is [`Sessions::is_live`]'s question.
    pub fn verify_refresh(&self, token: &str) -> Option<(User, String)> {
        let (payload, sig) = token.split_once('.')?;
        let sig = B64.decode(sig).ok()?;
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.secret).expect("any key length");
        mac.update(format!("refresh:{payload}").as_bytes());
        mac.verify_slice(&sig).ok()?; // constant-time comparison
        let claims: RefreshClaims = serde_json::from_slice(&B64.decode(payload).ok()?).ok()?;
        (!claims.sid.is_empty()).then_some((User { id: claims.sub, username: claims.name }, claims.sid))
    }

    fn mac(&self, data: &[u8]) -> Vec<u8> {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.secret).expect("any key length");
        mac.update(data);
        mac.finalize().into_bytes().to_vec()
    }
}

/// The live sessions, in memory (the sessions table is the durable copy): checking a token
/// is a map lookup, and a revocation takes effect at once. Every revocation bumps a counter
/// that open long polls watch, so they end with 401 promptly.
pub struct Sessions {
    live: Mutex<HashMap<String, LiveSession>>,
    revocations: watch::Sender<u64>,
}

#[derive(Debug, Clone)]
struct LiveSession {
    user_id: String,
    expires_at: i64,
}

impl Default for Sessions {
    fn default() -> Self {
        Sessions { live: Mutex::default(), revocations: watch::channel(0).0 }
    }
}

impl Sessions {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, LiveSession>> {
        self.live.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds a live session (at start, from the store, and when one begins).
    pub fn insert(&self, session_id: &str, user_id: &str, expires_at: i64) {
        self.lock().insert(session_id.to_owned(), LiveSession { user_id: user_id.to_owned(), expires_at });
    }

    /// When a live session of this user ends (unix seconds), if it is live.
    pub fn expires_at(&self, session_id: &str, user_id: &str) -> Option<i64> {
        let now = unix_now();
        self.lock().get(session_id).filter(|s| s.user_id == user_id && s.expires_at > now).map(|s| s.expires_at)
    }

    pub fn is_live(&self, session_id: &str, user_id: &str) -> bool {
        self.expires_at(session_id, user_id).is_some()
    }

    /// Ends one session; true if it was live.
    pub fn revoke(&self, session_id: &str) -> bool {
        let removed = self.lock().remove(session_id).is_some();
        self.revocations.send_modify(|n| *n += 1);
        removed
    }

    /// Ends every session of a user; their ids.
    pub fn revoke_user(&self, user_id: &str) -> Vec<String> {
        let mut live = self.lock();
        let ids: Vec<String> = live.iter().filter(|(_, s)| s.user_id == user_id).map(|(id, _)| id.clone()).collect();
        for id in &ids {
            live.remove(id);
        }
        drop(live);
        self.revocations.send_modify(|n| *n += 1);
        ids
    }

    /// Forgets sessions past their end (they no longer verify anyway).
    pub fn prune(&self) {
        let now = unix_now();
        self.lock().retain(|_, s| s.expires_at > now);
    }

    /// Changes whenever a session is revoked.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.revocations.subscribe()
    }
}

/// At most `workers` password hashes run at once (each holds ~19 MiB for argon2), at most
/// `queue` more wait; beyond that callers are told to come back later.
///
/// The hashes run on `workers` threads of their own, not on tokio's blocking pool: the
/// allocator keeps a freed 19 MiB block for reuse by the thread (arena) that freed it, so a
/// few long-lived threads hold a few blocks, where hundreds of pool threads would each keep
/// one (the 4.4 GiB of issue 12).
pub struct Hasher {
    jobs: Mutex<std::sync::mpsc::Sender<Job>>,
    admitted: Arc<AtomicUsize>,
    limit: usize,
    dummy: Arc<OnceLock<String>>,
}

type Job = Box<dyn FnOnce() + Send>;

/// The hashing queue is full.
#[derive(Debug)]
pub struct Busy;

/// Counted in the queue until the job has run (or is dropped unrun), even if the caller goes
/// away.
struct Place(Arc<AtomicUsize>);

impl Drop for Place {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// An admitted sign-in, to hash once.
pub struct Admission<'a> {
    hasher: &'a Hasher,
    place: Option<Place>,
}

impl Admission<'_> {
    pub async fn run<T: Send + 'static>(mut self, f: impl FnOnce() -> T + Send + 'static) -> Result<T, Busy> {
        let place = self.place.take();
        let (tx, rx) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move || {
            let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
            drop(place);
            let _ = tx.send(result);
        });
        if self.hasher.jobs.lock().unwrap_or_else(|p| p.into_inner()).send(job).is_err() {
            return Err(Busy);
        }
        match rx.await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(panic)) => std::panic::resume_unwind(panic),
            Err(_) => Err(Busy),
        }
    }
}

impl Hasher {
    pub fn new(workers: usize, queue: usize) -> Hasher {
        let workers = workers.max(1);
        let (tx, rx) = std::sync::mpsc::channel::<Job>();
        let rx = Arc::new(Mutex::new(rx));
        for i in 0..workers {
            let rx = rx.clone();
            let spawned = std::thread::Builder::new().name(format!("hasher-{i}")).spawn(move || loop {
                let job = rx.lock().unwrap_or_else(|p| p.into_inner()).recv();
                match job {
                    Ok(job) => job(),
                    Err(_) => return, // the Hasher is gone
                }
            });
            if let Err(e) = spawned {
                tracing::error!("cannot start a hashing thread: {e}");
            }
        }
        // The dummy hash is made at once, on a hashing thread.
        let dummy: Arc<OnceLock<String>> = Arc::default();
        let made = dummy.clone();
        let _ = tx.send(Box::new(move || {
            made.get_or_init(|| hash_password("no such user, no such password"));
        }));
        Hasher { jobs: Mutex::new(tx), admitted: Arc::default(), limit: workers + queue, dummy }
    }

    /// Runs `f` (a hash or a verification) on a hashing thread once one is free.
    pub async fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> Result<T, Busy> {
        self.admit()?.run(f).await
    }

    /// A place in the queue, taken before any other work for a sign-in, so a flood is turned
    /// away before it costs anything.
    pub fn admit(&self) -> Result<Admission<'_>, Busy> {
        if self.admitted.fetch_add(1, Ordering::SeqCst) >= self.limit {
            self.admitted.fetch_sub(1, Ordering::SeqCst);
            return Err(Busy);
        }
        Ok(Admission { hasher: self, place: Some(Place(self.admitted.clone())) })
    }

    /// A hash to verify against when the name is unknown, so that an unknown name takes as
    /// long as a wrong password.
    pub fn dummy_hash(&self) -> String {
        self.dummy.get_or_init(|| hash_password("no such user, no such password")).clone()
    }
}

/// Failed attempts per key (an address, a username) with exponential waits: after `free`
/// failures, each further one blocks the key for `base * 2^k`, at most `max`. A success clears
/// the key.
pub struct Throttle {
    free: u32,
    base: Duration,
    max: Duration,
    entries: Mutex<HashMap<String, Failures>>,
}

struct Failures {
    count: u32,
    blocked_until: Instant,
    last: Instant,
}

impl Throttle {
    pub fn new(free: u32, base: Duration, max: Duration) -> Throttle {
        Throttle { free, base, max, entries: Mutex::default() }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Failures>> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// How long `key` must wait, if it must.
    pub fn check(&self, key: &str, now: Instant) -> Result<(), Duration> {
        match self.lock().get(key) {
            Some(f) if f.blocked_until > now => Err(f.blocked_until - now),
            _ => Ok(()),
        }
    }

    pub fn fail(&self, key: &str, now: Instant) {
        let mut entries = self.lock();
        if entries.len() > 100_000 {
            let max = self.max;
            entries.retain(|_, f| f.blocked_until > now || now.duration_since(f.last) < max);
        }
        let f = entries.entry(key.to_owned()).or_insert(Failures { count: 0, blocked_until: now, last: now });
        // A key quiet for the longest wait starts over.
        if now.duration_since(f.last) > self.max && f.blocked_until <= now {
            f.count = 0;
        }
        f.count += 1;
        f.last = now;
        if f.count > self.free {
            let doublings = (f.count - self.free - 1).min(30);
            let wait = self.base.saturating_mul(1u32 << doublings).min(self.max);
            f.blocked_until = now + wait;
        }
    }

    pub fn succeed(&self, key: &str) {
        self.lock().remove(key);
    }
}

/// A token bucket per key: `burst` at once, refilled at `per_hour`.
pub struct Quota {
    burst: f64,
    per_sec: f64,
    buckets: Mutex<HashMap<String, (f64, Instant)>>,
}

impl Quota {
    pub fn per_hour(burst: u32, per_hour: u32) -> Quota {
        Quota::new(burst as f64, per_hour as f64 / 3600.0)
    }

    pub fn new(burst: f64, per_sec: f64) -> Quota {
        Quota { burst: burst.max(1.0), per_sec: per_sec.max(0.0), buckets: Mutex::default() }
    }

    /// Takes one for `key`, or says how long until one is available.
    pub fn take(&self, key: &str, now: Instant) -> Result<(), Duration> {
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if buckets.len() > 100_000 {
            let (per_sec, burst) = (self.per_sec, self.burst);
            buckets.retain(|_, (tokens, at)| *tokens + now.duration_since(*at).as_secs_f64() * per_sec < burst);
        }
        let (tokens, at) = buckets.entry(key.to_owned()).or_insert((self.burst, now));
        *tokens = (*tokens + now.duration_since(*at).as_secs_f64() * self.per_sec).min(self.burst);
        *at = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            Ok(())
        } else if self.per_sec > 0.0 {
            Err(Duration::from_secs_f64(((1.0 - *tokens) / self.per_sec).min(86_400.0)))
        } else {
            Err(Duration::from_secs(3600))
        }
    }
}

#[cfg(unix)]
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(path)?;
    f.write_all(bytes)
}

#[cfg(not(unix))]
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    std::fs::write(path, bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user() -> User {
        User { id: "u1".into(), username: "ada".into() }
    }

    const FAR: i64 = i64::MAX;

    #[test]
    fn issued_tokens_verify_and_forged_ones_do_not() {
        let tokens = Tokens::new(b"0123456789abcdef0123456789abcdef".to_vec(), 60);
        let (t, exp) = tokens.issue(&user(), "s1", FAR);
        let v = tokens.verify(&t).expect("verifies");
        assert_eq!((v.user, v.session_id.as_str(), v.expires_at), (user(), "s1", exp));
        let other = Tokens::new(b"another secret, another server!!".to_vec(), 60);
        assert_eq!(other.verify(&t), None, "signed by another secret");
        let (payload, sig) = t.split_once('.').unwrap();
        let forged_payload = B64.encode(br#"{"sub":"admin","name":"admin","sid":"s1","exp":9999999999}"#);
        assert_eq!(tokens.verify(&format!("{forged_payload}.{sig}")), None);
        assert_eq!(tokens.verify(payload), None);
        assert_eq!(tokens.verify("garbage"), None);
    }

    #[test]
    fn refresh_tokens_verify_and_never_pass_for_access_tokens() {
        let tokens = Tokens::new(b"0123456789abcdef0123456789abcdef".to_vec(), 60);
        let r = tokens.refresh_token(&user(), "s1");
        assert_eq!(tokens.verify_refresh(&r), Some((user(), "s1".to_owned())));
        assert_eq!(tokens.verify(&r), None, "a refresh token is no access token");
        let (access, _) = tokens.issue(&user(), "s1", FAR);
        assert_eq!(tokens.verify_refresh(&access), None, "an access token is no refresh token");
        let other = Tokens::new(b"another secret, another server!!".to_vec(), 60);
        assert_eq!(other.verify_refresh(&r), None, "signed by another secret");
        let (payload, sig) = r.split_once('.').unwrap();
        let forged = B64.encode(br#"{"sid":"s1","sub":"admin","name":"admin"}"#);
        assert_eq!(tokens.verify_refresh(&format!("{forged}.{sig}")), None);
        assert_eq!(tokens.verify_refresh(payload), None);
    }

    #[test]
    fn expired_tokens_are_refused_and_tokens_end_with_their_session() {
        let tokens = Tokens::new(b"0123456789abcdef0123456789abcdef".to_vec(), -1);
        assert_eq!(tokens.verify(&tokens.issue(&user(), "s1", FAR).0), None);
        let tokens = Tokens::new(b"0123456789abcdef0123456789abcdef".to_vec(), 600);
        let (_, exp) = tokens.issue(&user(), "s1", unix_now() + 10);
        assert!(exp <= unix_now() + 10, "never past the session's end");
    }

    #[test]
    fn revoked_sessions_are_not_live() {
        let sessions = Sessions::default();
        let changes = sessions.subscribe();
        sessions.insert("s1", "u1", unix_now() + 60);
        sessions.insert("s2", "u1", unix_now() + 60);
        sessions.insert("s3", "u2", unix_now() + 60);
        sessions.insert("old", "u2", unix_now() - 1);
        assert!(sessions.is_live("s1", "u1"));
        assert!(!sessions.is_live("s1", "u2"), "another user's session id");
        assert!(!sessions.is_live("old", "u2"), "expired");
        assert!(sessions.revoke("s1"));
        assert!(changes.has_changed().unwrap());
        assert!(!sessions.is_live("s1", "u1"));
        assert!(sessions.is_live("s2", "u1"));
        assert_eq!(sessions.revoke_user("u1"), vec!["s2".to_owned()]);
        assert!(!sessions.is_live("s2", "u1") && sessions.is_live("s3", "u2"));
    }

    #[test]
    fn throttle_waits_grow_exponentially_and_success_clears() {
        let t = Throttle::new(2, Duration::from_secs(1), Duration::from_secs(10));
        let t0 = Instant::now();
        t.fail("k", t0);
        t.fail("k", t0);
        assert!(t.check("k", t0).is_ok(), "two free failures");
        t.fail("k", t0);
        assert_eq!(t.check("k", t0), Err(Duration::from_secs(1)));
        t.fail("k", t0);
        assert_eq!(t.check("k", t0), Err(Duration::from_secs(2)));
        t.fail("k", t0);
        assert_eq!(t.check("k", t0), Err(Duration::from_secs(4)));
        for _ in 0..10 {
            t.fail("k", t0);
        }
        assert_eq!(t.check("k", t0), Err(Duration::from_secs(10)), "capped");
        assert!(t.check("other", t0).is_ok());
        t.succeed("k");
        assert!(t.check("k", t0).is_ok());
    }

    #[test]
    fn quota_refills() {
        let q = Quota::new(2.0, 1.0);
        let t0 = Instant::now();
        assert!(q.take("a", t0).is_ok() && q.take("a", t0).is_ok());
        assert_eq!(q.take("a", t0), Err(Duration::from_secs(1)));
        assert!(q.take("b", t0).is_ok());
        assert!(q.take("a", t0 + Duration::from_secs(1)).is_ok());
    }

    #[test]
    fn passwords_verify() {
        let h = hash_password("correct horse");
        assert!(verify_password("correct horse", &h));
        assert!(!verify_password("wrong", &h));
    }

    #[tokio::test]
    async fn the_hasher_refuses_beyond_its_queue() {
        let hasher = std::sync::Arc::new(Hasher::new(1, 1));
        let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
        let (started_tx, started_rx) = tokio::sync::oneshot::channel::<()>();
        let h = hasher.clone();
        let first = tokio::spawn(async move {
            h.run(move || {
                let _ = started_tx.send(());
                release_rx.recv().ok()
            })
            .await
            .is_ok()
        });
        started_rx.await.unwrap(); // the first holds the one worker
        let h = hasher.clone();
        let second = tokio::spawn(async move { h.run(|| ()).await.is_ok() });
        while hasher.admitted.load(Ordering::SeqCst) < 2 {
            tokio::task::yield_now().await;
        }
        assert!(hasher.run(|| ()).await.is_err(), "worker and queue full");
        release_tx.send(()).unwrap();
        assert!(first.await.unwrap() && second.await.unwrap());
        assert!(hasher.run(|| ()).await.is_ok());
    }
}
