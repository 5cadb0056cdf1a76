//! Test harness: starts the real `warren serve` on a free loopback port with its own data directory,
//! run directory and cgroup parent, sharing one templates directory so `base` is built once per
//! machine, and drives it through the HTTP API and the `warren` CLI like a user would.

use std::io::Read;
use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::{json, Value};

/// Where test daemons keep their state (reused between runs; each start sweeps leftovers).
pub const ROOT: &str = "/var/lib/warren-e2e";

pub fn warren_bin() -> PathBuf {
    std::env::var_os("WARREN_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/warren/bin/warren"))
}

/// Polls `f` until it returns `Some`, or panics with `what` after `timeout`.
pub fn wait_for<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out after {timeout:?} waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub struct Daemon {
    /// Keeps connections alive between calls, as a real client would.
    pub http: ureq::Agent,
    pub name: String,
    pub port: u16,
    pub data_dir: PathBuf,
    pub config: PathBuf,
    child: Mutex<Option<Child>>,
    key: Mutex<String>,
}

/// A bridge name and a /24 for the daemon `name`, the same on every run.
pub fn test_network(name: &str) -> (String, String) {
    let h = name.bytes().fold(0xcbf2_9ce4_8422_2325u64, |a, b| (a ^ u64::from(b)).wrapping_mul(0x100_0000_01b3));
    (format!("wt{:08x}", h as u32), format!("10.{}.{}.0/24", 100 + (h >> 32) % 100, (h >> 40) % 256))
}

/// A loopback port no other daemon of this test process was given. Ports come from below the kernel's
/// ephemeral range (so a client connection's local port cannot take one between the check and the
/// daemon's bind) and from a counter (so two tests starting at once never get the same one).
fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU16, Ordering};
    const FIRST: u16 = 20_000;
    const SPAN: u16 = 12_000;
    static NEXT: AtomicU16 = AtomicU16::new(0);
    // Test binaries run one after another, but start each one at its own offset anyway.
    let base = (std::process::id() % u32::from(SPAN)) as u16;
    for _ in 0..SPAN {
        let port = FIRST + (base + NEXT.fetch_add(1, Ordering::Relaxed)) % SPAN;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free loopback port between {FIRST} and {}", FIRST + SPAN)
}

impl Daemon {
    /// Starts a daemon named `name` and waits until it serves and `base` is ready.
    pub fn start(name: &str) -> Daemon {
        Self::start_in(Path::new(ROOT), name)
    }

    /// Like [`Daemon::start`], from an empty state store: what an earlier (perhaps failed) run
    /// left — sandboxes, pools, snapshots, keys — is swept at start instead of carried over.
    pub fn start_fresh(name: &str) -> Daemon {
        let _ = std::fs::remove_file(Path::new(ROOT).join(name).join("state.redb"));
        Self::start(name)
    }

    /// Like [`Daemon::start`], with state under `root` (templates in `root/templates`).
    pub fn start_in(root: &Path, name: &str) -> Daemon {
        Self::start_with(root, name, "")
    }

