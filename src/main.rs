//! The `bookrelay` binary: parse the command line, settle the admin token
//! (`--admin-token-file`, `BOOKRELAY_ADMIN_TOKEN`), run, map the outcome to an
//! exit code (2 for a bad option or token source, 1 for a runtime failure such
//! as a port in use).

use bookrelay::cli::{self, Command};
use bookrelay::launch;
use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let command = match cli::parse(&args) {
        Ok(command) => command,
        Err(error) => {
            eprintln!("bookrelay: {error}");
            eprintln!("Run 'bookrelay --help' for usage.");
            return ExitCode::from(2);
        }
    };
    let command = match command {
        Command::Relay(mut config) => {
            let env = std::env::var_os(cli::ADMIN_TOKEN_ENV);
            if let Err(error) = launch::resolve_admin_token(&mut config, env) {
                eprintln!("bookrelay: {error}");
                eprintln!("Run 'bookrelay --help' for usage.");
                return ExitCode::from(2);
            }
            Command::Relay(config)
        }
        other => other,
    };
    let outcome = match command {
        Command::Help(text) => {
            print!("{text}");
            return ExitCode::SUCCESS;
        }
        Command::Version => {
            println!("bookrelay {}", env!("CARGO_PKG_VERSION"));
            return ExitCode::SUCCESS;
        }
        Command::Node(args) => launch::run_node(&args),
        Command::Relay(config) => launch::run_relay(&config),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("bookrelay: {error}");
            ExitCode::from(1)
        }
    }
}
