//! `turnstiled`: the turnstile broker. See `turnstiled --help`.

fn main() -> std::process::ExitCode {
    turnstile_broker::cli::main()
}
