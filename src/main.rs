//! The `pgshift` binary: parse the command line, load config, run.

mod demo;
mod demo_ddl;

use clap::Parser;
use pgshift::cli::{CheckArgs, Cli, Command, ServeArgs};
use pgshift::server::Server;
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(args) => serve(args),
        Command::Demo(args) => demo::run(args),
        Command::Check(args) => check(args),
        Command::Status(args) => status(args),
        Command::ScramVerifier => scram_verifier(),
    }
}

/// Prints the SCRAM-SHA-256 verifier of the password on stdin's first line.
fn scram_verifier() -> ExitCode {
    let mut line = String::new();
    if let Err(e) = std::io::stdin().read_line(&mut line) {
        eprintln!("pgshift scram-verifier: cannot read stdin: {e}");
        return ExitCode::FAILURE;
    }
    let password = line.trim_end_matches(['\n', '\r']);
    if password.is_empty() {
        eprintln!("pgshift scram-verifier: give the password on stdin's first line");
        return ExitCode::FAILURE;
    }
    let salt: [u8; 16] = rand::random();
    let verifier = pgshift::admin::scram::Verifier::from_password(
        password,
        &salt,
        pgshift::admin::scram::ITERATIONS,
    );
    println!("{}", verifier.to_text());
    ExitCode::SUCCESS
}

fn status(args: pgshift::cli::StatusArgs) -> ExitCode {
    let runtime = match build_runtime() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("pgshift: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    ExitCode::from(runtime.block_on(pgshift::status::run(args)))
}

fn check(args: CheckArgs) -> ExitCode {
    use pgshift::sql::check::{run, Format};
    let format = if args.format == "json" {
        Format::Json
    } else {
        Format::Text
    };
    ExitCode::from(run(&args.files, format))
}

fn serve(args: ServeArgs) -> ExitCode {
    let config = match args.load_config() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("pgshift: config error: {e}");
            return ExitCode::from(2);
        }
    };
    pgshift::logging::init(&config.log);
    let runtime = match build_runtime() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("pgshift: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let code = runtime.block_on(async move {
        let server = match Server::bind(config).await {
            Ok(s) => s,
            Err(e) => {
                eprintln!("pgshift: {e}");
                return ExitCode::FAILURE;
            }
        };
        let reload_args = args.clone();
        server.handle().set_reloader(std::sync::Arc::new(move || {
            reload_args.load_config().map_err(|e| e.to_string())
        }));
        tokio::spawn(handle_signals(server.handle(), args));
        server.run().await;
        ExitCode::SUCCESS
    });
    // Every session has ended; a background connect stuck in a name lookup must
    // not keep the process alive.
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    code
}

/// The accepting thread's runtime: it also runs signals and the DDL engine's
/// journal writer and deferred-step runner. Sessions get threads of their own
/// (`server.workers`, see `pgshift::workers`).
pub fn build_runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
}

/// SIGHUP reloads; SIGTERM or SIGINT starts a graceful shutdown.
async fn handle_signals(handle: pgshift::server::Handle, args: ServeArgs) {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut hup), Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::hangup()),
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot install signal handlers");
        return;
    };
    loop {
        tokio::select! {
            _ = hup.recv() => match args.load_config() {
                Ok(config) => {
                    if let Err(e) = handle.reload(config) {
                        tracing::error!(error = %e, "reload failed; keeping the old configuration");
                    }
                }
                Err(e) => tracing::error!(error = %e, "reload failed; keeping the old configuration"),
            },
            _ = term.recv() => break,
            _ = int.recv() => break,
        }
    }
    tracing::info!("shutdown requested");
    handle.shutdown();
}
