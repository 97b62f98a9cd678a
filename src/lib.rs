//! kurz: a URL shortener that answers redirects from memory and creates links through a REST API.
//!
//! # Layout
//! - [`startup`]: wiring. Picks backends from settings, binds, runs, shuts down cleanly.
//! - [`http`]: the route table, handlers, and the one place errors become
//!   `application/problem+json` (or an HTML page for a browser); the pages for people and
//!   their compiled-in static files.
//! - [`links`]: the link service the handlers call: create (with collision handling and the
//!   leased id counter), resolve through the caches, delete, stats, clicks.
//! - [`limits`]: rate limits (GCRA per client IP and per API key; fleet-wide through Redis).
//! - [`cache`]: the in-process L1 cache and the optional Redis L2 in front of the store.
//! - [`clicks`]: click counting off the redirect path, flushed to the store in batches (or
//!   sent to the click stream as events).
//! - [`aggregate`]: `kurz aggregate`, the click stream's consumer: leases, windows, one
//!   write per link per window.
//! - [`keys`]: API keys as data: kept in the store, cached here, refreshed on a stated bound.
//! - [`secrets`]: keys kurz makes for itself (permutation, owner fingerprints), kept in the
//!   store for the whole fleet.
//! - [`store`]: the `LinkStore` trait and its backends (embedded redb file, DynamoDB).
//! - [`code`]: short codes: base62, the keyed id -> code permutation, hash fallback, alias
//!   rules. Pure functions; imports no other part of kurz.
//! - [`config`]: typed settings (defaults < TOML file < `KURZ__SECTION__KEY` env vars), loaded
//!   and checked once.
//! - [`health`]: what `/readyz` reports: draining, and the shared dependencies' health from a
//!   background probe.
//! - [`telemetry`]: logging, request ids and the Prometheus metrics.
//! - [`healthcheck`]: the `kurz healthcheck` client for container health checks.
//! - [`qr`]: QR codes of short URLs as SVG or PNG. Pure; imports no other part of kurz.
//! - [`clock`], [`base_url`]: leaves: the wall clock decisions are made by, kurz's own URL.
//!
//! The redirect path reads top-down: `http::redirect` -> `links` -> `cache` -> `store`.
//! Lower layers never import `http`.

#[cfg(feature = "dynamodb")]
pub mod aggregate;
pub mod analytics;
#[cfg(feature = "dynamodb")]
pub mod aws;
pub mod base_url;
pub mod cache;
pub mod clicks;
pub mod clock;
pub mod code;
pub mod config;
pub mod health;
pub mod healthcheck;
pub mod http;
pub mod keys;
pub mod limits;
pub mod links;
pub mod qr;
pub mod secrets;
pub mod startup;
pub mod store;
pub mod telemetry;
