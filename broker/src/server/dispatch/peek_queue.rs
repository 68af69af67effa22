//! `PeekQueue`: a queue's next ready messages, read without taking them
//! (no delivery, no attempt used). Policy verb `consume`: it shows what
//! consuming would.

use turnstile_proto::v1;

use super::{Answer, Dispatcher};
use crate::core::{SessionId, check_name};
use crate::policy::Verb;

/// Room kept in the answer's frame for everything but the messages.
const FRAME_MARGIN: usize = 256;

pub(super) fn handle(d: &mut Dispatcher, session: SessionId, req: v1::PeekQueue) -> Answer {
    check_name("queue", &req.queue)?;
    d.allow(session, Verb::Consume, Some(&req.queue))?;
    let limit = match req.limit {
        0 => usize::MAX,
        n => n as usize,
    };
    let (messages, mut truncated) = d.core.queues.peek(&req.queue, limit);
    let room = (d.config.max_frame_bytes as usize).saturating_sub(FRAME_MARGIN);
    let mut used = 0usize;
    let mut shown = Vec::with_capacity(messages.len());
    for m in messages {
        let message = v1::Delivery {
            consumer_id: 0,
            delivery_id: 0,
            seq: m.seq,
            queue: req.queue.clone(),
            payload: m.payload.clone(),
            headers: m.headers.iter().cloned().collect(),
            attempt: m.attempt,
        };
        // Its length inside the answer: the message, a tag and a length.
        let len = prost::Message::encoded_len(&message) + 11;
        if used + len > room {
            truncated = true;
            break;
        }
        used += len;
        shown.push(message);
    }
    Ok((
        v1::reply::Result::QueuePeek(v1::QueuePeek {
            messages: shown,
            truncated,
        }),
        Vec::new(),
    ))
}
