//! `turnstile yield`: ask the holders of a resource to make way (the
//! user clicked "Install now"), and with `--revoke` take the lease of a
//! holder that has not after `--within`.

use std::time::Duration;

use clap::Args;
use turnstile_client::{Client, ClientError, ConnectOptions};

use crate::EXIT_OK;

#[derive(Args, Debug)]
pub struct YieldArgs {
    /// The resource whose holders are asked
    resource: String,
    /// How long the holders have to make way
    #[arg(long, value_name = "DURATION", value_parser = crate::run::parse_duration, default_value = "0s")]
    within: Duration,
    /// Why, shown to the holders and watchers
    #[arg(long, value_name = "TEXT", default_value = "")]
    reason: String,
    /// Take the lease of a holder still holding after --within (policy verb revoke: root and the broker's user by default)
    #[arg(long)]
    revoke: bool,
}

pub async fn run(opts: ConnectOptions, args: YieldArgs, json: bool) -> Result<u8, ClientError> {
    let client = Client::connect(opts).await?;
    let mut req = client
        .request_yield(&args.resource)
        .within(args.within)
        .reason(args.reason.clone());
    if args.revoke {
        req = req.revoke();
    }
    req.send().await?;
    if json {
        println!(
            "{}",
            serde_json::json!({
                "resource": args.resource,
                "within_ms": args.within.as_millis() as u64,
                "reason": args.reason,
                "revoke": args.revoke,
            })
        );
    } else if args.revoke {
        println!(
            "asked the holders of {} to make way; a holder still holding in {:?} loses its lease",
            args.resource, args.within
        );
    } else {
        println!(
            "asked the holders of {} to make way within {:?}",
            args.resource, args.within
        );
    }
    Ok(EXIT_OK)
}
