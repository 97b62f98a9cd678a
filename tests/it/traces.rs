//! Traces over OTLP/HTTP (README, "Traces"), sent to a receiver the harness owns: a span per
//! request with its store and Redis calls as children, the trace context of trusted proxies
//! continued and passed on to DynamoDB, nobody else's, and nothing sent when nothing is
//! sampled.

use std::process::Stdio;
use std::time::Duration;

use kurz::config::{Network, Secret, Settings};
use serde_json::{Value, json};

use crate::harness::{
    Backend, ChaosProxy, DynamoLocal, KurzProcess, OtlpReceiver, ReceivedSpan, RedisServer,
    TestStore, client, code_of, data_file, eventually, free_port, metric, spawn_app_on,
    unique_name,
};

const REQUEST_ID: &str = "kurz.request_id";

/// Traces on, to `endpoint`, sampling `ratio` of them, sent every 100 ms.
fn traced(endpoint: &str, ratio: f64) -> impl Fn(&mut Settings) + Clone + use<> {
    let endpoint = endpoint.to_owned();
    move |s| {
        s.telemetry.otlp_endpoint = Some(endpoint.clone());
        s.telemetry.sample_ratio = ratio;
        s.telemetry.export_interval = Duration::from_millis(100);
    }
}

fn request_id(response: &reqwest::Response) -> String {
    response.headers()["x-request-id"]
        .to_str()
        .expect("request id")
        .to_owned()
}

/// The children of `parent` in `trace`.
fn children<'a>(trace: &'a [ReceivedSpan], parent: &ReceivedSpan) -> Vec<&'a ReceivedSpan> {
    trace
        .iter()
        .filter(|s| s.parent_span_id.as_deref() == Some(parent.span_id.as_str()))
        .collect()
}

/// The one span named `name` among `spans`.
fn named<'a>(spans: &[&'a ReceivedSpan], name: &str) -> &'a ReceivedSpan {
    let found: Vec<_> = spans.iter().filter(|s| s.name == name).collect();
    assert_eq!(
        found.len(),
        1,
        "one {name} among {:?}",
        spans.iter().map(|s| &s.name).collect::<Vec<_>>()
    );
    found[0]
}

