//! Command-line flags, each also readable from the environment.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Parser;

#[derive(Parser, Debug, Clone)]
#[command(
    name = "persona-chat-server",
    version,
    about = "The persona-chat server: serves the built app, speaks the chat protocol over \
             WebSocket (/ws) and HTTP (/api), and stores everything in SQLite."
)]
pub struct Config {
    /// Address to listen on.
    #[arg(long, env = "PERSONA_ADDR", default_value = "127.0.0.1:8080")]
    pub addr: SocketAddr,

    /// Directory for the SQLite database and the token secret; created if missing.
    #[arg(long, env = "PERSONA_DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,

    /// Directory of the built app (Trunk's dist/), served at / with index.html as fallback.
    #[arg(long, env = "PERSONA_STATIC_DIR", default_value = "./dist")]
    pub static_dir: PathBuf,

    /// Secret for signing tokens. Unset: one is generated at first start and kept in the
    /// data dir.
    #[arg(long, env = "PERSONA_SECRET", hide_env_values = true)]
    pub secret: Option<String>,

    /// How long one token stays valid, in seconds; the app refreshes it
    /// (`POST /api/session/refresh`) while its session lives.
    #[arg(long, env = "PERSONA_TOKEN_TTL_SECS", default_value_t = 900)]
    pub token_ttl_secs: i64,

    /// How long a session lasts from sign-in, in seconds, unless signed out first.
    #[arg(long, env = "PERSONA_SESSION_TTL_SECS", default_value_t = 30 * 24 * 3600)]
    pub session_ttl_secs: i64,

    /// Password hashes computed at once (each holds about 19 MiB); 0: the number of cores, at
    /// most 8.
    #[arg(long, env = "PERSONA_HASH_WORKERS", default_value_t = 0)]
    pub hash_workers: usize,

    /// Sign-ins and sign-ups that may wait for a hashing worker; beyond, 429 with Retry-After.
    #[arg(long, env = "PERSONA_HASH_QUEUE", default_value_t = 32)]
    pub hash_queue: usize,

    /// Accounts one address may create per hour (also the burst).
    #[arg(long, env = "PERSONA_SIGNUPS_PER_ADDRESS_PER_HOUR", default_value_t = 20)]
    pub signups_per_address_per_hour: u32,

    /// Failed sign-ins an address may make before it must wait (1 s, doubling each further
    /// failure, at most 15 min); a username gets 5.
    #[arg(long, env = "PERSONA_SIGNIN_FAILURES_PER_ADDRESS", default_value_t = 20)]
    pub signin_failures_per_address: u32,

    /// Connections (HTTP and WebSocket) open at once, in all; further ones are closed at once.
    #[arg(long, env = "PERSONA_MAX_CONNECTIONS", default_value_t = 20_000)]
    pub max_connections: usize,

    /// Connections open at once from one IP address.
    #[arg(long, env = "PERSONA_MAX_CONNECTIONS_PER_ADDRESS", default_value_t = 256)]
    pub max_connections_per_address: usize,

    /// How long a client may take to send a request's headers, in milliseconds.
    #[arg(long, env = "PERSONA_HEADER_TIMEOUT_MS", default_value_t = 10_000)]
    pub header_timeout_ms: u64,

    /// Frames a socket may send per second on average (bursts of 10 times as many); beyond,
    /// it is closed with 1008.
    #[arg(long, env = "PERSONA_SOCKET_FRAMES_PER_SEC", default_value_t = 20.0)]
    pub socket_frames_per_sec: f64,

    /// Sockets one user may open per minute (also the burst); more upgrades get 429. A
    /// reconnect loop would otherwise flood everyone with presence changes.
    #[arg(long, env = "PERSONA_SOCKET_OPENS_PER_MINUTE", default_value_t = 60)]
    pub socket_opens_per_minute: u32,

    /// Long polls (GET /api/events) one user may have open at once; more get 429.
    #[arg(long, env = "PERSONA_MAX_POLLS_PER_USER", default_value_t = 4)]
    pub max_polls_per_user: u32,

    /// Rooms one user may create per hour (also the burst).
    #[arg(long, env = "PERSONA_ROOMS_PER_HOUR", default_value_t = 30)]
    pub rooms_per_hour: u32,

