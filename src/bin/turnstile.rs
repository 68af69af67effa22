//! `turnstile`: the debug CLI. See `turnstile --help`.

fn main() -> std::process::ExitCode {
    turnstile_cli::main()
}
