//! The built `millwatch serve` as a child process in a temporary working directory, on a port
//! it picks itself (`--listen 127.0.0.1:0`, the address read from its log), stopped when
//! dropped.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A running `millwatch serve`.
pub struct Served {
    child: Child,
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    /// The working directory (the default store's file lands here), removed when dropped.
    _dir: tempfile::TempDir,
    /// Its stderr so far.
    pub log: Arc<Mutex<String>>,
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The repository's root, where examples/data lives.
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The binary.
pub fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_millwatch"))
}

impl Served {
    /// Starts `serve ARGS --listen 127.0.0.1:0` in a fresh temporary directory.
    pub fn start(args: &[&str]) -> Served {
        Served::start_command(Command::new(bin()), args)
    }

    /// As `start`, with soft and hard limits of `nofile` open files (util-linux `prlimit`).
    pub fn start_limited(args: &[&str], nofile: u64) -> Served {
        let mut command = Command::new("prlimit");
        command
            .arg(format!("--nofile={nofile}:{nofile}"))
            .arg(bin());
        Served::start_command(command, args)
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    fn start_command(mut command: Command, args: &[&str]) -> Served {
        let dir = tempfile::tempdir().expect("a temp dir");
        let mut child = command
            .arg("serve")
            .args(args)
            .args(["--listen", "127.0.0.1:0"])
            .current_dir(dir.path())
            .env("MILLWATCH_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("serve starts");
        let stderr = child.stderr.take().expect("stderr");
        let log = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let sink = log.clone();
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(at) = line.find("listening on http://")
                    && let Some(t) = tx.take()
                {
                    let addr = line[at + "listening on http://".len()..]
                        .split_whitespace()
                        .next()
                        .unwrap_or_default()
                        .to_owned();
                    let _ = t.send(addr);
                }
                let mut l = sink.lock().unwrap();
                l.push_str(&line);
                l.push('\n');
            }
        });
        let addr = match rx.recv_timeout(Duration::from_secs(20)) {
            Ok(a) => a,
            Err(_) => {
                let _ = child.kill();
                panic!("serve did not listen; log:\n{}", log.lock().unwrap());
            }
        };
        Served {
            child,
            base: format!("http://{addr}"),
            _dir: dir,
            log,
        }
    }

    /// GETs `path` and returns the status and the body's text.
    pub async fn get(&self, path: &str) -> (u16, String) {
        let r = reqwest::get(format!("{}{path}", self.base))
            .await
            .expect("the server answers");
        (r.status().as_u16(), r.text().await.unwrap_or_default())
    }

    /// Polls `GET path` until `ok` holds for its body, for up to 15 s.
    pub async fn wait_for(&self, path: &str, ok: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let (_, body) = self.get(path).await;
            if ok(&body) {
                return body;
            }
            if Instant::now() > deadline {
                panic!("GET {path} never became as expected; last: {body}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}
