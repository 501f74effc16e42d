//! The `prefect-pagerduty-bridge` binary: parse flags, install the process-wide
//! crypto provider and logger, run the subcommand, map failure to exit code 2.

use std::process::ExitCode;

// Parsing, translating and delivering allocate many small short-lived
// objects; with glibc's malloc that was a quarter of the CPU under load.
// Built without transparent huge pages, which doubled idle RSS.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

use clap::Parser as _;
use prefect_pagerduty_bridge::cli;
use prefect_pagerduty_bridge::config::{Cli, Command};

fn main() -> ExitCode {
    let args = Cli::parse();
    // reqwest is built without a provider (no aws-lc); it panics if none is installed.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let result = match &args.command {
        Command::Translate(t) => cli::translate(t).and_then(|v| print_json(&v)),
        Command::Spool(s) => match cli::spool(s) {
            // `spool check` exits 1 when it found damage, after printing it.
            Ok(v) if v.get("ok") == Some(&serde_json::Value::Bool(false)) => {
                return match print_json(&v) {
                    Ok(()) => ExitCode::from(1),
                    Err(e) => fail(&e),
                };
            }
            other => other.and_then(|v| print_json(&v)),
        },
        Command::Prefect(p) => match cli::prefect(p) {
            // `prefect check` exits 1 when it found problems, after printing them.
            Ok((text, ok)) => {
                use std::io::Write as _;
                // A closed pipe (`| head`) is not an error.
                let _ = writeln!(std::io::stdout().lock(), "{text}");
                return if ok { ExitCode::SUCCESS } else { ExitCode::from(1) };
            }
            Err(e) => Err(e),
        },
        Command::Healthcheck(h) => {
            // 1, not 2, for any failure: what health checks expect.
            return match cli::healthcheck(h) {
                Ok(said) => {
                    println!("{said}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("prefect-pagerduty-bridge healthcheck: {e:#}");
                    ExitCode::from(1)
                }
            };
        }
        Command::Serve(s) => {
            let log = match prefect_pagerduty_bridge::logging::init(s.log_format, &s.log_filter) {
                Ok(guard) => guard,
                Err(e) => return fail(&e),
            };
            let result = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .map_err(anyhow::Error::from)
                .and_then(|rt| rt.block_on(cli::serve(s)));
            // Flushes the log lines still queued.
            drop(log);
            result
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(&e),
    }
}

fn fail(e: &anyhow::Error) -> ExitCode {
    eprintln!("prefect-pagerduty-bridge: {e:#}");
    ExitCode::from(2)
}

/// Prints to stdout; a closed pipe (`| head`) is not an error.
fn print_json(value: &serde_json::Value) -> anyhow::Result<()> {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    match serde_json::to_writer_pretty(&mut out, value)
        .map_err(std::io::Error::from)
        .and_then(|()| writeln!(out))
    {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => Ok(other?),
    }
}
