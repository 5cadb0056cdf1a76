//! Proxied HTTP to a server inside a sandbox: Warren's port routing (`{port}-{id}.localhost`)
//! against nginx proxying to the same backend (keep-alive upstream), and the backend reached
//! directly, all with wrk in the same run. Throughput at 64 connections; latency at one
//! connection, where percentiles measure the path rather than queueing.
//!
//! The backend is this binary itself (`--backend-port`), copied into the sandbox: a minimal
//! keep-alive HTTP/1.1 responder, so the proxies, not the backend, are what is measured.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde::Serialize;
use serde_json::json;
use warren_e2e::Daemon;

const BACKEND_PORT: u16 = 8080;

/// Serves `200 ok` to every request on every connection until killed (a thread per connection).
pub fn serve_backend(port: u16) -> ! {
    let listener = TcpListener::bind(("0.0.0.0", port)).expect("binding the backend port");
    for stream in listener.incoming().flatten() {
        std::thread::spawn(move || {
            let _ = stream.set_nodelay(true);
            let mut writer = match stream.try_clone() {
                Ok(w) => w,
                Err(_) => return,
            };
            let mut reader = BufReader::new(stream);
            let mut line = String::new();
            loop {
                // Headers end at an empty line; wrk's GETs carry no body.
                let mut in_headers = false;
                loop {
                    line.clear();
                    match reader.read_line(&mut line) {
                        Ok(0) | Err(_) => return,
                        Ok(_) if line == "\r\n" || line == "\n" => break,
                        Ok(_) => in_headers = true,
                    }
                }
                if !in_headers {
                    continue;
                }
                let resp = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 3\r\n\r\nok\n";
                if writer.write_all(resp).is_err() {
                    return;
                }
            }
        });
    }
    std::process::exit(1)
}

#[derive(Serialize)]
pub struct PathFigures {
    pub rps: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
}

#[derive(Serialize)]
pub struct ProxyBench {
    pub direct: PathFigures,
    /// Requests/s: the median of the rounds below.
    pub warren: PathFigures,
    pub nginx: PathFigures,
    /// Requests/s of each round at 64 connections, Warren's and nginx's alternating.
    pub warren_rounds_rps: Vec<f64>,
    pub nginx_rounds_rps: Vec<f64>,
    /// Warren's median requests/s over nginx's (target ≥ 0.8).
    pub ratio_rps_vs_nginx: f64,
    /// Warren's p99 at one connection minus the backend's own (target ≤ 1 ms).
    pub warren_added_p99_ms: f64,
    pub nginx_added_p99_ms: f64,
}

struct Wrk {
    rps: f64,
    p50_ms: f64,
    p99_ms: f64,
}

fn duration_ms(s: &str) -> Option<f64> {
    let (num, scale) = if let Some(v) = s.strip_suffix("us") {
        (v, 0.001)
    } else if let Some(v) = s.strip_suffix("ms") {
        (v, 1.0)
    } else if let Some(v) = s.strip_suffix('s') {
        (v, 1000.0)
    } else {
        return None;
    };
    num.parse::<f64>().ok().map(|n| n * scale)
}

/// Runs wrk and reads requests/s and the 50th and 99th latency percentiles from its report.
fn wrk(url: &str, host: Option<&str>, connections: u32, secs: u32) -> Result<Wrk> {
    let mut cmd = Command::new("wrk");
    cmd.args(["--latency", "-t", if connections > 1 { "2" } else { "1" }]).args([
        "-c",
        &connections.to_string(),
        "-d",
        &format!("{secs}s"),
    ]);
    if let Some(h) = host {
        cmd.args(["-H", &format!("Host: {h}")]);
    }
    let out = cmd.arg(url).output().context("running wrk (scripts/deps.sh installs it)")?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() || text.contains("Non-2xx") || text.contains("Socket errors") {
        bail!("wrk against {url} failed or saw errors:\n{text}");
    }
    let mut r = Wrk { rps: 0.0, p50_ms: f64::NAN, p99_ms: f64::NAN };
    for line in text.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        match f.as_slice() {
            ["Requests/sec:", v] => r.rps = v.parse().unwrap_or(0.0),
            ["50%", v] => r.p50_ms = duration_ms(v).unwrap_or(f64::NAN),
            ["99%", v] => r.p99_ms = duration_ms(v).unwrap_or(f64::NAN),
            _ => {}
        }
    }
    if r.rps == 0.0 || r.p99_ms.is_nan() {
        bail!("could not read wrk's report:\n{text}");
    }
    Ok(r)
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").expect("a free port").local_addr().expect("bound").port()
}

/// nginx as a reverse proxy to `upstream`, on loopback; killed when dropped.
struct Nginx {
    child: Child,
    port: u16,
    dir: std::path::PathBuf,
}

