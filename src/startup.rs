//! Wiring: picks backends from settings, builds the shared state, binds the listener, runs the
//! server and shuts down in order (drain, stop accepting, finish requests, flush clicks, close
//! the store).

use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::time::Duration;

use actix_web::dev::{Server, ServerHandle};
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::middleware::from_fn;
use actix_web::{App, HttpServer, web};
use tokio::signal::unix::{SignalKind, signal};
use tokio::task::JoinHandle;

use crate::analytics::aggregate::Aggregator;
use crate::analytics::classify::{Classifier, Countries};
use crate::base_url::BaseUrl;
use crate::cache::{LocalCache, RedisCache, start_invalidation_listener};
use crate::clicks::{ClickFlusher, ClickRecorder, FlushPacing};
use crate::clock::Clock;
use crate::config::{Secret, Settings, SettingsError};
use crate::health::Health;
use crate::http::{
    self, AnalyticsCapture, AppState, Auth, Endpoint, PublicMetrics, TrustedProxies,
};
use crate::keys::KeyRing;
use crate::limits::RateLimits;
use crate::links::{CodeSource, Denylist, LinkService, UrlPolicy};
use crate::secrets;
use crate::store::{self, LinkStore, StoreError};
use crate::telemetry::{Metrics, RequestIds, Tracer};