    /// Rooms one user may have created in all.
    #[arg(long, env = "PERSONA_MAX_ROOMS_PER_USER", default_value_t = 200)]
    pub max_rooms_per_user: i64,

    /// Times per hour one user may add people to rooms (also the burst).
    #[arg(long, env = "PERSONA_MEMBER_ADDS_PER_HOUR", default_value_t = 120)]
    pub member_adds_per_hour: u32,

    /// Most members (people and personas) of a room other than the Lobby.
    #[arg(long, env = "PERSONA_MAX_ROOM_MEMBERS", default_value_t = 500)]
    pub max_room_members: i64,

    /// The origins (scheme://host[:port]) users open the app at; repeatable. The upgrade's and
    /// the API's Origin must be one of these or an --allowed-origin. Unset: http://ADDR (and
    /// http://localhost:PORT for a loopback ADDR).
    #[arg(long = "public-origin", env = "PERSONA_PUBLIC_ORIGINS", value_delimiter = ',')]
    pub public_origins: Vec<String>,

    /// A token that lets `GET /metrics` be read from other hosts (`Authorization: Bearer
    /// TOKEN`); without it, /metrics answers loopback peers only.
    #[arg(long, env = "PERSONA_METRICS_TOKEN", hide_env_values = true)]
    pub metrics_token: Option<String>,

    /// Persona replies written at once with the OpenAI-compatible endpoint (or the built-in
    /// responder); each conversation has at most 2 replies pending, taken in turn.
    #[arg(long, env = "PERSONA_LLM_CONCURRENCY", default_value_t = 4)]
    pub persona_llm_concurrency: usize,

    /// Heartbeat interval announced to clients in `hello`, in milliseconds.
    #[arg(long, env = "PERSONA_HEARTBEAT_MS", default_value_t = persona_chat_protocol::DEFAULT_HEARTBEAT_MS)]
    pub heartbeat_ms: u64,

    /// Most sockets one user may have open at once; the next is closed with 1008.
    #[arg(long, env = "PERSONA_MAX_SOCKETS_PER_USER", default_value_t = 5)]
    pub max_sockets_per_user: usize,

    /// Origins (scheme://host[:port]) besides the server's own that may call the API and open
    /// sockets from a browser; repeatable. Requests without an Origin header (not browsers)
    /// always pass.
    #[arg(long = "allowed-origin", env = "PERSONA_ALLOWED_ORIGINS", value_delimiter = ',')]
    pub allowed_origins: Vec<String>,

    /// Messages a user may send per second, on average.
    #[arg(long, env = "PERSONA_RATE_LIMIT_PER_SEC", default_value_t = 10.0)]
    pub rate_limit_per_sec: f64,

    /// Messages a user may send at once before the per-second rate applies.
    #[arg(long, env = "PERSONA_RATE_LIMIT_BURST", default_value_t = 20.0)]
    pub rate_limit_burst: f64,

    /// Resync exchanges (`sync`, `POST /api/sync`) a user may ask for per second, on average.
    #[arg(long, env = "PERSONA_SYNC_PER_SEC", default_value_t = 2.0)]
    pub sync_per_sec: f64,

    /// Resync exchanges a user may ask for at once before the per-second rate applies (every
    /// tab syncs when its transport comes up).
    #[arg(long, env = "PERSONA_SYNC_BURST", default_value_t = 20.0)]
    pub sync_burst: f64,

    /// Events kept in memory for clients that poll (GET /api/events); older cursors get resync.
    #[arg(long, env = "PERSONA_EVENT_LOG_CAPACITY", default_value_t = crate::hub::DEFAULT_EVENT_LOG)]
    pub event_log_capacity: usize,

    /// A user who only polls (no socket) stays online this long after their last long poll
    /// ended, in milliseconds: long enough to bridge the gap to the next poll.
    #[arg(long, env = "PERSONA_POLL_PRESENCE_GRACE_MS", default_value_t = 35_000)]
    pub poll_presence_grace_ms: u64,

    /// Refuse WebSocket upgrades (for testing the app's HTTP polling fallback).
    #[arg(long, env = "PERSONA_DISABLE_WEBSOCKET")]
    pub disable_websocket: bool,

