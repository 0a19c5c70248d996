//! The `vwnet` binary: parses arguments, runs one command, and turns any error into one readable
//! line and a non-zero exit code. Everything else lives in the library crates.

mod args;
mod cmd;
mod context;
mod fsutil;
mod output;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let args = args::Cli::parse();
    let ctx = match context::Context::from_args(&args) {
        Ok(ctx) => ctx,
        Err(err) => return output::fail(args.json, &err),
    };
    match cmd::run(args.command, &ctx) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => output::fail(ctx.json, &err),
    }
}
