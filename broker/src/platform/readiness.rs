//! Telling the service manager how the broker is doing: systemd's
//! `sd_notify` on Linux (`Type=notify`: READY once the socket accepts,
//! STOPPING when a stop begins). Without `NOTIFY_SOCKET` (not under
//! systemd), and on other platforms, these do nothing. The Windows Service
//! Control Manager is told by `service.rs` instead.

/// The socket accepts connections.
pub fn ready(socket: &std::path::Path) {
    #[cfg(target_os = "linux")]
    {
        let status = format!("serving {}", socket.display());
        let _ = sd_notify::notify(
            false,
            &[
                sd_notify::NotifyState::Ready,
                sd_notify::NotifyState::Status(&status),
            ],
        );
    }
    #[cfg(not(target_os = "linux"))]
    let _ = socket;
}

/// A clean stop has begun.
pub fn stopping() {
    #[cfg(target_os = "linux")]
    {
        let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Stopping]);
    }
}
