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
    /// Write every link of the configured store, with its clicks, as NDJSON to standard
    /// output (first line: the store's own keys and id counter, for `kurz import`).
    Export,
    /// Import links into the configured store from FILE: kurz's NDJSON export, or a CSV with
    /// a header row (Long URL, Short Code, Title, Tags separated by `|`). Reports each line;
    /// safe to run again (nothing is imported twice). Exits 1 when a line was skipped.
    Import {
        /// The file to read (`-`: standard input).
        file: PathBuf,
    },
    /// Run the click stream's consumer: read `clicks.kinesis.stream`, fold each link's clicks
    /// over `aggregate.window_ms` and write them to the store once per window (shards shared
    /// with the other consumers by leases in the table). Serves `/metrics` and `/healthz` on
    /// `server.bind`; stops on SIGTERM or SIGINT, giving its leases up.
    Aggregate,
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
        Command::Export => export(settings).await,
        Command::Import { file } => import(settings, &file).await,
        Command::Aggregate => aggregate(settings).await,
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
    let done =
        async {
            let mut done = kurz::store::init(&settings.store).await?;
            // The keys the fleet shares, made now rather than by the first instance.
            let metrics = std::sync::Arc::new(kurz::telemetry::Metrics::default());
            let store = kurz::store::open_with(
                &settings.store,
                kurz::store::ClickLimits::of(&settings.analytics),
                metrics,
            )
            .await?;
            kurz::secrets::ensure(&*store, settings.ids.permutation_key.as_ref()).await?;
            store.close().await;
            done.push("keys kurz makes for itself are in the store".to_owned());
            #[cfg(feature = "dynamodb")]
            if settings.clicks.sink == kurz::config::ClickSink::Kinesis {
                let stream = async {
                    let client = kurz::clicks::stream::client(&settings).await?;
                    kurz::clicks::stream::ensure_stream(&client, &settings.clicks.kinesis).await
                };
                done.push(stream.await.map_err(|e| {
                    kurz::store::StoreError::unavailable(format!("click stream: {e}"))
                })?);
            }
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

/// The store the settings name, for a command that runs once.
async fn open_store(
    settings: &Settings,
) -> Result<std::sync::Arc<dyn kurz::store::LinkStore>, kurz::store::StoreError> {
    let metrics = std::sync::Arc::new(kurz::telemetry::Metrics::default());
    kurz::store::open_with(
        &settings.store,
        kurz::store::ClickLimits::of(&settings.analytics),
        metrics,
    )
    .await
}

async fn export(settings: Settings) -> ExitCode {
    use futures_util::StreamExt;
    use std::io::Write;

    let store = match open_store(&settings).await {
        Ok(store) => store,
        Err(e) => {
            eprintln!("kurz export: {} store: {e}", settings.store.backend.name());
            return ExitCode::FAILURE;
        }
    };
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let header = kurz::links::transfer::export_header(&*store).await;
    let mut failed = match header {
        Ok(line) => out.write_all(line.as_bytes()).err().map(|e| e.to_string()),
        Err(e) => Some(e.to_string()),
    };
    let mut lines = std::pin::pin!(kurz::links::transfer::export_lines(
        std::sync::Arc::clone(&store),
        vec![kurz::store::ListScope::All],
    ));
    while failed.is_none()
        && let Some(page) = lines.next().await
    {
        failed = match page {
            Ok(text) => out.write_all(text.as_bytes()).err().map(|e| e.to_string()),
            Err(e) => Some(e.to_string()),
        };
    }
    let flushed = out.flush();
    store.close().await;
    match failed.or_else(|| flushed.err().map(|e| e.to_string())) {
        None => ExitCode::SUCCESS,
        Some(e) => {
            eprintln!("kurz export: stopped part way: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn import(settings: Settings, file: &std::path::Path) -> ExitCode {
    let input: Box<dyn std::io::BufRead> = if file.as_os_str() == "-" {
        Box::new(std::io::stdin().lock())
    } else {
        match std::fs::File::open(file) {
            Ok(f) => Box::new(std::io::BufReader::new(f)),
            Err(e) => {
                eprintln!("kurz import: {}: {e}", file.display());
                return ExitCode::from(2);
            }
        }
    };
    let store = match open_store(&settings).await {
        Ok(store) => store,
        Err(e) => {
            eprintln!("kurz import: {} store: {e}", settings.store.backend.name());
            return ExitCode::FAILURE;
        }
    };
    let base = settings
        .server
        .public_base_url
        .clone()
        .unwrap_or_else(|| kurz::base_url::BaseUrl::for_listener(settings.server.bind));
    let policy = kurz::links::UrlPolicy::new(
        settings.limits.max_url_bytes.get(),
        base,
        &settings.server.own_hosts,
        &settings.abuse.shortener_hosts,
    );
    let mut out = std::io::stdout().lock();
    let now = kurz::clock::system_now_ms();
    let result = kurz::links::transfer::import(&*store, &policy, input, &mut out, now).await;
    store.close().await;
    match result {
        Ok(report) => {
            println!(
                "kurz import: {} imported, {} already there, {} skipped",
                report.imported, report.already_there, report.skipped
            );
            if report.skipped == 0 {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!(
                "kurz import: stopped: {e} (run it again once fixed: nothing is imported twice)"
            );
            ExitCode::FAILURE
        }
    }
}

#[cfg(feature = "dynamodb")]
async fn aggregate(settings: Settings) -> ExitCode {
    use std::sync::Arc;
    let metrics = Arc::new(kurz::telemetry::Metrics::default());
    let store = match kurz::store::open_with(
        &settings.store,
        kurz::store::ClickLimits::of(&settings.analytics),
        Arc::clone(&metrics),
    )
    .await
    {
        Ok(store) => store,
        Err(e) => {
            eprintln!(
                "kurz aggregate: {} store: {e}",
                settings.store.backend.name()
            );
            return ExitCode::FAILURE;
        }
    };
    if settings.store.backend != kurz::config::Backend::Dynamodb {
        eprintln!(
            "kurz aggregate: needs store.backend = 'dynamodb' (its leases and checkpoints are kept there)"
        );
        return ExitCode::from(2);
    }
    let served = Arc::clone(&metrics);
    let server = actix_web::HttpServer::new(move || {
        let metrics = Arc::clone(&served);
        actix_web::App::new()
            .route(
                "/metrics",
                actix_web::web::get().to(move || {
                    let text = metrics.render(0);
                    async move {
                        actix_web::HttpResponse::Ok()
                            .content_type("text/plain; version=0.0.4; charset=utf-8")
                            .body(text)
                    }
                }),
            )
            .route(
                "/healthz",
                actix_web::web::get().to(|| async { actix_web::HttpResponse::Ok().body("ok") }),
            )
    })
    .workers(1)
    .disable_signals()
    .bind(settings.server.bind);
    let server = match server {
        Ok(server) => server,
        Err(e) => {
            eprintln!(
                "kurz aggregate: cannot listen on {}: {e}",
                settings.server.bind
            );
            return ExitCode::FAILURE;
        }
    };
    if let Some(addr) = server.addrs().first() {
        println!("kurz aggregate listening on http://{addr}");
    }
    let server = server.run();
    let handle = server.handle();
    let http = tokio::spawn(server);
    let stop = async {
        use tokio::signal::unix::{SignalKind, signal};
        match (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) {
            (Ok(mut term), Ok(mut int)) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = int.recv() => {}
                }
            }
            _ => std::future::pending().await,
        }
    };
    let result = kurz::aggregate::run(&settings, Arc::clone(&store), metrics, stop).await;
    handle.stop(true).await;
    let _ = http.await;
    store.close().await;
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kurz aggregate: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(not(feature = "dynamodb"))]
async fn aggregate(_settings: Settings) -> ExitCode {
    eprintln!("kurz aggregate: this kurz was built without the dynamodb feature");
    ExitCode::from(2)
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
