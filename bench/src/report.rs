//! What one socket count measured, and the printed table.

use crate::client::Drained;
use crate::server::CpuUse;
use crate::Args;

pub const TARGET_RSS_KIB: f64 = 20.0;
pub const TARGET_DELIVERIES: f64 = 100_000.0;
pub const TARGET_P99_US: u64 = 50_000;

#[derive(Debug, Default)]
pub struct Row {
    pub n: usize,
    pub skipped: Option<String>,
    pub connected: usize,
    pub connect_failures: usize,
    pub rss0_kib: Option<u64>,
    pub rss_n_kib: Option<u64>,
    /// (RSS at N − RSS at N/2) / (sockets added): insensitive to memory freed before the
    /// sockets (e.g. by the KDF) being reused by them.
    pub rss_marginal_kib: Option<f64>,
    pub fanout: Option<FanoutResult>,
    pub side: Option<LatencyResult>,
    pub reduced: Option<LatencyResult>,
    pub full: Option<LatencyResult>,
    /// How the Lobby sockets that closed during the run ended.
    pub lobby_ends: String,
    pub notes: Vec<String>,
}

impl Row {
    pub fn new(n: usize) -> Row {
        Row { n, ..Default::default() }
    }

    pub fn rss_per_conn_kib(&self) -> Option<f64> {
        let (a, b) = (self.rss0_kib?, self.rss_n_kib?);
        (self.connected > 0).then(|| (b as f64 - a as f64) / self.connected as f64)
    }
}

#[derive(Debug)]
pub struct FanoutResult {
    pub messages: usize,
    pub acked: u64,
    pub send_errors: String,
    pub delivered: u64,
    pub expected: u64,
    pub secs: f64,
    pub per_sec: f64,
    pub acks_per_sec: f64,
    pub drained: Drained,
    pub kicked: usize,
    pub cpu: Option<CpuUse>,
}

#[derive(Debug)]
pub struct LatencyResult {
    pub label: String,
    pub receivers: usize,
    pub target_rate: f64,
    pub achieved_rate: f64,
    pub acked: u64,
    pub send_errors: String,
    pub not_sent: u64,
    pub delivered: u64,
    pub expected: u64,
    /// Sockets of this phase's receivers closed by the server during the phase: with 1008
    /// (kicked: their queue overflowed), and otherwise.
    pub kicked: usize,
    pub closed_otherwise: usize,
    pub drained: Drained,
    pub p50_us: Option<u64>,
    pub p99_us: Option<u64>,
    pub max_us: Option<u64>,
    pub cpu: Option<CpuUse>,
}

impl LatencyResult {
    /// Whatever kept this run from being a clean steady-rate measurement.
    pub fn problems(&self) -> Vec<String> {
        let mut p = Vec::new();
        if self.achieved_rate < 0.9 * self.target_rate {
            p.push(format!("sent only {:.0} msg/s", self.achieved_rate));
        }
        if self.not_sent > 0 {
            p.push(format!("{} sends skipped (all in flight)", self.not_sent));
        }
        if !self.send_errors.is_empty() {
            p.push(format!("send errors: {}", self.send_errors));
        }
        if self.kicked > 0 {
            p.push(format!("{} of {} sockets kicked (1008, queue full)", self.kicked, self.receivers));
        }
        if self.closed_otherwise > 0 {
            p.push(format!("{} of {} sockets closed without 1008", self.closed_otherwise, self.receivers));
        }
        if self.delivered < self.expected {
            p.push(format!(
                "{:.1} % delivered{}",
                100.0 * self.delivered as f64 / self.expected.max(1) as f64,
                match self.drained {
                    Drained::Complete => "",
                    Drained::Stalled => " (then nothing for 2 s)",
                    Drained::TimedOut => " (still arriving at the drain limit)",
                }
            ));
        }
        p
    }

    pub fn verdict(&self) -> &'static str {
        match self.p99_us {
            None => "n/a",
            Some(_) if !self.problems().is_empty() => "FAIL*",
            Some(p99) if p99 < TARGET_P99_US => "met",
            Some(_) => "FAIL",
        }
    }

    pub fn summary(&self) -> String {
        let problems = self.problems();
        format!(
            "{}: {} receivers, {:.0} msg/s sent, {} acked, {} of {} delivered, p50 {} p99 {} max {}{}",
            self.label,
            self.receivers,
            self.achieved_rate,
            self.acked,
            self.delivered,
            self.expected,
            us(self.p50_us),
            us(self.p99_us),
            us(self.max_us),
            if problems.is_empty() { String::new() } else { format!(" [{}]", problems.join("; ")) }
        )
    }
}

