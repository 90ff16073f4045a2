//! `dispatch`: parse the command line, load the config, start the workers. Nothing else.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "dispatch",
    version,
    about = "Thread-per-core HTTP/1.1 API gateway"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve with the given config.
    Run {
        #[arg(long, default_value = "config/dispatch.toml")]
        config: PathBuf,
    },
    /// Load, validate and compile the config, print a summary, exit 0 (1 on error).
    Check {
        #[arg(long, default_value = "config/dispatch.toml")]
        config: PathBuf,
    },
    /// Print an aggregate's compiled plan: its calls in the order they can start, what each
    /// waits for, the critical path and the worst-case time its timeouts allow.
    Explain {
        #[arg(long, default_value = "config/dispatch.toml")]
        config: PathBuf,
        /// The aggregate's name (`[aggregates.NAME]`).
        aggregate: String,
    },
    /// Run the gateway on config/demo.toml with sample upstreams on loopback, and print a
    /// token, an API key and curl commands to try.
    Demo {
        #[arg(long, default_value = "config/demo.toml")]
        config: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Check { config } => match dispatch::router::load_config(&config) {
            Ok(cfg) => {
                print!("{}", dispatch::config::summary(&cfg));
                ExitCode::SUCCESS
            }
            Err(e) => fail(e),
        },
        Command::Explain { config, aggregate } => match dispatch::router::load_config(&config) {
            Ok(cfg) => match dispatch::compose::aggregate::explain(&cfg, &aggregate) {
                Ok(text) => {
                    print!("{text}");
                    ExitCode::SUCCESS
                }
                Err(e) => fail(e),
            },
            Err(e) => fail(e),
        },
        Command::Run { config } => match dispatch::router::load_config(&config) {
            Ok(cfg) => serve(cfg),
            Err(e) => fail(e),
        },
        Command::Demo { config } => {
            match dispatch::demo::Demo::prepare(&config, dispatch::clock::unix_now()) {
                // `demo` lives until the gateway has drained: its sample services keep
                // answering, and its key files stay for a reload, until then.
                Ok(demo) => serve_with(demo.config().clone(), |running| match running.admin {
                    Some(admin) => println!("{}", demo.tour(running.listen[0], admin)),
                    None => dispatch::warn!("demo: the gateway runs without its admin API"),
                }),
                Err(e) => fail(e),
            }
        }
    }
}

fn fail(e: impl std::fmt::Display) -> ExitCode {
    eprintln!("{e}");
    ExitCode::FAILURE
}

fn serve(cfg: dispatch::config::model::Config) -> ExitCode {
    serve_with(cfg, |_| {})
}

fn serve_with(
    cfg: dispatch::config::model::Config,
    started: impl FnOnce(&dispatch::runtime::Running),
) -> ExitCode {
    match dispatch::start(cfg) {
        Ok(running) => {
            started(&running);
            running.wait();
            dispatch::info!("drained; exiting");
            ExitCode::SUCCESS
        }
        Err(e) => fail(e),
    }
}
