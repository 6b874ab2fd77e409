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

    /// How long a session token stays valid, in seconds.
    #[arg(long, env = "PERSONA_TOKEN_TTL_SECS", default_value_t = 7 * 24 * 3600)]
    pub token_ttl_secs: i64,

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
        // Persona randomness seeded, and the seed printed, so a failure can be replayed.
        let seed = std::env::var("PERSONA_TEST_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(rand::random::<u64>);
        eprintln!("persona seed {seed} (replay with PERSONA_TEST_SEED={seed})");
        c.persona_seed = Some(seed);
        c
    }
}