impl Nginx {
    fn start(dir: &Path, upstream: &str) -> Result<Nginx> {
        let port = free_port();
        std::fs::create_dir_all(dir.join("logs"))?;
        let conf = dir.join("nginx.conf");
        // The usual production shape: a worker per core, keep-alive to the upstream.
        std::fs::write(
            &conf,
            format!(
                "daemon off;\nworker_processes auto;\npid {pid};\nerror_log {dir}/logs/error.log;\n\
                 events {{ worker_connections 4096; }}\n\
                 http {{\n access_log off;\n upstream backend {{ server {upstream}; keepalive 128; }}\n\
                 server {{\n  listen 127.0.0.1:{port};\n  location / {{\n   proxy_pass http://backend;\n\
                 proxy_http_version 1.1;\n   proxy_set_header Connection \"\";\n  }}\n }}\n}}\n",
                pid = dir.join("nginx.pid").display(),
                dir = dir.display(),
            ),
        )?;
        let child = Command::new("nginx")
            .args(["-p"])
            .arg(dir)
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting nginx (scripts/deps.sh installs nginx-light)")?;
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if Instant::now() > deadline {
                bail!("nginx did not listen on {port}; see {}/logs/error.log", dir.display());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(Nginx { child, port, dir: dir.to_path_buf() })
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // `nginx -s stop` has the master end its workers before it exits; a SIGKILL of the master
        // alone left them running (and busy) after the benchmark.
        let stopped = Command::new("nginx")
            .arg("-p")
            .arg(&self.dir)
            .arg("-c")
            .arg(self.dir.join("nginx.conf"))
            .args(["-s", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !stopped {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

fn measure(url: &str, host: Option<&str>, secs: u32) -> Result<PathFigures> {
    let load = wrk(url, host, 64, secs)?;
    let one = wrk(url, host, 1, secs)?;
    Ok(PathFigures { rps: load.rps, p50_ms: one.p50_ms, p99_ms: one.p99_ms })
}

/// Rounds of throughput, one proxy after the other: on a shared host the load of the moment
/// moves either proxy's figure by a tenth or more between runs, and alternating lets that drift
/// hit both alike.
const ROUNDS: usize = 3;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

pub fn proxy_vs_nginx(d: &Daemon, root: &Path, secs: u32) -> Result<ProxyBench> {
    let sb = d.create(json!({"templateID": "base", "timeout": 600}));
    let exe: PathBuf = std::env::current_exe()?;
    let bin = std::fs::read(&exe).with_context(|| format!("reading {}", exe.display()))?;
    let (status, v) = sb.write_file("/home/user/backend", &bin);
    if status != 200 {
        bail!("uploading the backend: {status} {v}");
    }
    let start = sb.sh(&format!(
        "chmod +x /home/user/backend && (nohup /home/user/backend --backend-port {BACKEND_PORT} >/dev/null 2>&1 &) && \
         python3 -c 'import socket; print(socket.gethostbyname(socket.gethostname()))'"
    ));
    let addr = start.stdout.trim().to_owned();
    if start.exit_code != Some(0) || addr.is_empty() {
        bail!("starting the backend: {start:?}");
    }
    let direct_url = format!("http://{addr}:{BACKEND_PORT}/");
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect((addr.as_str(), BACKEND_PORT)).is_err() {
        if Instant::now() > deadline {
            bail!("the backend in the sandbox did not listen at {direct_url}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let nginx = Nginx::start(&root.join("nginx"), &format!("{addr}:{BACKEND_PORT}"))?;
    let host = format!("{BACKEND_PORT}-{}.localhost:{}", sb.id, d.port);
    // Warm every path once, then measure them one after another.
    for (url, h) in [(direct_url.as_str(), None), (&d.url()[..], Some(host.as_str()))] {
        wrk(url, h, 4, 1)?;
    }
    let (warren_url, nginx_url) = (format!("{}/", d.url()), format!("http://127.0.0.1:{}/", nginx.port));
    let direct = measure(&direct_url, None, secs)?;
    let (mut warren_rounds, mut nginx_rounds) = (Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        warren_rounds.push(wrk(&warren_url, Some(&host), 64, secs)?.rps);
        nginx_rounds.push(wrk(&nginx_url, None, 64, secs)?.rps);
    }
    let one = |url: &str, h: Option<&str>, rounds: &[f64]| -> Result<PathFigures> {
        let w = wrk(url, h, 1, secs)?;
        Ok(PathFigures { rps: median(rounds.to_vec()), p50_ms: w.p50_ms, p99_ms: w.p99_ms })
    };
    let warren = one(&warren_url, Some(&host), &warren_rounds)?;
    let nginx_m = one(&nginx_url, None, &nginx_rounds)?;
    drop(nginx);
    d.api("DELETE", &format!("/sandboxes/{}", sb.id), None);
    Ok(ProxyBench {
        ratio_rps_vs_nginx: warren.rps / nginx_m.rps,
        warren_added_p99_ms: warren.p99_ms - direct.p99_ms,
        nginx_added_p99_ms: nginx_m.p99_ms - direct.p99_ms,
        direct,
        warren,
        nginx: nginx_m,
        warren_rounds_rps: warren_rounds,
        nginx_rounds_rps: nginx_rounds,
    })
}
