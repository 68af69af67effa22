//! `turnstile queue`: list queues, publish a message, consume messages,
//! and administer a queue: `peek` (read without taking), `purge`,
//! `requeue-dead` (dead letters back into the queue).
//!
//! `consume` prints each message, then acknowledges it (so a message is
//! never acknowledged before it was written out); with `--no-ack` it only
//! looks: the messages stay in the queue and are delivered again, attempt
//! raised, once the command exits (so a message looked at often enough
//! moves to the dead-letter queue, like any other delivery not acknowledged).
//! With `--count N` it never takes a message it will not print: no more
//! than N are ever in flight, an ack that could let the broker send one
//! past N waits, and the consumer is cancelled (`CancelConsume`) before
//! the last acks go out (and when SIGINT, SIGTERM or SIGHUP ends it early,
//! so that every message printed is acknowledged). With `--max-wait` it
//! stops once that long passes with no message (exit 75 short of
//! `--count`): a script takes a job if there is one without hanging.
//!
//! Payloads in `--json` output: `"payload"` holds the payload as a string
//! when it is valid UTF-8 (`"payload_encoding": "utf-8"`), else its
//! standard base64 with padding (`"payload_encoding": "base64"`). In text
//! output a payload that is not UTF-8 is printed as `base64:...`.

use std::io::{Read, Write};

use clap::Subcommand;
use serde_json::json;
use turnstile_client::proto as v1;
use turnstile_client::{Client, ClientError, ConnectOptions, Delivery};

use futures::FutureExt;

use crate::{EXIT_BUSY, EXIT_OK, EXIT_SOFTWARE, EXIT_USAGE};

/// Prefetch when consuming without `--count` or `--prefetch`.
const DEFAULT_PREFETCH: u32 = 16;

#[derive(Subcommand, Debug)]
pub enum QueueCommand {
    /// Every queue in use: messages ready, delivered and unacknowledged, consumers
    Ls {
        #[arg(long, help = crate::format::NO_LEGEND)]
        no_legend: bool,
    },
    /// Publish one message: DATA, or all of stdin when DATA is absent; prints its sequence number once stored
    Publish {
        /// The queue
        queue: String,
        /// The payload (read from stdin when absent)
        data: Option<String>,
        /// A header KEY=VALUE; repeatable
        #[arg(short = 'H', long = "header", value_name = "KEY=VALUE", value_parser = parse_header)]
        headers: Vec<(String, String)>,
    },
    /// Print the queue's messages as they arrive, acknowledging each once printed
    #[command(
        after_help = "With --json: one object per line; \"payload\" is the payload as a string when it is valid UTF-8\n(\"payload_encoding\": \"utf-8\"), else its base64 (\"payload_encoding\": \"base64\")."
    )]
    Consume {
        /// The queue
        queue: String,
        /// Stop after N messages, N ≥ 1 (default: run until interrupted)
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
        count: Option<u64>,
        /// Do not acknowledge: the messages stay in the queue and are delivered again once this command exits (each look uses one of a message's delivery attempts)
        #[arg(long)]
        no_ack: bool,
        /// Messages held unacknowledged at a time [default: N of --count, at most 16 (all N with --no-ack); else 16]
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
        prefetch: Option<u32>,
        /// Stop once this long passes with no message: exit 75 if --count was not reached, else 0 (the queue is drained); 0.5, 1.5s, 2m
        #[arg(short = 'w', long, visible_alias = "timeout", value_name = "DURATION", value_parser = crate::run::parse_duration)]
        max_wait: Option<std::time::Duration>,
    },
    /// Show the next messages of QUEUE without taking them (no delivery attempt is used)
    Peek {
        /// The queue
        queue: String,
        /// At most this many messages, the next to be delivered first
        #[arg(long, value_name = "N", default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..))]
        limit: u32,
    },
    /// Drop every ready message of QUEUE (policy verb queue-admin: by default root and the broker's user)
    Purge {
        /// The queue
        queue: String,
    },
    /// Move the dead letters of QUEUE (QUEUE.dead) back into it with fresh delivery attempts (policy verb queue-admin)
    RequeueDead {
        /// The queue (not its .dead name)
        queue: String,
    },
}

