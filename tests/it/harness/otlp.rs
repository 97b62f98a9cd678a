//! An OTLP/HTTP trace receiver the test owns: it takes `POST /v1/traces` with a JSON
//! `ExportTraceServiceRequest`, holds every span to OTLP/JSON's shape (hex ids of the right
//! length, nanosecond times as decimal strings, a known kind, typed attribute values), keeps
//! the well-formed ones and counts the rest, and answers 200 as a collector does.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// One span as received, its attributes (and its resource's) by key.
#[derive(Debug, Clone)]
pub struct ReceivedSpan {
    pub trace_id: String,
    pub span_id: String,
    pub parent_span_id: Option<String>,
    pub name: String,
    pub kind: u64,
    pub start_nanos: u64,
    pub end_nanos: u64,
    pub attributes: HashMap<String, Value>,
    pub resource: HashMap<String, Value>,
    /// 2 for a failed span, else 0.
    pub status_code: u64,
}

impl ReceivedSpan {
    /// A string attribute's value.
    pub fn attr(&self, key: &str) -> Option<&str> {
        self.attributes.get(key)?.get("stringValue")?.as_str()
    }

    /// An integer attribute's value (OTLP/JSON writes it as a string or a number).
    pub fn int(&self, key: &str) -> Option<i64> {
        let value = self.attributes.get(key)?.get("intValue")?;
        value.as_i64().or_else(|| value.as_str()?.parse().ok())
    }
}

#[derive(Default)]
struct Received {
    spans: Vec<ReceivedSpan>,
    requests: u64,
    /// What did not follow OTLP/HTTP JSON, one line each.
    malformed: Vec<String>,
}

pub struct OtlpReceiver {
    pub addr: std::net::SocketAddr,
    received: Arc<Mutex<Received>>,
    task: tokio::task::JoinHandle<()>,
}

impl OtlpReceiver {
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind receiver");
        let addr = listener.local_addr().expect("receiver address");
        let received = Arc::new(Mutex::new(Received::default()));
        let shared = Arc::clone(&received);
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(serve(stream, Arc::clone(&shared)));
            }
        });
        Self {
            addr,
            received,
            task,
        }
    }

    /// The base URL kurz is given (`telemetry.otlp_endpoint`).
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn spans(&self) -> Vec<ReceivedSpan> {
        self.received.lock().expect("lock").spans.clone()
    }

    /// Export requests received, well-formed or not.
    pub fn requests(&self) -> u64 {
        self.received.lock().expect("lock").requests
    }

    pub fn malformed(&self) -> Vec<String> {
        self.received.lock().expect("lock").malformed.clone()
    }

    /// Every span of `trace_id` once one named `root` (the trace's last to end) is in.
    pub async fn trace(&self, trace_id: &str, root: &str) -> Vec<ReceivedSpan> {
        self.wait_for(&format!("the span {root} of trace {trace_id}"), |s| {
            s.trace_id == trace_id && s.name == root
        })
        .await;
        self.spans()
            .into_iter()
            .filter(|s| s.trace_id == trace_id)
            .collect()
    }

    /// The first span `matches` once it is in (within 10 s).
    pub async fn wait_for(
        &self,
        what: &str,
        matches: impl Fn(&ReceivedSpan) -> bool,
    ) -> ReceivedSpan {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(span) = self.spans().into_iter().find(|s| matches(s)) {
                return span;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{what} never reached the receiver; it has {:?}; malformed: {:?}",
                self.spans()
                    .iter()
                    .map(|s| (&s.name, &s.trace_id))
                    .collect::<Vec<_>>(),
                self.malformed()
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }
}

impl Drop for OtlpReceiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// One request per connection, as kurz sends them (`Connection: close`); keep-alive clients
/// are served too, a request after another.
async fn serve(mut stream: TcpStream, received: Arc<Mutex<Received>>) {
    let mut buf = Vec::new();
    loop {
        let Some((head, body)) = read_request(&mut stream, &mut buf).await else {
            return;
        };
        let verdict = check_request(&head, &body);
        {
            let mut received = received.lock().expect("lock");
            received.requests += 1;
            match verdict {
                Ok(spans) => received.spans.extend(spans),
                Err(problem) => received.malformed.push(problem),
            }
        }
        let answer =
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}";
        if stream.write_all(answer).await.is_err() || head.contains("connection: close") {
            return;
        }
    }
}

