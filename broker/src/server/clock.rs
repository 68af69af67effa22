//! The broker's time base: monotonic milliseconds since start for the core
//! (a wall-clock jump changes no expiry), and the wall-clock instant that
//! corresponds to the start, for display only.
//!
//! It reads tokio's clock, so a test with paused tokio time moves it.

use std::time::{SystemTime, UNIX_EPOCH};

use crate::core::Millis;

/// The start instant and its wall-clock time.
#[derive(Clone, Copy)]
pub struct Clock {
    start: tokio::time::Instant,
    wall_at_start_ms: u64,
}

impl Clock {
    /// Starts the time base now.
    pub fn start() -> Clock {
        let wall_at_start_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        Clock {
            start: tokio::time::Instant::now(),
            wall_at_start_ms,
        }
    }

    /// Monotonic milliseconds since start.
    pub fn now(&self) -> Millis {
        self.start.elapsed().as_millis() as u64
    }

    /// The tokio instant of a core time, for sleeping until a deadline.
    pub fn instant(&self, at: Millis) -> tokio::time::Instant {
        self.start + std::time::Duration::from_millis(at)
    }

    /// Wall-clock unix milliseconds of a core time.
    pub fn wall_ms(&self, at: Millis) -> u64 {
        self.wall_at_start_ms + at
    }
}
