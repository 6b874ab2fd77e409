//! persona-chat-bench: a load benchmark of the persona-chat server over loopback.
//!
//! For each socket count N it starts the server binary as a child process (free 127.0.0.1
//! port, temporary data dir), signs in a handful of users, opens N WebSocket connections
//! joined to the Lobby, and measures: the server's RSS per idle connection, fan-out
//! deliveries per second, and send-to-deliver latency at a steady message rate. Then it
//! kills that server and prints a table. It builds nothing; see scripts/bench-server.sh.

mod abuse;
mod client;
mod hist;
mod report;
mod server;
mod sync;

use std::path::PathBuf;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use clap::Parser;

use crate::client::{Drained, Mode, Receivers, SendReport, Stats, GROUP_LOBBY, GROUP_SIDE};
use crate::report::{FanoutResult, LatencyResult, Row};
use crate::server::{CpuSnapshot, ServerFlags, ServerGuard};

#[derive(Parser, Debug, Clone)]
#[command(
    name = "persona-chat-bench",
    about = "Load benchmark of the persona-chat server over loopback: RSS per idle socket, fan-out \
             deliveries/s, send-to-deliver latency at a steady rate. Starts and kills the server itself."
)]
pub struct Args {
    /// The server binary (build it with `cargo build --profile server -p persona-chat-server`).
    #[arg(long, env = "PERSONA_BENCH_SERVER", default_value = "target/server/persona-chat-server")]
    pub server_bin: PathBuf,

    /// Socket counts N to measure, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1000,5000,10000")]
    pub counts: Vec<usize>,

    /// Users the N sockets are spread over (each sign-in runs the server's slow KDF).
    #[arg(long, default_value_t = 4)]
    pub users: usize,

    /// Socket handshakes (connect, upgrade, join) in flight at once.
    #[arg(long, default_value_t = 64)]
    pub connect_concurrency: usize,

    /// Wait before each RSS reading, in milliseconds.
    #[arg(long, default_value_t = 1500)]
    pub settle_ms: u64,

    /// Fan-out phase: about this many deliveries in total (messages = this / N, at least 50).
    #[arg(long, default_value_t = 1_000_000)]
    pub fanout_deliveries: u64,

    /// Fan-out phase: message i is sent only once message i - W reached every socket. Every
    /// message puts 2 frames (new_message, conversation_update) in each socket's 512-frame
    /// server queue, so a backlog over 256 messages gets sockets kicked rather than measured.
    #[arg(long, default_value_t = 128)]
    pub fanout_window: u64,

    /// Fan-out phase: HTTP sends outstanding at once (pipelining).
    #[arg(long, default_value_t = 8)]
    pub fanout_in_flight: usize,

    /// Steady send rate of the latency phases, messages per second (tokio's timers tick at
    /// most every millisecond: above 1,000 the sender falls short, and says so).
    #[arg(long, default_value_t = 1000.0)]
    pub rate: f64,

    /// Duration of each latency phase, in seconds.
    #[arg(long, default_value_t = 4.0)]
    pub duration_secs: f64,

    /// Fallback latency phases run at this fraction of the measured fan-out capacity.
    #[arg(long, default_value_t = 0.5)]
    pub load_fraction: f64,

    /// Most sockets in the side room of the "fewer receivers" latency phase.
    #[arg(long, default_value_t = 1000)]
    pub max_side_receivers: usize,

    /// Paced sender: most unanswered sends; a tick finding them all busy is not sent.
    #[arg(long, default_value_t = 256)]
    pub max_in_flight: usize,

    /// Longest wait for deliveries after a phase's last send, in seconds.
    #[arg(long, default_value_t = 10.0)]
    pub drain_secs: f64,

    /// Instead of the load table: the abuse figures of issue 12 (peak RSS under 200 concurrent
    /// sign-ins, others' p99 send latency during a typing flood), next to their targets,
    /// against a server with its default limits.
    #[arg(long)]
    pub abuse: bool,

    /// Instead of the load table: the resync exchange's figures of issue 11 (the `sync_state`
    /// answer's size and round-trip time, p50/p99, for a user with 50 and with 500
    /// conversations, unchanged and with a few changed), over the socket and over HTTP.
    #[arg(long)]
    pub sync: bool,

    /// `--sync`: requests measured per case.
    #[arg(long, default_value_t = 500)]
    pub sync_requests: usize,

    /// Global time limit, in seconds: what is not measured by then is reported as such.
    #[arg(long, default_value_t = 360)]
    pub timeout_secs: u64,
}

static START: OnceLock<Instant> = OnceLock::new();

