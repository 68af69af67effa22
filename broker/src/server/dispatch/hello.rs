//! `Hello`: the handshake's second half. The reader checked the frame and
//! the version; here the session is opened and the peer learns what the
//! broker saw of it (uid and pid from the kernel, not from the client).

use tokio::sync::oneshot;
use turnstile_proto::v1;

use super::Dispatcher;
use crate::core::{PeerIdentity, SessionId};
use crate::platform::peer::PeerCredentials;
use crate::server::outbound::{Conn, ReadGate};
use crate::server::{Outbound, wire};

// The fields of `ToCore::Hello`, one for one.
#[allow(clippy::too_many_arguments)]
pub(super) fn handle(
    d: &mut Dispatcher,
    id: u64,
    hello: v1::Hello,
    creds: PeerCredentials,
    gate: std::sync::Arc<ReadGate>,
    session_tx: oneshot::Sender<SessionId>,
) {
    let who = PeerIdentity {
        uid: creds.uid,
        pid: creds.pid,
        user: creds.user.clone(),
        login_session: creds.login_session.clone(),
    };
    let peer = d.core.connect_peer(hello.client_name, who);
    let session = peer.session;
    tracing::debug!(session = session.0, uid = creds.uid, pid = creds.pid, client = %peer.client_name, "hello");
    d.conns.insert(
        session,
        Box::new(Conn::new(
            crate::policy::Subject::from(&creds),
            creds.pid,
            gate,
            d.config.max_outbound_bytes,
        )),
    );
    let reply = v1::HelloReply {
        broker_version: env!("CARGO_PKG_VERSION").to_string(),
        protocol_version: turnstile_proto::PROTOCOL_VERSION,
        session_id: session.0,
        max_frame_bytes: d.config.max_frame_bytes,
        peer: Some(wire::peer(&peer)),
        min_protocol_version: turnstile_proto::PROTOCOL_VERSION,
        max_protocol_version: turnstile_proto::PROTOCOL_VERSION,
    };
    d.send(
        session,
        Outbound::frame(wire::reply(id, v1::reply::Result::Hello(reply))),
    );
    if session_tx.send(session).is_err() {
        // The reader is already gone: the connection closed meanwhile.
        d.goodbye(session, "the connection closed during the handshake");
    }
}
