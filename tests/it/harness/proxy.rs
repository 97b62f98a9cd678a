//! A TCP proxy between kurz and a server it depends on (DynamoDB Local, redis-server), which a
//! test turns slow, capped, silent or resetting while kurz runs. Faults apply per chunk the
//! client writes: the SDK and the Redis client write each request in one go, so in practice
//! per request.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::time::Instant;

/// What the proxy does to the traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Passes everything on.
    None,
    /// Holds each request this long before passing it on.
    Delay(Duration),
    /// Lets one request through per interval, all connections together: a server that can
    /// take only so many calls a second. Requests queue, as they would on such a server, and
    /// are passed on even if the client has given up on them.
    Cap(Duration),
    /// Accepts connections and requests and never answers; when the fault ends, the
    /// connections it held are closed.
    Silent,
    /// Resets every connection, open ones included.
    Reset,
    /// Passes every request on and throws the server's answers away: the write lands, the
    /// client never hears so (the "committed, then timed out" failure of a remote store).
    /// When the fault ends, the connections it held are closed.
    DropAnswers,
    /// Passes every request on at once and holds the answer to each request that contains the
    /// bytes given to [`ChaosProxy::hold_answers_to`] until the fault ends: the server has
    /// done the work (a read has read), the client hears of it only later.
    HoldAnswers,
}

struct Shared {
    upstream: SocketAddr,
    fault: watch::Sender<Fault>,
    /// The next free slot of a `Cap`.
    next_slot: Mutex<Instant>,
    forwarded: AtomicU64,
    /// Answers thrown away by `DropAnswers`.
    dropped: AtomicU64,
    /// DynamoDB `TransactWriteItems` calls still to answer with a conflict (see
    /// [`ChaosProxy::conflict_transactions`]).
    conflicts: AtomicU64,
    /// What a request must contain for `HoldAnswers` to hold its answer.
    hold_needle: Mutex<Vec<u8>>,
    /// Answers `HoldAnswers` has held so far.
    held: AtomicU64,
    /// Bytes replaced in every request, whatever the fault (same length, so framing holds).
    rewrite: Mutex<Option<(Vec<u8>, Vec<u8>)>>,
    /// What [`ChaosProxy::count_requests_with`] looks for, and how often it was seen.
    count_needle: Mutex<Vec<u8>>,
    counted: AtomicU64,
}

pub struct ChaosProxy {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl ChaosProxy {
    /// A proxy on a free local port in front of `upstream` (`host:port`, or a URL such as
    /// `http://host:port` or `redis://host:port`), passing everything on until told otherwise.
    pub async fn start(upstream: &str) -> Self {
        let target = upstream
            .split_once("://")
            .map_or(upstream, |(_, rest)| rest);
        let upstream = tokio::net::lookup_host(target)
            .await
            .expect("upstream address")
            .next()
            .expect("upstream address");
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let addr = listener.local_addr().expect("proxy address");
        let shared = Arc::new(Shared {
            upstream,
            fault: watch::Sender::new(Fault::None),
            next_slot: Mutex::new(Instant::now()),
            forwarded: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            conflicts: AtomicU64::new(0),
            hold_needle: Mutex::new(Vec::new()),
            held: AtomicU64::new(0),
            rewrite: Mutex::new(None),
            count_needle: Mutex::new(Vec::new()),
            counted: AtomicU64::new(0),
        });
        let accepting = Arc::clone(&shared);
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                tokio::spawn(relay(client, Arc::clone(&accepting)));
            }
        });
        Self { addr, shared, task }
    }

    /// `http://127.0.0.1:PORT`, for endpoint settings.
    pub fn url(&self) -> String {
        self.url_with_scheme("http")
    }

    /// `{scheme}://127.0.0.1:PORT`, e.g. for a Redis URL.
    pub fn url_with_scheme(&self, scheme: &str) -> String {
        format!("{scheme}://{}", self.addr)
    }

    pub fn set(&self, fault: Fault) {
        *self.shared.next_slot.lock().expect("lock") = Instant::now();
        self.shared.fault.send_replace(fault);
    }

    /// Requests passed on to the server so far.
    pub fn forwarded(&self) -> u64 {
        self.shared.forwarded.load(Ordering::SeqCst)
    }

    /// Answers `DropAnswers` has thrown away so far (in chunks, as the server wrote them).
    pub fn dropped(&self) -> u64 {
        self.shared.dropped.load(Ordering::SeqCst)
    }

    /// Answers the next `n` DynamoDB `TransactWriteItems` calls itself, without passing them
    /// on, as DynamoDB answers a transaction that met another one in flight on the same item:
    /// cancelled, every item's reason `TransactionConflict`. Nothing of them is written.
    pub fn conflict_transactions(&self, n: u64) {
        self.shared.conflicts.store(n, Ordering::SeqCst);
    }

    /// Conflicts [`conflict_transactions`](Self::conflict_transactions) has not answered yet.
    pub fn conflicts_left(&self) -> u64 {
        self.shared.conflicts.load(Ordering::SeqCst)
    }

    /// [`Fault::HoldAnswers`] for requests that contain `needle` (e.g. a code the request names).
    pub fn hold_answers_to(&self, needle: &str) {
        *self.shared.hold_needle.lock().expect("lock") = needle.as_bytes().to_vec();
        self.set(Fault::HoldAnswers);
    }

    /// Replaces `from` with `to` (of the same length) in every request from now on; e.g. a
    /// request token, so that the server meets it as one it never saw.
    pub fn rewrite_requests(&self, from: &str, to: &str) {
        assert_eq!(from.len(), to.len(), "a rewrite keeps the length");
        *self.shared.rewrite.lock().expect("lock") = Some((from.into(), to.into()));
    }

    /// Counts, from now on, the requests whose first chunk contains `needle` (a header value,
    /// say: the SDK and the Redis client write a request's head in one go).
    pub fn count_requests_with(&self, needle: &str) {
        *self.shared.count_needle.lock().expect("lock") = needle.as_bytes().to_vec();
        self.shared.counted.store(0, Ordering::SeqCst);
    }

    /// Requests seen with the needle of [`count_requests_with`](Self::count_requests_with).
    pub fn counted(&self) -> u64 {
        self.shared.counted.load(Ordering::SeqCst)
    }

    /// Answers `HoldAnswers` has held so far (each is passed on when the fault ends).
    pub fn held(&self) -> u64 {
        self.shared.held.load(Ordering::SeqCst)
    }
}

