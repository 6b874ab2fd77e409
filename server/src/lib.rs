//! The persona-chat server as a library, so integration tests can start it on a free port.

pub mod auth;
pub mod chat;
pub mod clock;
pub mod config;
pub mod events;
pub mod fanout;
pub mod http;
pub mod hub;
pub mod limits;
pub mod list;
pub mod metrics;
pub mod names;
pub mod net;
pub mod personas;
pub mod refusal;
pub mod store;
pub mod typing;
pub mod ws;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::auth::{Hasher, Quota, Sessions, Throttle, Tokens, Verified};
use crate::config::Config;
use crate::events::EventLog;
use crate::hub::Hub;
use crate::limits::RateLimiter;
use crate::metrics::Metrics;
use crate::store::Store;
use crate::typing::Typing;

/// What every handler shares.
pub struct Shared {
    pub config: Config,
    pub store: Mutex<Store>,
    /// Read-only connections, so reads (lists, history) never wait for the write mutex.
    pub readers: Vec<Mutex<Store>>,
    next_reader: std::sync::atomic::AtomicUsize,
    pub hub: Hub,
    pub tokens: Tokens,
    /// The live sessions; a token is good only while its session is.
    pub sessions: Sessions,
    /// Password hashing: a few at once, a bounded queue, 429 beyond.
    pub hasher: Hasher,
    /// Failed sign-ins per address and per username (exponential waits).
    pub address_failures: Throttle,
    pub name_failures: Throttle,
    /// New accounts per address.
    pub signups: Quota,
    /// Rooms created, and additions of people, per user.
    pub room_quota: Quota,
    pub member_add_quota: Quota,
    /// Socket upgrades per user.
    pub socket_opens: Quota,
    /// The origins the app is served at (empty: compare Origin with Host).
    pub public_origins: Vec<String>,
    /// Open connections, in all and per address.
    pub connections: net::Connections,
    pub typing: Typing,
    pub limiter: RateLimiter,
    /// The resync exchange per user (`sync`, `POST /api/sync`): one account asking in a loop
    /// gets refusals, not the store's time.
    pub sync_limiter: RateLimiter,
    pub metrics: Metrics,
    /// The personas at work: their live status, reply queues and streams.
    pub personas: personas::Runtime,
    /// Flips to true when the server begins shutting down; sockets close with 1012 (restart).
    pub shutdown: watch::Receiver<bool>,
    /// WAL checkpoints off the request path; stops with the server.
    _checkpointer: store::Checkpointer,
}

pub type AppState = Arc<Shared>;

impl Shared {
    /// The user and session of a token: signed here, unexpired, its session live.
    pub fn authenticate(&self, token: &str) -> Option<Verified> {
        self.tokens.verify(token).filter(|v| self.sessions.is_live(&v.session_id, &v.user.id))
    }

    /// Runs `f` on the store from a blocking thread (SQLite calls block).
    pub async fn db<T, F>(self: &Arc<Self>, f: F) -> Result<T, store::StoreError>
    where
        F: FnOnce(&mut Store, &Shared) -> Result<T, store::StoreError> + Send + 'static,
        T: Send + 'static,
    {
        let shared = self.clone();
        tokio::task::spawn_blocking(move || {
            let mut store = shared.store.lock().unwrap_or_else(|p| p.into_inner());
            f(&mut store, &shared)
        })
        .await
        .unwrap_or_else(|join_error| std::panic::resume_unwind(join_error.into_panic()))
    }
}

impl Shared {
    /// Runs a read-only `f` on one of the read connections, from a blocking thread.
    pub async fn read<T, F>(self: &Arc<Self>, f: F) -> Result<T, store::StoreError>
    where
        F: FnOnce(&Store) -> Result<T, store::StoreError> + Send + 'static,
        T: Send + 'static,
    {
        if self.readers.is_empty() {
            return self.db(move |store, _| f(store)).await;
        }
        let shared = self.clone();
        tokio::task::spawn_blocking(move || {
            let readers = &shared.readers;
            let start = shared.next_reader.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            // A free one if there is, else wait for the next in turn.
            let guard = (0..readers.len())
                .find_map(|i| readers[(start + i) % readers.len()].try_lock().ok())
                .unwrap_or_else(|| readers[start % readers.len()].lock().unwrap_or_else(|p| p.into_inner()));
            f(&guard)
        })
        .await
        .unwrap_or_else(|join_error| std::panic::resume_unwind(join_error.into_panic()))
    }
}

