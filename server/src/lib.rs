//! The persona-chat server as a library, so integration tests can start it on a free port.

pub mod auth;
pub mod chat;
pub mod clock;
pub mod config;
pub mod events;
pub mod http;
pub mod hub;
pub mod limits;
pub mod metrics;
pub mod personas;
pub mod store;
pub mod typing;
pub mod ws;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::Router;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::auth::Tokens;
use crate::config::Config;
use crate::events::EventLog;
use crate::hub::Hub;
use crate::limits::RateLimiter;
use crate::metrics::Metrics;
use crate::typing::Typing;
use crate::store::Store;

/// What every handler shares.
pub struct Shared {
    pub config: Config,
    pub store: Mutex<Store>,
    pub hub: Hub,
    pub tokens: Tokens,
    pub typing: Typing,
    pub limiter: RateLimiter,
    pub metrics: Metrics,
    /// The personas at work: their live status, reply queues and streams.
    pub personas: personas::Runtime,
    /// Flips to true when the server begins shutting down; sockets close with 1001.
    pub shutdown: watch::Receiver<bool>,
    /// WAL checkpoints off the request path; stops with the server.
    _checkpointer: store::Checkpointer,
}

pub type AppState = Arc<Shared>;

impl Shared {
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
        let secret = Tokens::load_secret(config.secret.as_deref(), &config.data_dir)
            .map_err(|e| format!("cannot read or create the token secret in {}: {e}", config.data_dir.display()))?;
        let mut store = Store::open(&config.data_dir)
            .map_err(|e| format!("cannot open the database in {}: {e}", config.data_dir.display()))?;
        store.seed(personas::SEED).map_err(|e| format!("cannot seed the database: {e}"))?;
        let checkpointer = store.checkpoint_in_background(&config.data_dir).map_err(|e| format!("cannot open the database for checkpoints: {e}"))?;
        let hub = Hub::new(EventLog::new(config.event_log_capacity));
        hub.load_members(store.user_memberships().map_err(|e| format!("cannot read memberships: {e}"))?);
        let listener = TcpListener::bind(config.addr)
            .await
            .map_err(|e| format!("cannot listen on {}: {e}", config.addr))?;
        let addr = listener.local_addr().map_err(|e| e.to_string())?;
        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        let shared = Arc::new(Shared {
            personas: personas::Runtime::new(&config, &store),
            tokens: Tokens::new(secret, config.token_ttl_secs),
            typing: Typing::default(),
            limiter: RateLimiter::new(config.rate_limit_per_sec, config.rate_limit_burst),
            metrics: Metrics::default(),
            config,
            store: Mutex::new(store),
            hub,
            shutdown: shutdown_rx,
            _checkpointer: checkpointer,
        });
        let router = http::router(shared.clone());
        Ok(Server { addr, listener, router, shutdown_tx, shared })
    }

    /// Serves until `stop` resolves, then closes every socket with 1001 and returns once
    /// connections have finished.
    pub async fn serve(self, stop: impl std::future::Future<Output = ()> + Send + 'static) -> std::io::Result<()> {
        let shutdown_tx = self.shutdown_tx;
        let mut done = shutdown_tx.subscribe();
        let sweeper = tokio::spawn(sweep_typing(self.shared.clone()));
        tokio::spawn(async move {
            stop.await;
            let _ = shutdown_tx.send(true);
        });
        axum::serve(self.listener, self.router.into_make_service_with_connect_info::<SocketAddr>())
            .with_graceful_shutdown(async move {
                let _ = done.wait_for(|stopping| *stopping).await;
            })
            .await?;
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
    loop {
        tick.tick().await;
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

/// Start-up errors are plain messages for the person starting the server.
pub mod anyhow_like {
    pub type Result<T> = std::result::Result<T, String>;
}
