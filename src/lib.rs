//! kurz: a URL shortener that answers redirects from memory and creates links through a REST API.
//!
//! # Layout
//! - [`config`]: typed settings (defaults < TOML file < `KURZ__SECTION__KEY` env vars), loaded once.
//! - [`startup`]: wiring. Picks backends from settings, binds, runs, shuts down cleanly.
//! - [`http`]: handlers only, and the one place errors become `application/problem+json`.
//! - [`links`]: the link service the handlers call: create (with collision handling), resolve, delete.
//! - [`code`]: short codes: base62, the keyed id -> code permutation, hash fallback, alias rules.
//! - [`cache`]: the in-process L1 cache in front of the store.
//! - [`store`]: the `LinkStore` trait and its backends (embedded redb file).
//! - [`clicks`]: click counting off the redirect path, flushed to the store in batches.
//! - [`telemetry`]: logging, request ids and the Prometheus metrics registry.
//!
//! The redirect path reads top-down: `http::redirect` -> `links` -> `cache` -> `store`.
//! Lower layers never import `http`.

pub mod cache;
pub mod clicks;
pub mod clock;
pub mod code;
pub mod config;
pub mod http;
pub mod links;
pub mod startup;
pub mod store;
pub mod telemetry;