fn parse_header(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("'{s}' is not KEY=VALUE")),
    }
}

pub async fn run(
    opts: ConnectOptions,
    command: QueueCommand,
    json: bool,
) -> Result<u8, ClientError> {
    match command {
        QueueCommand::Ls { no_legend } => {
            let client = Client::connect(opts).await?;
            let status = client.status(&[]).await?;
            print!("{}", ls_text(&status.queues, !no_legend, json));
            if status.queues_truncated {
                eprint!("{}", crate::status::QUEUES_LEFT_OUT);
            }
            Ok(EXIT_OK)
        }
        QueueCommand::Publish {
            queue,
            data,
            headers,
        } => {
            let payload = match data {
                Some(d) => d.into_bytes(),
                None => {
                    let mut buf = Vec::new();
                    if let Err(e) = std::io::stdin().read_to_end(&mut buf) {
                        eprintln!("turnstile: cannot read the payload from stdin: {e}");
                        return Ok(EXIT_USAGE);
                    }
                    buf
                }
            };
            let client = Client::connect(opts).await?;
            let headers: Vec<(&str, &str)> = headers
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            let seq = client.publish(&queue, payload, &headers).await?;
            if json {
                println!("{}", json!({ "queue": queue, "seq": seq }));
            } else {
                println!("published to {queue}: seq {seq}");
            }
            Ok(EXIT_OK)
        }
        QueueCommand::Peek { queue, limit } => {
            let client = Client::connect(opts).await?;
            let peek = client.peek_queue(&queue, limit).await?;
            for m in &peek.messages {
                println!("{}", delivery_line(m, json));
            }
            if !json {
                if peek.messages.is_empty() {
                    println!("{queue} has no ready message");
                } else if peek.truncated {
                    println!("(more follow: --limit N shows more)");
                }
            }
            Ok(EXIT_OK)
        }
        QueueCommand::Purge { queue } => {
            let client = Client::connect(opts).await?;
            let count = client.purge_queue(&queue).await?;
            if json {
                println!("{}", json!({ "queue": queue, "purged": count }));
            } else {
                println!("purged {count} message(s) from {queue}");
            }
            Ok(EXIT_OK)
        }
        QueueCommand::RequeueDead { queue } => {
            let client = Client::connect(opts).await?;
            let count = client.requeue_dead(&queue).await?;
            if json {
                println!("{}", json!({ "queue": queue, "requeued": count }));
            } else {
                println!("moved {count} dead letter(s) back to {queue}");
            }
            Ok(EXIT_OK)
        }
        QueueCommand::Consume {
            queue,
            count,
            no_ack,
            prefetch,
            max_wait,
        } => {
            let prefetch = prefetch.unwrap_or(match count {
                Some(n) if no_ack => n.min(u64::from(u32::MAX)) as u32,
                Some(n) => n.min(u64::from(DEFAULT_PREFETCH)) as u32,
                None => DEFAULT_PREFETCH,
            });
            // Never more in flight than messages still wanted.
            let prefetch = match count {
                Some(n) => prefetch.min(n.min(u64::from(u32::MAX)) as u32).max(1),
                None => prefetch,
            };
            let client = Client::connect(opts).await?;
            let mut consumer = client.consume(&queue, prefetch).await?;
            let mut seen = 0u64;
            // Printed, not yet acknowledged: with --no-ack all of them; with
            // --count those whose ack could let the broker send a message
            // past the count (one it would take, and use an attempt of,
            // for nothing).
            let mut kept: Vec<Delivery> = Vec::new();
            // Those kept are acknowledged when a signal ends the command
            // early: printed is acknowledged, whatever the count.
            let mut signals = if count.is_some() && !no_ack {
                crate::child::Signals::catch()
                    .inspect_err(|e| {
                        eprintln!(
                            "turnstile: cannot catch signals ({e}): a signal now leaves the messages printed unacknowledged"
                        )
                    })
                    .ok()
            } else {
                None
            };
            let mut ran_out = false;
            while count.is_none_or(|n| seen < n) {
                let next = tokio::select! {
                    d = consumer.next() => d,
                    caught = caught(&mut signals) => {
                        return settle_interrupted(consumer, kept, caught).await;
                    }
                    () = idle(max_wait) => {
                        ran_out = true;
                        break;
                    }
                };
                let Some(delivery) = next else {
                    return Err(ClientError::Disconnected(
                        "the broker closed the connection".into(),
                    ));
                };
                if let Err(code) = print_delivery(&delivery, json) {
                    delivery.leave_unacked();
                    kept.into_iter().for_each(Delivery::leave_unacked);
                    return Ok(code);
                }
                seen += 1;
                let ack_now = match count {
                    _ if no_ack => false,
                    None => true,
                    // After this ack the broker may send up to `prefetch`
                    // minus those still kept: only if that stays within N.
                    Some(n) => seen + u64::from(prefetch) - kept.len() as u64 <= n,
                };
                if ack_now {
                    delivery.ack().await?;
                } else {
                    kept.push(delivery);
                }
            }
            // The count is reached (or --max-wait ran out): stop the consumer
            // before settling what is kept, so that nothing more is taken.
            consumer.cancel().await?;
            if ran_out {
                // What the broker sent before it took the cancel is here
                // now: printed and settled like the rest, never dropped (it
                // stays within --count: no more are ever in flight).
                while let Some(Some(delivery)) = consumer.next().now_or_never() {
                    if let Err(code) = print_delivery(&delivery, json) {
                        delivery.leave_unacked();
                        kept.into_iter().for_each(Delivery::leave_unacked);
                        return Ok(code);
                    }
                    seen += 1;
                    kept.push(delivery);
                }
            }
            if no_ack {
                kept.into_iter().for_each(Delivery::leave_unacked);
            } else {
                for delivery in kept {
                    delivery.ack().await?;
                }
            }
            if count.is_some_and(|n| seen < n) {
                let wanted = count.unwrap_or_default();
                let waited = max_wait.unwrap_or_default();
                eprintln!(
                    "turnstile: {seen} of {wanted} message(s) from {queue}: none came for {} (--max-wait)",
                    crate::format::span(waited.as_millis().min(u128::from(u64::MAX)) as u64)
                );
                return Ok(EXIT_BUSY);
            }
            Ok(EXIT_OK)
        }
    }
}

