//! An async subscriber on a tokio runtime: the subscription's events as a `Stream`.
//!
//! ```sh
//! cargo run -p multipoint --features tokio --example async_subscriber -- 239.255.0.1:31001
//! ```
//!
//! It follows the first stream on the group (on loopback) until the publisher ends its
//! session, printing what it saw; `multipoint pub --group 239.255.0.1:31001 --iface lo`
//! feeds it.

use std::future::poll_fn;
use std::pin::Pin;

use futures_core::Stream;
use multipoint::{Interface, OwnedEvent, PollConfig, ShardConfig, Shards, SubscriptionConfig};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let group = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "239.255.0.1:31001".into())
        .parse()?;
    let runtime = tokio::runtime::Builder::new_current_thread().build()?;
    runtime.block_on(async move {
        let mut shards = Shards::start_async(ShardConfig::default()).await?;
        let config = SubscriptionConfig {
            interface: Interface::LOOPBACK_V4,
            ..SubscriptionConfig::new(group)
        };
        let mut sub = shards
            .subscribe_poll_async(config, PollConfig::default())
            .await?;
        let (mut messages, mut missing) = (0u64, 0u64);
        while let Some(event) = poll_fn(|cx| Pin::new(&mut sub).poll_next(cx)).await {
            match event {
                OwnedEvent::Message { .. } | OwnedEvent::Recovered { .. } => messages += 1,
                OwnedEvent::Gap(gap) => missing += gap.count,
                OwnedEvent::Lost { count } => eprintln!("fell behind: {count} dropped"),
                OwnedEvent::EndOfSession => break,
                OwnedEvent::Failure(why) => {
                    eprintln!("the shard failed: {why}");
                    break;
                }
                _ => {}
            }
        }
        println!(
            "{messages} messages, {missing} missing, session {:?}",
            sub.subscription().session()
        );
        let (closed, _) = sub.close_async().await?;
        println!("{:?}", closed.stats);
        shards.shutdown_async().await;
        Ok(())
    })
}