/// The next request's head (lowercased) and body.
async fn read_request(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Option<(String, Vec<u8>)> {
    let mut chunk = [0u8; 16 * 1024];
    let head_end = loop {
        if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    while buf.len() < head_end + length {
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let body = buf[head_end..head_end + length].to_vec();
    buf.drain(..head_end + length);
    Some((head, body))
}

/// The spans of a well-formed export request; what is wrong with it otherwise.
fn check_request(head: &str, body: &[u8]) -> Result<Vec<ReceivedSpan>, String> {
    let request_line = head.lines().next().unwrap_or_default();
    if request_line != "post /v1/traces http/1.1" {
        return Err(format!("request line {request_line:?}"));
    }
    if !head.contains("content-type: application/json") {
        return Err(format!("not JSON: {head:?}"));
    }
    let json: Value = serde_json::from_slice(body).map_err(|e| format!("body is no JSON: {e}"))?;
    let mut spans = Vec::new();
    for resource_spans in array(&json, "resourceSpans")? {
        let resource = attributes(&resource_spans["resource"])?;
        for scope_spans in array(resource_spans, "scopeSpans")? {
            for span in array(scope_spans, "spans")? {
                spans.push(check_span(span, &resource)?);
            }
        }
    }
    Ok(spans)
}

fn array<'a>(value: &'a Value, key: &str) -> Result<&'a Vec<Value>, String> {
    value[key]
        .as_array()
        .ok_or_else(|| format!("{key} is no array in {value}"))
}

fn check_span(span: &Value, resource: &HashMap<String, Value>) -> Result<ReceivedSpan, String> {
    let hex_of = |key: &str, len: usize| -> Result<Option<String>, String> {
        match span.get(key) {
            None => Ok(None),
            Some(Value::String(id))
                if id.len() == len
                    && id
                        .bytes()
                        .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
                    && id.bytes().any(|b| b != b'0') =>
            {
                Ok(Some(id.clone()))
            }
            Some(other) => Err(format!("{key} {other} is not {len} lowercase hex digits")),
        }
    };
    let nanos = |key: &str| -> Result<u64, String> {
        span[key]
            .as_str()
            .and_then(|t| t.parse().ok())
            .ok_or_else(|| format!("{key} is no decimal string in {span}"))
    };
    let trace_id = hex_of("traceId", 32)?.ok_or("no traceId")?;
    let span_id = hex_of("spanId", 16)?.ok_or("no spanId")?;
    let parent_span_id = hex_of("parentSpanId", 16)?;
    let kind = span["kind"].as_u64().filter(|k| (1..=5).contains(k));
    let kind = kind.ok_or_else(|| format!("kind {} is no span kind", span["kind"]))?;
    let (start_nanos, end_nanos) = (nanos("startTimeUnixNano")?, nanos("endTimeUnixNano")?);
    if end_nanos < start_nanos {
        return Err(format!("{span} ends before it starts"));
    }
    let status_code = span["status"]["code"].as_u64().unwrap_or(0);
    if status_code > 2 {
        return Err(format!("status {}", span["status"]));
    }
    Ok(ReceivedSpan {
        trace_id,
        span_id,
        parent_span_id,
        name: span["name"].as_str().ok_or("no name")?.to_owned(),
        kind,
        start_nanos,
        end_nanos,
        attributes: attributes(span)?,
        resource: resource.clone(),
        status_code,
    })
}

/// `attributes` of `value` by key, each value one typed `AnyValue`.
fn attributes(value: &Value) -> Result<HashMap<String, Value>, String> {
    let mut out = HashMap::new();
    let Some(list) = value.get("attributes") else {
        return Ok(out);
    };
    for kv in list.as_array().ok_or("attributes is no array")? {
        let key = kv["key"]
            .as_str()
            .ok_or_else(|| format!("no key in {kv}"))?;
        let any = &kv["value"];
        let typed = any.as_object().is_some_and(|o| {
            o.len() == 1
                && ["stringValue", "intValue", "boolValue", "doubleValue"]
                    .iter()
                    .any(|t| o.contains_key(*t))
        });
        if !typed {
            return Err(format!("attribute {key} has no typed value: {any}"));
        }
        out.insert(key.to_owned(), any.clone());
    }
    Ok(out)
}
