//! `turnstile`: the debug CLI. See `turnstile --help`. `turnstile fleet
//! ...` reads the fleet from etcd (`turnstile_broker::fleet::status_main`).

fn main() -> std::process::ExitCode {
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if args.get(1).is_some_and(|a| a == "fleet") {
        return turnstile_broker::fleet::status_main(&args[2..]);
    }
    turnstile_cli::main()
}
