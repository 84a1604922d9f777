//! The `crawler` binary: parses the command line and runs a master or a worker.

use std::process::ExitCode;

use std::os::fd::AsFd;

use clap::Parser;
use crawler::cli::{Cli, Command, advertise_url};
use crawler::config::{LogConfig, LogFormat};
use crawler::{logging, server, shutdown, worker};
use tokio::net::TcpListener;

// jemalloc rather than glibc's malloc: a worker holding 33,334 tasks kept ~25 MB more than it
// used in glibc's arenas, in free chunks between live ones that malloc_trim cannot return.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's options, read before `main`: a background thread returns pages unused for a
/// second, so a process at rest gives back what a burst (a worker starting its tasks, a
/// master listing) left free, without an allocation to trigger it. `_RJEM_MALLOC_CONF`
/// overrides them.
#[unsafe(export_name = "_rjem_malloc_conf")]
pub static MALLOC_CONF: Option<&'static std::ffi::c_char> =
    // SAFETY: a pointer to the first byte of a static, NUL-terminated string.
    Some(unsafe { &*c"background_thread:true,dirty_decay_ms:1000".as_ptr() });

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The guard stays single-threaded: it starts no runtime.
    if let Command::Guard(args) = &cli.command {
        return run_guard(args);
    }
    match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime.block_on(run(cli)),
        Err(error) => {
            eprintln!("crawler: cannot start the runtime: {error}");
            ExitCode::FAILURE
        }
    }
}

fn run_guard(args: &crawler::cli::GuardArgs) -> ExitCode {
    logging::init(&LogConfig {
        level: args.log_level.clone(),
        format: if args.log_json {
            LogFormat::Json
        } else {
            LogFormat::Text
        },
    });
    let socket = match std::io::stdin().as_fd().try_clone_to_owned() {
        Ok(socket) => socket,
        Err(error) => {
            eprintln!("crawler guard: no socket on stdin: {error}");
            return ExitCode::FAILURE;
        }
    };
    let grace = std::time::Duration::from_millis(args.stop_grace_ms);
    match worker::guard::process::run(socket, grace) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("crawler guard: {error}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> ExitCode {
    let result = match cli.command {
        Command::Openapi { agent } => {
            if agent {
                println!("{}", crawler::worker::agent::spec_json());
            } else {
                println!("{}", crawler::api::openapi::spec_json());
            }
            Ok(())
        }
        Command::Master(args) => run_master(args).await,
        Command::Ctl(args) => {
            if let crawler::ctl::CtlCommand::Completion { shell } = args.command {
                let mut command = <Cli as clap::CommandFactory>::command();
                clap_complete::generate(shell, &mut command, "crawler", &mut std::io::stdout());
                return ExitCode::SUCCESS;
            }
            return ExitCode::from(crawler::ctl::run(args).await);
        }
        Command::Dev(args) => crawler::tools::dev::run(
            crawler::tools::dev::DevOptions {
                config: args.config,
                http_port: args.http_port,
                worker_port: args.worker_port,
                verbose: args.verbose,
                etcd: args.etcd,
                tls: args.tls,
            },
            shutdown::wait_for_signal(),
        )
        .await
        .map_err(Into::into),
        Command::Bench(args) => {
            let out = args.out.unwrap_or_else(|| {
                if args.quick {
                    "target/BENCHMARKS-quick.md".into()
                } else {
                    "BENCHMARKS.md".into()
                }
            });
            crawler::tools::bench::run(crawler::tools::bench::BenchOptions {
                quick: args.quick,
                out,
                only: args.only,
                scale: args.scale,
                soak_secs: args.soak_secs,
            })
            .await
            .map_err(Into::into)
        }
        Command::BenchBare(args) => match std::fs::read(&args.body) {
            Ok(body) => crawler::tools::procs::serve_bare(&args.addr, body)
                .await
                .map_err(Into::into),
            Err(e) => Err(format!("cannot read {}: {e}", args.body.display()).into()),
        },
        Command::Worker(args) => run_worker(args).await,
        Command::Guard(_) => Err("the guard runs without a runtime".into()),
        Command::DemoSite(args) => match TcpListener::bind(&args.addr).await {
            Ok(listener) => {
                let options = crawler::tools::site::SiteOptions {
                    delay: std::time::Duration::from_millis(args.delay_ms),
                    access_log: args.access_log,
                };
                crawler::tools::site::serve(listener, options)
                    .await
                    .map_err(|e| format!("demo site: {e}").into())
            }
            Err(e) => Err(format!("cannot listen on {}: {e}", args.addr).into()),
        },
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("crawler: {error}");
            ExitCode::FAILURE
        }
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

async fn run_master(args: crawler::cli::MasterArgs) -> Result<(), BoxError> {
    let config = args.common.load()?;
    logging::init(&config.log);
    let listener = TcpListener::bind(&args.http)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", args.http))?;
    let options = server::MasterOptions {
        id: args.id,
        advertise: args
            .advertise
            .unwrap_or_else(|| advertise_url(&args.http, config.http.tls.is_some())),
    };
    server::run(listener, config, options, shutdown::signal()).await?;
    Ok(())
}

async fn run_worker(args: crawler::cli::WorkerArgs) -> Result<(), BoxError> {
    let config = args.common.load()?;
    logging::init(&config.log);
    let listener = TcpListener::bind(&args.addr)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", args.addr))?;
    let options = worker::WorkerOptions {
        id: args.id,
        address: args.addr.clone(),
        capacity: args.capacity.unwrap_or(config.worker.capacity),
        labels: config
            .worker
            .labels
            .clone()
            .into_iter()
            .chain(args.labels)
            .collect(),
        program: std::env::current_exe()
            .map_err(|e| format!("cannot find this program to start the guard: {e}"))?,
    };
    worker::run(listener, config, options, shutdown::signal()).await?;
    Ok(())
}
