//! `turnstile top`: a live full-screen view of every resource in use, its
//! holders (with a progress bar, the purpose, how long), its queue in
//! order, and a pane of the last events. Quits on `q`, Esc or Ctrl-C;
//! redraws on resize; crossterm drives the terminal, so the Windows console
//! works too.
//!
//! The state comes from one watch of every resource (`Watcher`, which
//! reconnects after a broker restart); [`draw`] is a pure function of the
//! [`Model`] and the time, which is what the snapshot test renders.

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use crossterm::event::{Event, EventStream, KeyCode, KeyEventKind, KeyModifiers};
use futures::StreamExt;
use ratatui::Frame;
use ratatui::layout::{Constraint, Layout};
use ratatui::style::{Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Paragraph};
use turnstile_client::proto as v1;
use turnstile_client::{ClientError, ConnectOptions, ShortName, WatchItem, Watcher, kinds};

use crate::format::{estimate, mode, now_ms, progress, span, who};
use crate::{EXIT_OK, EXIT_SOFTWARE, EXIT_USAGE};

/// Events kept for the bottom pane.
const EVENTS_KEPT: usize = 100;
/// How often the screen is redrawn with nothing new (the times move on).
const REDRAW: Duration = Duration::from_millis(500);

/// What the screen shows.
#[derive(Default)]
pub struct Model {
    resources: BTreeMap<String, v1::ResourceState>,
    /// The last events, newest last: (epoch ms, text).
    events: VecDeque<(u64, String)>,
    /// The broker's revision of the newest state.
    revision: u64,
    /// Said when the connection is down.
    trouble: Option<String>,
}

impl Model {
    fn apply(&mut self, item: WatchItem, now: u64) {
        match item {
            WatchItem::Snapshot {
                revision, states, ..
            } => {
                self.resources.clear();
                for s in states {
                    self.set(s);
                }
                self.revision = revision;
                self.trouble = None;
            }
            WatchItem::Event(e) => {
                self.revision = self.revision.max(e.revision);
                let kind = kinds::event_kind(&e).map_or("UNKNOWN", ShortName::short_name);
                if let Some(state) = e.state {
                    let mut text = format!("{kind:<10} {}", state.resource);
                    if !e.detail.is_empty() {
                        text.push_str(&format!(": {}", e.detail));
                    }
                    self.push_event(now, text);
                    self.set(state);
                }
            }
            WatchItem::Disconnected(why) => self.trouble = Some(format!("{why}; reconnecting")),
            WatchItem::Reconnected => self.trouble = None,
        }
    }

    fn set(&mut self, state: v1::ResourceState) {
        if state.holders.is_empty() && state.waiters.is_empty() {
            self.resources.remove(&state.resource);
        } else {
            self.resources.insert(state.resource.clone(), state);
        }
    }

    fn push_event(&mut self, at: u64, text: String) {
        if self.events.len() == EVENTS_KEPT {
            self.events.pop_front();
        }
        self.events.push_back((at, text));
    }
}

/// A bar of `width` cells for done/total: `█████░░░░░`.
fn bar(p: &v1::Progress, width: usize) -> String {
    let filled = if p.total == 0 {
        0
    } else {
        (u64::from(p.done.min(p.total)) * width as u64 / u64::from(p.total)) as usize
    };
    format!("{}{}", "█".repeat(filled), "░".repeat(width - filled))
}