    /// Like [`Daemon::start_in`], with `extra` TOML added to the config: whole tables (e.g.
    /// `"[sandbox]\nmax_sandboxes = 6000\n"`), after top-level keys if it starts with any.
    /// `WARREN_E2E_RUNTIME` sets every test daemon's default runtime (to run suites on gVisor).
    pub fn start_with(root: &Path, name: &str, extra: &str) -> Daemon {
        let (top, extra) = match extra.find("\n[").map(|i| i + 1).or(extra.starts_with('[').then_some(0)) {
            Some(i) => extra.split_at(i),
            None if extra.contains('[') => ("", extra),
            None => (extra, ""),
        };
        let mut top = top.to_owned();
        if let Ok(rt) = std::env::var("WARREN_E2E_RUNTIME") {
            if !top.contains("default_runtime") {
                top.push_str(&format!("default_runtime = {rt:?}\n"));
            }
        }
        let data_dir = root.join(name);
        // Each test daemon gets its own bridge and subnet (several run at once).
        let network = if extra.contains("[network]") {
            String::new()
        } else {
            let (bridge, cidr) = test_network(name);
            format!("[network]\nbridge = \"{bridge}\"\ncidr = \"{cidr}\"\n")
        };
        // Test daemons share one templates directory: a template one test makes would otherwise
        // be warmed up by every daemon started after it. Tests of that feature turn it on.
        let mut warm =
            if extra.contains("[gvisor]") { "" } else { "[gvisor]\ntemplate_memory_snapshots = false\n" }.to_owned();
        // `WARREN_E2E_RUNSC_DEBUG=dir` keeps runsc's own debug logs of test daemons there (only
        // where the test's config has no [gvisor] table of its own).
        if let (false, Ok(dir)) = (warm.is_empty(), std::env::var("WARREN_E2E_RUNSC_DEBUG")) {
            warm.push_str(&format!("debug_log = {dir:?}\n"));
        }
        let extra = format!("{extra}{network}{warm}");
        std::fs::create_dir_all(&data_dir).unwrap();
        let port = free_port();
        let config = data_dir.join("config.toml");
        std::fs::write(
            &config,
            format!(
                "data_dir = {data:?}\nrun_dir = {run:?}\nlisten = \"127.0.0.1:{port}\"\n{top}\
                 [native]\ncgroup_parent = \"warren-e2e-{name}\"\nstorage_size_gb = 64\n\
                 [templates]\ndir = {tpl:?}\n{extra}",
                data = data_dir.display().to_string(),
                run = format!("/run/warren-e2e/{name}"),
                tpl = root.join("templates").display().to_string(),
            ),
        )
        .unwrap();
        let d = Daemon {
            http: ureq::AgentBuilder::new().max_idle_connections_per_host(64).build(),
            name: name.to_owned(),
            port,
            data_dir,
            config,
            child: Mutex::new(None),
            key: Mutex::new(String::new()),
        };
        d.spawn();
        d
    }

