//! When to stop: SIGINT or SIGTERM on Unix; Ctrl-C, Ctrl-Break or a
//! console close on Windows (the service stop request is handled by the
//! service entry point, which resolves the same shutdown future).

/// Resolves at the first stop request. Errors installing a handler are
/// returned at once so the broker can refuse to start without them.
#[cfg(unix)]
pub fn shutdown_requested() -> std::io::Result<impl Future<Output = &'static str>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut int = signal(SignalKind::interrupt())?;
    let mut term = signal(SignalKind::terminate())?;
    Ok(async move {
        tokio::select! {
            _ = int.recv() => "SIGINT",
            _ = term.recv() => "SIGTERM",
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
