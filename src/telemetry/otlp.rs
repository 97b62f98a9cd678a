//! The span exporter: OTLP over HTTP with the JSON encoding, to `{telemetry.otlp_endpoint}/v1/traces`.
//!
//! Spans wait in a bounded queue and go out in batches, at most one export at a time, from a
//! background task: a request only pushes its spans. The receiver is meant to be a collector
//! beside kurz (the ECS task's sidecar, an agent on the host), reached over plain HTTP; it
//! forwards with TLS where it must. A receiver that fails or is not there costs dropped
//! spans, counted, and one log line until it answers again, never a request.

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Notify;

use super::Metrics;
use super::trace::{Attribute, SpanRecord};
use crate::config::TelemetrySettings;

/// Spans per export request.
const BATCH: usize = 512;
/// Longest one export may take, connecting included.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(5);
/// Most of a receiver's answer read (its status is all kurz needs).
const MAX_ANSWER_BYTES: usize = 64 * 1024;

/// Where spans are posted: an `http://` URL's host, port and path (`…/v1/traces`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OtlpEndpoint {
    /// To connect to (an IPv6 address without brackets).
    host: String,
    port: u16,
    /// For the `Host` header (an IPv6 address in brackets).
    authority: String,
    path: String,
}

impl OtlpEndpoint {
    /// `text` as the OTLP base URL (like `OTEL_EXPORTER_OTLP_ENDPOINT`): `/v1/traces` is
    /// appended to its path.
    pub fn parse(text: &str) -> Result<Self, String> {
        let url = url::Url::parse(text).map_err(|e| {
            format!("'{text}' is no URL ({e}); expected e.g. http://127.0.0.1:4318")
        })?;
        match url.scheme() {
            "http" => {}
            "https" => {
                return Err(format!(
                    "'{text}': kurz sends spans over plain HTTP to a collector beside it (e.g. \
                     http://127.0.0.1:4318), which forwards them with TLS"
                ));
            }
            other => return Err(format!("'{text}': the scheme must be http, not {other}")),
        }
        if !url.username().is_empty() || url.password().is_some() || url.query().is_some() {
            return Err(format!(
                "'{text}': no credentials or query string in the endpoint"
            ));
        }
        let (host, authority) = match url.host() {
            Some(url::Host::Domain(name)) => (name.to_owned(), name.to_owned()),
            Some(url::Host::Ipv4(ip)) => (ip.to_string(), ip.to_string()),
            Some(url::Host::Ipv6(ip)) => (ip.to_string(), format!("[{ip}]")),
            None => return Err(format!("'{text}' names no host")),
        };
        let port = url.port_or_known_default().unwrap_or(80);
        Ok(Self {
            host,
            port,
            authority: format!("{authority}:{port}"),
            path: format!("{}/v1/traces", url.path().trim_end_matches('/')),
        })
    }
}

impl std::fmt::Display for OtlpEndpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "http://{}{}", self.authority, self.path)
    }
}

pub struct Exporter {
    endpoint: OtlpEndpoint,
    interval: Duration,
    max_queued: usize,
    /// The resource every span is of: service name, version, instance.
    resource: Vec<Attribute>,
    queue: Mutex<Vec<SpanRecord>>,
    /// Woken when a batch is full.
    full: Notify,
    /// Exports run one at a time (the loop's, the last one at shutdown).
    exporting: tokio::sync::Mutex<()>,
    /// Whether the last export failed, so a failing receiver is logged once.
    failing: AtomicBool,
    metrics: Arc<Metrics>,
}

impl Exporter {
    pub fn new(
        endpoint: OtlpEndpoint,
        settings: &TelemetrySettings,
        metrics: Arc<Metrics>,
    ) -> Self {
        let instance = format!("{:016x}", getrandom::u64().unwrap_or_default());
        Self {
            endpoint,
            interval: settings.export_interval,
            max_queued: settings.max_queued_spans,
            resource: vec![
                Attribute::str("service.name", settings.service_name.clone()),
                Attribute::str("service.version", env!("CARGO_PKG_VERSION")),
                Attribute::str("service.instance.id", instance),
            ],
            queue: Mutex::new(Vec::new()),
            full: Notify::new(),
            exporting: tokio::sync::Mutex::new(()),
            failing: AtomicBool::new(false),
            metrics,
        }
    }

    /// Queues an ended span; past `telemetry.max_queued_spans` it is dropped and counted.
    pub fn push(&self, span: SpanRecord) {
        let queued = {
            let mut queue = self
                .queue
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if queue.len() >= self.max_queued {
                drop(queue);
                self.metrics.trace_spans_dropped.inc();
                return;
            }
            queue.push(span);
            queue.len()
        };
        if queued == BATCH {
            self.full.notify_one();
        }
    }

