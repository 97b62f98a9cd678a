//! Traces: which requests are traced, the context their calls find, and the spans they leave
//! for the exporter ([`super::otlp`]).
//!
//! Off (no `telemetry.otlp_endpoint`) nothing here runs: the request observer holds no
//! [`Tracer`] and the store is not wrapped. On, a request is traced when a trusted proxy's
//! `traceparent` (or the ALB's `X-Amzn-Trace-Id`) says so, else when its trace id falls within
//! `telemetry.sample_ratio`. A traced request's [`Context`] is a task-local of the request's
//! future, so the calls it makes (store, Redis, the click stream) find their parent without
//! being handed it; a call outside a traced request finds none, at the cost of one task-local
//! lookup, and runs as it is.

use std::borrow::Cow;
use std::cell::Cell;
use std::fmt::Display;
use std::future::Future;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;

use super::Metrics;
use super::otlp::{Exporter, OtlpEndpoint};
use crate::config::TelemetrySettings;

pub type TraceId = [u8; 16];
pub type SpanId = [u8; 8];

/// The trace a trusted proxy says a request belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Parent {
    pub trace_id: TraceId,
    /// The caller's span; none from a load balancer that names the trace only (the ALB's
    /// `Root=`).
    pub span_id: Option<SpanId>,
    /// The caller's decision to record the trace; none leaves it to the sampling ratio.
    pub sampled: Option<bool>,
}

impl Parent {
    /// From `traceparent`, else from `X-Amzn-Trace-Id`; a malformed header counts as absent
    /// (the request starts a trace of its own).
    pub fn from_headers(traceparent: Option<&[u8]>, amzn_trace_id: Option<&[u8]>) -> Option<Self> {
        traceparent
            .and_then(parse_traceparent)
            .or_else(|| amzn_trace_id.and_then(parse_amzn_trace_id))
    }
}

/// W3C Trace Context `traceparent`: `{version}-{trace id}-{parent id}-{flags}` in lowercase
/// hex. Version `ff`, ids of all zeros and a version-00 header with more after it are
/// invalid; a later version may add fields after another `-`.
pub fn parse_traceparent(value: &[u8]) -> Option<Parent> {
    if value.len() < 55 || value[2] != b'-' || value[35] != b'-' || value[52] != b'-' {
        return None;
    }
    let [version] = lower_hex::<1>(&value[..2])?;
    if version == 0xff || (version == 0 && value.len() != 55) {
        return None;
    }
    if value.len() > 55 && value[55] != b'-' {
        return None;
    }
    let trace_id = lower_hex::<16>(&value[3..35])?;
    let span_id = lower_hex::<8>(&value[36..52])?;
    let [flags] = lower_hex::<1>(&value[53..55])?;
    if trace_id == [0; 16] || span_id == [0; 8] {
        return None;
    }
    Some(Parent {
        trace_id,
        span_id: Some(span_id),
        sampled: Some(flags & 1 == 1),
    })
}

/// AWS's `X-Amzn-Trace-Id`: `Root=1-{8 hex}-{24 hex}`, with `Parent={16 hex}` and
/// `Sampled=0|1` when an X-Ray-traced caller set them, fields split by `;` in any order.
/// The trace id is the Root's 32 hex digits, as X-Ray's OpenTelemetry propagator reads it.
pub fn parse_amzn_trace_id(value: &[u8]) -> Option<Parent> {
    let text = std::str::from_utf8(value).ok()?;
    let mut parent = Parent {
        trace_id: [0; 16],
        span_id: None,
        sampled: None,
    };
    let mut root = false;
    for field in text.split(';') {
        let Some((key, value)) = field.trim().split_once('=') else {
            continue;
        };
        match key {
            "Root" => {
                let rest = value.strip_prefix("1-")?;
                let (time, random) = rest.split_once('-')?;
                if time.len() != 8 || random.len() != 24 {
                    return None;
                }
                let mut hex = [0u8; 32];
                hex[..8].copy_from_slice(time.as_bytes());
                hex[8..].copy_from_slice(random.as_bytes());
                parent.trace_id = lower_hex::<16>(&hex.to_ascii_lowercase())?;
                root = true;
            }
            "Parent" => {
                parent.span_id = Some(lower_hex::<8>(&value.as_bytes().to_ascii_lowercase())?)
            }
            "Sampled" => {
                parent.sampled = match value {
                    "1" => Some(true),
                    "0" => Some(false),
                    _ => None,
                }
            }
            _ => {}
        }
    }
    (root && parent.trace_id != [0; 16] && parent.span_id != Some([0; 8])).then_some(parent)
}