/// Nanoseconds since the benchmark started (monotonic, shared by every thread).
pub fn now_ns() -> u64 {
    START.get_or_init(Instant::now).elapsed().as_nanos() as u64
}

pub fn progress(line: &str) {
    eprintln!("[bench {:6.1}s] {line}", now_ns() as f64 / 1e9);
}

#[tokio::main]
async fn main() {
    now_ns();
    let args = Args::parse();
    let code = run(args).await;
    std::process::exit(code);
}

async fn run(args: Args) -> i32 {
    if !args.server_bin.exists() {
        eprintln!(
            "persona-chat-bench: no server binary at {} (build it with `cargo build --profile server -p persona-chat-server`, \
             or pass --server-bin / PERSONA_BENCH_SERVER)",
            args.server_bin.display()
        );
        return 2;
    }
    if !(args.rate > 0.0 && args.duration_secs > 0.0 && args.load_fraction > 0.0) {
        eprintln!("persona-chat-bench: --rate, --duration-secs and --load-fraction must be positive");
        return 2;
    }
    let flags = match ServerFlags::probe(&args.server_bin) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("persona-chat-bench: {e}");
            return 2;
        }
    };
    if args.abuse {
        return match tokio::time::timeout(Duration::from_secs(args.timeout_secs), abuse::run(&args.server_bin, &flags))
            .await
        {
            Ok(Ok(())) => 0,
            Ok(Err(e)) => {
                eprintln!("persona-chat-bench --abuse: {e}");
                1
            }
            Err(_) => {
                eprintln!("persona-chat-bench --abuse: global timeout ({} s) reached", args.timeout_secs);
                1
            }
        };
    }
    if args.sync {
        if !flags.sync {
            eprintln!("persona-chat-bench --sync: this server build does not answer sync (no --sync-per-sec)");
            return 2;
        }
        let run = sync::run(&args.server_bin, &flags, args.sync_requests);
        return match tokio::time::timeout(Duration::from_secs(args.timeout_secs), run).await {
            Ok(Ok(())) => 0,
            Ok(Err(e)) => {
                eprintln!("persona-chat-bench --sync: {e}");
                1
            }
            Err(_) => {
                eprintln!("persona-chat-bench --sync: global timeout ({} s) reached", args.timeout_secs);
                1
            }
        };
    }
    let (soft, hard) = server::raise_nofile();
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    progress(&format!(
        "server {} (pid per run), {cores} cores, RLIMIT_NOFILE soft {soft} hard {hard}, rate-limit flags: {}",
        args.server_bin.display(),
        if flags.rate_limit { "raised to 1e6/s" } else { "not offered by this build" }
    ));

    let deadline = Instant::now() + Duration::from_secs(args.timeout_secs);
    let mut rows = Vec::new();
    let mut interrupted = None;
    for &n in &args.counts {
        let mut row = Row::new(n);
        if let Some(why) = &interrupted {
            row.skipped = Some(format!("not run: {why}"));
            rows.push(row);
            continue;
        }
        let remaining = deadline.saturating_duration_since(Instant::now());
        tokio::select! {
            result = tokio::time::timeout(remaining, run_count(&args, &flags, soft, n, &mut row)) => match result {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    progress(&format!("N={n}: error: {e}"));
                    row.notes.push(format!("error: {e}"));
                }
                Err(_) => {
                    progress(&format!("N={n}: global timeout ({} s) reached", args.timeout_secs));
                    row.notes.push(format!("stopped by the global timeout ({} s)", args.timeout_secs));
                    interrupted = Some(format!("global timeout ({} s)", args.timeout_secs));
                }
            },
            _ = tokio::signal::ctrl_c() => {
                row.notes.push("interrupted (Ctrl-C)".into());
                interrupted = Some("interrupted (Ctrl-C)".into());
            }
        }
        // The server of this N is dead and its data dir removed (guards dropped above).
        rows.push(row);
    }
    report::print(&args, cores, soft, &rows, now_ns() as f64 / 1e9);
    if interrupted.is_some() {
        1
    } else {
        0
    }
}

