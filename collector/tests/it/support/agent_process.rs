//! Real agent processes for the control-plane tests: this test binary run again as
//! [`run`], with the agent configured from `HOLMES_*` variables. Each process prints
//! its rules in force and their version whenever they change, so a test sees a pushed
//! rule arrive (and the agent's own come back) without asking the collector.

use std::io::{BufRead, Write};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use holmes_agent::{Holmes, Metric};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;

/// Set in the child's environment: it is an agent process.
const CHILD: &str = "HOLMES_TEST_AGENT_PROCESS";

/// The agent process: samples every 100 ms; prints `RULES v=<version> cpu=<rule>
/// memory=<rule> threads=<rule>` at start and on every change; stops when its
/// standard input closes.
#[test]
#[ignore = "the agent process the control tests start"]
fn run() {
    if std::env::var(CHILD).is_err() {
        return;
    }
    let agent = Holmes::from_env()
        .unwrap()
        .collect_interval(Duration::from_millis(100))
        .send_interval(Duration::from_millis(200))
        .max_backoff(Duration::from_millis(300))
        .start()
        .unwrap();
    let done = Arc::new(AtomicBool::new(false));
    let stdin_done = Arc::clone(&done);
    std::thread::spawn(move || {
        for _ in std::io::stdin().lock().lines() {}
        stdin_done.store(true, Ordering::Release);
    });
    let mut last = String::new();
    while !done.load(Ordering::Acquire) {
        let rules = agent.rules();
        let text = |m: Metric| rules.get(&m).map_or("-".to_owned(), |r| r.to_string());
        let line = format!(
            "RULES v={} cpu={} memory={} threads={}",
            agent.stats().rules_version,
            text(Metric::CpuPercent),
            text(Metric::MemoryPercent),
            text(Metric::Threads)
        );
        if line != last {
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "{line}");
            let _ = out.flush();
            last = line;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    agent.stop();
}

/// A running agent process.
pub(crate) struct AgentProcess {
    child: Child,
    lines: mpsc::UnboundedReceiver<String>,
    last: String,
    /// Its instance id.
    pub(crate) instance: String,
}

impl AgentProcess {
    /// Starts an agent of `service` named `instance`, with `labels` (`k=v,k=v`),
    /// connected to the collector at `grpc`, every rule of its own off, plus `env`.
    pub(crate) fn start(
        service: &str,
        instance: &str,
        grpc: SocketAddr,
        labels: &str,
        env: &[(&str, &str)],
    ) -> AgentProcess {
        let mut cmd = Command::new(std::env::current_exe().unwrap());
        cmd.args([
            "--exact",
            "support::agent_process::run",
            "--ignored",
            "--nocapture",
        ])
        .env(CHILD, "1")
        .env("HOLMES_SERVICE", service)
        .env("HOLMES_INSTANCE", instance)
        .env("HOLMES_COLLECTOR", format!("http://{grpc}"))
        .env("HOLMES_LABELS", labels)
        .env("HOLMES_RULE_CPU", "off")
        .env("HOLMES_RULE_MEMORY", "off")
        .env("HOLMES_RULE_THREADS", "off")
        .env("HOLMES_RULE_TASKS", "off")
        .env("HOLMES_RULE_HEAP", "off")
        .env("HOLMES_BASELINE_INTERVAL", "off")
        .env("RUST_LOG", "warn")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("the agent process starts");
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut reader = BufReader::new(stdout).lines();
            while let Ok(Some(line)) = reader.next_line().await {
                if let Some(rules) = line.strip_prefix("RULES ") {
                    let _ = tx.send(rules.to_owned());
                }
            }
        });
        AgentProcess {
            child,
            lines,
            last: String::new(),
            instance: instance.to_owned(),
        }
    }

    /// Waits (up to 60 s) until the agent prints rules for which `check` holds; returns
    /// that line (`v=.. cpu=.. memory=.. threads=..`).
    pub(crate) async fn rules_where(&mut self, what: &str, check: impl Fn(&str) -> bool) -> String {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            if check(&self.last) {
                return self.last.clone();
            }
            match tokio::time::timeout_at(deadline, self.lines.recv()).await {
                Ok(Some(line)) => self.last = line,
                Ok(None) => panic!(
                    "{} exited waiting for {what}; last: {}",
                    self.instance, self.last
                ),
                Err(_) => panic!(
                    "{} did not show {what} within 60 s; last: {}",
                    self.instance, self.last
                ),
            }
        }
    }

    /// Closes its standard input (the agent stops and flushes) and waits for it.
    pub(crate) async fn stop(mut self) {
        drop(self.child.stdin.take());
        let status = tokio::time::timeout(Duration::from_secs(20), self.child.wait()).await;
        assert!(
            matches!(status, Ok(Ok(s)) if s.success()),
            "{} did not stop cleanly: {status:?}",
            self.instance
        );
    }
}