pub fn us(v: Option<u64>) -> String {
    match v {
        None => "-".into(),
        Some(v) if v < 1_000 => format!("{v} µs"),
        Some(v) if v < 10_000_000 => format!("{:.1} ms", v as f64 / 1e3),
        Some(v) => format!("{:.1} s", v as f64 / 1e6),
    }
}

fn thousands(v: f64) -> String {
    let s = format!("{:.0}", v);
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn ok(met: bool) -> &'static str {
    if met {
        "met"
    } else {
        "FAIL"
    }
}

/// Left-aligned text table with a header rule.
fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let width = |s: &str| s.chars().count();
    let mut widths: Vec<usize> = header.iter().map(|h| width(h)).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            widths[i] = widths[i].max(width(c));
        }
    }
    let line = |cells: Vec<&str>| {
        cells
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c}{}", " ".repeat(widths[i] - width(c))))
            .collect::<Vec<_>>()
            .join(" | ")
            .trim_end()
            .to_string()
    };
    let mut out = line(header.to_vec());
    out.push('\n');
    out.push_str(&widths.iter().map(|w| "-".repeat(*w)).collect::<Vec<_>>().join("-+-"));
    out.push('\n');
    for r in rows {
        out.push_str(&line(r.iter().map(String::as_str).collect()));
        out.push('\n');
    }
    out
}