/// Read connections in the pool.
pub const READERS: usize = 4;

/// A server bound to its address, not yet serving.
pub struct Server {
    pub addr: SocketAddr,
    listener: TcpListener,
    router: Router,
    shutdown_tx: watch::Sender<bool>,
    shared: AppState,
}

impl Server {
    /// Opens the store (migrating and seeding it), loads the secret and binds the address.
    pub async fn bind(config: Config) -> anyhow_like::Result<Server> {
        return_large_blocks_to_the_system();
        let secret = Tokens::load_secret(config.secret.as_deref(), &config.data_dir)
            .map_err(|e| format!("cannot read or create the token secret in {}: {e}", config.data_dir.display()))?;
        let mut store = Store::open(&config.data_dir)
            .map_err(|e| format!("cannot open the database in {}: {e}", config.data_dir.display()))?;
        store.seed(personas::SEED).map_err(|e| format!("cannot seed the database: {e}"))?;
        // Replies cut short by a server that died mid-stream: stored, marked interrupted.
        let recovered = store.recover_drafts().map_err(|e| format!("cannot recover interrupted replies: {e}"))?;
        if !recovered.is_empty() {
            tracing::info!("stored {} reply(ies) interrupted by the last stop as interrupted", recovered.len());
        }
        let pruned = store
            .prune_tombstones(crate::clock::unix_now() - store::TOMBSTONE_DAYS * 86_400)
            .map_err(|e| format!("cannot prune old tombstones: {e}"))?;
        if pruned > 0 {
            tracing::info!("forgot {pruned} membership tombstone(s) older than {} days", store::TOMBSTONE_DAYS);
        }
        let checkpointer = store
            .checkpoint_in_background(&config.data_dir)
            .map_err(|e| format!("cannot open the database for checkpoints: {e}"))?;
        let mut readers = Vec::with_capacity(READERS);
        for _ in 0..READERS {
            readers.push(Mutex::new(
                Store::open_reader(&config.data_dir)
                    .map_err(|e| format!("cannot open the database for reading: {e}"))?,
            ));
        }
        let sessions = Sessions::default();
        for (id, user_id, expires_at) in
            store.live_sessions(crate::clock::unix_now()).map_err(|e| format!("cannot read sessions: {e}"))?
        {
            sessions.insert(&id, &user_id, expires_at);
        }
        let hub = Hub::new(EventLog::new(config.event_log_capacity));
        hub.load_members(store.user_memberships().map_err(|e| format!("cannot read memberships: {e}"))?);
        let listener =
            TcpListener::bind(config.addr).await.map_err(|e| format!("cannot listen on {}: {e}", config.addr))?;
        let addr = listener.local_addr().map_err(|e| e.to_string())?;
        let public_origins = config.public_origins(addr);
        if public_origins.is_empty() {
            tracing::warn!(
                "listening on every interface without --public-origin: browsers' Origin is compared with the Host header; \
                 set --public-origin to the address users open"
            );
        }
        // The core count, at most 8 (8 hashes hold about 150 MiB).
        let workers = if config.hash_workers == 0 {
            std::thread::available_parallelism().map_or(2, |n| n.get()).min(8)
        } else {
            config.hash_workers
        };
        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        let shared = Arc::new(Shared {
            personas: personas::Runtime::new(&config, &store),
            tokens: Tokens::new(secret, config.token_ttl_secs),
            sessions,
            hasher: Hasher::new(workers, config.hash_queue),
            address_failures: Throttle::new(
                config.signin_failures_per_address,
                Duration::from_secs(1),
                Duration::from_secs(900),
            ),
            name_failures: Throttle::new(5, Duration::from_secs(1), Duration::from_secs(900)),
            signups: Quota::per_hour(config.signups_per_address_per_hour, config.signups_per_address_per_hour),
            room_quota: Quota::per_hour(config.rooms_per_hour, config.rooms_per_hour),
            member_add_quota: Quota::per_hour(config.member_adds_per_hour, config.member_adds_per_hour),
            socket_opens: Quota::new(
                config.socket_opens_per_minute as f64,
                config.socket_opens_per_minute as f64 / 60.0,
            ),
            public_origins,
            connections: net::Connections::new(config.max_connections, config.max_connections_per_address),
            typing: Typing::default(),
            limiter: RateLimiter::new(config.rate_limit_per_sec, config.rate_limit_burst),
            sync_limiter: RateLimiter::new(config.sync_per_sec, config.sync_burst),
            metrics: Metrics::default(),
            config,
            store: Mutex::new(store),
            readers,
            next_reader: std::sync::atomic::AtomicUsize::new(0),
            hub,
            shutdown: shutdown_rx,
            _checkpointer: checkpointer,
        });
        let router = http::router(shared.clone());
        Ok(Server { addr, listener, router, shutdown_tx, shared })
    }