/// Writes one consumed message out, before it is acknowledged: a reader
/// that went away (`| head -1`) leaves the message in the queue. `Err`
/// is the exit code.
fn print_delivery(delivery: &Delivery, json: bool) -> Result<(), u8> {
    let mut out = std::io::stdout().lock();
    let written =
        writeln!(out, "{}", delivery_line(delivery.as_proto(), json)).and_then(|()| out.flush());
    match written {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Err(EXIT_OK),
        Err(e) => {
            eprintln!("turnstile: cannot write the message out: {e}");
            Err(EXIT_SOFTWARE)
        }
    }
}

/// The signal that ends `consume` early, when they are caught; never
/// otherwise.
async fn caught(signals: &mut Option<crate::child::Signals>) -> crate::child::Caught {
    match signals {
        Some(signals) => signals.pass_on(None).await,
        None => std::future::pending().await,
    }
}

/// `--max-wait` passing with no message; never without it.
async fn idle(max_wait: Option<std::time::Duration>) {
    match max_wait {
        Some(w) => tokio::time::sleep(w).await,
        None => std::future::pending().await,
    }
}

/// `consume --count` was ended by a signal: the consumer stops and the
/// messages printed but kept unacknowledged are acknowledged (within
/// [`SETTLE_WITHIN`], so that an unresponsive broker cannot keep the
/// command from ending); the command exits as the signal would have made it.
async fn settle_interrupted(
    consumer: turnstile_client::Consumer,
    kept: Vec<Delivery>,
    caught: crate::child::Caught,
) -> Result<u8, ClientError> {
    let printed = kept.len();
    let settle = async {
        consumer.cancel().await?;
        for delivery in kept {
            delivery.ack().await?;
        }
        Ok::<_, ClientError>(())
    };
    match tokio::time::timeout(SETTLE_WITHIN, settle).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => eprintln!(
            "turnstile: {}: cannot acknowledge the {printed} message(s) printed: {e}",
            caught.name
        ),
        Err(_) => eprintln!(
            "turnstile: {}: the broker did not take the acknowledgements of the {printed} message(s) printed within {} s; they will be delivered again",
            caught.name,
            SETTLE_WITHIN.as_secs()
        ),
    }
    Ok(caught.exit_code)
}

