//! `turnstile`: the debug CLI. See `turnstile --help`. `turnstile fleet
//! status` reads the fleet from etcd, which only the broker's crate can
//! (`turnstile_broker::fleet::status_main`); it needs no broker.

fn main() -> std::process::ExitCode {
    turnstile_cli::main_with(Some(|args, json| {
        turnstile_broker::fleet::status_main(&args.fleet_etcd, &args.fleet_prefix, json)
    }))
}
