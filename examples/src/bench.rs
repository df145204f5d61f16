//! What every benchmark shares: the machine's description and percentiles.

/// CPU model, cores and memory of this machine, for the report.
pub fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .next()
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        })
        .map(|kb| format!("{:.0} GiB", kb as f64 / 1024.0 / 1024.0))
        .unwrap_or_default();
    format!("{cpu}, {} cores, {mem}", cores())
}

/// Cores available to this process.
pub fn cores() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0)
}

/// The `p` quantile (0..=1) of sorted microsecond latencies, in ms.
pub fn percentile_ms(sorted_us: &[u32], p: f64) -> f64 {
    if sorted_us.is_empty() {
        0.0
    } else {
        f64::from(sorted_us[((sorted_us.len() - 1) as f64 * p) as usize]) / 1000.0
    }
}

/// Now, RFC 3339 to the second.
pub fn now() -> String {
    humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string()
}

/// A new, empty database `name` on the PostgreSQL server of `base` (dropped
/// first if a previous run left it); returns its URL.
///
/// # Errors
/// When the server cannot be reached or refuses.
pub async fn fresh_database(base: &str, name: &str) -> anyhow::Result<String> {
    use sqlx::Connection as _;
    let mut admin = sqlx::PgConnection::connect(base).await?;
    sqlx::Executor::execute(
        &mut admin,
        format!("DROP DATABASE IF EXISTS {name}").as_str(),
    )
    .await?;
    sqlx::Executor::execute(&mut admin, format!("CREATE DATABASE {name}").as_str()).await?;
    Ok(crate::postgres_url_with_database(base, name))
}