    fn spawn(&self) {
        let log = std::fs::File::create(self.data_dir.join("daemon.log")).unwrap();
        let mut cmd = Command::new(warren_bin());
        cmd.args(["serve", "--config"]).arg(&self.config).stdout(Stdio::null()).stderr(log);
        cmd.env("WARREN_LOG", std::env::var("WARREN_LOG").unwrap_or_else(|_| "info".into()));
        // SAFETY: prctl is async-signal-safe. The daemon dies with the test process.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
                Ok(())
            });
        }
        let child = cmd.spawn().expect("starting warren serve (build it with scripts/build.sh)");
        *self.child.lock().unwrap() = Some(child);
        wait_for("the daemon to answer /health", Duration::from_secs(60), || {
            self.assert_running();
            ureq::get(&format!("{}/health", self.url())).call().ok()
        });
        let key = std::fs::read_to_string(self.data_dir.join("api_key")).unwrap();
        *self.key.lock().unwrap() = key.trim().to_owned();
        wait_for("the base template", Duration::from_secs(1200), || {
            self.assert_running();
            let (status, v) = self.api("GET", "/templates/base", None);
            match v["status"].as_str() {
                Some("ready") => Some(()),
                Some("failed") => panic!("building base failed: {}", v["error"]),
                _ if status == 404 => {
                    self.api("POST", "/templates", Some(json!({"templateID": "base"})));
                    None
                }
                _ => None,
            }
        });
    }

    /// Panics with the daemon's log if it has exited: whatever answers on its port is then not it.
    fn assert_running(&self) {
        if let Some(c) = self.child.lock().unwrap().as_mut() {
            if let Ok(Some(status)) = c.try_wait() {
                panic!("warren serve exited with {status}: {}", self.log());
            }
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.data_dir.join("daemon.log")).unwrap_or_default()
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn key(&self) -> String {
        self.key.lock().unwrap().clone()
    }

    /// SIGKILLs the daemon (sandboxes keep running).
    pub fn kill9(&self) {
        if let Some(mut c) = self.child.lock().unwrap().take() {
            c.kill().unwrap();
            c.wait().unwrap();
        }
    }

    pub fn restart(&self) {
        self.kill9();
        self.spawn();
    }

    /// A control-plane call; returns the status and the JSON body (Null when empty).
    pub fn api(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        self.api_as(&self.key(), method, path, body)
    }

    /// A control-plane call with another API key (a team's).
    pub fn api_as(&self, key: &str, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let req = self.http.request(method, &format!("{}{}", self.url(), path)).set("X-API-KEY", key);
        let r = match body {
            Some(b) => req.send_json(b),
            None => req.call(),
        };
        into_json(r)
    }

    /// Like [`Daemon::api`], with the answer's headers (names lowercased).
    pub fn api_with_headers(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> (u16, std::collections::HashMap<String, String>, Value) {
        let req = self.http.request(method, &format!("{}{}", self.url(), path)).set("X-API-KEY", &self.key());
        let r = match body {
            Some(b) => req.send_json(b),
            None => req.call(),
        };
        match r {
            Ok(resp) | Err(ureq::Error::Status(_, resp)) => {
                let headers = resp
                    .headers_names()
                    .into_iter()
                    .filter_map(|n| resp.header(&n).map(|v| (n.to_ascii_lowercase(), v.to_owned())))
                    .collect();
                let status = resp.status();
                let text = resp.into_string().unwrap_or_default();
                (status, headers, serde_json::from_str(&text).unwrap_or(Value::Null))
            }
            Err(e) => panic!("request failed: {e}"),
        }
    }

    pub fn raw(&self, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> (u16, Vec<u8>) {
        let mut req = self.http.request(method, &format!("{}{}", self.url(), path));
        for (k, v) in headers {
            req = req.set(k, v);
        }
        into_bytes(req.send_bytes(body))
    }

    /// Runs the CLI against this daemon.
    pub fn cli(&self, args: &[&str]) -> Output {
        Command::new(warren_bin())
            .args(args)
            .env("WARREN_URL", self.url())
            .env("WARREN_API_KEY", self.key())
            .output()
            .unwrap()
    }

    pub fn create(&self, body: Value) -> Sandbox {
        self.try_create(body).unwrap_or_else(|(status, v)| panic!("create failed ({status}): {v}")).0
    }

    /// Creates a sandbox; on success also returns the whole answer, on failure the status and body.
    pub fn try_create(&self, body: Value) -> Result<(Sandbox, Value), (u16, Value)> {
        self.try_create_as(&self.key(), body)
    }

    /// [`Daemon::try_create`] with another API key (a team's).
    pub fn try_create_as(&self, key: &str, body: Value) -> Result<(Sandbox, Value), (u16, Value)> {
        let (status, v) = self.api_as(key, "POST", "/sandboxes", Some(body));
        if status != 201 {
            return Err((status, v));
        }
        let sb = Sandbox {
            id: v["sandboxID"].as_str().unwrap_or_default().to_owned(),
            token: v["envdAccessToken"].as_str().unwrap_or_default().to_owned(),
            url: self.url(),
            http: self.http.clone(),
        };
        Ok((sb, v))
    }
}

/// Status and raw body of an answer, whatever its status.
fn into_bytes(r: Result<ureq::Response, ureq::Error>) -> (u16, Vec<u8>) {
    match r {
        Ok(resp) | Err(ureq::Error::Status(_, resp)) => {
            let status = resp.status();
            let mut buf = Vec::new();
            resp.into_reader().read_to_end(&mut buf).unwrap();
            (status, buf)
        }
        Err(e) => panic!("request failed: {e}"),
    }
}

fn into_json(r: Result<ureq::Response, ureq::Error>) -> (u16, Value) {
    match r {
        Ok(resp) | Err(ureq::Error::Status(_, resp)) => {
            let status = resp.status();
            let text = resp.into_string().unwrap_or_default();
            (status, serde_json::from_str(&text).unwrap_or(Value::Null))
        }
        Err(e) => panic!("request failed: {e}"),
    }
}

/// A sandbox seen from outside: its id and access token.
pub struct Sandbox {
    pub id: String,
    pub token: String,
    pub url: String,
    pub http: ureq::Agent,
}

/// One finished process: output and exit code.
#[derive(Debug, Default)]
pub struct Run {
    pub stdout: String,
    pub stderr: String,
    pub exit_code: Option<i32>,
    pub status: String,
    pub error: Option<Value>,
}

impl Sandbox {
    fn req(&self, method: &str, path: &str) -> ureq::Request {
        self.http
            .request(method, &format!("{}{}", self.url, path))
            .set("E2b-Sandbox-Id", &self.id)
            .set("E2b-Sandbox-Port", "49983")
            .set("X-Access-Token", &self.token)
    }

    /// A unary Connect call with the JSON codec.
    pub fn rpc(&self, method: &str, body: Value) -> (u16, Value) {
        into_json(self.req("POST", &format!("/{method}")).set("Content-Type", "application/json").send_json(body))
    }

    /// Opens a server stream and returns a reader of its decoded messages.
    pub fn stream(&self, method: &str, body: Value, headers: &[(&str, &str)]) -> Frames {
        let payload = serde_json::to_vec(&body).unwrap();
        let mut env = vec![0u8];
        env.extend_from_slice(&(payload.len() as u32).to_be_bytes());
        env.extend_from_slice(&payload);
        let mut req = self.req("POST", &format!("/{method}")).set("Content-Type", "application/connect+json");
        for (k, v) in headers {
            req = req.set(k, v);
        }
        let resp = req.send_bytes(&env).expect("stream request");
        Frames { reader: resp.into_reader() }
    }

    /// Runs `bash -l -c cmd` the way the E2B SDK's `commands.run` does.
    pub fn sh(&self, cmd: &str) -> Run {
        self.run(json!({"process": {"cmd": "/bin/bash", "args": ["-l", "-c", cmd]}, "stdin": false}), &[])
    }

    pub fn sh_as(&self, user: &str, cmd: &str) -> Run {
        let auth = format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{user}:")));
        self.run(
            json!({"process": {"cmd": "/bin/bash", "args": ["-l", "-c", cmd]}, "stdin": false}),
            &[("Authorization", &auth)],
        )
    }

    pub fn run(&self, start: Value, headers: &[(&str, &str)]) -> Run {
        let mut frames = self.stream("process.Process/Start", start, headers);
        let mut run = Run::default();
        let b64 = |v: &Value| {
            String::from_utf8_lossy(
                &base64::engine::general_purpose::STANDARD.decode(v.as_str().unwrap_or("")).unwrap(),
            )
            .into_owned()
        };
        while let Some((flags, msg)) = frames.next_frame() {
            if flags & 2 != 0 {
                run.error = msg.get("error").cloned();
                break;
            }
            let ev = &msg["event"];
            if let Some(d) = ev.get("data") {
                if let Some(s) = d.get("stdout") {
                    run.stdout.push_str(&b64(s));
                }
                if let Some(s) = d.get("stderr") {
                    run.stderr.push_str(&b64(s));
                }
                if let Some(s) = d.get("pty") {
                    run.stdout.push_str(&b64(s));
                }
            }
            if let Some(e) = ev.get("end") {
                run.exit_code = e["exitCode"].as_i64().map(|c| c as i32);
                run.status = e["status"].as_str().unwrap_or_default().to_owned();
            }
        }
        run
    }

    pub fn write_file(&self, path: &str, data: &[u8]) -> (u16, Value) {
        into_json(
            self.req("POST", &format!("/files?path={path}"))
                .set("Content-Type", "application/octet-stream")
                .send_bytes(data),
        )
    }

    pub fn read_file(&self, path: &str) -> (u16, Vec<u8>) {
        into_bytes(self.req("GET", &format!("/files?path={path}")).call())
    }
}

/// Decoder of Connect envelopes from a streaming response.
pub struct Frames {
    reader: Box<dyn Read + Send + Sync>,
}

impl Frames {
    pub fn next_frame(&mut self) -> Option<(u8, Value)> {
        let mut head = [0u8; 5];
        self.reader.read_exact(&mut head).ok()?;
        let len = u32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize;
        let mut buf = vec![0u8; len];
        self.reader.read_exact(&mut buf).ok()?;
        if head[0] & 2 != 0 {
            // The end-of-stream frame is the last; reading the body to its end (the chunked
            // terminator) hands the connection back for the next call, as an SDK's client does.
            let _ = std::io::copy(&mut self.reader, &mut std::io::sink());
        }
        Some((head[0], serde_json::from_slice(&buf).unwrap_or(Value::Null)))
    }
}

/// The daemon shared by every test of one test binary. It is started from a thread that lives as
/// long as the process, because the daemon's parent-death signal follows the spawning thread.
pub fn shared(name: &'static str) -> &'static Daemon {
    static D: OnceLock<&'static Daemon> = OnceLock::new();
    D.get_or_init(|| {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let d: &'static Daemon = Box::leak(Box::new(Daemon::start(name)));
            tx.send(d).unwrap();
            loop {
                std::thread::park();
            }
        });
        rx.recv().expect("daemon start panicked; see its log")
    })
}
