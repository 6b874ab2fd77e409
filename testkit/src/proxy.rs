//! A round-robin TCP proxy, standing in for a load balancer without sticky sessions: each
//! new connection goes to the next backend in turn, skipping any that refuses to connect (a
//! killed instance), and bytes are copied both ways until either side closes. When a backend
//! dies, the connections through it close too, so clients see what a real balancer shows them.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;

pub struct RoundRobin {
    addr: SocketAddr,
    stats: Arc<Stats>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

struct Stats {
    backends: Vec<SocketAddr>,
    next: AtomicUsize,
    /// Connections handed to each backend.
    routed: Vec<AtomicU64>,
    /// Connections no backend took.
    refused: AtomicU64,
}

impl RoundRobin {
    /// Listens on a random loopback port, in a thread of its own (usable from any test).
    pub fn start(backends: Vec<SocketAddr>) -> std::io::Result<RoundRobin> {
        assert!(!backends.is_empty(), "a proxy needs a backend");
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let stats = Arc::new(Stats {
            routed: backends.iter().map(|_| AtomicU64::new(0)).collect(),
            backends,
            next: AtomicUsize::new(0),
            refused: AtomicU64::new(0),
        });
        let (stop, stopped) = oneshot::channel();
        let thread_stats = stats.clone();
        let thread = std::thread::Builder::new().name("round-robin".into()).spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a proxy runtime");
            runtime.block_on(async move {
                let listener = TcpListener::from_std(listener).expect("a tokio listener");
                tokio::select! {
                    _ = accept_loop(listener, thread_stats) => {}
                    _ = stopped => {}
                }
            });
            // Dropping the runtime ends every copying task: their connections close.
            runtime.shutdown_timeout(Duration::from_millis(100));
        })?;
        Ok(RoundRobin { addr, stats, stop: Some(stop), thread: Some(thread) })
    }

    /// Where clients connect.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// How many connections went to each backend, in the order given to [`RoundRobin::start`].
    pub fn routed(&self) -> Vec<u64> {
        self.stats.routed.iter().map(|n| n.load(Ordering::Relaxed)).collect()
    }

    /// How many connections found no backend to take them.
    pub fn refused(&self) -> u64 {
        self.stats.refused.load(Ordering::Relaxed)
    }
}

impl Drop for RoundRobin {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

async fn accept_loop(listener: TcpListener, stats: Arc<Stats>) {
    loop {
        let Ok((client, _)) = listener.accept().await else { continue };
        let stats = stats.clone();
        tokio::spawn(async move {
            let first = stats.next.fetch_add(1, Ordering::Relaxed);
            let n = stats.backends.len();
            for i in 0..n {
                let index = (first + i) % n;
                let connect = TcpStream::connect(stats.backends[index]);
                if let Ok(Ok(backend)) = tokio::time::timeout(Duration::from_millis(500), connect).await {
                    stats.routed[index].fetch_add(1, Ordering::Relaxed);
                    pipe(client, backend).await;
                    return;
                }
            }
            stats.refused.fetch_add(1, Ordering::Relaxed);
        });
    }
}

async fn pipe(mut client: TcpStream, mut backend: TcpStream) {
    let _ = client.set_nodelay(true);
    let _ = backend.set_nodelay(true);
    let _ = tokio::io::copy_bidirectional(&mut client, &mut backend).await;
}
