//! Wiring: picks backends from settings, builds the shared state, binds the listener, runs the
//! server and shuts down in order (stop accepting, finish requests, flush clicks, close store).

use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::time::Duration;

use actix_web::dev::{Server, ServerHandle};
use actix_web::middleware::from_fn;
use actix_web::{App, HttpServer, web};
use tokio::task::JoinHandle;

use crate::cache::{LocalCache, RedisCache, start_invalidation_listener};
use crate::clicks::{ClickFlusher, ClickRecorder};
use crate::code::{CodeGenerator, IdAllocator};
use crate::config::{DEFAULT_PERMUTATION_KEY, Secret, Settings, SettingsError};
use crate::http::{self, AppState, Auth};
use crate::links::{BaseUrl, LinkService};
use crate::store::{self, LinkStore, StoreError};
use crate::telemetry::{Metrics, RequestIds};

#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error(transparent)]
    Settings(#[from] SettingsError),
    #[error("cannot open the {backend} store: {source}")]
    Store {
        backend: &'static str,
        source: StoreError,
    },
    #[error("cannot listen on {addr} (set server.bind / KURZ__SERVER__BIND): {source}")]
    Bind {
        addr: String,
        source: std::io::Error,
    },
}

pub struct Application {
    server: Server,
    local_addr: SocketAddr,
    base_url: BaseUrl,
    generated_admin_token: Option<Secret>,
    flusher: ClickFlusher,
    invalidations: Option<JoinHandle<()>>,
    store: Arc<dyn LinkStore>,
}

impl Application {
    /// Builds everything and binds the listener; serving starts with [`run_until_stopped`].
    ///
    /// [`run_until_stopped`]: Application::run_until_stopped
    pub async fn build(settings: Settings) -> Result<Self, StartupError> {
        settings.validate()?;
        let bind_error = |source| StartupError::Bind {
            addr: settings.server.bind.clone(),
            source,
        };
        let listener = TcpListener::bind(&settings.server.bind).map_err(bind_error)?;
        let local_addr = listener.local_addr().map_err(bind_error)?;
        let base_url = match &settings.server.public_base_url {
            Some(url) => BaseUrl::parse(url),
            None => BaseUrl::parse(&default_base_url(local_addr)),
        }
        .ok_or_else(|| SettingsError::Invalid {
            key: "server.public_base_url",
            reason: "not an absolute http(s) URL".into(),
        })?;

        let store = store::open(&settings)
            .await
            .map_err(|source| StartupError::Store {
                backend: settings.store.backend.name(),
                source,
            })?;
        tracing::info!(backend = store.backend(), path = %settings.store.path.display(), "store opened");

        let generated_admin_token = match settings.auth.admin_token {
            Some(_) => None,
            None => Some(generate_token()),
        };
        let admin_token = settings
            .auth
            .admin_token
            .as_ref()
            .or(generated_admin_token.as_ref())
            .cloned()
            .unwrap_or_else(generate_token);
        if settings.ids.permutation_key.expose() == DEFAULT_PERMUTATION_KEY {
            tracing::warn!(
                "ids.permutation_key is the built-in default: anyone can predict the codes kurz \
                 will hand out; set KURZ__IDS__PERMUTATION_KEY on a public deployment"
            );
        }
        if settings.auth.api_keys.is_empty() {
            tracing::warn!(
                "no API keys configured (auth.api_keys): anyone who can reach kurz can create links"
            );
        }

        let metrics = Arc::new(Metrics::default());
        let clicks = Arc::new(ClickRecorder::new(Arc::clone(&metrics)));
        let local = Arc::new(LocalCache::new(&settings.cache.local));
        let redis = match &settings.cache.redis.url {
            None => None,
            Some(url) => {
                let redis =
                    RedisCache::new(&settings.cache.redis, url.expose(), Arc::clone(&metrics))
                        .map_err(|reason| SettingsError::Invalid {
                            key: "cache.redis.url",
                            reason,
                        })?;
                redis.check_eviction_policy().await;
                Some(redis)
            }
        };
        let invalidations = redis
            .clone()
            .map(|redis| start_invalidation_listener(redis, Arc::clone(&local)));
        let links = LinkService::new(
            Arc::clone(&store),
            local,
            redis,
            IdAllocator::new(settings.ids.block_size),
            CodeGenerator::new(settings.ids.permutation_key.expose().as_bytes()),
            Arc::clone(&clicks),
            Arc::clone(&metrics),
        );
        let flusher = ClickFlusher::start(
            clicks,
            Arc::clone(&store),
            Duration::from_millis(settings.clicks.flush_interval_ms),
            settings.clicks.max_pending_codes,
        );
        let state = web::Data::new(AppState {
            links,
            auth: Auth::new(&admin_token, &settings.auth.api_keys),
            base_url: base_url.clone(),
            limits: settings.limits.clone(),
            metrics,
            request_ids: RequestIds::default(),
        });

        let mut server = HttpServer::new(move || {
            App::new()
                .app_data(state.clone())
                .wrap(from_fn(http::observe))
                .configure(http::configure)
        })
        .shutdown_timeout(settings.server.shutdown_timeout_s);
        if let Some(workers) = settings.server.workers {
            server = server.workers(workers);
        }
        let server = server.listen(listener).map_err(bind_error)?.run();
        tracing::info!(addr = %local_addr, base_url = base_url.as_str(), "kurz listening");
        Ok(Self {
            server,
            local_addr,
            base_url,
            generated_admin_token,
            flusher,
            invalidations,
            store,
        })
    }

    pub fn port(&self) -> u16 {
        self.local_addr.port()
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    pub fn base_url(&self) -> &BaseUrl {
        &self.base_url
    }

    /// The admin token generated because none was configured, to be shown once.
    pub fn generated_admin_token(&self) -> Option<&Secret> {
        self.generated_admin_token.as_ref()
    }

    /// Stops the server gracefully (as SIGTERM does); `run_until_stopped` then returns.
    pub fn handle(&self) -> ServerHandle {
        self.server.handle()
    }

    /// Serves until stopped (SIGINT/SIGTERM or [`handle`](Self::handle)), then flushes
    /// pending clicks and closes the store.
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        let result = self.server.await;
        tracing::info!("server stopped; flushing clicks");
        self.flusher.shutdown().await;
        if let Some(listener) = self.invalidations {
            listener.abort();
        }
        self.store.close().await;
        tracing::info!("shutdown complete");
        result
    }
}

fn default_base_url(addr: SocketAddr) -> String {
    let ip = match addr.ip() {
        ip if ip.is_unspecified() && ip.is_ipv4() => "127.0.0.1".to_owned(),
        ip if ip.is_unspecified() => "[::1]".to_owned(),
        std::net::IpAddr::V6(ip) => format!("[{ip}]"),
        std::net::IpAddr::V4(ip) => ip.to_string(),
    };
    format!("http://{ip}:{}", addr.port())
}

/// 32 random bytes, hex: a fresh admin token for this run.
fn generate_token() -> Secret {
    let mut bytes = [0u8; 32];
    // The OS random source failing is not survivable for a server that hands out secrets.
    if let Err(e) = getrandom::fill(&mut bytes) {
        tracing::error!(error = %e, "no OS randomness; cannot generate an admin token");
        std::process::abort();
    }
    Secret::new(bytes.iter().map(|b| format!("{b:02x}")).collect::<String>())
}
