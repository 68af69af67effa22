//! When to stop: SIGINT or SIGTERM on Unix (SIGHUP is logged and ignored); Ctrl-C, Ctrl-Break or a
//! console close on Windows (the service stop request is handled by the
//! service entry point, which resolves the same shutdown future).

/// Resolves at the first stop request. Errors installing a handler are
/// returned at once so the broker can refuse to start without them.
#[cfg(unix)]
pub fn shutdown_requested() -> std::io::Result<impl Future<Output = &'static str>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut int = signal(SignalKind::interrupt())?;
    let mut term = signal(SignalKind::terminate())?;
    // SIGHUP's default would end the broker silently, and systemd does not
    // restart a unit ended by it (a stray `kill -HUP`, a logrotate hook):
    // it is caught and said to change nothing.
    let mut hup = signal(SignalKind::hangup())?;
    Ok(async move {
        loop {
            tokio::select! {
                _ = int.recv() => return "SIGINT",
                _ = term.recv() => return "SIGTERM",
                _ = hup.recv() => tracing::warn!(
                    "SIGHUP ignored: turnstiled has nothing to reload (it logs to stderr, and its --config is read at start); restart it to apply a new configuration"
                ),
            }
        }
    })
}

/// Resolves at the first stop request.
#[cfg(windows)]
pub fn shutdown_requested() -> std::io::Result<impl Future<Output = &'static str>> {
    use tokio::signal::windows::{ctrl_break, ctrl_c, ctrl_close};
    let mut c = ctrl_c()?;
    let mut b = ctrl_break()?;
    let mut close = ctrl_close()?;
    Ok(async move {
        tokio::select! {
            _ = c.recv() => "Ctrl-C",
            _ = b.recv() => "Ctrl-Break",
            _ = close.recv() => "console close",
        }
    })
}
