//! The `redis-api` binary: parse config, start logging, run, map the outcome to an exit code.

use redis_api::config::{Command, Config, help_text};
use std::process::ExitCode;

fn main() -> ExitCode {
    let config = match Config::from_process() {
        Ok(Command::Run(c)) => c,
        Ok(Command::Help) => {
            print!("{}", help_text());
            return ExitCode::SUCCESS;
        }
        Ok(Command::Version) => {
            println!("redis-api {}", env!("CARGO_PKG_VERSION"));
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("redis-api: {e}");
            return ExitCode::from(2);
        }
    };
    redis_api::logging::init(config.log_format);
    match redis_api::server::run(*config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            log::error!("{e}");
            ExitCode::FAILURE
        }
    }
}