    /// Serves until `stop` resolves, then closes every socket with 1012 and returns once
    /// connections have finished.
    pub async fn serve(self, stop: impl std::future::Future<Output = ()> + Send + 'static) -> std::io::Result<()> {
        let shutdown_tx = self.shutdown_tx;
        let mut done = shutdown_tx.subscribe();
        let sweeper = tokio::spawn(sweep_typing(self.shared.clone()));
        tokio::spawn(async move {
            stop.await;
            let _ = shutdown_tx.send(true);
        });
        net::serve(self.listener, self.router, self.shared.clone(), async move {
            let _ = done.wait_for(|stopping| *stopping).await;
        })
        .await;
        // Sockets close with 1012 on their own (they watch the shutdown), and streaming replies
        // store what they have as interrupted (dropping their drafts): give them a moment.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
        while (self.shared.hub.connection_count() > 0 || self.shared.personas.replies_streaming() > 0)
            && tokio::time::Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        sweeper.abort();
        Ok(())
    }

    /// Starts serving in the background (for tests); the returned sender stops it.
    pub fn spawn(self) -> (SocketAddr, tokio::sync::oneshot::Sender<()>, tokio::task::JoinHandle<std::io::Result<()>>) {
        let addr = self.addr;
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let handle = tokio::spawn(self.serve(async move {
            let _ = rx.await;
        }));
        (addr, tx, handle)
    }
}

/// Ends typing states that got no typing_start for 5 s, telling the others.
async fn sweep_typing(shared: AppState) {
    let mut tick = tokio::time::interval(std::time::Duration::from_millis(250));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut ticks: u64 = 0;
    loop {
        tick.tick().await;
        ticks += 1;
        // Ended sessions are forgotten once a minute.
        if ticks.is_multiple_of(240) {
            shared.sessions.prune();
        }
        for ended in shared.typing.expire(std::time::Instant::now()) {
            chat::announce_typing_stopped(&shared, ended);
        }
        // Users who polled and stopped: offline after the grace period.
        for (user_id, last_seen) in shared.hub.sweep_pollers(std::time::Instant::now()) {
            if let Err(e) = shared.db(move |store, _| store.set_last_seen(&user_id, &last_seen)).await {
                tracing::warn!("could not record last_seen: {e}");
            }
        }
    }
}

/// With glibc, a freed block of a few MiB is kept for reuse once the allocator has seen one
/// (its mmap threshold adapts upwards), and each thread's arena keeps its own: every password
/// hash (19 MiB) would leave its block behind. A fixed threshold of 1 MiB makes such blocks
/// mmap'd, and given back when freed.
fn return_large_blocks_to_the_system() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        static ONCE: std::sync::Once = std::sync::Once::new();
        // SAFETY: mallopt only changes allocator tunables; called once, before the hashing
        // threads start.
        ONCE.call_once(|| unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 20);
        });
    }
}

/// Start-up errors are plain messages for the person starting the server.
pub mod anyhow_like {
    pub type Result<T> = std::result::Result<T, String>;
}
