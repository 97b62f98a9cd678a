//! A file system that a test can cut the power of: `powercut_fs.py` beside this file, a FUSE
//! daemon passing through to a backing directory but holding file data in memory until it is
//! fsynced. [`PowerCutFs::cut`] kills the daemon (SIGKILL) and unmounts: the backing directory
//! is then what a disk would hold after a power cut, which `kill -9` of a process on a real file
//! system cannot show (the OS keeps its page cache). Needs root and /dev/fuse, and Debian's
//! `python3-fusepy` (which brings libfuse2) for the system Python.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The interpreter Debian's `python3-fusepy` is installed for.
const PYTHON: &str = "/usr/bin/python3";
const INSTALL: &str = "apt-get install python3-fusepy (scripts/test.sh installs it when missing)";

pub struct PowerCutFs {
    daemon: Option<Child>,
    /// The daemon's stderr, read when it fails to mount.
    log: tempfile::NamedTempFile,
    mount: tempfile::TempDir,
    /// The mount point as /proc/self/mountinfo names it, found before mounting (once the daemon
    /// is gone the mount point itself cannot be looked at).
    point: PathBuf,
    backing: tempfile::TempDir,
}

impl PowerCutFs {
    /// Mounts a fresh, empty file system and waits until it is mounted; fails naming what to
    /// install when FUSE for Python is missing.
    pub fn mount() -> Self {
        let mount = tempfile::tempdir().expect("tempdir");
        let backing = tempfile::tempdir().expect("tempdir");
        assert!(
            Path::new(PYTHON).exists(),
            "the power-cut file system needs {PYTHON}: {INSTALL}"
        );
        let point = mount.path().canonicalize().expect("mount point");
        let log = tempfile::NamedTempFile::new().expect("log file");
        let script = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/it/harness/powercut_fs.py"
        );
        let mut daemon = Command::new(PYTHON)
            .arg(script)
            .arg(backing.path())
            .arg(mount.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log.reopen().expect("log file"))
            .spawn()
            .unwrap_or_else(|e| panic!("{PYTHON} does not start ({e}): {INSTALL}"));
        let deadline = Instant::now() + Duration::from_secs(10);
        while !is_mounted(&point) {
            if let Some(status) = daemon.try_wait().expect("try_wait") {
                let stderr = std::fs::read_to_string(log.path()).unwrap_or_default();
                panic!(
                    "the power-cut file system did not mount ({status}): {stderr}\n\
                     It needs root, /dev/fuse and FUSE for Python: {INSTALL}"
                );
            }
            assert!(
                Instant::now() < deadline,
                "the power-cut file system is not mounted after 10 s"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Self {
            daemon: Some(daemon),
            log,
            mount,
            point,
            backing,
        }
    }

    /// Where the file system is mounted: files here lose what was not synced at a cut.
    pub fn path(&self) -> &Path {
        self.mount.path()
    }

    /// The directory beneath: after a cut, what the disk holds.
    pub fn backing(&self) -> &Path {
        self.backing.path()
    }

    /// `name` under the mount, and the same file in the backing directory.
    pub fn file(&self, name: &str) -> (PathBuf, PathBuf) {
        (self.path().join(name), self.backing().join(name))
    }

    /// The power cut: SIGKILL the daemon (everything not synced is gone with it), then detach
    /// the mount. Idempotent.
    pub fn cut(&mut self) {
        if let Some(mut daemon) = self.daemon.take() {
            daemon.kill().expect("SIGKILL the file system's daemon");
            daemon.wait().expect("reaped");
        }
        if is_mounted(&self.point) {
            let status = Command::new("umount")
                .arg("-l")
                .arg(&self.point)
                .status()
                .expect("umount runs");
            assert!(status.success(), "unmounting the power-cut file system");
        }
    }
}

impl Drop for PowerCutFs {
    fn drop(&mut self) {
        // Before the directories go: a mount point still mounted cannot be removed.
        if let Some(mut daemon) = self.daemon.take() {
            let _ = daemon.kill();
            let _ = daemon.wait();
        }
        if is_mounted(&self.point) {
            let _ = Command::new("umount").arg("-l").arg(&self.point).status();
        }
    }
}

/// Whether `dir` is a FUSE mount point, from /proc/self/mountinfo (field 5 is the mount point,
/// the file system type follows the " - " separator).
fn is_mounted(point: &Path) -> bool {
    let Some(target) = point.to_str() else {
        return false;
    };
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .any(|line| {
            let mut fields = line.split(' ');
            let point = fields.nth(4);
            let fs_type = line.split(" - ").nth(1).and_then(|t| t.split(' ').next());
            point == Some(target) && fs_type == Some("fuse")
        })
}