impl Drop for ChaosProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn relay(client: TcpStream, shared: Arc<Shared>) {
    let mut faults = shared.fault.subscribe();
    let _ = client.set_nodelay(true);
    let fault = *faults.borrow_and_update();
    match fault {
        Fault::Reset => return reset(&client),
        Fault::Silent => return hold(&mut faults).await,
        _ => {}
    }
    let Ok(server) = TcpStream::connect(shared.upstream).await else {
        return reset(&client);
    };
    let _ = server.set_nodelay(true);
    let (mut from_client, to_client) = client.into_split();
    // Written by the server's answers and by the proxy's own (one request at a time on a
    // connection, so the two never interleave).
    let to_client = tokio::sync::Mutex::new(to_client);
    let (mut from_server, mut to_server) = server.into_split();
    // A request on this connection asked for what `HoldAnswers` holds: its answer is next.
    let hold_next = std::sync::atomic::AtomicBool::new(false);
    let requests = async {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = match from_client.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            if let Some((from, to)) = &*shared.rewrite.lock().expect("lock") {
                let mut at = 0;
                while let Some(found) = buf[at..n].windows(from.len()).position(|w| w == from) {
                    buf[at + found..at + found + to.len()].copy_from_slice(to);
                    at += found + to.len();
                }
            }
            {
                let needle = shared.count_needle.lock().expect("lock");
                if !needle.is_empty() && buf[..n].windows(needle.len()).any(|w| w == *needle) {
                    shared.counted.fetch_add(1, Ordering::SeqCst);
                }
            }
            if is_transaction(&buf[..n]) && take_one(&shared.conflicts) {
                let Ok(request) = whole_request(&mut from_client, &buf[..n]).await else {
                    return;
                };
                let answer = conflict_answer(&request);
                if to_client.lock().await.write_all(&answer).await.is_err() {
                    return;
                }
                continue;
            }
            let fault = *faults.borrow_and_update();
            match fault {
                Fault::None | Fault::DropAnswers => {}
                Fault::HoldAnswers => {
                    let needle = shared.hold_needle.lock().expect("lock").clone();
                    if buf[..n].windows(needle.len().max(1)).any(|w| w == needle) {
                        hold_next.store(true, Ordering::SeqCst);
                    }
                }
                Fault::Delay(by) => tokio::time::sleep(by).await,
                Fault::Cap(interval) => {
                    let slot = {
                        let mut next = shared.next_slot.lock().expect("lock");
                        let slot = (*next).max(Instant::now());
                        *next = slot + interval;
                        slot
                    };
                    tokio::time::sleep_until(slot).await;
                }
                Fault::Silent | Fault::Reset => return hold(&mut faults).await,
            }
            if to_server.write_all(&buf[..n]).await.is_err() {
                return;
            }
            shared.forwarded.fetch_add(1, Ordering::SeqCst);
        }
    };
    let mut dropping = shared.fault.subscribe();
    let answers = async {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = match from_server.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            let fault = *dropping.borrow_and_update();
            if fault == Fault::DropAnswers {
                shared.dropped.fetch_add(1, Ordering::SeqCst);
                continue;
            }
            if fault == Fault::HoldAnswers && hold_next.swap(false, Ordering::SeqCst) {
                shared.held.fetch_add(1, Ordering::SeqCst);
                let _ = dropping.wait_for(|f| *f != Fault::HoldAnswers).await;
            }
            if to_client.lock().await.write_all(&buf[..n]).await.is_err() {
                return;
            }
        }
    };
    // A connection that may have lost an answer is out of step with its client: closed when
    // the fault ends, as a server would close one its client gave up on.
    let mut changes = shared.fault.subscribe();
    let drop_ended = async {
        let _ = changes.wait_for(|f| *f == Fault::DropAnswers).await;
        let _ = changes.wait_for(|f| *f != Fault::DropAnswers).await;
    };
    let mut resets = shared.fault.subscribe();
    let reset_now = resets.wait_for(|f| *f == Fault::Reset);
    let reset = tokio::select! {
        _ = requests => false,
        _ = answers => false,
        _ = drop_ended => false,
        _ = reset_now => true,
    };
    if reset {
        let _ = to_client.lock().await.as_ref().set_zero_linger();
    }
}

