//! Runs the real `prefect-pagerduty-bridge` binary on a loopback port and
//! captures its logs.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_prefect-pagerduty-bridge");

/// A running bridge process; killed when dropped.
#[derive(Debug)]
pub struct Bridge {
    child: Child,
    /// Where it listens.
    pub addr: SocketAddr,
    logs: Arc<Mutex<Vec<String>>>,
    /// Its own spool directory, unless the test gave `--spool`.
    _spool_dir: Option<tempfile::TempDir>,
}

impl Bridge {
    /// Starts `serve` with `args` (plus `--listen 127.0.0.1:0 --log-format json`)
    /// and waits until it reports ready.
    pub fn serve(args: &[&str]) -> Self {
        Self::serve_with_env(args, &[])
    }

    /// As [`Bridge::serve`], with extra environment variables.
    pub fn serve_with_env(args: &[&str], env: &[(&str, &str)]) -> Self {
        Self::serve_at("127.0.0.1:0", args, env)
    }

    /// As [`Bridge::serve_with_env`], listening on `listen`.
    pub fn serve_at(listen: &str, args: &[&str], env: &[(&str, &str)]) -> Self {
        super::limit::arm();
        // PPB_BRIDGE_BIN runs another build (e.g. `--profile profiling` under perf).
        let bin = std::env::var("PPB_BRIDGE_BIN").unwrap_or_else(|_| BIN.to_owned());
        let mut cmd = Command::new(bin);
        cmd.arg("serve")
            .args(["--listen", listen, "--log-format", "json"])
            .args(args);
        let spool_dir = if args.contains(&"--spool") {
            None
        } else {
            let dir = tempfile::tempdir().expect("spool dir");
            cmd.arg("--spool").arg(dir.path().join("spool.redb"));
            Some(dir)
        };
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn bridge");
        let stderr = child.stderr.take().expect("stderr piped");
        let logs = Arc::new(Mutex::new(Vec::new()));
        let (ready_tx, ready_rx) = mpsc::channel();
        let sink = logs.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line)
                    && v["message"] == "prefect-pagerduty-bridge ready"
                {
                    let _ = ready_tx.send(v["listen"].as_str().unwrap_or_default().to_owned());
                }
                sink.lock().expect("lock").push(line);
            }
        });
        let addr = match ready_rx.recv_timeout(Duration::from_secs(20)) {
            Ok(a) => a.parse().expect("listen address"),
            Err(_) => {
                let _ = child.kill();
                let logs = logs.lock().expect("lock").join("\n");
                panic!("bridge did not become ready; its log:\n{logs}");
            }
        };
        Self {
            child,
            addr,
            logs,
            _spool_dir: spool_dir,
        }
    }

    /// `http://addr`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The intake URL of an action.
    pub fn intake(&self, action: &str) -> String {
        format!("http://{}/v1/prefect/{action}", self.addr)
    }

    /// Every log line so far.
    pub fn logs(&self) -> Vec<String> {
        self.logs.lock().expect("lock").clone()
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends SIGTERM and waits for the exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        self.child.wait().expect("wait for bridge")
    }

    /// SIGKILL, no goodbye.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Bridge {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
