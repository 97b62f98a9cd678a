//! The real `kurz` binary as a child process, on port 0 with a data file of its own, for what
//! only a process shows: signals, restarts, SIGKILL, start-up errors.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::ADMIN_TOKEN;

/// The real `kurz` binary, on port 0, owning its process so tests can kill it.
pub struct KurzProcess {
    pub child: Child,
    pub base: String,
}

impl KurzProcess {
    /// Starts `kurz serve` with `KURZ__*` variables for a data file at `data` and waits until
    /// it prints where it listens. Its logs go to the test's stderr.
    pub fn start(data: &Path, extra_env: &[(&str, &str)]) -> Self {
        Self::start_with_logs(data, extra_env, Stdio::inherit())
    }

    /// As [`start`](Self::start), its logs (stderr) going to `logs`, e.g. a file to read.
    pub fn start_with_logs(data: &Path, extra_env: &[(&str, &str)], logs: Stdio) -> Self {
        // Cargo names the binary to tests and benches; the fleet's replicator (an example)
        // shares this harness without starting kurz.
        let Some(kurz) = option_env!("CARGO_BIN_EXE_kurz") else {
            panic!("only tests and benches are given the kurz binary to start");
        };
        Self::spawn(Path::new(kurz), data, extra_env, logs)
    }

    /// As [`start`](Self::start), with another `kurz` binary (an earlier build, for a
    /// benchmark's A/B).
    #[allow(dead_code)] // the benchmarks' only
    pub fn start_program(program: &Path, data: &Path, extra_env: &[(&str, &str)]) -> Self {
        Self::spawn(program, data, extra_env, Stdio::inherit())
    }

    fn spawn(program: &Path, data: &Path, extra_env: &[(&str, &str)], logs: Stdio) -> Self {
        let mut command = Command::new(program);
        command
            .arg("serve")
            .env("KURZ__SERVER__BIND", "127.0.0.1:0")
            .env("KURZ__STORE__PATH", data)
            .env("KURZ__AUTH__ADMIN_TOKEN", ADMIN_TOKEN)
            .env("KURZ__LOG__LEVEL", "warn")
            // One trusted client making many requests; tests of the limits set them.
            .env("KURZ__LIMITS__RATE__CREATES_PER_MINUTE_PER_IP", "0")
            .env("KURZ__LIMITS__RATE__MISSES_PER_MINUTE_PER_IP", "0")
            .stdout(Stdio::piped())
            .stderr(logs);
        for (k, v) in extra_env {
            command.env(k, v);
        }
        let mut child = command.spawn().expect("kurz binary starts");
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = BufReader::new(stdout).lines();
        let base = loop {
            let line = lines
                .next()
                .expect("kurz exited before listening")
                .expect("stdout line");
            if let Some(addr) = line.strip_prefix("kurz listening on ") {
                break addr.trim().to_owned();
            }
        };
        // Keep draining stdout so the process never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        Self { child, base }
    }

    /// Sends `signal` (e.g. `-HUP`) to the process.
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([signal, &self.child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill {signal}");
    }

    pub fn sigterm(&self) {
        self.signal("-TERM");
    }

    /// SIGTERM, then waits for a clean exit (flushed clicks, closed store); kills it if it
    /// does not exit within 30 s.
    pub fn stop(self) -> bool {
        self.sigterm();
        self.wait()
    }

    /// Waits for the process to exit (at most 30 s) and returns whether it exited cleanly.
    pub fn wait(mut self) -> bool {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status.success();
            }
            assert!(Instant::now() < deadline, "kurz did not exit within 30 s");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for KurzProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn data_file(dir: &tempfile::TempDir) -> PathBuf {
    dir.path().join("kurz.redb")
}
