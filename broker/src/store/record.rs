//! The on-disk encoding of one queued message: a private protobuf record,
//! kept apart from the wire types so that the protocol and the file format
//! can change independently.
//!
//! Decoding never allocates more than the record's own length: prost
//! checks every length prefix against the bytes it was given.

use bytes::Bytes;
use prost::Message as _;

use crate::core::queues::Message;

/// One message as stored under its `(queue, seq)` key.
#[derive(Clone, PartialEq, prost::Message)]
pub(super) struct Record {
    /// Deliveries so far.
    #[prost(uint32, tag = "1")]
    pub attempt: u32,
    /// The body.
    #[prost(bytes = "bytes", tag = "2")]
    pub payload: Bytes,
    /// The publisher's headers, in order.
    #[prost(message, repeated, tag = "3")]
    pub headers: Vec<Header>,
    /// The uid it counts against; absent for a privileged publisher (and
    /// in records written before per-user quotas).
    #[prost(uint32, optional, tag = "4")]
    pub publisher: Option<u32>,
}

/// One header.
#[derive(Clone, PartialEq, prost::Message)]
pub(super) struct Header {
    /// Its name.
    #[prost(string, tag = "1")]
    pub key: String,
    /// Its value.
    #[prost(string, tag = "2")]
    pub value: String,
}

impl Record {
    /// The record of a message (all but its sequence number, the key).
    pub(super) fn of(message: &Message) -> Record {
        Record {
            attempt: message.attempt,
            payload: message.payload.clone(),
            headers: message
                .headers
                .iter()
                .map(|(key, value)| Header {
                    key: key.clone(),
                    value: value.clone(),
                })
                .collect(),
            publisher: message.publisher,
        }
    }

    /// The message this record holds, as message `seq`.
    pub(super) fn into_message(self, seq: u64) -> Message {
        Message {
            seq,
            payload: self.payload,
            headers: self.headers.into_iter().map(|h| (h.key, h.value)).collect(),
            attempt: self.attempt,
            publisher: self.publisher,
        }
    }

    /// Encodes a message (all but its sequence number, which is the key)
    /// into `buf`, which is cleared first.
    pub(super) fn encode_message(message: &Message, buf: &mut Vec<u8>) {
        let record = Record::of(message);
        buf.clear();
        buf.reserve(record.encoded_len());
        // Encoding into a Vec cannot run out of room.
        let _ = record.encode(buf);
    }

    /// Decodes the record stored for message `seq`.
    pub(super) fn decode_message(seq: u64, bytes: &[u8]) -> Result<Message, prost::DecodeError> {
        Ok(Record::decode(bytes)?.into_message(seq))
    }

    /// The record with its attempt count replaced.
    pub(super) fn with_attempt(bytes: &[u8], attempt: u32) -> Result<Vec<u8>, prost::DecodeError> {
        let mut record = Record::decode(bytes)?;
        record.attempt = attempt;
        Ok(record.encode_to_vec())
    }
}