/// How long an interrupted `consume --count` waits for its last acks.
const SETTLE_WITHIN: std::time::Duration = std::time::Duration::from_secs(5);

/// `queue ls`: a table, or a JSON array of the queues.
fn ls_text(queues: &[v1::QueueInfo], legend: bool, json: bool) -> String {
    if json {
        let list: Vec<_> = queues.iter().map(crate::view::QueueView::from).collect();
        return format!("{}\n", serde_json::to_string(&list).unwrap_or_default());
    }
    if queues.is_empty() {
        let none = "no queue holds messages or has consumers\n";
        return if legend { none } else { "" }.to_string();
    }
    queues_table(queues, legend)
}

/// The queues as a table (`queue ls`, `status`).
pub(crate) fn queues_table(queues: &[v1::QueueInfo], legend: bool) -> String {
    let mut t = crate::format::table(&["QUEUE", "READY", "UNACKED", "CONSUMERS"], legend);
    for q in queues {
        t.add_row(vec![
            q.queue.clone(),
            q.ready.to_string(),
            q.unacked.to_string(),
            q.consumers.to_string(),
        ]);
    }
    for i in 1..4 {
        if let Some(c) = t.column_mut(i) {
            c.set_cell_alignment(comfy_table::CellAlignment::Right);
        }
    }
    crate::format::table_text(&mut t)
}

/// One consumed message: `[seq S, attempt A, key=value...] payload`, or a
/// JSON object.
fn delivery_line(d: &v1::Delivery, json: bool) -> String {
    let text = std::str::from_utf8(&d.payload).ok();
    if json {
        let (payload, encoding) = match text {
            Some(t) => (t.to_string(), "utf-8"),
            None => (base64(&d.payload), "base64"),
        };
        return json!({
            "queue": d.queue,
            "seq": d.seq,
            "attempt": d.attempt,
            "delivery_id": d.delivery_id,
            "headers": d.headers,
            "payload": payload,
            "payload_encoding": encoding,
        })
        .to_string();
    }
    let mut line = format!("[seq {}, attempt {}", d.seq, d.attempt);
    for (k, v) in &d.headers {
        line.push_str(&format!(", {k}={v}"));
    }
    line.push_str("] ");
    match text {
        Some(t) => line.push_str(t),
        None => {
            line.push_str("base64:");
            line.push_str(&base64(&d.payload));
        }
    }
    line
}

/// Standard base64 (RFC 4648), with padding.
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[(n >> (18 - 6 * i) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc_4648() {
        // The test vectors of RFC 4648, section 10.
        let vectors = [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ];
        for (plain, encoded) in vectors {
            assert_eq!(base64(plain.as_bytes()), encoded, "{plain:?}");
        }
    }

    #[test]
    fn headers_are_key_equals_value() {
        assert_eq!(
            parse_header("job=42=x"),
            Ok(("job".to_string(), "42=x".to_string()))
        );
        assert!(parse_header("job").is_err());
        assert!(parse_header("=42").is_err());
    }

    #[test]
    fn a_binary_payload_is_printed_as_base64() {
        let d = v1::Delivery {
            consumer_id: 1,
            delivery_id: 7,
            seq: 3,
            queue: "q".into(),
            payload: vec![0xff, 0x00].into(),
            headers: [("k".to_string(), "v".to_string())].into(),
            attempt: 2,
        };
        assert_eq!(
            delivery_line(&d, false),
            "[seq 3, attempt 2, k=v] base64:/wA="
        );
        let j: serde_json::Value = serde_json::from_str(&delivery_line(&d, true)).unwrap();
        assert_eq!(j["payload"], "/wA=");
        assert_eq!(j["payload_encoding"], "base64");
        assert_eq!(j["headers"]["k"], "v");
    }
}