    /// Up to `n` of the oldest queued spans, taken off the queue.
    pub fn take(&self, n: usize) -> Vec<SpanRecord> {
        let mut queue = self
            .queue
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let n = n.min(queue.len());
        queue.drain(..n).collect()
    }

    #[cfg(test)]
    pub fn queued(&self) -> usize {
        self.queue.lock().map_or(0, |q| q.len())
    }

    /// Exports every interval, or as soon as a batch is full.
    pub async fn run(self: Arc<Self>) {
        loop {
            tokio::select! {
                () = tokio::time::sleep(self.interval) => {}
                () = self.full.notified() => {}
            }
            self.export_all().await;
        }
    }

    /// Sends everything queued, a batch at a time.
    pub async fn export_all(&self) {
        let _one_at_a_time = self.exporting.lock().await;
        loop {
            let batch = self.take(BATCH);
            if batch.is_empty() {
                return;
            }
            let last = batch.len() < BATCH;
            self.export(&batch).await;
            if last {
                return;
            }
        }
    }

    async fn export(&self, batch: &[SpanRecord]) {
        let body = encode(&self.resource, batch);
        let outcome = match tokio::time::timeout(EXPORT_TIMEOUT, post(&self.endpoint, &body)).await
        {
            Ok(Ok(status)) if (200..300).contains(&status) => Ok(()),
            Ok(Ok(status)) => Err(format!("it answered {status}")),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(format!("no answer within {EXPORT_TIMEOUT:?}")),
        };
        let spans = batch.len() as u64;
        match outcome {
            Ok(()) => {
                self.metrics.trace_spans_exported.add(spans);
                if self.failing.swap(false, Ordering::Relaxed) {
                    tracing::info!(endpoint = %self.endpoint, "the trace receiver takes spans again");
                }
            }
            Err(error) => {
                self.metrics.trace_export_failures.inc();
                self.metrics.trace_spans_dropped.add(spans);
                if !self.failing.swap(true, Ordering::Relaxed) {
                    tracing::warn!(
                        endpoint = %self.endpoint,
                        error,
                        spans,
                        "cannot send spans to the trace receiver; they are dropped until it takes them"
                    );
                }
            }
        }
    }
}

/// One POST of `body`; the answer's status.
async fn post(endpoint: &OtlpEndpoint, body: &[u8]) -> Result<u16, String> {
    let mut stream = TcpStream::connect((endpoint.host.as_str(), endpoint.port))
        .await
        .map_err(|e| format!("cannot connect: {e}"))?;
    let _ = stream.set_nodelay(true);
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: kurz/{version}\r\nContent-Type: application/json\r\nContent-Length: {length}\r\nConnection: close\r\n\r\n",
        path = endpoint.path,
        host = endpoint.authority,
        version = env!("CARGO_PKG_VERSION"),
        length = body.len(),
    );
    let io = |e: std::io::Error| format!("connection failed: {e}");
    stream.write_all(head.as_bytes()).await.map_err(io)?;
    stream.write_all(body).await.map_err(io)?;
    // The status line is all that matters; read until it is whole (or the answer ends).
    let mut answer = Vec::with_capacity(256);
    let mut chunk = [0u8; 1024];
    while !answer.contains(&b'\n') && answer.len() < MAX_ANSWER_BYTES {
        let n = stream.read(&mut chunk).await.map_err(io)?;
        if n == 0 {
            break;
        }
        answer.extend_from_slice(&chunk[..n]);
    }
    status_of(&answer).ok_or_else(|| {
        let line = answer
            .split(|&b| b == b'\r' || b == b'\n')
            .next()
            .unwrap_or_default();
        format!("no HTTP answer: {:?}", String::from_utf8_lossy(line))
    })
}

/// The status of an answer starting `HTTP/1.x NNN`.
fn status_of(answer: &[u8]) -> Option<u16> {
    let rest = answer.strip_prefix(b"HTTP/1.")?;
    let code = rest.get(2..5)?;
    if rest.get(1) != Some(&b' ') || !code.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(code).ok()?.parse().ok()
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ExportRequest<'a> {
    resource_spans: [ResourceSpans<'a>; 1],
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ResourceSpans<'a> {
    resource: Resource<'a>,
    scope_spans: [ScopeSpans<'a>; 1],
}

#[derive(Serialize)]
struct Resource<'a> {
    attributes: &'a [Attribute],
}

#[derive(Serialize)]
struct ScopeSpans<'a> {
    scope: Scope,
    spans: Vec<Span<'a>>,
}

