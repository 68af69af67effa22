//! How long a durable write can stall: publishers (one publish in flight
//! each) and a consumer acking every delivery run against a broker for a
//! while, and every publish's and ack's round trip is kept. The store's
//! checkpoints (its log applied to redb, once per `--store-checkpoint-size`
//! of log) show in the tail: p99, p99.9 and the worst.
//!
//!     cargo build --release -p turnstile-client --example store_stall
//!     target/release/turnstiled --socket /tmp/ts.sock --data-dir /tmp/ts.data \
//!         --log-level warn,turnstile_broker::store=debug 2>/tmp/ts.log &
//!     target/release/examples/store_stall /tmp/ts.sock 20 8 256
//!     grep -c 'is in redb' /tmp/ts.log
//!
//! Arguments: SOCKET [SECONDS (default 20)] [PUBLISHERS (default 8)]
//! [PAYLOAD BYTES (default 256)] [CONSUME (default 1; 0: no consumer, the
//! queue grows and every checkpoint inserts what was published)]. Prints the counts and the round trips'
//! percentiles in µs.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::{Duration, Instant};

use turnstile_client::{Client, ClientError, ConnectOptions};

const QUEUE: &str = "stall";

fn summary(what: &str, ns: &mut [u64], seconds: f64) {
    ns.sort_unstable();
    let at = |q: f64| -> f64 {
        if ns.is_empty() {
            return 0.0;
        }
        let i = ((ns.len() as f64 - 1.0) * q).round() as usize;
        ns[i] as f64 / 1000.0
    };
    println!(
        "{what}: {} in {seconds:.1} s ({:.0}/s); p50 {:.0} µs, p99 {:.0} µs, p99.9 {:.0} µs, max {:.0} µs",
        ns.len(),
        ns.len() as f64 / seconds,
        at(0.5),
        at(0.99),
        at(0.999),
        at(1.0),
    );
}

async fn run(
    socket: String,
    seconds: u64,
    publishers: usize,
    size: usize,
    consume: bool,
) -> Result<(), ClientError> {
    let until = Instant::now() + Duration::from_secs(seconds);
    let started = Instant::now();
    let publish_ns = Rc::new(RefCell::new(Vec::new()));
    let ack_ns = Rc::new(RefCell::new(Vec::new()));
    let consumer_client =
        Client::connect(ConnectOptions::new("store-stall-consumer").socket(socket.clone())).await?;
    let mut consumer = if consume {
        Some(consumer_client.consume(QUEUE, 256).await?)
    } else {
        None
    };
    let local = tokio::task::LocalSet::new();
    let mut tasks = Vec::new();
    for p in 0..publishers {
        let socket = socket.clone();
        let publish_ns = publish_ns.clone();
        tasks.push(local.spawn_local(async move {
            let client =
                Client::connect(ConnectOptions::new(format!("store-stall-{p}")).socket(socket))
                    .await?;
            let payload = vec![b'p'; size];
            while Instant::now() < until {
                let t = Instant::now();
                client.publish(QUEUE, payload.clone(), &[]).await?;
                publish_ns.borrow_mut().push(t.elapsed().as_nanos() as u64);
            }
            Ok::<(), ClientError>(())
        }));
    }
    let acks = ack_ns.clone();
    let acking = local.spawn_local(async move {
        let mut in_flight = futures::stream::FuturesUnordered::new();
        use futures::StreamExt;
        loop {
            tokio::select! {
                delivery = async { consumer.as_mut()?.next().await }, if consumer.is_some() && Instant::now() < until => {
                    let Some(delivery) = delivery else { break };
                    let acks = acks.clone();
                    in_flight.push(async move {
                        let t = Instant::now();
                        let r = delivery.ack().await;
                        acks.borrow_mut().push(t.elapsed().as_nanos() as u64);
                        r
                    });
                }
                Some(r) = in_flight.next() => r?,
                else => break,
            }
        }
        Ok::<(), ClientError>(())
    });
    local
        .run_until(async move {
            for task in tasks {
                task.await.expect("a publisher panicked")?;
            }
            tokio::time::timeout(Duration::from_secs(10), acking)
                .await
                .ok()
                .map(|r| r.expect("the consumer panicked"))
                .transpose()?;
            Ok::<(), ClientError>(())
        })
        .await?;
    let seconds = started.elapsed().as_secs_f64();
    summary("publish", &mut publish_ns.borrow_mut(), seconds);
    summary("ack", &mut ack_ns.borrow_mut(), seconds);
    Ok(())
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let socket = args
        .get(1)
        .cloned()
        .unwrap_or_else(|| "/tmp/ts.sock".into());
    let seconds = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(20);
    let publishers = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(8);
    let size = args.get(4).and_then(|s| s.parse().ok()).unwrap_or(256);
    let consume = args.get(5).is_none_or(|s| s != "0");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    if let Err(e) = runtime.block_on(run(socket, seconds, publishers, size, consume)) {
        eprintln!("store_stall: {e}");
        std::process::exit(1);
    }
}