/// `N` bytes from `2N` lowercase hex digits.
fn lower_hex<const N: usize>(text: &[u8]) -> Option<[u8; N]> {
    if text.len() != 2 * N
        || !text
            .iter()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(b))
    {
        return None;
    }
    let mut bytes = [0u8; N];
    hex::decode_to_slice(text, &mut bytes).ok()?;
    Some(bytes)
}

/// A span attribute's value, as OTLP/JSON writes it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub enum Value {
    #[serde(rename = "stringValue")]
    Str(Cow<'static, str>),
    /// OTLP/JSON writes 64-bit integers as strings.
    #[serde(rename = "intValue", serialize_with = "int_as_string")]
    Int(i64),
}

fn int_as_string<S: serde::Serializer>(value: &i64, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(value)
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Attribute {
    pub key: &'static str,
    pub value: Value,
}

impl Attribute {
    pub fn str(key: &'static str, value: impl Into<Cow<'static, str>>) -> Self {
        Self {
            key,
            value: Value::Str(value.into()),
        }
    }

    pub fn int(key: &'static str, value: i64) -> Self {
        Self {
            key,
            value: Value::Int(value),
        }
    }
}

/// The attribute every span of a request carries: its `X-Request-Id`.
pub const REQUEST_ID: &str = "kurz.request_id";

/// OTLP's span kinds kurz records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Internal = 1,
    Server = 2,
    Client = 3,
}

/// A span that has ended, waiting to be sent.
#[derive(Debug, Clone)]
pub struct SpanRecord {
    pub trace_id: TraceId,
    pub span_id: SpanId,
    pub parent: Option<SpanId>,
    pub name: Cow<'static, str>,
    pub kind: Kind,
    pub start_unix_nanos: u64,
    pub end_unix_nanos: u64,
    pub attributes: Vec<Attribute>,
    /// The failure, for a span that failed.
    pub error: Option<String>,
}

/// Decides which traces are recorded and hands their spans to the exporter.
pub struct Tracer {
    /// A trace is recorded when the low 64 bits of its id are below this ([`u64::MAX`]:
    /// every trace).
    threshold: u64,
    exporter: Arc<Exporter>,
}

impl Tracer {
    /// The tracer `settings` ask for: `None` when no OTLP endpoint is set. Its exporter sends
    /// once [`start_exporting`](Self::start_exporting) runs.
    pub fn from_settings(
        settings: &TelemetrySettings,
        metrics: Arc<Metrics>,
    ) -> Result<Option<Arc<Self>>, String> {
        let Some(endpoint) = &settings.otlp_endpoint else {
            return Ok(None);
        };
        let endpoint = OtlpEndpoint::parse(endpoint)?;
        let exporter = Exporter::new(endpoint, settings, metrics);
        Ok(Some(Arc::new(Self {
            threshold: threshold(settings.sample_ratio),
            exporter: Arc::new(exporter),
        })))
    }

    /// Sends recorded spans every `telemetry.export_interval_ms`, until aborted.
    pub fn start_exporting(&self) -> tokio::task::JoinHandle<()> {
        tokio::spawn(Arc::clone(&self.exporter).run())
    }

    /// Sends what is recorded now (at shutdown, after the last requests).
    pub async fn flush(&self) {
        self.exporter.export_all().await;
    }

    /// The trace of one request (or of background work, with no parent and no request id),
    /// when it is to be recorded: the parent's decision when it made one, else the ratio.
    pub fn start(
        self: &Arc<Self>,
        parent: Option<Parent>,
        request_id: Option<&str>,
    ) -> Option<Trace> {
        let trace_id = match parent {
            Some(parent) => parent.trace_id,
            None => random_trace_id(),
        };
        let sampled = match parent.and_then(|p| p.sampled) {
            Some(decision) => decision,
            None => self.samples(&trace_id),
        };
        if !sampled {
            return None;
        }
        Some(Trace {
            context: Context {
                tracer: Arc::clone(self),
                trace_id,
                span_id: random_span_id(),
                request_id: request_id.map(Arc::from),
            },
            parent: parent.and_then(|p| p.span_id),
            start_unix_nanos: unix_nanos(),
        })
    }

    fn samples(&self, trace_id: &TraceId) -> bool {
        let low = u64::from_be_bytes(trace_id[8..].try_into().unwrap_or_default());
        self.threshold == u64::MAX || low < self.threshold
    }

