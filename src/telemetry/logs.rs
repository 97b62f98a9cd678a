//! The request id on every log line written while a request is served: a task-local of the
//! request's future, added to a line by the event formatter when no span of the line names
//! the request already. The redirect's own span is at debug level (free unless asked for), so
//! without this a line written deep inside a redirect (Redis failing, say) would name no
//! request.

use std::fmt;
use std::future::Future;

use actix_web::http::header::HeaderValue;
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

tokio::task_local! {
    static REQUEST_ID: HeaderValue;
}

/// Runs `work` as the request `id`: the log lines it writes name it.
pub async fn in_request<F: Future>(id: HeaderValue, work: F) -> F::Output {
    REQUEST_ID.scope(id, work).await
}

/// An event format that adds `request_id` to lines written within a request whose spans do
/// not carry it (JSON: one more field; text: ` request_id=…` at the end).
pub struct WithRequestId<F> {
    pub inner: F,
    pub json: bool,
}

impl<S, N, F> FormatEvent<S, N> for WithRequestId<F>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let id = REQUEST_ID
            .try_with(|id| id.to_str().map(str::to_owned).ok())
            .ok()
            .flatten();
        let named = ctx.event_scope().is_some_and(|mut scope| {
            scope.any(|span| span.metadata().fields().field("request_id").is_some())
        });
        let Some(id) = id.filter(|_| !named) else {
            return self.inner.format_event(ctx, writer, event);
        };
        let mut line = String::new();
        self.inner
            .format_event(ctx, Writer::new(&mut line), event)?;
        let body = line.strip_suffix('\n').unwrap_or(&line);
        // Request ids are letters, digits and `-_.:` (checked where they are taken), so they
        // need no escaping in either format.
        match body.strip_suffix('}').filter(|_| self.json) {
            Some(open) => writeln!(writer, "{open},\"request_id\":\"{id}\"}}"),
            None => writeln!(writer, "{body} request_id={id}"),
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    #[derive(Clone, Default)]
    struct Lines(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Lines {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().expect("lock").extend_from_slice(bytes);
            Ok(bytes.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// What `log` wrote, in kurz's log format, `json` or not (the other modules' tests use it
    /// to read the lines they cause).
    pub(crate) fn logged(json: bool, log: impl FnOnce()) -> String {
        let lines = Lines::default();
        let writer = lines.clone();
        let builder = tracing_subscriber::fmt()
            .with_ansi(false)
            .without_time()
            .with_writer(move || writer.clone());
        let format = tracing_subscriber::fmt::format()
            .with_ansi(false)
            .without_time();
        if json {
            let subscriber = builder
                .json()
                .flatten_event(true)
                .event_format(WithRequestId {
                    inner: format.json().flatten_event(true),
                    json: true,
                })
                .finish();
            tracing::subscriber::with_default(subscriber, log);
        } else {
            let subscriber = builder
                .event_format(WithRequestId {
                    inner: format,
                    json: false,
                })
                .finish();
            tracing::subscriber::with_default(subscriber, log);
        }
        String::from_utf8(lines.0.lock().expect("lock").clone()).expect("utf-8")
    }

    fn within_request(log: impl FnOnce()) {
        REQUEST_ID.sync_scope(HeaderValue::from_static("abc-1"), log);
    }

    #[test]
    fn a_line_within_a_request_names_it_once_in_either_format() {
        let text = logged(false, || {
            within_request(|| tracing::warn!(n = 1, "deep down"))
        });
        assert!(text.ends_with("deep down n=1 request_id=abc-1\n"), "{text}");

        let json = logged(true, || {
            within_request(|| tracing::warn!(n = 1, "deep down"))
        });
        let line: serde_json::Value = serde_json::from_str(&json).expect("one JSON line");
        assert_eq!(line["request_id"], "abc-1", "{json}");
        assert_eq!(line["message"], "deep down");

        // A span that names the request already: the line is as it was.
        let json = logged(true, || {
            within_request(|| {
                let span = tracing::info_span!("request", request_id = "abc-1");
                let _entered = span.enter();
                tracing::warn!("in the span");
            })
        });
        let line: serde_json::Value = serde_json::from_str(&json).expect("one JSON line");
        assert_eq!(line.get("request_id"), None, "{json}");
        assert_eq!(line["span"]["request_id"], "abc-1", "{json}");

        // Outside a request, nothing is added.
        let text = logged(false, || tracing::warn!("at start-up"));
        assert!(!text.contains("request_id"), "{text}");
    }
}