#[derive(Serialize)]
struct Scope {
    name: &'static str,
    version: &'static str,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Span<'a> {
    trace_id: String,
    span_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    parent_span_id: Option<String>,
    name: &'a str,
    kind: u8,
    start_time_unix_nano: String,
    end_time_unix_nano: String,
    attributes: &'a [Attribute],
    status: Status<'a>,
}

/// OTLP's status: 0 unset (kurz's spans that did not fail), 2 error.
#[derive(Serialize)]
struct Status<'a> {
    code: u8,
    #[serde(skip_serializing_if = "str::is_empty")]
    message: &'a str,
}

/// The OTLP/JSON export request of `spans`.
fn encode(resource: &[Attribute], spans: &[SpanRecord]) -> Vec<u8> {
    let request = ExportRequest {
        resource_spans: [ResourceSpans {
            resource: Resource {
                attributes: resource,
            },
            scope_spans: [ScopeSpans {
                scope: Scope {
                    name: "kurz",
                    version: env!("CARGO_PKG_VERSION"),
                },
                spans: spans
                    .iter()
                    .map(|span| Span {
                        trace_id: hex::encode(span.trace_id),
                        span_id: hex::encode(span.span_id),
                        parent_span_id: span.parent.map(hex::encode),
                        name: &span.name,
                        kind: span.kind as u8,
                        start_time_unix_nano: span.start_unix_nanos.to_string(),
                        end_time_unix_nano: span.end_unix_nanos.to_string(),
                        attributes: &span.attributes,
                        status: Status {
                            code: if span.error.is_some() { 2 } else { 0 },
                            message: span.error.as_deref().unwrap_or_default(),
                        },
                    })
                    .collect(),
            }],
        }],
    };
    serde_json::to_vec(&request).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::telemetry::trace::Kind;

    #[test]
    fn the_endpoint_is_a_base_url_over_plain_http() {
        let plain = OtlpEndpoint::parse("http://127.0.0.1:4318").expect("valid");
        assert_eq!(plain.to_string(), "http://127.0.0.1:4318/v1/traces");
        let based = OtlpEndpoint::parse("http://collector/otlp/").expect("valid");
        assert_eq!((based.port, based.path.as_str()), (80, "/otlp/v1/traces"));
        let v6 = OtlpEndpoint::parse("http://[::1]:4318").expect("valid");
        assert_eq!(
            (v6.host.as_str(), v6.authority.as_str()),
            ("::1", "[::1]:4318")
        );
        for bad in [
            "https://collector.example",
            "grpc://collector:4317",
            "collector:4318",
            "http://user:pw@collector:4318",
            "http://collector:4318/?key=1",
            "",
        ] {
            assert!(OtlpEndpoint::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_status_is_read_from_the_status_line_only() {
        assert_eq!(status_of(b"HTTP/1.1 200 OK\r\n"), Some(200));
        assert_eq!(status_of(b"HTTP/1.0 503 Busy\r\n"), Some(503));
        for bad in [
            &b""[..],
            b"HTTP/2 200",
            b"HTTP/1.1 2x0 OK",
            b"SSH-2.0-OpenSSH",
        ] {
            assert_eq!(status_of(bad), None);
        }
    }

    #[test]
    fn spans_are_encoded_as_otlp_json() {
        let span = SpanRecord {
            trace_id: [0xab; 16],
            span_id: [0x01; 8],
            parent: Some([0x02; 8]),
            name: "GET /{code}".into(),
            kind: Kind::Server,
            start_unix_nanos: 1_700_000_000_000_000_000,
            end_unix_nanos: 1_700_000_000_000_250_000,
            attributes: vec![
                Attribute::str("http.route", "/{code}"),
                Attribute::int("http.response.status_code", 302),
            ],
            error: Some("store unavailable \"x\"".into()),
        };
        let body = encode(&[Attribute::str("service.name", "kurz")], &[span]);
        let json: serde_json::Value = serde_json::from_slice(&body).expect("JSON");
        let resource = &json["resourceSpans"][0];
        assert_eq!(
            resource["resource"]["attributes"][0],
            serde_json::json!({"key": "service.name", "value": {"stringValue": "kurz"}})
        );
        let span = &resource["scopeSpans"][0]["spans"][0];
        assert_eq!(span["traceId"], "ab".repeat(16));
        assert_eq!(span["spanId"], "01".repeat(8));
        assert_eq!(span["parentSpanId"], "02".repeat(8));
        assert_eq!(span["kind"], 2);
        assert_eq!(span["startTimeUnixNano"], "1700000000000000000");
        assert_eq!(span["endTimeUnixNano"], "1700000000000250000");
        assert_eq!(
            span["attributes"][1],
            serde_json::json!({"key": "http.response.status_code", "value": {"intValue": "302"}})
        );
        assert_eq!(
            span["status"],
            serde_json::json!({"code": 2, "message": "store unavailable \"x\""})
        );
    }
}