/// The lines for one resource.
fn resource_lines(r: &v1::ResourceState, now: u64) -> Vec<Line<'static>> {
    let bold = Style::new().add_modifier(Modifier::BOLD);
    let mut lines = Vec::new();
    for (i, h) in r.holders.iter().enumerate() {
        let name = if i == 0 {
            r.resource.clone()
        } else {
            String::new()
        };
        let mut spans = vec![
            Span::styled(format!("{name:<12} "), bold),
            Span::raw(format!("{} {}", mode(h), who(h.holder.as_ref()))),
        ];
        if !h.purpose.is_empty() {
            spans.push(Span::raw(format!(" \"{}\"", h.purpose)));
        }
        spans.push(Span::raw(format!(
            "  held {}",
            span(now.saturating_sub(h.granted_at_ms))
        )));
        // Stuck (alive, no progress) and detached (process gone, place
        // kept) holders are marked; dead and hung ones are gone.
        let mark = crate::format::mark(h);
        if !mark.is_empty() {
            spans.push(Span::styled(format!(" {mark}"), bold));
        }
        lines.push(Line::from(spans));
        if let Some(p) = &h.progress {
            lines.push(Line::from(format!(
                "{:13}{} {}",
                "",
                bar(p, 20),
                progress(p)
            )));
        }
    }
    if r.holders.is_empty() {
        lines.push(Line::from(vec![
            Span::styled(format!("{:<12} ", r.resource), bold),
            Span::raw("not held"),
        ]));
    }
    for w in &r.waiters {
        let mut text = format!(
            "{:13}{}. {} {}",
            "",
            w.position,
            mode(w),
            who(w.holder.as_ref())
        );
        if !w.purpose.is_empty() {
            text.push_str(&format!(" \"{}\"", w.purpose));
        }
        text.push_str(&format!(
            "  waiting {}{}",
            span(now.saturating_sub(w.queued_at_ms)),
            estimate(u64::from(w.estimated_wait_ms))
        ));
        lines.push(Line::from(text));
    }
    lines
}

/// The whole screen.
pub fn draw(frame: &mut Frame, model: &Model, now: u64) {
    let [title, body, events] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Min(3),
        Constraint::Length(8),
    ])
    .areas(frame.area());
    let status = match &model.trouble {
        Some(t) => t.clone(),
        None => format!(
            "{} resource(s) in use, revision {}",
            model.resources.len(),
            model.revision
        ),
    };
    frame.render_widget(
        Paragraph::new(Line::from(vec![
            Span::styled("turnstile top", Style::new().add_modifier(Modifier::BOLD)),
            Span::raw(format!("  {status}  (q quits)")),
        ])),
        title,
    );
    let mut lines = Vec::new();
    for r in model.resources.values() {
        lines.extend(resource_lines(r, now));
    }
    if lines.is_empty() {
        lines.push(Line::from("nothing is held or waited for"));
    }
    frame.render_widget(
        Paragraph::new(lines).block(Block::bordered().title(" resources ")),
        body,
    );
    let shown = usize::from(events.height.saturating_sub(2));
    let first = model.events.len().saturating_sub(shown);
    let event_lines: Vec<Line> = model
        .events
        .iter()
        .skip(first)
        .map(|(at, text)| Line::from(format!("{} ago  {text}", span(now.saturating_sub(*at)))))
        .collect();
    frame.render_widget(
        Paragraph::new(event_lines).block(Block::bordered().title(" last events ")),
        events,
    );
}

