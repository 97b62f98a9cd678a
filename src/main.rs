//! The `kurz` command: parse arguments, load settings, run.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use kurz::config::Settings;
use kurz::startup::Application;

#[derive(Parser)]
#[command(name = "kurz", version, about = "A fast URL shortener")]
struct Cli {
    /// TOML settings file; environment variables KURZ__SECTION__KEY override it.
    #[arg(long, global = true, value_name = "PATH")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the HTTP service (the default).
    Serve,
    /// Create or update the configured store's tables (idempotent), then exit.
    Init,
    /// Exit 0 when the kurz at `server.bind` answers `GET /healthz` with 200 (for container
    /// health checks: needs no shell and no curl).
    Healthcheck,
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let settings = match Settings::load(cli.config.as_deref()) {
        Ok(settings) => settings,
        Err(e) => {
            eprintln!("kurz: {e}");
            return ExitCode::from(2);
        }
    };
    kurz::telemetry::init(&settings.log);
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => serve(settings).await,
        Command::Init => init(settings).await,
        Command::Healthcheck => match kurz::healthcheck::check(settings.server.bind) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("kurz healthcheck: {e}");
                ExitCode::FAILURE
            }
        },
    }
}

async fn init(settings: Settings) -> ExitCode {
    let done = async {
        let mut done = kurz::store::init(&settings.store).await?;
        // The keys the fleet shares, made now rather than by the first instance.
        let metrics = std::sync::Arc::new(kurz::telemetry::Metrics::default());
        let store = kurz::store::open(&settings.store, metrics).await?;
        kurz::secrets::ensure(&*store, settings.ids.permutation_key.as_ref()).await?;
        store.close().await;
        done.push("keys kurz makes for itself are in the store".to_owned());
        Ok::<_, kurz::store::StoreError>(done)
    };
    match done.await {
        Ok(done) => {
            for line in done {
                println!("kurz init: {line}");
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("kurz init: {} store: {e}", settings.store.backend.name());
            ExitCode::FAILURE
        }
    }
}

async fn serve(settings: Settings) -> ExitCode {
    let app = match Application::build(settings).await {
        Ok(app) => app,
        Err(e) => {
            eprintln!("kurz: {e}");
            return ExitCode::FAILURE;
        }
    };
    println!("kurz listening on http://{}", app.local_addr());
    println!("short links look like {}/<code>", app.base_url().as_str());
    if let Some(token) = app.generated_admin_token() {
        println!(
            "no admin token configured; this run's admin token is: {}\n(set KURZ__AUTH__ADMIN_TOKEN to choose a lasting one)",
            token.expose()
        );
    }
    match app.run_until_stopped().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kurz: server error: {e}");
            ExitCode::FAILURE
        }
    }
}
