//! The waiting line of `turnstile run`: where the command stands in the
//! queue, who holds the resource, for what, and the broker's estimate.
//!
//! On a terminal it is one `indicatif` spinner line, fitted to the width,
//! ticking between the broker's updates with the estimate counting down;
//! elsewhere (a log, a pipe) one plain line per update. `--quiet` shows
//! nothing. The words come from `format::queued_line`, the same sentence
//! `why` prints, so that both give one estimate.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use turnstile_client::proto as v1;

use crate::format;

/// What the ticking line counts down between updates.
#[derive(Default)]
struct Shown {
    /// When the broker's estimate says the wait ends.
    ends_at: Option<Instant>,
}

/// The waiting line.
pub struct Waiting {
    how: How,
    resource: String,
    started: Instant,
    updates: u32,
    /// Where the wait stood at the broker's last word (`queued_line`).
    last: Option<String>,
}

enum How {
    Quiet,
    Plain,
    Spinner(ProgressBar, Arc<Mutex<Shown>>),
}

impl Waiting {
    /// A line for `resource`: a spinner when stderr is a terminal.
    pub fn new(resource: &str, quiet: bool) -> Waiting {
        let how = if quiet {
            How::Quiet
        } else if std::io::IsTerminal::is_terminal(&std::io::stderr()) {
            let shown = Arc::new(Mutex::new(Shown::default()));
            let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
            let left = {
                let shown = Arc::clone(&shown);
                move |_: &indicatif::ProgressState, w: &mut dyn std::fmt::Write| {
                    if let Ok(s) = shown.lock()
                        && let Some(at) = s.ends_at
                    {
                        let left = at.saturating_duration_since(Instant::now());
                        let _ = write!(w, "{}", format::estimate(left.as_millis() as u64));
                    }
                }
            };
            // {wide_msg} takes the width left by the spinner and the
            // estimate, cut to fit the terminal.
            let style = ProgressStyle::with_template("{spinner} {wide_msg}{left}")
                .unwrap_or_else(|_| ProgressStyle::default_spinner())
                .with_key("left", left);
            bar.set_style(style);
            How::Spinner(bar, shown)
        } else {
            How::Plain
        };
        Waiting {
            how,
            resource: resource.to_owned(),
            started: Instant::now(),
            updates: 0,
            last: None,
        }
    }

    /// The broker's latest word on the wait.
    pub fn update(&mut self, q: &v1::Queued) {
        self.updates += 1;
        let stands = format::queued_line(q.position, q.ahead.iter().find(|l| l.position == 0));
        let line = format!("waiting for {}: {stands}", self.resource);
        self.last = Some(stands);
        match &self.how {
            How::Quiet => {}
            How::Plain => {
                eprintln!(
                    "turnstile: {line}{}",
                    format::estimate(u64::from(q.estimated_wait_ms))
                )
            }
            How::Spinner(bar, shown) => {
                bar.set_message(line);
                if let Ok(mut s) = shown.lock() {
                    s.ends_at = (q.estimated_wait_ms > 0).then(|| {
                        Instant::now() + Duration::from_millis(u64::from(q.estimated_wait_ms))
                    });
                }
                if self.updates == 1 {
                    bar.enable_steady_tick(Duration::from_millis(120));
                }
                bar.tick();
            }
        }
    }

    /// The lease was granted: the line goes, and (if it was shown) one line
    /// says after how long.
    pub fn granted(self, fencing_token: u64) {
        if let How::Spinner(bar, _) = &self.how {
            bar.finish_and_clear();
        }
        if self.updates > 0 && !matches!(self.how, How::Quiet) {
            eprintln!(
                "turnstile: {} granted after {} (fencing token {fencing_token})",
                self.resource,
                format::span(self.started.elapsed().as_millis() as u64),
            );
        }
    }

    /// The wait ended without a grant: the line goes.
    pub fn ended(self) {
        if let How::Spinner(bar, _) = &self.how {
            bar.finish_and_clear();
        }
    }

    /// The wait ran out (`--max-wait`): the line goes, and what to say of
    /// it: after how long, and where it stood then (who held the
    /// resource, for what), which is what the one who waited wants to know.
    pub fn ran_out(self) -> String {
        let waited = format::span(self.started.elapsed().as_millis() as u64);
        let said = match &self.last {
            Some(stands) => format!(
                "turnstile: gave up waiting for {} after {waited} (--max-wait): {stands}",
                self.resource
            ),
            None => format!(
                "turnstile: gave up waiting for {} after {waited} (--max-wait)",
                self.resource
            ),
        };
        self.ended();
        said
    }
}
