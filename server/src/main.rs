use clap::Parser;
use persona_chat_server::config::Config;
use persona_chat_server::Server;

#[tokio::main]
async fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info,tower_http=warn".into()),
        )
        .init();
    let config = Config::parse();
    let static_dir = config.static_dir.clone();
    let server = match Server::bind(config).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("persona-chat-server: {e}");
            std::process::exit(1);
        }
    };
    if !static_dir.join("index.html").exists() {
        tracing::warn!(
            "no built app in {} (build it with `trunk build --release`); serving the API only",
            static_dir.display()
        );
    }
    println!("persona-chat is running: open http://{}/", server.addr);
    if let Err(e) = server.serve(shutdown_signal()).await {
        eprintln!("persona-chat-server: {e}");
        std::process::exit(1);
    }
    println!("persona-chat-server stopped");
}

/// Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        if let Ok(mut s) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            s.recv().await;
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
    tracing::info!("shutting down: closing sockets with 1012 (restart)");
}
