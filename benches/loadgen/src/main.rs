#![forbid(unsafe_code)]

use clap::{Parser, Subcommand};
use portcullis_bench::calls::CallsArgs;
use portcullis_bench::{BenchArgs, NoopArgs};

/// Open-loop Check load generator for portcullis, with a no-op baseline
/// (benches/BENCHMARKS.md).
#[derive(Debug, Parser)]
#[command(
    name = "portcullis-bench",
    version,
    args_conflicts_with_subcommands = true
)]
struct Cli {
    /// Without a subcommand: run the load (what `portcullis bench` did).
    #[command(flatten)]
    run: BenchArgs,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve a no-op Check server (answers OK at once), for baselines
    /// (what `portcullis bench-noop` did).
    Noop(NoopArgs),
    /// A fixed number of Checks against a running server, closed loop,
    /// with hooks around the counted ones (instruction counts, cache fills).
    Calls(CallsArgs),
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        None => portcullis_bench::run(cli.run).await,
        Some(Command::Noop(args)) => portcullis_bench::run_noop(args).await,
        Some(Command::Calls(args)) => portcullis_bench::calls::run(args).await,
    };
    match result {
        Ok(code) => std::process::ExitCode::from(code.clamp(0, 255) as u8),
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::from(1)
        }
    }
}
