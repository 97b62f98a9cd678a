//! Logging, request ids, the metrics registry and traces.

pub(crate) mod logs;
mod metrics;
mod otlp;
pub mod trace;

use std::sync::atomic::{AtomicU64, Ordering};

use tracing_subscriber::EnvFilter;

pub use logs::in_request;
pub use metrics::{Counter, Gauge, Metrics, STORE_CLASSES, STRIPES, stripe};
pub use otlp::OtlpEndpoint;
pub use trace::Tracer;

use crate::config::{LogFormat, LogSettings};

/// Installs the global tracing subscriber: human-readable lines by default, JSON on request,
/// each line written within a request naming its request id (see [`in_request`]).
/// `RUST_LOG`, when set, overrides `log.level`. A second call (as in tests) is a no-op.
///
/// A log line that cannot be written (stderr on a full disk, a closed pipe) is dropped: the
/// subscriber's own report of that failure would go to the same stderr with `eprintln!`,
/// which panics when it fails, and a panic in a worker drops the request it was serving.
pub fn init(settings: &LogSettings) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&settings.level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr)
        .log_internal_errors(false);
    let format = tracing_subscriber::fmt::format();
    let _ = match settings.format {
        LogFormat::Pretty => builder
            .event_format(logs::WithRequestId {
                inner: format.with_ansi(ansi),
                json: false,
            })
            .try_init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .event_format(logs::WithRequestId {
                inner: format.json().flatten_event(true),
                json: true,
            })
            .try_init(),
    };
}

/// Request ids: a random per-process prefix and a counter, cheap enough for every request and
/// unique across instances in practice.
pub struct RequestIds {
    prefix: u32,
    next: AtomicU64,
}

impl Default for RequestIds {
    fn default() -> Self {
        Self {
            prefix: getrandom::u32().unwrap_or(0),
            next: AtomicU64::new(1),
        }
    }
}

impl RequestIds {
    /// `pppppppp-nnnnnnnnnnnnnnnn` in hex, as the bytes of a header value (no `String`).
    pub fn next(&self) -> [u8; 25] {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let mut id = [b'-'; 25];
        for (i, byte) in id[..8].iter_mut().enumerate() {
            *byte = HEX[(self.prefix >> (28 - 4 * i) & 0xf) as usize];
        }
        for (i, byte) in id[9..].iter_mut().enumerate() {
            *byte = HEX[(n >> (60 - 4 * i) & 0xf) as usize];
        }
        id
    }
}

/// Whether a client-supplied request id is safe to log and echo.
pub fn is_valid_request_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b))
}
