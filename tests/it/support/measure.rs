//! What the benchmarks share: settings from the environment, a process's
//! memory, medians of runs, a bare HTTP/1 connection, and the bridge flags
//! that let it deliver as fast as the double takes events.

/// `serve` flags lifting the per-key pace and in-flight cap, so a benchmark
/// measures the bridge rather than PagerDuty's documented limits.
pub const DELIVER_EVERYTHING: [&str; 6] = [
    "--pagerduty-rate",
    "1000000/s",
    "--pagerduty-burst",
    "100000",
    "--max-in-flight",
    "64",
];

/// `name` from the environment as a number, else `default`.
pub fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A `/proc/<pid>/status` figure in kB (`VmRSS:`, `VmHWM:`); 0 when unread.
pub fn rss_kb(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}

/// The median (upper middle); NaN for no runs.
pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

/// A keep-alive HTTP/1 connection to `addr` (host:port) on bare hyper: the
/// lightest client there is, so the load generator takes little of the CPU
/// it shares with the bridge.
pub async fn connect(
    addr: &str,
) -> hyper::client::conn::http1::SendRequest<http_body_util::Full<bytes::Bytes>> {
    let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    stream.set_nodelay(true).expect("nodelay");
    let (sender, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
        .await
        .expect("handshake");
    tokio::spawn(conn);
    sender
}