pub async fn run(opts: ConnectOptions, json: bool) -> Result<u8, ClientError> {
    if json {
        eprintln!(
            "turnstile top: a full-screen view has no --json; for every change as JSON, use `turnstile --json watch`"
        );
        return Ok(EXIT_USAGE);
    }
    if !std::io::IsTerminal::is_terminal(&std::io::stdout()) {
        eprintln!(
            "turnstile top: needs a terminal (standard output is not one); `turnstile status` prints the same once, `turnstile watch` each change"
        );
        return Ok(EXIT_USAGE);
    }
    let mut watcher = Watcher::start(opts, Vec::new()).await?;
    let mut terminal = match ratatui::try_init() {
        Ok(t) => t,
        Err(e) => {
            let _ = crossterm::terminal::disable_raw_mode();
            eprintln!("turnstile top: cannot use the terminal: {e}");
            return Ok(EXIT_USAGE);
        }
    };
    let mut keys = EventStream::new();
    let mut model = Model::default();
    let mut redraw = tokio::time::interval(REDRAW);
    let code = loop {
        if let Err(e) = terminal.draw(|f| draw(f, &model, now_ms())) {
            ratatui::restore();
            eprintln!("turnstile top: cannot draw: {e}");
            return Ok(EXIT_SOFTWARE);
        }
        tokio::select! {
            item = watcher.next() => model.apply(item, now_ms()),
            key = keys.next() => match key {
                Some(Ok(Event::Key(k))) if k.kind == KeyEventKind::Press => {
                    let ctrl_c = k.code == KeyCode::Char('c') && k.modifiers.contains(KeyModifiers::CONTROL);
                    if ctrl_c || matches!(k.code, KeyCode::Char('q') | KeyCode::Esc) {
                        break EXIT_OK;
                    }
                }
                // A resize is drawn at the top of the loop.
                Some(Ok(_)) => {}
                Some(Err(_)) | None => break EXIT_SOFTWARE,
            },
            _ = redraw.tick() => {}
        }
    };
    ratatui::restore();
    Ok(code)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ratatui::Terminal;
    use ratatui::backend::TestBackend;

    fn lease(id: u64, name: &str, pid: u32, purpose: &str) -> v1::Lease {
        v1::Lease {
            lease_id: id,
            resource: "pcm".into(),
            mode: v1::Mode::Exclusive as i32,
            purpose: purpose.into(),
            holder: Some(v1::Peer {
                client_name: name.into(),
                uid: 4_000_000_000,
                pid,
                session_id: id,
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    /// The screen for a known state, as text.
    fn screen(model: &Model, now: u64) -> String {
        let mut terminal = Terminal::new(TestBackend::new(100, 16)).unwrap();
        terminal.draw(|f| draw(f, model, now)).unwrap();
        let buffer = terminal.backend().buffer();
        let mut out = String::new();
        for y in 0..buffer.area.height {
            let line: String = (0..buffer.area.width)
                .filter_map(|x| buffer.cell((x, y)).map(|c| c.symbol().to_owned()))
                .collect();
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }

    #[test]
    fn the_screen_shows_holders_progress_queue_and_events() {
        let now = 1_000_000;
        let mut holder = lease(1, "service", 12, "Install Office 97");
        holder.granted_at_ms = now - 65_000;
        holder.fencing_token = 1;
        holder.progress = Some(v1::Progress {
            done: 2,
            total: 5,
            message: "copying".into(),
        });
        let mut waiter = lease(2, "agent", 13, "init");
        waiter.position = 1;
        waiter.queued_at_ms = now - 3_000;
        waiter.estimated_wait_ms = 39_000;
        let state = v1::ResourceState {
            resource: "pcm".into(),
            revision: 7,
            holders: vec![holder],
            waiters: vec![waiter],
            ..Default::default()
        };
        let mut model = Model::default();
        model.apply(
            WatchItem::Snapshot {
                revision: 7,
                states: vec![state.clone()],
                resync: false,
            },
            now,
        );
        model.apply(
            WatchItem::Event(v1::WatchEvent {
                revision: 7,
                kind: v1::EventKind::Queued as i32,
                state: Some(state),
                detail: "agent queued".into(),
                ..Default::default()
            }),
            now - 3_000,
        );
        let text = screen(&model, now);
        crate::snapshot::check("turnstile-top.txt", &text);
    }

    #[test]
    fn bars_fill_in_proportion() {
        let p = |done, total| v1::Progress {
            done,
            total,
            message: String::new(),
        };
        assert_eq!(bar(&p(0, 4), 4), "░░░░");
        assert_eq!(bar(&p(2, 4), 4), "██░░");
        assert_eq!(bar(&p(9, 4), 4), "████");
        assert_eq!(bar(&p(3, 0), 4), "░░░░");
    }
}
