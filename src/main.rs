//! The `millwatch` binary: parse the command line, set up logs, run the command, exit.

use std::process::ExitCode;

use clap::Parser;
use clap::error::ErrorKind;
use millwatch::cli::{Cli, Command, LogFormat};
use millwatch::ingest::{self, Ending};
use tracing_subscriber::EnvFilter;

/// mimalloc rather than the system allocator: request bodies, records and log entries are
/// allocated on the async workers and often freed on other threads (the store's writer, the
/// broadcast's receivers), which glibc's arenas handle poorly (a tenth of the writer's time
/// once went to `free` under load). Built without transparent huge pages (`no_thp`): when the
/// duplicate memories of a few hundred machines doubled at once, faulting in and compacting
/// huge pages stalled requests for a quarter of a second (ingest p99 250-260 ms in the second
/// 10 s of load, 13-19 ms without), at no cost in throughput or CPU measured.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Gives memory freed by the async workers back to the system every second. mimalloc purges
/// freed memory only when the thread that owns it next allocates, so after a burst of large
/// request bodies (fifty stalled 15 MiB bodies, say) idle workers would keep hundreds of
/// megabytes resident; a forced collection purges the arenas for every thread.
fn return_freed_memory() {
    let spawned = std::thread::Builder::new()
        .name("mi-collect".into())
        .spawn(|| {
            loop {
                std::thread::sleep(std::time::Duration::from_secs(1));
                // SAFETY: mi_collect takes no pointers and may be called from any thread.
                unsafe { libmimalloc_sys::mi_collect(true) };
            }
        });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "cannot start the memory collector");
    }
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return usage_error(e),
    };
    if let Err(e) = init_logging(&cli.log, cli.log_format) {
        eprintln!("error: --log {:?}: {e}", cli.log);
        return ExitCode::from(2);
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match cli.command {
        Command::Ingest(args) => match runtime.block_on(ingest::run(args, std::io::stdout())) {
            Ok(Ending::Clean) => ExitCode::SUCCESS,
            Ok(Ending::Rejected) => ExitCode::FAILURE,
            Err(e @ ingest::IngestError::Source(millwatch::sources::SourceError::Open(_))) => {
                eprintln!("error: {e}");
                ExitCode::from(2)
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Serve(args) => {
            return_freed_memory();
            match runtime.block_on(millwatch::serve::run(*args)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e @ millwatch::serve::ServeError::Usage(_)) => {
                    eprintln!("error: {e}");
                    ExitCode::from(2)
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Alerts(millwatch::cli::AlertsCommand::Check(args)) => {
            match millwatch::alerts_check::run(&args, std::io::stdout().lock()) {
                Ok(0) => ExitCode::SUCCESS,
                Ok(_) => ExitCode::FAILURE,
                Err(e @ millwatch::alerts_check::CheckError::Open(_)) => {
                    eprintln!("error: {e}");
                    ExitCode::from(2)
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Token(args) => match millwatch::token::run(&args, std::io::stdout().lock()) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Export(args) => match runtime.block_on(millwatch::export::run(&args)) {
            Ok(_) => ExitCode::SUCCESS,
            Err(e @ millwatch::export::ExportError::Usage(_)) => {
                eprintln!("error: {e}");
                ExitCode::from(2)
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Analyze(args) if args.states => match millwatch::analyze::states(&args) {
            Ok((answer, rejected)) => {
                println!("{answer}");
                if rejected > 0 {
                    ExitCode::FAILURE
                } else {
                    ExitCode::SUCCESS
                }
            }
            Err(e @ millwatch::analyze::AnalyzeError::Usage(_)) => {
                eprintln!("error: {e}");
                ExitCode::from(2)
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Analyze(args) => match millwatch::analyze::run(&args) {
            Ok((analysis, rejected)) => match serde_json::to_string_pretty(&analysis) {
                Ok(json) => {
                    println!("{json}");
                    if rejected > 0 {
                        ExitCode::FAILURE
                    } else {
                        ExitCode::SUCCESS
                    }
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::FAILURE
                }
            },
            Err(e @ millwatch::analyze::AnalyzeError::Usage(_)) => {
                eprintln!("error: {e}");
                ExitCode::from(2)
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::FAILURE
            }
        },
    }
}

/// `--help` and `--version` print in full; any other mistake is one line and exit code 2.
fn usage_error(e: clap::Error) -> ExitCode {
    match e.kind() {
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => {
            let _ = e.print();
            ExitCode::SUCCESS
        }
        ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            let _ = e.print();
            ExitCode::from(2)
        }
        _ => {
            let text = e.render().to_string();
            let first = text.lines().next().unwrap_or("error: invalid arguments");
            eprintln!("{first} (see --help)");
            ExitCode::from(2)
        }
    }
}

fn init_logging(filter: &str, format: LogFormat) -> Result<(), String> {
    let filter = EnvFilter::try_new(filter).map_err(|e| e.to_string())?;
    use std::io::IsTerminal;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    }
    .map_err(|e| e.to_string())
}