/// Measures one socket count N against a fresh server.
async fn run_count(args: &Args, flags: &ServerFlags, own_nofile: u64, n: usize, row: &mut Row) -> Result<(), String> {
    let side_max = args.max_side_receivers.min(n).max(1);
    // Each process holds one fd per socket, plus the sender's HTTP connections and slack.
    let need = (n + side_max + args.max_in_flight + 128) as u64;
    if own_nofile < need {
        row.skipped = Some(format!("needs about {need} open files, RLIMIT_NOFILE hard limit allows {own_nofile}"));
        progress(&format!("N={n}: skipped: {}", row.skipped.as_deref().unwrap_or_default()));
        return Ok(());
    }

    progress(&format!("N={n}: starting the server"));
    // Started from the main thread, which lives as long as the process (PR_SET_PDEATHSIG).
    let mut server = ServerGuard::start(&args.server_bin, flags, &format!("n{n}")).await?;
    // Dropped before `server` (declared after it): sockets close, then the server is killed.
    let stats = Arc::new(Stats::default());
    let mut receivers = Receivers::default();
    match server.nofile() {
        Some((soft, _)) if soft < need => {
            row.skipped = Some(format!("needs about {need} open files, the server's RLIMIT_NOFILE is {soft}"));
            return Ok(());
        }
        Some(_) => {}
        None => row.notes.push("could not read the server's open-file limit".into()),
    }
    let base = server.base_url();
    let http = client::http_client();

    // A handful of users: the sender, the side-room user, and the Lobby receivers.
    let run_tag = format!("{}", now_ns() % 1_000_000_007);
    let mut names = vec!["bench-sender".to_string(), "bench-side".to_string()];
    names.extend((0..args.users.max(1)).map(|i| format!("bench-r{i}")));
    let t = Instant::now();
    let sessions = futures_util::future::join_all(names.iter().map(|u| client::sign_in(&http, &base, u))).await;
    let sessions: Vec<_> = sessions.into_iter().collect::<Result<_, _>>()?;
    progress(&format!(
        "N={n}: {} users signed in in {:.1} s (pid {})",
        sessions.len(),
        t.elapsed().as_secs_f64(),
        server.pid()
    ));
    let sender = &sessions[0];
    let side_user = &sessions[1];
    let receiver_tokens: Vec<String> = sessions[2..].iter().map(|s| s.token.clone()).collect();
    let lobby = client::lobby_id(&http, &base, &sender.token).await?;
    let side_room =
        client::create_room(&http, &base, &sender.token, "bench side room", vec![side_user.user.id.clone()]).await?;

    let settle = Duration::from_millis(args.settle_ms);
    tokio::time::sleep(settle).await;
    row.rss0_kib = server.rss_kib();

    // N idle sockets in the Lobby, in two halves (RSS read after each).
    let half = n / 2;
    let t = Instant::now();
    let mut errors = client::connect_many(
        server.addr,
        &receiver_tokens,
        &lobby,
        half,
        args.connect_concurrency,
        &stats,
        GROUP_LOBBY,
        &mut receivers,
    )
    .await;
    tokio::time::sleep(settle).await;
    let rss_half = server.rss_kib();
    let opened_half = stats.groups[GROUP_LOBBY].alive.load(Relaxed);
    errors.extend(
        client::connect_many(
            server.addr,
            &receiver_tokens,
            &lobby,
            n - half,
            args.connect_concurrency,
            &stats,
            GROUP_LOBBY,
            &mut receivers,
        )
        .await,
    );
    let connect_secs = t.elapsed().as_secs_f64();
    tokio::time::sleep(settle).await;
    row.rss_n_kib = server.rss_kib();
    row.connected = stats.groups[GROUP_LOBBY].alive.load(Relaxed);
    row.connect_failures = errors.len();
    if let Some(first) = errors.first() {
        row.notes.push(format!("{} of {n} sockets failed to open (first: {first})", errors.len()));
    }
    if let (Some(h), Some(full)) = (rss_half, row.rss_n_kib) {
        let added = row.connected.saturating_sub(opened_half);
        if added > 0 {
            row.rss_marginal_kib = Some((full as f64 - h as f64) / added as f64);
        }
    }
    progress(&format!(
        "N={n}: {} sockets open and joined in {connect_secs:.1} s (settles included); server RSS {} -> {} KiB, {} fds; bench RSS {} KiB",
        row.connected,
        row.rss0_kib.unwrap_or(0),
        row.rss_n_kib.unwrap_or(0),
        server.open_fds().unwrap_or(0),
        server::own_rss_kib().unwrap_or(0)
    ));
    if row.connected == 0 {
        return Err("no socket could be opened".into());
    }

    // ---- fan-out: M messages as fast as acks come back, N receivers ----
    let m = (args.fanout_deliveries.div_ceil(n as u64) as usize).max(50);
    let phase = &stats.phases[client::PHASE_FANOUT];
    let window = args.fanout_window.max(1);
    let gate_stats = stats.clone();
    let gate: client::Gate = Arc::new(move |i: u64| {
        let alive = gate_stats.groups[GROUP_LOBBY].alive.load(Relaxed) as u64;
        gate_stats.phases[client::PHASE_FANOUT].delivered.load(Relaxed) + window * alive >= i * alive
    });
    let cpu0 = CpuSnapshot::take(&server);
    let wall0 = Instant::now();
    let report = client::send(
        base.clone(),
        sender.token.clone(),
        lobby.clone(),
        client::PHASE_FANOUT,
        run_tag.clone(),
        Mode::Burst { messages: m, in_flight: args.fanout_in_flight },
        Some(gate),
    )
    .await;
    let send_secs = wall0.elapsed().as_secs_f64();
    let lobby_alive = || stats.groups[GROUP_LOBBY].alive.load(Relaxed) as u64;
    let acked = report.acked;
    let drained = client::wait_deliveries(
        phase,
        || acked * lobby_alive(),
        Duration::from_secs(3),
        Duration::from_secs_f64(args.drain_secs.max(1.0) * 3.0),
    )
    .await;
    let cpu = CpuSnapshot::take(&server).since(&cpu0);
    let delivered = phase.delivered.load(Relaxed);
    let span = (phase.last_ns.load(Relaxed).saturating_sub(report.first_send_ns)) as f64 / 1e9;
    let fan = FanoutResult {
        messages: m,
        acked,
        send_errors: report.errors_text(),
        delivered,
        expected: acked * row.connected as u64,
        secs: span,
        per_sec: if span > 0.0 { delivered as f64 / span } else { 0.0 },
        acks_per_sec: if send_secs > 0.0 { acked as f64 / send_secs } else { 0.0 },
        drained,
        kicked: stats.groups[GROUP_LOBBY].kicked.load(Relaxed),
        cpu,
    };
    progress(&format!(
        "N={n}: fan-out: {m} messages ({} acked, {:.0} acks/s) -> {delivered} of {} deliveries in {span:.2} s = {:.0}/s ({drained:?}); {}",
        fan.acked,
        fan.acks_per_sec,
        fan.expected,
        fan.per_sec,
        fan.cpu.map_or(String::new(), |c| c.to_string())
    ));
    let capacity = fan.per_sec;
    row.fanout = Some(fan);

    let latency = |label: &str,
                   receivers: usize,
                   target_rate: f64,
                   report: &SendReport,
                   drained: Drained,
                   phase: &client::Phase,
                   (kicked, closed_otherwise): (usize, usize)| {
        LatencyResult {
            label: label.to_string(),
            receivers,
            target_rate,
            achieved_rate: report.achieved_rate(),
            acked: report.acked,
            send_errors: report.errors_text(),
            not_sent: report.not_sent,
            delivered: phase.delivered.load(Relaxed),
            expected: report.acked * receivers as u64,
            kicked,
            closed_otherwise,
            drained,
            p50_us: phase.hist.quantile(0.50),
            p99_us: phase.hist.quantile(0.99),
            max_us: (phase.hist.count() > 0).then(|| phase.hist.max()),
            cpu: None,
        }
    };
    let drain = Duration::from_secs_f64(args.drain_secs.max(1.0));
    let lobby_ends = || (stats.groups[GROUP_LOBBY].kicked.load(Relaxed), stats.groups[GROUP_LOBBY].closed_otherwise());

    // ---- latency with fewer receivers: a side room of K sockets, the N idle sockets still open ----
    let k = if capacity > 0.0 {
        ((args.load_fraction * capacity / args.rate).floor() as usize).clamp(1, side_max)
    } else {
        1
    };
    let side_errors = client::connect_many(
        server.addr,
        std::slice::from_ref(&side_user.token),
        &side_room,
        k,
        args.connect_concurrency,
        &stats,
        GROUP_SIDE,
        &mut receivers,
    )
    .await;
    let k_alive = stats.groups[GROUP_SIDE].alive.load(Relaxed);
    if !side_errors.is_empty() {
        row.notes.push(format!("{} of {k} side-room sockets failed to open", side_errors.len()));
    }
    progress(&format!(
        "N={n}: latency at {} msg/s to a side room of {k_alive} sockets ({} s)",
        args.rate, args.duration_secs
    ));
    let phase = &stats.phases[client::PHASE_SIDE];
    let cpu0 = CpuSnapshot::take(&server);
    let report = client::send(
        base.clone(),
        sender.token.clone(),
        side_room.clone(),
        client::PHASE_SIDE,
        run_tag.clone(),
        Mode::Paced { rate: args.rate, secs: args.duration_secs, max_in_flight: args.max_in_flight },
        None,
    )
    .await;
    let acked = report.acked;
    let side_alive = || stats.groups[GROUP_SIDE].alive.load(Relaxed) as u64;
    let drained = client::wait_deliveries(phase, || acked * side_alive(), Duration::from_secs(2), drain).await;
    let side_ends = (stats.groups[GROUP_SIDE].kicked.load(Relaxed), stats.groups[GROUP_SIDE].closed_otherwise());
    let mut r = latency(
        &format!(
            "{:.0} msg/s, side room of K sockets (K = {:.0} % of measured capacity / rate; N idle)",
            args.rate,
            args.load_fraction * 100.0
        ),
        k_alive,
        args.rate,
        &report,
        drained,
        phase,
        side_ends,
    );
    r.cpu = CpuSnapshot::take(&server).since(&cpu0);
    progress(&format!("N={n}: {}", r.summary()));
    row.side = Some(r);

    // ---- latency with all N receivers at a rate the box can carry ----
    let alive = stats.groups[GROUP_LOBBY].alive.load(Relaxed);
    let reduced = if capacity > 0.0 && alive > 0 { args.load_fraction * capacity / alive as f64 } else { 0.0 };
    if reduced >= args.rate {
        row.notes.push(format!(
            "{:.0} msg/s to all N is within {:.0} % of the measured capacity: no reduced-rate run",
            args.rate,
            args.load_fraction * 100.0
        ));
    } else if reduced >= 0.2 {
        let rate = if reduced >= 10.0 { reduced.floor() } else { (reduced * 10.0).floor() / 10.0 };
        let secs = args.duration_secs.max(3.0 / rate).min(args.duration_secs * 3.0);
        progress(&format!("N={n}: latency at {rate} msg/s to all {alive} Lobby sockets ({secs:.1} s)"));
        let phase = &stats.phases[client::PHASE_REDUCED];
        let ends_before = lobby_ends();
        let cpu0 = CpuSnapshot::take(&server);
        let report = client::send(
            base.clone(),
            sender.token.clone(),
            lobby.clone(),
            client::PHASE_REDUCED,
            run_tag.clone(),
            Mode::Paced { rate, secs, max_in_flight: args.max_in_flight },
            None,
        )
        .await;
        let acked = report.acked;
        let drained = client::wait_deliveries(phase, || acked * lobby_alive(), Duration::from_secs(2), drain).await;
        let ends = lobby_ends();
        let mut r = latency(
            &format!("{rate} msg/s to all N ({:.0} % of measured capacity)", args.load_fraction * 100.0),
            alive,
            rate,
            &report,
            drained,
            phase,
            (ends.0 - ends_before.0, ends.1 - ends_before.1),
        );
        r.cpu = CpuSnapshot::take(&server).since(&cpu0);
        progress(&format!("N={n}: {}", r.summary()));
        row.reduced = Some(r);
    } else {
        row.notes.push(format!(
            "no reduced-rate run: {:.0} % of the measured capacity is under 0.2 msg/s to all N",
            args.load_fraction * 100.0
        ));
    }

    // ---- latency with all N receivers at the full rate (last: an overload kicks sockets) ----
    let alive = stats.groups[GROUP_LOBBY].alive.load(Relaxed);
    progress(&format!("N={n}: latency at {} msg/s to all {alive} Lobby sockets ({} s)", args.rate, args.duration_secs));
    let phase = &stats.phases[client::PHASE_FULL];
    let ends_before = lobby_ends();
    let cpu0 = CpuSnapshot::take(&server);
    let report = client::send(
        base.clone(),
        sender.token.clone(),
        lobby.clone(),
        client::PHASE_FULL,
        run_tag.clone(),
        Mode::Paced { rate: args.rate, secs: args.duration_secs, max_in_flight: args.max_in_flight },
        None,
    )
    .await;
    let acked = report.acked;
    let drained = client::wait_deliveries(phase, || acked * lobby_alive(), Duration::from_secs(2), drain).await;
    let ends = lobby_ends();
    let mut r = latency(
        &format!("{:.0} msg/s to all N", args.rate),
        alive,
        args.rate,
        &report,
        drained,
        phase,
        (ends.0 - ends_before.0, ends.1 - ends_before.1),
    );
    r.cpu = CpuSnapshot::take(&server).since(&cpu0);
    progress(&format!("N={n}: {}", r.summary()));
    row.full = Some(r);

    if !server.is_running() {
        row.notes.push(format!("the server exited during the run:\n{}", server.log_tail()));
    }
    row.lobby_ends = stats.groups[GROUP_LOBBY].ends_text();
    drop(receivers);
    drop(server);
    Ok(())
}
