//! `turnstile`: the debug CLI. See `turnstile --help`. `turnstile fleet
//! ...` reads the fleet from etcd (`turnstile_broker::fleet::status_main`);
//! it needs no broker, so it is handled before the broker's CLI.

fn main() -> std::process::ExitCode {
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    // `turnstile [--json] fleet ...`: the global `--json` is passed on.
    let json = args.get(1).is_some_and(|a| a == "--json");
    let at = if json { 2 } else { 1 };
    if args.get(at).is_some_and(|a| a == "fleet") {
        let mut rest = args[at + 1..].to_vec();
        if json {
            rest.push("--json".into());
        }
        return turnstile_broker::fleet::status_main(&rest);
    }
    turnstile_cli::main()
}
