//! Measures what a `poll` reader on its own thread keeps up with: a publisher paced at a
//! rate (default 10 M msgs/s of 32 bytes) on loopback multicast, one shard receiving into
//! a poll ring, and a reader thread polling the ring. Prints, per run, what was
//! published, what the shard received (and the kernel dropped before it), what the ring
//! dropped for the reader, and what the reader read.
//!
//! ```sh
//! cargo run --release -p multipoint --example poll_rate -- [RATE] [SECONDS] [SIZE] [poll|shard]
//! ```
//!
//! `shard` counts the messages in a handler on the shard's thread instead (no ring, no
//! reader thread): the baseline for what the ring and the reader cost.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use multipoint::{
    Event, IdleStrategy, Interface, OfferError, PollConfig, Publisher, PublisherConfig, Session,
    ShardConfig, Shards, SubscriptionConfig,
};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let rate: u64 = args.next().map_or(Ok(10_000_000), |a| a.parse())?;
    let seconds: u64 = args.next().map_or(Ok(5), |a| a.parse())?;
    let size: usize = args.next().map_or(Ok(32), |a| a.parse())?;
    let on_shard = args.next().is_some_and(|mode| mode == "shard");
    let port = std::net::UdpSocket::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let group = std::net::SocketAddr::from(([239, 255, 123, 1], port));

    let mut shards = Shards::start(ShardConfig {
        idle: IdleStrategy::Block,
        ..ShardConfig::default()
    })?;
    let config = SubscriptionConfig {
        interface: Interface::LOOPBACK_V4,
        session: Some(Session::new("RATE")?),
        recv_buffer: 32 << 20,
        ..SubscriptionConfig::new(group)
    };
    let stop = Arc::new(AtomicBool::new(false));
    let counted = Arc::new(AtomicU64::new(0));
    let (reader, baseline) = if on_shard {
        let count = Arc::clone(&counted);
        let handler = move |_: u64, _: &[u8]| {
            count.fetch_add(1, Ordering::Relaxed);
        };
        (None, Some(shards.subscribe(config, handler)?))
    } else {
        let mut sub = shards.subscribe_poll(config, PollConfig::new(64 << 20))?;
        let stop = Arc::clone(&stop);
        let reader = std::thread::spawn(move || {
            let (mut messages, mut lost, mut bytes) = (0u64, 0u64, 0u64);
            let mut ended = false;
            while !ended && !stop.load(Ordering::Relaxed) {
                sub.poll_wait(
                    |event| match event {
                        Event::Message { message, .. } => {
                            messages += 1;
                            bytes += message.len() as u64;
                        }
                        Event::Lost { count } => lost += count,
                        Event::EndOfSession => ended = true,
                        _ => {}
                    },
                    4096,
                    Duration::from_millis(50),
                );
            }
            (sub, messages, lost, bytes)
        });
        (Some(reader), None)
    };

    let mut publisher = Publisher::new(PublisherConfig {
        interface: Interface::LOOPBACK_V4,
        scope: 0,
        ..PublisherConfig::new(Session::new("RATE")?, group)
    })?;
    let message = vec![7u8; size];
    let begun = Instant::now();
    let total = rate * seconds;
    let (mut sent, mut refused) = (0u64, 0u64);
    while sent < total {
        let due = ((begun.elapsed().as_nanos() * u128::from(rate)) / 1_000_000_000) as u64;
        let due = due.min(total);
        if due <= sent {
            publisher.poll();
            std::hint::spin_loop();
            continue;
        }
        publisher.begin_batch();
        while sent < due {
            match publisher.offer(&message) {
                Ok(_) => sent += 1,
                Err(OfferError::Backpressure) => {
                    refused += 1;
                    break;
                }
                Err(e) => return Err(e.into()),
            }
        }
        publisher.end_batch();
        publisher.poll();
    }
    let elapsed = begun.elapsed();
    let published = publisher.close();
    println!(
        "rate {rate}/s x {seconds} s of {size} B: published {} in {:.2} s ({:.2} M msgs/s, {refused} offers refused)",
        published.messages,
        elapsed.as_secs_f64(),
        published.messages as f64 / elapsed.as_secs_f64() / 1e6
    );
    if let Some(sub) = baseline {
        // Counting on the shard: wait for the end of session (or a second).
        let deadline = Instant::now() + Duration::from_secs(2);
        while sub.stats().end_of_session == 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        let stats = sub.close()?.stats;
        println!(
            "on the shard: received {} (kernel drops {}, missing {}); counted {}",
            stats.messages,
            stats.kernel_drops,
            stats.missing,
            counted.load(Ordering::Relaxed)
        );
        shards.shutdown();
        return Ok(());
    }
    let reader = reader.ok_or("no reader")?;
    // Give the reader the rest (it ends at the end of session, or after two seconds).
    let deadline = Instant::now() + Duration::from_secs(2);
    while !reader.is_finished() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    stop.store(true, Ordering::Relaxed);
    let (sub, messages, lost, bytes) = reader.join().map_err(|_| "the reader panicked")?;
    let stats = sub.stats();
    let ring = sub.ring_stats();
    println!(
        "poll reader: shard received {} (kernel drops {}, missing {}); ring dropped {} (reader told {lost}); reader read {messages} ({bytes} bytes)",
        stats.messages, stats.kernel_drops, stats.missing, ring.dropped
    );
    println!(
        "reader lost of what the shard received: {}",
        stats.messages.saturating_sub(messages)
    );
    let (_closed, _rest) = sub.close()?;
    shards.shutdown();
    Ok(())
}