    fn record(&self, span: SpanRecord) {
        self.exporter.push(span);
    }
}

/// `ratio` of the 64-bit space, as the bound [`Tracer::samples`] compares with.
fn threshold(ratio: f64) -> u64 {
    if ratio >= 1.0 {
        u64::MAX
    } else if ratio > 0.0 {
        // Below 2^64 by the check above; `as` saturates besides.
        (ratio * 18_446_744_073_709_551_616.0) as u64
    } else {
        0
    }
}

/// Where a traced call is: its trace and the span its own calls are children of.
#[derive(Clone)]
pub struct Context {
    tracer: Arc<Tracer>,
    trace_id: TraceId,
    span_id: SpanId,
    request_id: Option<Arc<str>>,
}

tokio::task_local! {
    static CURRENT: Context;
}

/// A recorded trace's root span, from its start to [`finish`](Self::finish).
pub struct Trace {
    context: Context,
    parent: Option<SpanId>,
    start_unix_nanos: u64,
}

impl Trace {
    pub fn trace_id(&self) -> String {
        hex::encode(self.context.trace_id)
    }

    /// Runs `work` with this trace as the current one: the calls it makes become children.
    pub async fn run<F: Future>(&self, work: F) -> F::Output {
        CURRENT.scope(self.context.clone(), work).await
    }

    /// Ends the span and hands it to the exporter, with the request id among `attributes`.
    pub fn finish(
        self,
        name: impl Into<Cow<'static, str>>,
        kind: Kind,
        mut attributes: Vec<Attribute>,
        error: Option<String>,
    ) {
        let context = self.context;
        if let Some(id) = &context.request_id {
            attributes.push(Attribute::str(REQUEST_ID, id.to_string()));
        }
        context.tracer.record(SpanRecord {
            trace_id: context.trace_id,
            span_id: context.span_id,
            parent: self.parent,
            name: name.into(),
            kind,
            start_unix_nanos: self.start_unix_nanos,
            end_unix_nanos: unix_nanos(),
            attributes,
            error,
        });
    }
}

/// Runs `call` as a client span `name` of the current trace, with `attributes` (made only
/// when there is a trace); outside a traced request it just runs `call`. An `Err` marks the
/// span failed.
pub async fn child<T, E, F>(
    name: &'static str,
    attributes: impl FnOnce() -> Vec<Attribute>,
    call: F,
) -> Result<T, E>
where
    E: Display,
    F: Future<Output = Result<T, E>>,
{
    let Ok(parent) = CURRENT.try_with(Context::clone) else {
        return call.await;
    };
    let context = Context {
        span_id: random_span_id(),
        ..parent.clone()
    };
    let span_id = context.span_id;
    let start_unix_nanos = unix_nanos();
    let result = CURRENT.scope(context, call).await;
    let mut attributes = attributes();
    if let Some(id) = &parent.request_id {
        attributes.push(Attribute::str(REQUEST_ID, id.to_string()));
    }
    parent.tracer.record(SpanRecord {
        trace_id: parent.trace_id,
        span_id,
        parent: Some(parent.span_id),
        name: Cow::Borrowed(name),
        kind: Kind::Client,
        start_unix_nanos,
        end_unix_nanos: unix_nanos(),
        attributes,
        error: result.as_ref().err().map(ToString::to_string),
    });
    result
}

/// `work` with the current trace, if any, for a task spawned to finish what a traced request
/// began (the write of what it read to Redis).
pub fn carried<F: Future>(work: F) -> impl Future<Output = F::Output> {
    let context = CURRENT.try_with(Context::clone).ok();
    async move {
        match context {
            Some(context) => CURRENT.scope(context, work).await,
            None => work.await,
        }
    }
}

