//! `turnstile yield`: ask the holders of a resource to make way (the
//! user clicked "Install now"), and with `--revoke` take the lease of a
//! holder that has not after `--within`.

use std::time::Duration;

use clap::Args;
use turnstile_client::{Client, ClientError, ConnectOptions};

use crate::EXIT_OK;
use crate::format::span;

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
    // The broker says how many it asked, in the same turn as it asked
    // them (a count read before would race with a release).
    let holders = req.send().await? as usize;
    if json {
        println!(
            "{}",
            serde_json::json!({
                "resource": args.resource,
                "within_ms": args.within.as_millis() as u64,
                "reason": args.reason,
                "revoke": args.revoke,
                "holders": holders,
            })
        );
    } else {
        print!("{}", yield_text(&args, holders));
    }
    Ok(EXIT_OK)
}

/// What `yield` says it did, `holders` holding when it asked.
fn yield_text(args: &YieldArgs, holders: usize) -> String {
    let r = &args.resource;
    if holders == 0 {
        return format!("nobody holds {r}: nobody was asked to make way\n");
    }
    let who = if holders == 1 {
        "the holder".to_string()
    } else {
        format!("the {holders} holders")
    };
    let ms = args.within.as_millis().min(u128::from(u64::MAX)) as u64;
    let when = if ms == 0 {
        "at once".to_string()
    } else {
        format!("within {}", span(ms))
    };
    if args.revoke {
        format!(
            "asked {who} of {r} to make way {when}; a holder still holding then loses its lease\n"
        )
    } else {
        format!("asked {who} of {r} to make way {when}\n")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn says_who_was_asked_and_by_when() {
        let args = |within_ms, revoke| YieldArgs {
            resource: "pcm".into(),
            within: Duration::from_millis(within_ms),
            reason: String::new(),
            revoke,
        };
        assert_eq!(
            yield_text(&args(0, false), 0),
            "nobody holds pcm: nobody was asked to make way\n"
        );
        assert_eq!(
            yield_text(&args(0, false), 1),
            "asked the holder of pcm to make way at once\n"
        );
        assert_eq!(
            yield_text(&args(30_000, true), 2),
            "asked the 2 holders of pcm to make way within 30 s; a holder still holding then loses its lease\n"
        );
    }
}
