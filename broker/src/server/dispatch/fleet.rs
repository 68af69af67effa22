//! The dispatcher's side of the fleet (see `crate::fleet`): the fleet task
//! watches every resource through a session of its own, whose watch events
//! go to its [`Inbox`] instead of a connection; its admissions and losses
//! come back as [`FleetEvent`]s and are applied to the core here. An event
//! of a registration (epoch) already lost is ignored: an admission decided
//! before a loss may arrive after it.

use std::sync::Arc;

use super::Dispatcher;
use crate::core::{EventKind, SessionId, StateEvent};
use crate::fleet::{FleetEvent, Inbox};

/// The fleet task's session and inbox.
pub(super) struct FleetLink {
    session: SessionId,
    inbox: Arc<Inbox>,
    /// The latest registration lost: its admissions are void.
    lost_epoch: u64,
}

impl Dispatcher {
    /// Opens the fleet task's session and its watch of every resource.
    pub(in crate::server) fn attach_fleet(&mut self, inbox: Arc<Inbox>) {
        let peer = self.core.connect(
            "turnstiled fleet".to_string(),
            self.config.own_uid,
            std::process::id(),
        );
        let now = self.clock.now();
        if let Err(e) = self.core.watch(peer.session, Vec::new(), 0, now) {
            tracing::error!("fleet: cannot watch the resources: {e}");
        }
        self.fleet = Some(FleetLink {
            session: peer.session,
            inbox,
            lost_epoch: 0,
        });
    }

    /// Whether a watch event is the fleet task's (then it is handed over).
    pub(super) fn fleet_takes(&self, session: SessionId, event: &Arc<StateEvent>) -> bool {
        match &self.fleet {
            Some(f) if f.session == session => {
                if event.kind != EventKind::Heartbeat && !event.state.resource.is_empty() {
                    f.inbox.put(event.clone());
                }
                true
            }
            _ => false,
        }
    }

    /// Applies what the fleet task decided.
    pub(super) fn fleet_event(&mut self, event: FleetEvent) {
        let Some(link) = self.fleet.as_mut() else {
            return;
        };
        let now = self.clock.now();
        let changes = match event {
            FleetEvent::Admit {
                epoch,
                lease,
                token,
            } => {
                if epoch <= link.lost_epoch {
                    return;
                }
                self.core.admit(lease, token, now)
            }
            FleetEvent::Place {
                epoch,
                lease,
                position,
                ahead,
            } => {
                if epoch <= link.lost_epoch {
                    return;
                }
                self.core.global_place(lease, position, ahead, now)
            }
            FleetEvent::Lost { epoch, detail } => {
                if epoch <= link.lost_epoch {
                    return;
                }
                link.lost_epoch = epoch;
                tracing::warn!(epoch, "fleet: global leases given up: {detail}");
                self.core.fleet_lost(&detail, now)
            }
        };
        self.deliver(changes, now);
    }
}