/// The headers that carry the current trace to a service kurz calls (`traceparent`, and
/// `X-Amzn-Trace-Id` for AWS's own services), the current span as their parent; none
/// outside a traced request.
pub fn outgoing_headers() -> Option<[(&'static str, String); 2]> {
    CURRENT
        .try_with(|c| propagation_headers(&c.trace_id, &c.span_id))
        .ok()
}

fn propagation_headers(trace_id: &TraceId, span_id: &SpanId) -> [(&'static str, String); 2] {
    let trace = hex::encode(trace_id);
    let span = hex::encode(span_id);
    [
        ("traceparent", format!("00-{trace}-{span}-01")),
        (
            "x-amzn-trace-id",
            format!(
                "Root=1-{}-{};Parent={span};Sampled=1",
                &trace[..8],
                &trace[8..]
            ),
        ),
    ]
}

fn unix_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// A fast random `u64` (SplitMix64 per thread, seeded from the OS): ids need to be unique,
/// not secret.
fn random_u64() -> u64 {
    thread_local! {
        static STATE: Cell<u64> = Cell::new(getrandom::u64().unwrap_or(0x853c_49e6_748f_ea9b));
    }
    STATE.with(|state| {
        let next = state.get().wrapping_add(0x9e37_79b9_7f4a_7c15);
        state.set(next);
        let mut z = next;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    })
}

fn random_trace_id() -> TraceId {
    let mut id = [0u8; 16];
    id[..8].copy_from_slice(&random_u64().to_be_bytes());
    id[8..].copy_from_slice(&random_u64().to_be_bytes());
    if id == [0; 16] { random_trace_id() } else { id }
}

fn random_span_id() -> SpanId {
    let id = random_u64();
    if id == 0 {
        random_span_id()
    } else {
        id.to_be_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
    const SPAN: &str = "00f067aa0ba902b7";

    fn parsed(text: &str) -> Option<Parent> {
        parse_traceparent(text.as_bytes())
    }

    #[test]
    fn traceparent_is_read_as_w3c_trace_context_writes_it() {
        let parent = parsed(&format!("00-{TRACE}-{SPAN}-01")).expect("valid");
        assert_eq!(hex::encode(parent.trace_id), TRACE);
        assert_eq!(parent.span_id.map(hex::encode).as_deref(), Some(SPAN));
        assert_eq!(parent.sampled, Some(true));
        assert_eq!(
            parsed(&format!("00-{TRACE}-{SPAN}-00")).and_then(|p| p.sampled),
            Some(false)
        );
        // Flags other than "sampled" are kept apart from it.
        assert_eq!(
            parsed(&format!("00-{TRACE}-{SPAN}-02")).and_then(|p| p.sampled),
            Some(false)
        );
        // A later version may carry more fields.
        assert!(parsed(&format!("01-{TRACE}-{SPAN}-01-extra")).is_some());
    }

    #[test]
    fn a_malformed_traceparent_is_no_parent() {
        let upper = TRACE.to_ascii_uppercase();
        for bad in [
            String::new(),
            format!("ff-{TRACE}-{SPAN}-01"),
            format!("00-{TRACE}-{SPAN}-01-extra"),
            format!("01-{TRACE}-{SPAN}-01extra"),
            format!("00-{upper}-{SPAN}-01"),
            format!("00-{}-{SPAN}-01", "0".repeat(32)),
            format!("00-{TRACE}-{}-01", "0".repeat(16)),
            format!("00-{TRACE}-{SPAN}-0g"),
            format!("00_{TRACE}-{SPAN}-01"),
            format!("00-{TRACE}-{SPAN}"),
            format!("00-{}-{SPAN}-01", &TRACE[..31]),
        ] {
            assert_eq!(parsed(&bad), None, "{bad}");
        }
    }

    #[test]
    fn the_albs_trace_id_names_the_trace_and_xrays_fields_its_parent_and_decision() {
        let alb = parse_amzn_trace_id(b"Root=1-5759e988-bd862e3fe1be46a994272793").expect("valid");
        assert_eq!(
            hex::encode(alb.trace_id),
            "5759e988bd862e3fe1be46a994272793"
        );
        assert_eq!((alb.span_id, alb.sampled), (None, None));
        let xray = parse_amzn_trace_id(
            b"Self=1-67891234-12456789abcdef012345678;Root=1-5759e988-bd862e3fe1be46a994272793; Parent=53995c3f42cd8ad8;Sampled=0",
        )
        .expect("valid");
        assert_eq!(xray.trace_id, alb.trace_id);
        assert_eq!(
            xray.span_id.map(hex::encode).as_deref(),
            Some("53995c3f42cd8ad8")
        );
        assert_eq!(xray.sampled, Some(false));
        for bad in [
            &b"Parent=53995c3f42cd8ad8"[..],
            b"Root=2-5759e988-bd862e3fe1be46a994272793",
            b"Root=1-5759e988-bd862e3fe1be46a99427279",
            b"Root=1-5759e988-bd862e3fe1be46a99427279z",
            b"Root=1-5759e988-bd862e3fe1be46a994272793;Parent=xyz",
        ] {
            assert_eq!(
                parse_amzn_trace_id(bad),
                None,
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn traceparent_wins_over_the_albs_header_and_a_malformed_one_yields_to_it() {
        let alb = b"Root=1-5759e988-bd862e3fe1be46a994272793";
        let both =
            Parent::from_headers(Some(format!("00-{TRACE}-{SPAN}-01").as_bytes()), Some(alb));
        assert_eq!(
            both.map(|p| hex::encode(p.trace_id)).as_deref(),
            Some(TRACE)
        );
        let fallback = Parent::from_headers(Some(b"garbage"), Some(alb));
        assert_eq!(
            fallback.map(|p| hex::encode(p.trace_id)).as_deref(),
            Some("5759e988bd862e3fe1be46a994272793")
        );
    }

    #[test]
    fn outgoing_headers_name_the_current_span_in_both_formats() {
        let trace: TraceId = lower_hex(TRACE.as_bytes()).expect("hex");
        let span: SpanId = lower_hex(SPAN.as_bytes()).expect("hex");
        let [(_, traceparent), (_, amzn)] = propagation_headers(&trace, &span);
        assert_eq!(
            parsed(&traceparent).map(|p| (p.trace_id, p.span_id)),
            Some((trace, Some(span)))
        );
        let back = parse_amzn_trace_id(amzn.as_bytes()).expect("valid");
        assert_eq!(
            (back.trace_id, back.span_id, back.sampled),
            (trace, Some(span), Some(true))
        );
    }

    fn tracer(ratio: f64) -> Arc<Tracer> {
        let settings = TelemetrySettings {
            otlp_endpoint: Some("http://127.0.0.1:9".into()),
            sample_ratio: ratio,
            ..TelemetrySettings::default()
        };
        Tracer::from_settings(&settings, Arc::new(Metrics::default()))
            .expect("valid")
            .expect("on")
    }

    #[test]
    fn the_ratio_samples_that_share_of_trace_ids_and_a_parents_decision_overrides_it() {
        for (ratio, low, high) in [(0.0, 0, 0), (0.25, 2_300, 2_700), (1.0, 10_000, 10_000)] {
            let tracer = tracer(ratio);
            let sampled = (0..10_000)
                .filter(|_| tracer.start(None, None).is_some())
                .count();
            assert!(
                (low..=high).contains(&sampled),
                "{ratio}: {sampled} of 10000"
            );
        }
        let parent = |sampled| Parent {
            trace_id: [7; 16],
            span_id: Some([1; 8]),
            sampled,
        };
        assert!(tracer(0.0).start(Some(parent(Some(true))), None).is_some());
        assert!(tracer(1.0).start(Some(parent(Some(false))), None).is_none());
        // Undecided, the trace id decides, alike on every instance.
        let decided: Vec<bool> = (0..2)
            .map(|_| tracer(0.5).start(Some(parent(None)), None).is_some())
            .collect();
        assert_eq!(decided[0], decided[1]);
    }

    #[tokio::test]
    async fn a_child_span_joins_the_current_trace_and_outside_one_records_nothing() {
        let tracer = tracer(1.0);
        let outside: Result<u8, String> = child("outside", Vec::new, async { Ok(1) }).await;
        assert_eq!(outside, Ok(1));
        assert_eq!(tracer.exporter.queued(), 0);

        let trace = tracer.start(None, Some("req-1")).expect("sampled");
        let root_span = trace.context.span_id;
        let inner: Result<(), String> = trace
            .run(child(
                "store.get",
                || vec![Attribute::str("db.system", "redb")],
                async {
                    assert!(outgoing_headers().is_some());
                    Err("timed out".to_owned())
                },
            ))
            .await;
        assert!(inner.is_err());
        assert!(outgoing_headers().is_none());
        trace.finish("GET /{code}", Kind::Server, Vec::new(), None);
        let spans = tracer.exporter.take(10);
        assert_eq!(spans.len(), 2);
        let (store, root) = (&spans[0], &spans[1]);
        assert_eq!(store.parent, Some(root_span));
        assert_eq!(store.trace_id, root.trace_id);
        assert_eq!(store.error.as_deref(), Some("timed out"));
        assert!(store.start_unix_nanos <= store.end_unix_nanos);
        for span in &spans {
            assert!(
                span.attributes
                    .contains(&Attribute::str(REQUEST_ID, "req-1")),
                "{span:?}"
            );
        }
        assert_eq!(root.parent, None);
    }
}
