//! When a long-running command (`watch`, `serve-metrics`) should stop.

/// Resolves on Ctrl-C or (Unix) SIGTERM, so that `kill` and `kubectl` stops clean up too.
pub async fn stopped() {
    #[cfg(unix)]
    if let Ok(mut term) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
    {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        return;
    }
    let _ = tokio::signal::ctrl_c().await;
}
