//! The `switchyard` binary: settings, telemetry, then serve until SIGTERM/SIGINT (or run one of
//! the config tools).

use std::process::ExitCode;

use switchyard::{
    settings::{Cli, Command, Settings, SettingsError, SpoolCommand},
    shutdown,
    startup::Application,
    telemetry::{self, trace},
    tools::{self, check::Source},
};

/// mimalloc instead of the system allocator: requests, records and deliveries are allocated on
/// one thread and freed on another, which glibc's malloc pays for (the spooled path measured
/// 18.2k -> 23.9k req/s with it; see BENCHMARKS.md). The benchmark uses the same one.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Exit code for invalid settings (EX_USAGE).
const EXIT_USAGE: u8 = 64;

fn main() -> ExitCode {
    let cli = match Cli::from_args(std::env::args_os()) {
        Ok(cli) => cli,
        Err(SettingsError::Info(text)) => {
            print!("{text}");
            return ExitCode::SUCCESS;
        }
        Err(SettingsError::Invalid(line)) => {
            eprintln!("switchyard: {line}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let settings = cli.settings;
    if let Some(command) = cli.command {
        return run_tool(&settings, command);
    }
    if let Err(error) = telemetry::init(settings.log_format, &settings.log_filter, std::io::stdout)
    {
        eprintln!("switchyard: {error}");
        return ExitCode::from(EXIT_USAGE);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("switchyard: cannot start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let tracing = match start_tracing(&runtime) {
        Ok(tracing) => tracing,
        Err(error) => {
            eprintln!("switchyard: {error}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let outcome = serve(&runtime, &settings);
    if let Some(tracing) = tracing {
        tracing.shutdown(TRACES_AT_STOP);
    }
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            let error: &(dyn std::error::Error + 'static) = error.as_ref();
            tracing::error!(error = telemetry::error_chain(error), "Switchyard failed.");
            ExitCode::FAILURE
        }
    }
}

/// How long the spans still queued at a stop get to leave.
const TRACES_AT_STOP: std::time::Duration = std::time::Duration::from_secs(5);

/// The OTLP trace exporter the standard variables ask for, or none (the default).
fn start_tracing(
    runtime: &tokio::runtime::Runtime,
) -> Result<Option<trace::Tracing>, trace::TracingError> {
    let Some(transport) = trace::configured(|name| std::env::var(name).ok())? else {
        return Ok(None);
    };
    // gRPC's connection lives on the runtime; the HTTP client brings its own thread.
    let _entered = (transport == trace::Transport::Grpc).then(|| runtime.enter());
    let tracing = trace::init(transport)?;
    tracing::info!(protocol = ?transport, "Traces are exported over OTLP.");
    Ok(Some(tracing))
}

fn serve(runtime: &tokio::runtime::Runtime, settings: &Settings) -> anyhow::Result<()> {
    runtime.block_on(async {
        let app = Application::build(settings)?;
        app.run_until_stopped(shutdown::signal()).await?;
        Ok(())
    })
}

/// Asks on stderr; `true` when the answer read from stdin is `yes`.
fn confirm(question: &str) -> bool {
    use std::io::Write as _;
    eprint!("{question}");
    let _ = std::io::stderr().flush();
    let mut answer = String::new();
    std::io::stdin().read_line(&mut answer).is_ok() && answer.trim() == "yes"
}

/// Runs a config tool; exit 1 when it found problems, 2 when it could not run.
fn run_tool(settings: &Settings, command: Command) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("switchyard: {error}");
            return ExitCode::from(2);
        }
    };
    let outcome: Result<bool, String> = runtime.block_on(async {
        match command {
            Command::Check {
                webhooks,
                connections,
                etcd,
                explain,
                body,
                headers,
                query,
            } => {
                let explain = explain
                    .map(|webhook| tools::check::Explain::read(webhook, body, &headers, query))
                    .transpose()?;
                let source = if etcd {
                    Source::Etcd
                } else {
                    Source::Files {
                        webhooks: webhooks.unwrap_or_else(|| settings.webhooks_config_file.clone()),
                        connections: connections
                            .unwrap_or_else(|| settings.connections_config_file.clone()),
                    }
                };
                let report = tools::check::run(settings, source, explain).await?;
                print!("{}", report.render());
                Ok(report.problems.is_empty())
            }
            Command::Migrate {
                webhooks,
                connections,
                namespace,
                dry_run,
                force,
            } => {
                let plan = tools::migrate::run(
                    settings,
                    &webhooks,
                    &connections,
                    &namespace,
                    dry_run,
                    force,
                )
                .await?;
                print!("{}", plan.render(force));
                if !plan.report.problems.is_empty() {
                    eprintln!("switchyard: nothing written: fix the invalid entries first");
                    return Ok(false);
                }
                let conflicts = plan.conflicts(force);
                if conflicts > 0 {
                    eprintln!(
                        "switchyard: nothing written: {conflicts} key(s) hold a different value \
                         (listed as conflict); use --force to overwrite them"
                    );
                    return Ok(false);
                }
                Ok(true)
            }
            Command::Export {
                namespace,
                connections,
            } => {
                let export =
                    tools::export::run(settings, &namespace, connections.as_deref()).await?;
                println!("{}", export.webhooks);
                for problem in &export.report.problems {
                    eprintln!("flagged  {problem}");
                }
                if export.connections_left > 0 {
                    eprintln!(
                        "note: {} global connection(s) not exported; pass --connections FILE",
                        export.connections_left
                    );
                }
                Ok(export.report.problems.is_empty())
            }
            Command::Seal {
                key_id,
                entry,
                field,
            } => {
                let sealed = tools::seal::run(
                    settings,
                    key_id.as_deref(),
                    &entry,
                    &field,
                    std::io::stdin().lock(),
                )?;
                println!("{sealed}");
                Ok(true)
            }
            Command::Spool { action, url } => {
                let action = match action {
                    SpoolCommand::Recover { dir } => {
                        // Offline: on the directory, never through a running instance.
                        println!("{}", tools::spool::recover(settings, dir.as_deref())?);
                        return Ok(true);
                    }
                    SpoolCommand::Status => tools::spool::Action::Status,
                    SpoolCommand::DeadLetters { limit } => {
                        tools::spool::Action::DeadLetters { limit }
                    }
                    SpoolCommand::Replay {
                        channel: Some(channel),
                        ..
                    } => tools::spool::Action::ReplayChannel(channel),
                    SpoolCommand::Replay { ids, all, .. } => {
                        tools::spool::Action::Replay((!all).then_some(ids))
                    }
                    SpoolCommand::Purge { ids, all, yes } => {
                        let what = if all {
                            "every dead letter".to_owned()
                        } else {
                            format!("dead letter(s) {ids:?}")
                        };
                        if !yes && !confirm(&format!("Purge {what} for good? Type `yes`: ")) {
                            eprintln!("switchyard: nothing purged");
                            return Ok(false);
                        }
                        tools::spool::Action::Purge((!all).then_some(ids))
                    }
                };
                let output = tools::spool::run(settings, action, url.as_deref()).await?;
                println!("{output}");
                Ok(true)
            }
        }
    });
    match outcome {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(error) => {
            eprintln!("switchyard: {error}");
            ExitCode::from(2)
        }
    }
}