#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error(transparent)]
    Settings(#[from] SettingsError),
    #[error("cannot open the {backend} store: {source}")]
    Store {
        backend: &'static str,
        source: StoreError,
    },
    #[error("cannot reach the click stream (clicks.kinesis): {0}")]
    Stream(String),
    #[error("cannot listen on {addr} (set server.bind / KURZ__SERVER__BIND): {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// How long a new connection may take to send its first request's line and headers; then it
/// is answered 408 and closed (README, "Slow clients"). Bodies have `server.body_timeout_ms`.
/// Set here rather than left to actix-web's default, so an upgrade cannot move it.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(5);

/// Where the flusher sends clicks (`clicks.sink`).
async fn click_sink(
    settings: &Settings,
    store: &Arc<dyn LinkStore>,
    metrics: &Arc<Metrics>,
) -> Result<Arc<dyn crate::clicks::Sink>, StartupError> {
    match settings.clicks.sink {
        crate::config::ClickSink::Store => {
            Ok(Arc::new(crate::clicks::StoreSink(Arc::clone(store))))
        }
        #[cfg(feature = "dynamodb")]
        crate::config::ClickSink::Kinesis => {
            let client = crate::clicks::stream::client(settings)
                .await
                .map_err(StartupError::Stream)?;
            tracing::info!(stream = %settings.clicks.kinesis.stream, "clicks go to the click stream; kurz aggregate writes them");
            Ok(Arc::new(crate::clicks::stream::StreamSink::new(
                client,
                &settings.clicks.kinesis,
                Arc::clone(metrics),
            )))
        }
        #[cfg(not(feature = "dynamodb"))]
        crate::config::ClickSink::Kinesis => {
            let _ = metrics;
            Err(StartupError::Stream(
                "this kurz was built without the dynamodb feature, which holds the click stream"
                    .into(),
            ))
        }
    }
}

pub struct Application {
    server: Server,
    local_addr: SocketAddr,
    base_url: BaseUrl,
    generated_admin_token: Option<Secret>,
    flusher: ClickFlusher,
    /// Tasks that run as long as the server: the readiness probe, the clock checks, the
    /// invalidation listener, rate-limit pruning, denylist reloads.
    background: Vec<JoinHandle<()>>,
    /// The admin listener (`/metrics`), when `server.admin_bind` is set.
    admin: Option<Server>,
    store: Arc<dyn LinkStore>,
    health: Arc<Health>,
    tracer: Option<Arc<Tracer>>,
    drain_delay: Duration,
}

/// Reads this region's table stream and evicts each link changed there (by any region) from
/// the region's caches: with Redis one instance of the region reads it and tells the others.
#[cfg(feature = "dynamodb")]
async fn follow_region_stream(
    settings: &Settings,
    region: u8,
    state: web::Data<AppState>,
) -> Result<JoinHandle<()>, StoreError> {
    let metrics = Arc::clone(&state.metrics);
    let on_change: store::dynamodb::stream::OnChange = Arc::new(move |code: String| {
        let state = state.clone();
        Box::pin(async move { state.links.invalidate(&code).await })
    });
    let shared = settings.cache.redis.url.is_some();
    let endpoint = settings.region.stream_endpoint_url.as_deref();
    store::dynamodb::stream::follow(
        &settings.store,
        endpoint,
        region,
        shared,
        metrics,
        on_change,
    )
    .await
}

#[cfg(not(feature = "dynamodb"))]
async fn follow_region_stream(
    _: &Settings,
    _: u8,
    _: web::Data<AppState>,
) -> Result<JoinHandle<()>, StoreError> {
    Err(StoreError::internal(
        "regions need kurz built with the dynamodb feature",
    ))
}

/// The store of a deployment in several regions (`region.name` set): this region's table with
/// the others' replicas, claims decided in their home region; `None` for a single region.
async fn regional(
    settings: &Settings,
    store: Arc<dyn LinkStore>,
    metrics: &Arc<Metrics>,
) -> Result<Option<Arc<store::regions::RegionalStore>>, StoreError> {
    let Some(name) = &settings.region.name else {
        return Ok(None);
    };
    #[cfg(feature = "dynamodb")]
    {
        let regional = store::regions::with_peers(
            &settings.store,
            &settings.region,
            store::ClickLimits::of(&settings.analytics),
            store,
            Arc::clone(metrics),
        )
        .await?;
        let peers: Vec<&str> = settings
            .region
            .peers
            .iter()
            .map(|p| p.name.as_str())
            .collect();
        tracing::info!(region = %name, id = settings.region.id, ?peers, "serving one region of several");
        Ok(Some(regional))
    }
    #[cfg(not(feature = "dynamodb"))]
    {
        let _ = (name, store, metrics);
        Err(StoreError::internal(
            "regions need kurz built with the dynamodb feature",
        ))
    }
}

impl Application {
    /// Builds everything and binds the listener; serving starts with [`run_until_stopped`].
    /// Expiry and creation times follow the system clock.
    ///
    /// [`run_until_stopped`]: Application::run_until_stopped
    pub async fn build(settings: Settings) -> Result<Self, StartupError> {
        Self::build_with_clock(settings, Clock::system()).await
    }

    /// As [`build`](Self::build), deciding expiry and creation times by `clock` (tests set
    /// the time instead of sleeping).
    pub async fn build_with_clock(
        mut settings: Settings,
        clock: Clock,
    ) -> Result<Self, StartupError> {
        // Settings made in code rather than loaded (tests) have not had it filled in.
        settings.store.region_id = settings.region.id;
        let bind_error = |source| StartupError::Bind {
            addr: settings.server.bind,
            source,
        };
        let listener = TcpListener::bind(settings.server.bind).map_err(bind_error)?;
        let local_addr = listener.local_addr().map_err(bind_error)?;
        let base_url = match &settings.server.public_base_url {
            Some(url) => url.clone(),
            None => BaseUrl::for_listener(local_addr),
        };

        let store_error = |source| StartupError::Store {
            backend: settings.store.backend.name(),
            source,
        };
        let metrics = Arc::new(Metrics::with_routes(Endpoint::METRIC_LABELS));
        let store = store::open_with(
            &settings.store,
            store::ClickLimits::of(&settings.analytics),
            Arc::clone(&metrics),
        )
        .await
        .map_err(store_error)?;
        tracing::info!(backend = store.backend(), path = %settings.store.path.display(), "store opened");
        let tracer =
            Tracer::from_settings(&settings.telemetry, Arc::clone(&metrics)).map_err(|reason| {
                SettingsError::Invalid {
                    key: "telemetry.otlp_endpoint",
                    reason,
                }
            })?;
        // Store calls are spans of the traces they are made in only when traces are on.
        let store = match &tracer {
            Some(_) => store::TracedStore::wrap(store),
            None => store,
        };
        if let Some(endpoint) = &settings.telemetry.otlp_endpoint {
            tracing::info!(
                endpoint,
                sample_ratio = settings.telemetry.sample_ratio,
                "traces on: sending spans over OTLP/HTTP"
            );
        }
        let regional = regional(&settings, Arc::clone(&store), &metrics)
            .await
            .map_err(store_error)?;
        let store = match &regional {
            Some(regional) => Arc::clone(regional) as Arc<dyn LinkStore>,
            None => store,
        };
        let secrets = secrets::ensure(&*store, settings.ids.permutation_key.as_ref())
            .await
            .map_err(store_error)?;
        if let Some(regional) = &regional {
            regional.know_codes(crate::code::CodeGenerator::new(&secrets.permutation_key));
        }
        let denylist =
            Denylist::load(settings.abuse.denylist_path.as_deref()).map_err(|reason| {
                SettingsError::Invalid {
                    key: "abuse.denylist_path",
                    reason,
                }
            })?;

        let (admin_token, generated_admin_token) = match &settings.auth.admin_token {
            Some(token) => (token.clone(), None),
            None => {
                let token = generate_token();
                (token.clone(), Some(token))
            }
        };
        let keys = Arc::new(
            KeyRing::load(
                Arc::clone(&store),
                clock.clone(),
                Arc::clone(&metrics),
                settings.auth.keys_refresh,
                &settings.auth.api_keys,
                &secrets.owner_key,
            )
            .await
            .map_err(store_error)?,
        );
        settings.check_open_creation(keys.any_issued())?;
        if !keys.any_issued() {
            tracing::warn!(
                "no API keys (auth.api_keys, or made with POST /api/v1/keys): anyone who can \
                 reach kurz can create links"
            );
        }

        let clicks = Arc::new(
            ClickRecorder::new(Arc::clone(&metrics))
                .with_max_pending_clicks(settings.clicks.max_pending_clicks)
                .with_max_pending_visits(settings.analytics.max_pending_visits),
        );
        let countries = Arc::new(
            Countries::open(settings.analytics.country_database.as_deref()).map_err(|reason| {
                SettingsError::Invalid {
                    key: "analytics.country_database",
                    reason,
                }
            })?,
        );
        let country_header = match settings.analytics.country_header.as_deref() {
            None | Some("") => None,
            Some(name) => Some(
                HeaderName::try_from(name).map_err(|e| SettingsError::Invalid {
                    key: "analytics.country_header",
                    reason: format!("'{name}' is no header name: {e}"),
                })?,
            ),
        };
        let local = Arc::new(LocalCache::new(&settings.cache.local, clock.now_ms()));
        let redis: Option<RedisCache> = match &settings.cache.redis.url {
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
        let redis_for_limits = redis.clone();
        // The clock to compare this instance's with: the store's (DynamoDB's is AWS's, which no
        // host of the fleet can set wrong; one Redis host's clock off would take every instance
        // out of rotation at once), else Redis's (the embedded store has none).
        let clock_reference = store.time_reference().or_else(|| {
            redis
                .as_ref()
                .map(|redis| Arc::new(redis.clone()) as Arc<dyn crate::clock::TimeReference>)
        });
        let links = LinkService::new(
            Arc::clone(&store),
            local,
            redis,
            CodeSource::new(settings.ids.block_size, &secrets.permutation_key)
                .in_region(settings.region.id),
            Arc::clone(&clicks),
            Arc::clone(&metrics),
            clock,
        )
        .with_denylist(Arc::new(denylist));
        let sink = click_sink(&settings, &store, &metrics).await?;
        let flusher = ClickFlusher::start_with_sink(
            clicks,
            Arc::clone(&store),
            sink,
            FlushPacing::from_settings(&settings),
            Aggregator::new(
                Classifier::new(Arc::clone(&countries)),
                settings.analytics.max_values_per_dimension,
            ),
            tracer.clone(),
        );
        let health = Arc::new(
            Health::new(Arc::clone(&metrics))
                .with_free_space_warning(settings.store.free_space_warning_bytes)
                .with_max_clock_skew(settings.server.max_clock_skew),
        );
        // One probe before serving, so the first /readyz already knows; then once a second.
        health.probe(&*store).await;
        let probe = health.start_probing(Arc::clone(&store));
        // Likewise the clock: an instance started with its clock off never enters rotation.
        let clock_checks = match clock_reference {
            Some(reference) => {
                health.measure_clock(links.clock(), &*reference).await;
                Some(health.start_clock_checks(links.clock().clone(), reference))
            }
            None => None,
        };
        let rate = RateLimits::new(
            &settings.limits.rate,
            redis_for_limits,
            links.clock().clone(),
            Arc::clone(&metrics),
        );
        let max_age = settings.cache.browser_max_age;
        let state = web::Data::new(AppState {
            links,
            auth: Auth::new(&admin_token, Arc::clone(&keys)),
            urls: UrlPolicy::new(
                settings.limits.max_url_bytes.get(),
                base_url.clone(),
                &settings.server.own_hosts,
                &settings.abuse.shortener_hosts,
            )
            .with_listener(local_addr, crate::links::interface_addresses()),
            base_url: base_url.clone(),
            limits: settings.limits.clone(),
            rate,
            proxies: TrustedProxies::new(
                settings
                    .server
                    .trusted_proxies
                    .iter()
                    .map(|n| n.0)
                    .collect(),
            )
            .with_ipv6_prefix_len(settings.limits.rate.ipv6_prefix_len),
            body_timeout: settings.server.body_timeout,
            browser_max_age: max_age,
            permanent_cache_control: HeaderValue::from_str(&format!(
                "public, max-age={}",
                max_age.as_secs()
            ))
            .unwrap_or(HeaderValue::from_static("no-store")),
            metrics,
            public_metrics: PublicMetrics::for_listeners(local_addr, settings.server.admin_bind),
            request_ids: RequestIds::default(),
            tracer: tracer.clone(),
            health: Arc::clone(&health),
            analytics: AnalyticsCapture {
                enabled: settings.analytics.enabled,
                country_header,
            },
            reports: http::Reports {
                max_values_per_dimension: settings.analytics.max_values_per_dimension,
                hourly_retention_days: settings.analytics.hourly_retention_days,
            },
        });
        let mut background = vec![
            probe,
            prune_rate_limits(state.clone()),
            reload_on_sighup(state.clone(), countries),
            crate::store::start_purging(
                Arc::clone(&store),
                state.links.clock().clone(),
                &settings.store,
                Arc::clone(&state.metrics),
            ),
        ];
        background.extend(invalidations.into_iter().flatten());
        if let Some(region) = settings.region.id {
            background.push(
                follow_region_stream(&settings, region, state.clone())
                    .await
                    .map_err(store_error)?,
            );
        }
        background.extend(clock_checks);
        background.push(keys.start_refreshing());
        background.extend(tracer.as_ref().map(|t| t.start_exporting()));

        let admin = match settings.server.admin_bind {
            None => None,
            Some(addr) => {
                let state = state.clone();
                let admin_error = |source| StartupError::Bind { addr, source };
                let server = HttpServer::new(move || {
                    App::new()
                        .app_data(state.clone())
                        .configure(http::configure_admin)
                })
                .workers(1)
                .client_request_timeout(HEADER_TIMEOUT)
                .disable_signals()
                .bind(addr)
                .map_err(admin_error)?;
                tracing::info!(addrs = ?server.addrs(), "admin listener (/metrics) ready");
                Some(server.run())
            }
        };
        let server_settings = &settings.server;
        let mut server = HttpServer::new(move || {
            App::new()
                .app_data(state.clone())
                .wrap(from_fn(http::observe))
                .configure(http::configure)
        })
        .shutdown_timeout(server_settings.shutdown_timeout.as_secs())
        .max_connections(server_settings.max_connections.get())
        .max_connection_rate(server_settings.max_connection_rate.get())
        .client_request_timeout(HEADER_TIMEOUT)
        // Signals are kurz's own (see `run_until_stopped`): SIGTERM drains first.
        .disable_signals();
        if let Some(workers) = server_settings.workers {
            server = server.workers(workers.get());
        }
        let server = server.listen(listener).map_err(bind_error)?.run();
        tracing::info!(addr = %local_addr, base_url = base_url.as_str(), "kurz listening");
        Ok(Self {
            server,
            local_addr,
            base_url,
            generated_admin_token,
            flusher,
            background,
            admin,
            store,
            health,
            tracer,
            drain_delay: settings.server.drain_delay,
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

    /// Stops the server gracefully, without the drain delay; `run_until_stopped` then returns.
    pub fn handle(&self) -> ServerHandle {
        self.server.handle()
    }

    /// Serves until stopped, then flushes pending clicks and closes the store.
    ///
    /// On SIGTERM or SIGINT: `/readyz` turns 503 at once while requests are served as usual
    /// for `server.drain_delay_ms` (the load balancer notices and stops sending), then the
    /// listener closes and in-flight requests get up to `server.shutdown_timeout_s`.
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        let admin = self.admin.map(|admin| {
            let handle = admin.handle();
            (handle, tokio::spawn(admin))
        });
        let handle = self.server.handle();
        let mut server = self.server;
        let result = tokio::select! {
            result = &mut server => result,
            signal = shutdown_signal() => {
                self.health.start_draining();
                tracing::info!(
                    signal,
                    drain_delay_ms = self.drain_delay.as_millis(),
                    "draining: /readyz answers 503; still serving until the delay is over"
                );
                tokio::time::sleep(self.drain_delay).await;
                tracing::info!("no longer accepting connections; finishing requests in flight");
                // The stop is carried out by the server future itself: drive both.
                let ((), result) = tokio::join!(handle.stop(true), server);
                result
            }
        };
        if let Some((handle, task)) = admin {
            handle.stop(true).await;
            let _ = task.await;
        }
        tracing::info!("server stopped; flushing clicks");
        self.flusher.shutdown().await;
        for task in &self.background {
            task.abort();
        }
        // An aborted task lets go of what it holds (the store among it) only once it is gone.
        for task in self.background {
            let _ = task.await;
        }
        self.store.close().await;
        // The spans of the last requests and flushes.
        if let Some(tracer) = &self.tracer {
            tracer.flush().await;
        }
        tracing::info!("shutdown complete");
        result
    }
}

/// Forgets rate-limit buckets that have refilled, once a minute.
fn prune_rate_limits(state: web::Data<AppState>) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(Duration::from_secs(60));
        loop {
            ticker.tick().await;
            state.rate.prune();
        }
    })
}

/// Reloads the domain denylist and the country database on every SIGHUP; a failed reload
/// keeps the one in force.
fn reload_on_sighup(state: web::Data<AppState>, countries: Arc<Countries>) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut hangups = match signal(SignalKind::hangup()) {
            Ok(stream) => stream,
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGHUP; the denylist will not reload");
                return;
            }
        };
        while hangups.recv().await.is_some() {
            match state.links.reload_denylist() {
                Ok(domains) => tracing::info!(domains, "SIGHUP: denylist reloaded"),
                Err(e) => {
                    tracing::error!(error = %e, "SIGHUP: denylist not reloaded; the previous list stays")
                }
            }
            match countries.reload() {
                Ok(()) => tracing::info!("SIGHUP: country database reloaded"),
                Err(e) => {
                    tracing::error!(error = %e, "SIGHUP: country database not reloaded; the previous one stays")
                }
            }
        }
    })
}

/// Resolves on the first SIGTERM or SIGINT, naming it.
async fn shutdown_signal() -> &'static str {
    let mut terminate = match signal(SignalKind::terminate()) {
        Ok(stream) => stream,
        Err(e) => {
            tracing::error!(error = %e, "cannot listen for SIGTERM; stopping on SIGINT only");
            let _ = tokio::signal::ctrl_c().await;
            return "SIGINT";
        }
    };
    tokio::select! {
        _ = terminate.recv() => "SIGTERM",
        _ = tokio::signal::ctrl_c() => "SIGINT",
    }
}

/// 32 random bytes, hex: a fresh admin token for this run.
fn generate_token() -> Secret {
    let mut bytes = [0u8; 32];
    // The OS random source failing is not survivable for a server that hands out secrets.
    if let Err(e) = getrandom::fill(&mut bytes) {
        tracing::error!(error = %e, "no OS randomness; cannot generate an admin token");
        std::process::abort();
    }
    Secret::new(hex::encode(bytes))
}