pub fn print(args: &Args, cores: usize, nofile: u64, rows: &[Row], total_secs: f64) {
    println!();
    println!("persona-chat server load benchmark (loopback, {cores} cores, server: {})", args.server_bin.display());
    println!(
        "Targets (2-core machine): RSS per idle connection <= {TARGET_RSS_KIB} KiB, fan-out >= {} deliveries/s, p99 send-to-deliver < {} ms at a steady {:.0} msg/s.",
        thousands(TARGET_DELIVERIES),
        TARGET_P99_US / 1000,
        args.rate
    );
    println!();

    let mut main_rows = Vec::new();
    for r in rows {
        if r.skipped.is_some() {
            main_rows.push(vec![thousands(r.n as f64), "-".into(), "skipped (see below)".into()]);
            continue;
        }
        let rss = r.rss_per_conn_kib();
        let fan = r.fanout.as_ref();
        let full = r.full.as_ref();
        main_rows.push(vec![
            thousands(r.n as f64),
            thousands(r.connected as f64),
            rss.map_or("-".into(), |v| format!("{v:.1} KiB")),
            rss.map_or("-".into(), |v| ok(v <= TARGET_RSS_KIB).into()),
            fan.map_or("-".into(), |f| thousands(f.per_sec)),
            fan.map_or("-".into(), |f| ok(f.per_sec >= TARGET_DELIVERIES).into()),
            us(full.and_then(|l| l.p50_us)),
            us(full.and_then(|l| l.p99_us)),
            us(full.and_then(|l| l.max_us)),
            full.map_or("-".into(), |l| l.verdict().into()),
        ]);
    }
    let header = [
        "N",
        "sockets",
        "RSS/conn",
        "<=20 KiB",
        "deliveries/s",
        ">=100k/s",
        &format!("p50 @{:.0}/s", args.rate),
        &format!("p99 @{:.0}/s", args.rate),
        &format!("max @{:.0}/s", args.rate),
        "p99<50ms",
    ];
    // Skipped rows have fewer cells: pad them.
    for r in &mut main_rows {
        r.resize(header.len(), String::new());
    }
    println!("{}", table(&header, &main_rows));
    for r in rows {
        if let Some(why) = &r.skipped {
            println!("N = {} skipped: {why}", thousands(r.n as f64));
        }
    }
    println!(
        "p50/p99/max @{:.0}/s: every Lobby socket receives; FAIL* = the server could not carry that load (see below).",
        args.rate
    );
    println!();

    println!("Latency, every scenario (measured at every receiver, every delivery; send instant = just before the HTTP POST):");
    let mut lat_rows = Vec::new();
    for r in rows {
        for l in [&r.side, &r.reduced, &r.full].into_iter().flatten() {
            lat_rows.push(vec![
                thousands(r.n as f64),
                l.label.clone(),
                thousands(l.receivers as f64),
                format!("{} / {}", fmt_rate(l.target_rate), fmt_rate(l.achieved_rate)),
                format!("{} / {}", thousands(l.delivered as f64), thousands(l.expected as f64)),
                thousands(l.kicked as f64),
                us(l.p50_us),
                us(l.p99_us),
                us(l.max_us),
                l.verdict().into(),
            ]);
        }
    }
    println!(
        "{}",
        table(
            &[
                "N",
                "scenario",
                "receivers",
                "msg/s target / sent",
                "delivered / expected",
                "kicked",
                "p50",
                "p99",
                "max",
                "p99<50ms"
            ],
            &lat_rows
        )
    );

    println!("Details:");
    for r in rows {
        if r.skipped.is_some() {
            continue;
        }
        println!("- N = {}:", thousands(r.n as f64));
        if let (Some(a), Some(b)) = (r.rss0_kib, r.rss_n_kib) {
            println!(
                "    server RSS {} KiB before any socket, {} KiB with {} idle sockets{}",
                thousands(a as f64),
                thousands(b as f64),
                thousands(r.connected as f64),
                r.rss_marginal_kib
                    .map_or(String::new(), |m| format!("; marginal cost from N/2 to N: {m:.1} KiB/socket"))
            );
        }
        if let Some(f) = &r.fanout {
            println!(
                "    fan-out: {} messages ({} acked at {} acks/s{}) -> {} of {} new_message frames in {:.2} s; {:?}; kicked {}{}",
                f.messages,
                f.acked,
                thousands(f.acks_per_sec),
                if f.send_errors.is_empty() { String::new() } else { format!(", errors: {}", f.send_errors) },
                thousands(f.delivered as f64),
                thousands(f.expected as f64),
                f.secs,
                f.drained,
                f.kicked,
                f.cpu.map_or(String::new(), |c| format!("; {c}")),
            );
        }
        if let Some(f) = r.fanout.as_ref().filter(|f| f.per_sec > 0.0) {
            let needed = args.rate * r.connected as f64;
            println!(
                "    {:.0} msg/s to all {} sockets needs {} deliveries/s: {:.1} x the measured fan-out capacity",
                args.rate,
                thousands(r.connected as f64),
                thousands(needed),
                needed / f.per_sec
            );
        }
        for l in [&r.side, &r.reduced, &r.full].into_iter().flatten() {
            let problems = l.problems();
            println!(
                "    {}: {} acked; {}{}",
                l.label,
                l.acked,
                if problems.is_empty() { "clean run".to_string() } else { problems.join("; ") },
                l.cpu.map_or(String::new(), |c| format!("; {c}"))
            );
        }
        if !r.lobby_ends.is_empty() {
            println!("    Lobby sockets closed by the server during the run: {}", r.lobby_ends);
        }
        for note in &r.notes {
            println!("    note: {note}");
        }
    }
    println!();
    println!("Method and caveats:");
    println!("- Loopback only. The bench client (N sockets, JSON frames read and timed) runs in this same process on the same {cores} cores as the server: the figures are for server + client together, the server alone would do better.");
    println!("- RSS/conn = (server VmRSS with N idle sockets joined to the Lobby - VmRSS before any socket) / N, each read after a {} ms settle.", args.settle_ms);
    println!("- deliveries/s = new_message frames received by all Lobby sockets / (last delivery - first send). Each message also sends a conversation_update to every member socket, so the server writes twice as many frames as counted.");
    println!(
        "- Fan-out sender: one user over HTTP POST /api/conversations/{{id}}/messages with client_id, {} requests in flight, as fast as acks come back, but message i only once message i-{} reached every socket (the server's 512-frame socket queue holds 256 messages' worth; more backlog would kick sockets instead of measuring them).",
        args.fanout_in_flight, args.fanout_window
    );
    println!(
        "- Latency: a paced sender (own thread, tokio interval, missed ticks skipped, never burst) posts for {} s; each content carries its send instant; every receiver records every delivery (histogram, < 1 % bucket error). The side room and the reduced rate use {:.0} % of the measured fan-out capacity.",
        args.duration_secs,
        args.load_fraction * 100.0
    );
    println!("- A socket whose server queue overflows is closed with 1008 (kicked); it would reconnect and catch up in the app, here it stays closed.");
    println!("- RLIMIT_NOFILE raised to {nofile} (the server inherits it). Total time: {total_secs:.0} s.");
}

fn fmt_rate(r: f64) -> String {
    if r >= 10.0 {
        thousands(r)
    } else {
        format!("{r:.1}")
    }
}