/// Each child a client span of its parent's request, within the parent's time.
fn assert_children_of(parent: &ReceivedSpan, spans: &[&ReceivedSpan], request_id: &str) {
    for span in spans {
        assert_eq!(span.trace_id, parent.trace_id);
        assert_eq!(span.kind, 3, "{} is a client span", span.name);
        assert_eq!(span.attr(REQUEST_ID), Some(request_id), "{span:?}");
        assert!(
            span.start_nanos >= parent.start_nanos,
            "{span:?} before {parent:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_create_and_an_uncached_redirect_are_traces_with_their_store_and_redis_calls() {
    let receiver = OtlpReceiver::start().await;
    let redis = RedisServer::shared();
    let store = TestStore::new(Backend::Dynamodb).await;
    let prefix = format!("{}:", unique_name("trace"));
    let settings = {
        let traced = traced(&receiver.endpoint(), 1.0);
        let (url, prefix) = (redis.url.clone(), prefix.clone());
        move |s: &mut Settings| {
            traced(s);
            s.cache.redis.url = Some(Secret::new(url.clone()));
            s.cache.redis.key_prefix = prefix.clone();
        }
    };
    let creator = spawn_app_on(&store, settings.clone()).await;

    let created = creator
        .create(json!({ "url": "https://example.com/traced" }))
        .await;
    let create_id = request_id(&created);
    let code = code_of(created).await;
    let server = receiver
        .wait_for("the create's span", |s| {
            s.kind == 2 && s.attr(REQUEST_ID) == Some(create_id.as_str())
        })
        .await;
    assert_eq!(server.name, "POST /api/v1/links");
    assert_eq!(server.attr("http.route"), Some("/api/v1/links"));
    assert_eq!(server.attr("http.request.method"), Some("POST"));
    assert_eq!(server.int("http.response.status_code"), Some(201));
    assert_eq!(server.parent_span_id, None, "a trace of its own");
    assert_eq!(server.status_code, 0);
    assert_eq!(
        server.resource["service.name"]["stringValue"],
        Value::from("kurz")
    );
    let trace = receiver.trace(&server.trace_id, &server.name).await;
    let calls = children(&trace, &server);
    assert_children_of(&server, &calls, &create_id);
    let insert = named(&calls, "store.insert");
    assert_eq!(insert.attr("db.system.name"), Some("aws.dynamodb"));
    assert_eq!(insert.attr("db.operation.name"), Some("insert"));
    assert!(insert.end_nanos <= server.end_nanos);

    // Another instance has nothing cached: its redirect asks Redis, then the store, then
    // writes what it read to Redis (after answering, still in the trace).
    let fresh = spawn_app_on(&store, settings).await;
    let redirect = fresh.get(&format!("/{code}")).await;
    assert_eq!(redirect.status(), 302);
    let redirect_id = request_id(&redirect);
    let server = receiver
        .wait_for("the redirect's span", |s| {
            s.kind == 2 && s.attr(REQUEST_ID) == Some(redirect_id.as_str())
        })
        .await;
    assert_eq!(server.name, "GET /{code}");
    assert_eq!(server.attr("url.path"), Some(format!("/{code}").as_str()));
    assert_eq!(server.int("http.response.status_code"), Some(302));
    receiver
        .wait_for("the redirect's write to Redis", |s| {
            s.trace_id == server.trace_id && s.name == "redis.put"
        })
        .await;
    let trace = receiver.trace(&server.trace_id, &server.name).await;
    let calls = children(&trace, &server);
    assert_children_of(&server, &calls, &redirect_id);
    let (redis_get, store_get) = (named(&calls, "redis.GET"), named(&calls, "store.get"));
    assert_eq!(redis_get.attr("db.system.name"), Some("redis"));
    assert_eq!(store_get.attr("db.system.name"), Some("aws.dynamodb"));
    assert!(
        redis_get.end_nanos <= store_get.start_nanos,
        "Redis is asked before the store"
    );
    named(&calls, "redis.put");
    assert!(
        receiver.malformed().is_empty(),
        "{:?}",
        receiver.malformed()
    );

    creator.stop().await;
    fresh.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trusted_proxys_trace_is_continued_and_passed_on_to_dynamodb_and_anyone_elses_ignored() {
    let receiver = OtlpReceiver::start().await;
    let proxy = ChaosProxy::start(&DynamoLocal::shared().endpoint).await;
    let store = TestStore::with_endpoint(Backend::Dynamodb, proxy.url()).await;
    // Behind the proxy, nothing is traced unless the proxy's headers say so.
    let behind_proxy = spawn_app_on(&store, |s| {
        traced(&receiver.endpoint(), 0.0)(s);
        s.server.trusted_proxies = vec!["127.0.0.1".parse::<Network>().expect("network")];
    })
    .await;
    // Reached directly, every request is traced, whatever the client says.
    let direct = spawn_app_on(&store, traced(&receiver.endpoint(), 1.0)).await;
    let code = direct.create_code("https://example.com/propagated").await;

    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let caller_span = "00f067aa0ba902b7";
    proxy.count_requests_with(&format!("00-{trace_id}-"));
    let redirect = behind_proxy
        .client
        .get(behind_proxy.url(&format!("/{code}")))
        .header("traceparent", format!("00-{trace_id}-{caller_span}-01"))
        .send()
        .await
        .expect("send");
    assert_eq!(redirect.status(), 302);
    let trace = receiver.trace(trace_id, "GET /{code}").await;
    let server = named(&trace.iter().collect::<Vec<_>>(), "GET /{code}").clone();
    assert_eq!(server.parent_span_id.as_deref(), Some(caller_span));
    let store_get = named(&children(&trace, &server), "store.get").clone();
    assert!(
        proxy.counted() >= 1,
        "the store's DynamoDB request carried traceparent"
    );
    assert_eq!(store_get.trace_id, trace_id);

    // The proxy's decision holds: not sampled, not traced.
    let unsampled = "0af7651916cd43dd8448eb211c80319c";
    let headers = [
        ("traceparent", format!("00-{unsampled}-{caller_span}-00")),
        // The ALB's header names the trace; its `Sampled=1` from an X-Ray caller decides.
        (
            "x-amzn-trace-id",
            "Root=1-5759e988-bd862e3fe1be46a994272793;Sampled=1".to_owned(),
        ),
    ];
    // The ALB-named one looks its code up in DynamoDB, and says so in AWS's header.
    proxy.count_requests_with("Root=1-5759e988-bd862e3fe1be46a994272793;Parent=");
    for (i, (name, value)) in headers.into_iter().enumerate() {
        let response = behind_proxy
            .client
            .get(behind_proxy.url(&format!("/NoSuchCode{i}")))
            .header(name, value)
            .send()
            .await
            .expect("send");
        assert_eq!(response.status(), 404);
    }
    let alb = receiver
        .wait_for("the ALB-named trace", |s| {
            s.trace_id == "5759e988bd862e3fe1be46a994272793" && s.kind == 2
        })
        .await;
    assert_eq!(alb.parent_span_id, None, "the ALB names no parent span");
    assert!(proxy.counted() >= 1, "X-Amzn-Trace-Id passed on too");
    assert!(
        receiver.spans().iter().all(|s| s.trace_id != unsampled),
        "a trace the proxy did not sample was recorded"
    );

    // A client that is no trusted proxy names no trace: its own id is ignored.
    let forged = "11111111111111111111111111111111";
    let response = direct
        .client
        .get(direct.url(&format!("/{code}")))
        .header("traceparent", format!("00-{forged}-{caller_span}-01"))
        .send()
        .await
        .expect("send");
    let forged_id = request_id(&response);
    let own = receiver
        .wait_for("the direct redirect's span", |s| {
            s.kind == 2 && s.attr(REQUEST_ID) == Some(forged_id.as_str())
        })
        .await;
    assert_ne!(own.trace_id, forged);
    assert_eq!(own.parent_span_id, None);
    assert!(
        receiver.malformed().is_empty(),
        "{:?}",
        receiver.malformed()
    );

    behind_proxy.stop().await;
    direct.stop().await;
}

/// Creates a link and follows it `n` times.
async fn some_requests(app: &crate::harness::TestApp, n: usize) {
    let code = app.create_code("https://example.com/sampled").await;
    for _ in 0..n {
        assert_eq!(app.get(&format!("/{code}")).await.status(), 302);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_is_sampled_is_sent_by_the_time_kurz_stops_and_nothing_else() {
    let store = TestStore::new(Backend::Embedded).await;
    // Sampling nothing, kurz sends nothing (it has nothing to send): not one request.
    let receiver = OtlpReceiver::start().await;
    let app = spawn_app_on(&store, traced(&receiver.endpoint(), 0.0)).await;
    some_requests(&app, 20).await;
    let metrics = app.metrics().await;
    app.stop().await;
    assert_eq!(receiver.requests(), 0);
    assert_eq!(metric(&metrics, "kurz_trace_spans_exported_total"), 0.0);

    // Sampling everything, every request's span is in by the time kurz has stopped: those
    // still queued are sent at shutdown. The interval is long, so only that sends them.
    let receiver = OtlpReceiver::start().await;
    let app = spawn_app_on(&store, |s| {
        traced(&receiver.endpoint(), 1.0)(s);
        s.telemetry.export_interval = Duration::from_secs(3600);
    })
    .await;
    some_requests(&app, 20).await;
    app.stop().await;
    let servers = receiver.spans().into_iter().filter(|s| s.kind == 2).count();
    assert_eq!(servers, 21, "the create and 20 redirects");
    assert!(
        receiver.malformed().is_empty(),
        "{:?}",
        receiver.malformed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_that_is_not_there_costs_spans_never_a_request() {
    let store = TestStore::new(Backend::Embedded).await;
    let nobody = format!("http://127.0.0.1:{}", free_port());
    let app = spawn_app_on(&store, traced(&nobody, 1.0)).await;
    some_requests(&app, 20).await;
    eventually(
        "the failed exports are counted",
        Duration::from_secs(10),
        || async {
            let metrics = app.metrics().await;
            metric(&metrics, "kurz_trace_export_failures_total") >= 1.0
                && metric(&metrics, "kurz_trace_spans_dropped_total") >= 21.0
        },
    )
    .await;
    let metrics = app.metrics().await;
    assert_eq!(metric(&metrics, "kurz_trace_spans_exported_total"), 0.0);
    app.stop().await;
}

/// README, "Traces": a traced request's log lines name its request id and trace id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_traced_requests_log_lines_carry_its_request_and_trace_ids() {
    let receiver = OtlpReceiver::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let log_path = dir.path().join("kurz.log");
    let log = std::fs::File::create(&log_path).expect("log file");
    let endpoint = receiver.endpoint();
    let kurz = KurzProcess::start_with_logs(
        &data_file(&dir),
        &[
            ("KURZ__LOG__FORMAT", "json"),
            ("KURZ__LOG__LEVEL", "info"),
            ("KURZ__TELEMETRY__OTLP_ENDPOINT", &endpoint),
            ("KURZ__TELEMETRY__SAMPLE_RATIO", "1"),
            ("KURZ__TELEMETRY__EXPORT_INTERVAL_MS", "100"),
        ],
        Stdio::from(log),
    );
    let response = client()
        .post(format!("{}/api/v1/links", kurz.base))
        .json(&json!({ "url": "https://example.com/logged" }))
        .send()
        .await
        .expect("send");
    let id = request_id(&response);
    let code = code_of(response).await;
    let server = receiver
        .wait_for("the create's span", |s| {
            s.attr(REQUEST_ID) == Some(id.as_str())
        })
        .await;
    assert!(kurz.stop());
    let text = std::fs::read_to_string(&log_path).expect("log");
    let created: Vec<Value> = text
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|l| l["message"] == "link created" && l["code"] == code.as_str())
        .collect();
    // The audit line and the service's own.
    assert_eq!(created.len(), 2, "{text}");
    for line in created {
        let spans = line["spans"].as_array().expect("spans");
        let span = spans
            .iter()
            .find(|s| s["name"] == "request")
            .expect("within the request's span");
        assert_eq!(span["request_id"], id.as_str(), "{line}");
        assert_eq!(span["trace_id"], server.trace_id.as_str(), "{line}");
    }
}

/// README, "Traces": every line written within a request names it, the redirect's too (its
/// span is at debug level): here Redis failing under a redirect that asks it, traces off.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_log_line_written_inside_a_redirect_names_its_request_id() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log_path = dir.path().join("kurz.log");
    let log = std::fs::File::create(&log_path).expect("log file");
    let nobody = format!("redis://127.0.0.1:{}", free_port());
    let kurz = KurzProcess::start_with_logs(
        &data_file(&dir),
        &[
            ("KURZ__LOG__FORMAT", "json"),
            ("KURZ__CACHE__REDIS__URL", &nobody),
            // Every redirect asks Redis.
            ("KURZ__CACHE__LOCAL__MAX_BYTES", "0"),
        ],
        Stdio::from(log),
    );
    let client = client();
    let response = client
        .post(format!("{}/api/v1/links", kurz.base))
        .json(&json!({ "url": "https://example.com/logged-redirect" }))
        .send()
        .await
        .expect("send");
    let code = code_of(response).await;
    // Redis failures are logged at most once every 10 s: redirect until one is.
    let mut answered = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let line = loop {
        let redirect = client
            .get(format!("{}/{code}", kurz.base))
            .send()
            .await
            .expect("send");
        assert_eq!(
            redirect.status(),
            302,
            "the store answers when Redis does not"
        );
        answered.push(request_id(&redirect));
        let text = std::fs::read_to_string(&log_path).expect("log");
        let within = text
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .find(|l| {
                l["message"] == "Redis call failed; serving from the next tier"
                    && l.get("request_id").is_some()
            });
        if let Some(line) = within {
            break line;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no Redis failure logged within a redirect:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let id = line["request_id"].as_str().expect("request_id");
    assert!(
        answered.iter().any(|a| a == id),
        "{id} is none of {answered:?}: {line}"
    );
    assert!(kurz.stop());
}
