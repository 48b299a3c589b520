//! The `switchyard` binary: settings, telemetry, then serve until SIGTERM/SIGINT.

use std::process::ExitCode;

use switchyard::{
    settings::{Settings, SettingsError},
    shutdown,
    startup::Application,
    telemetry,
};

/// Exit code for invalid settings (EX_USAGE).
const EXIT_USAGE: u8 = 64;

fn main() -> ExitCode {
    let settings = match Settings::from_args(std::env::args_os()) {
        Ok(settings) => settings,
        Err(SettingsError::Info(text)) => {
            print!("{text}");
            return ExitCode::SUCCESS;
        }
        Err(SettingsError::Invalid(line)) => {
            eprintln!("switchyard: {line}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    if let Err(error) = telemetry::init(settings.log_format, &settings.log_filter, std::io::stdout)
    {
        eprintln!("switchyard: {error}");
        return ExitCode::from(EXIT_USAGE);
    }
    match serve(&settings) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(error = format!("{error:#}"), "Switchyard failed.");
            ExitCode::FAILURE
        }
    }
}

fn serve(settings: &Settings) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let app = Application::build(settings)?;
        app.run_until_stopped(shutdown::signal()).await?;
        Ok(())
    })
}