/// Whether `request` (its first chunk) is a DynamoDB `TransactWriteItems` call.
fn is_transaction(request: &[u8]) -> bool {
    const TARGET: &[u8] = b"DynamoDB_20120810.TransactWriteItems";
    request.windows(TARGET.len()).any(|w| w == TARGET)
}

/// Takes one from `counter` unless it is 0.
fn take_one(counter: &AtomicU64) -> bool {
    counter
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok()
}

/// The request whose first chunk is `head`, read to the end of its body.
async fn whole_request(
    from_client: &mut tokio::net::tcp::OwnedReadHalf,
    head: &[u8],
) -> std::io::Result<Vec<u8>> {
    let mut request = head.to_vec();
    let text = String::from_utf8_lossy(head);
    let Some(end) = text.find("\r\n\r\n") else {
        return Ok(request);
    };
    let length: usize = text[..end]
        .lines()
        .find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse().ok())?
        })
        .unwrap_or(0);
    let mut left = length.saturating_sub(head.len() - (end + 4));
    let mut buf = vec![0u8; 64 * 1024];
    while left > 0 {
        match from_client.read(&mut buf[..left.min(64 * 1024)]).await? {
            0 => return Err(std::io::ErrorKind::UnexpectedEof.into()),
            n => {
                request.extend_from_slice(&buf[..n]);
                left -= n;
            }
        }
    }
    Ok(request)
}

/// DynamoDB's answer to a transaction cancelled by a conflict, one reason per item of the
/// request.
fn conflict_answer(request: &[u8]) -> Vec<u8> {
    let items = String::from_utf8_lossy(request)
        .matches("\"TableName\"")
        .count()
        .max(1);
    let reasons = vec![
        r#"{"Code":"TransactionConflict","Message":"Transaction is ongoing for the item"}"#;
        items
    ];
    let body = format!(
        r#"{{"__type":"com.amazonaws.dynamodb.v20120810#TransactionCanceledException","CancellationReasons":[{}],"Message":"Transaction cancelled, please refer cancellation reasons for specific reasons [{}]"}}"#,
        reasons.join(","),
        vec!["TransactionConflict"; items].join(", "),
    );
    format!(
        "HTTP/1.1 400 Bad Request\r\nContent-Type: application/x-amz-json-1.0\r\n\
         x-amzn-RequestId: chaos-proxy-conflict\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// Holds a connection without answering until the fault changes, then closes it.
async fn hold(faults: &mut watch::Receiver<Fault>) {
    let _ = faults.changed().await;
}

fn reset(client: &TcpStream) {
    let _ = client.set_zero_linger();
}
