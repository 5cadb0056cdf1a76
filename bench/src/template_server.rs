//! A template whose start command runs `python3 -m http.server` (with a ready check): create → the
//! server answers, booted cold (the start command and the ready check run at boot) and restored
//! from the template's memory image (taken once, after its ready check), on one runtime.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use serde_json::json;
use warren_e2e::Daemon;

use crate::{series, Series};

/// Cold on `d` (its daemon takes no template images), then on a daemon of `runtime` that restores
/// the template's memory image. Returns both series and how long taking the image took. gVisor
/// sandboxes have loopback only, so their server is asked from inside; others through the proxy.
/// The server template on `runtime`: create → answer booted cold, restored from its memory image,
/// and claimed from a pool of it (filled from that image); and how long the image took.
pub struct Measured {
    pub cold: Series,
    pub from_memory: Series,
    pub pooled: Series,
    pub image_took_ms: u64,
}

pub fn measure(d: &Daemon, root: &Path, n: usize, runtime: &str) -> Result<Measured> {
    let template = format!("bench-{runtime}-web");
    let tpl = json!({"templateID": template, "from": "base", "startCmd": "exec python3 -m http.server 8080",
                     "readyCmd": "bash -c '</dev/tcp/127.0.0.1/8080'", "readyTimeout": 30});
    let (status, v) = d.api("POST", "/templates", Some(tpl));
    if status != 201 {
        bail!("deriving the server template: {status} {v}");
    }
    let inside = runtime == "gvisor";
    let ask = "python3 -c \"import urllib.request as u; print(u.urlopen('http://127.0.0.1:8080/').status)\"";
    let measure = |d: &Daemon, pool: Option<&str>| -> Result<Vec<Duration>> {
        let mut samples = Vec::with_capacity(n);
        for _ in 0..n + 1 {
            if let Some(pool) = pool {
                // Claims one at a time, each from a refilled pool, as an interactive user would.
                let refill = Instant::now() + Duration::from_secs(120);
                while d.api("GET", &format!("/pools/{pool}"), None).1["ready"].as_u64() < Some(2) {
                    if Instant::now() > refill {
                        bail!("the template's pool did not refill");
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
            let t = Instant::now();
            let sb = d.create(json!({"templateID": template, "runtime": runtime}));
            let answer = if inside {
                sb.sh(ask).stdout.trim().to_owned()
            } else {
                let headers = [("E2b-Sandbox-Id", sb.id.as_str()), ("E2b-Sandbox-Port", "8080")];
                d.raw("GET", "/", &headers, b"").0.to_string()
            };
            samples.push(t.elapsed());
            d.api("DELETE", &format!("/sandboxes/{}", sb.id), None);
            if answer != "200" {
                bail!("the template's server answered {answer:?}");
            }
        }
        samples.remove(0);
        Ok(samples)
    };
    let cold = measure(d, None);
    let name = format!("bench-{runtime}-tpl");
    let _ = std::fs::remove_file(root.join(&name).join("state.redb"));
    // gVisor sandboxes get no network here anyway.
    let network = if inside { "[network]\nenabled = false\n" } else { "" };
    let warm_daemon = Daemon::start_with(
        root,
        &name,
        &format!("default_runtime = {runtime:?}\n[gvisor]\ntemplate_memory_snapshots = true\n{network}"),
    );
    let warm = (|| {
        let img = warren_e2e::wait_for("the template's memory image", Duration::from_secs(180), || {
            let (_, v) = warm_daemon.api("GET", &format!("/templates/{template}"), None);
            v["memorySnapshots"].as_array().and_then(|a| a.iter().find(|s| s["runtime"] == runtime).cloned())
        });
        if img["status"] != "ready" {
            bail!("the template's memory image: {img}");
        }
        let from_memory = measure(&warm_daemon, None)?;
        let pool =
            json!({"name": "bench-tpl", "templateID": template, "runtime": runtime, "minReady": 2, "maxSize": 4});
        let (status, v) = warm_daemon.api("POST", "/pools", Some(pool));
        if status != 201 {
            bail!("creating a pool of the template: {status} {v}");
        }
        let pooled = measure(&warm_daemon, Some("bench-tpl"));
        warm_daemon.api("DELETE", "/pools/bench-tpl", None);
        Ok((from_memory, pooled?, img["tookMs"].as_u64().unwrap_or(0)))
    })();
    warm_daemon.api("DELETE", &format!("/templates/{template}"), None);
    warm_daemon.kill9();
    d.api("DELETE", &format!("/templates/{template}"), None);
    let (cold, (warm, pooled, took)) = (cold?, warm?);
    Ok(Measured {
        cold: series(&format!("{runtime} server template: create -> 200 (cold)"), cold),
        from_memory: series(&format!("{runtime} from template memory image: -> 200"), warm),
        pooled: series(&format!("{runtime} template pool (from its image): claim -> 200"), pooled),
        image_took_ms: took,
    })
}