    /// A persona (by name, case-insensitive) that stays offline and does not reply;
    /// repeatable. In the environment: names separated by commas.
    #[arg(long = "offline-persona", env = "PERSONA_OFFLINE_PERSONAS", value_delimiter = ',')]
    pub offline_personas: Vec<String>,

    /// Pace of a persona's streamed reply: about this many milliseconds between pieces of a
    /// few words each (0: as fast as possible).
    #[arg(long, env = "PERSONA_PACE_MS", default_value_t = 60)]
    pub persona_pace_ms: u64,

    /// How long the built-in responder thinks before its first words, in milliseconds.
    #[arg(long, env = "PERSONA_THINK_MS", default_value_t = 700)]
    pub persona_think_ms: u64,

    /// Seed of the personas' randomness (the built-in responder's words, how replies are cut
    /// into deltas, the pace): the same seed gives the same replies, for replaying a test.
    /// Unset: a fresh seed each start.
    #[arg(long, env = "PERSONA_SEED")]
    pub persona_seed: Option<u64>,

    /// Base URL of an OpenAI-compatible API (e.g. https://api.openai.com/v1): when set,
    /// personas reply through its streaming `/chat/completions` instead of the built-in
    /// responder.
    #[arg(long, env = "PERSONA_LLM_URL")]
    pub persona_llm_url: Option<String>,

    /// Model asked for by the OpenAI-compatible responder.
    #[arg(long, env = "PERSONA_LLM_MODEL", default_value = "gpt-4o-mini")]
    pub persona_llm_model: String,

    /// API key of the OpenAI-compatible endpoint. Prefer the environment: a command line is
    /// visible to every local user. Never logged.
    #[arg(long, env = "PERSONA_LLM_API_KEY", hide_env_values = true)]
    pub persona_llm_api_key: Option<ApiKey>,
}

/// A secret that never shows in logs or `Debug` output.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey(String);

impl ApiKey {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl From<String> for ApiKey {
    fn from(s: String) -> Self {
        ApiKey(s)
    }
}

impl std::fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ApiKey(<redacted>)")
    }
}

impl Config {
    /// The origins the app is served at: --public-origin, or derived from --addr. Empty when
    /// listening on every interface without --public-origin: the server cannot know its
    /// name, and falls back to comparing Origin with the Host header (a warning says so).
    pub fn public_origins(&self, bound: SocketAddr) -> Vec<String> {
        if !self.public_origins.is_empty() {
            return self.public_origins.iter().map(|o| o.trim_end_matches('/').to_owned()).collect();
        }
        if bound.ip().is_unspecified() {
            return Vec::new();
        }
        let port = bound.port();
        let mut out = vec![format!("http://{bound}")];
        if bound.ip().is_loopback() {
            out.push(format!("http://localhost:{port}"));
            if bound.is_ipv4() {
                out.push(format!("http://127.0.0.1:{port}"));
            }
        }
        out.dedup();
        out
    }

    /// Defaults for tests: listen on a free loopback port, keep data in `data_dir`.
    pub fn for_tests(data_dir: PathBuf) -> Config {
        let mut c = Config::parse_from(["persona-chat-server"]);
        c.addr = "127.0.0.1:0".parse().expect("valid address");
        c.data_dir = data_dir.clone();
        c.static_dir = data_dir.join("no-static");
        c.secret = Some("test-secret-test-secret-test-secret".into());
        // Personas reply at once and fast, with the built-in responder, all of them online.
        c.persona_pace_ms = 2;
        c.persona_think_ms = 0;
        c.persona_llm_url = None;
        c.persona_llm_api_key = None;
        c.offline_personas.clear();
        // Every test signs up from 127.0.0.1; the abuse suite lowers these again.
        c.signups_per_address_per_hour = 100_000;
        c.signin_failures_per_address = 1_000;
        c.metrics_token = None;
        c.public_origins.clear();
        // Persona randomness seeded, and the seed printed, so a failure can be replayed.
        let seed =
            std::env::var("PERSONA_TEST_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(rand::random::<u64>);
        eprintln!("persona seed {seed} (replay with PERSONA_TEST_SEED={seed})");
        c.persona_seed = Some(seed);
        c
    }
}
