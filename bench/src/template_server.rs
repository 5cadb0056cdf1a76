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
pub fn measure(d: &Daemon, root: &Path, n: usize, runtime: &str) -> Result<(Series, Series, u64)> {
    let template = format!("bench-{runtime}-web");
    let tpl = json!({"templateID": template, "from": "base", "startCmd": "exec python3 -m http.server 8080",
                     "readyCmd": "bash -c '</dev/tcp/127.0.0.1/8080'", "readyTimeout": 30});
    let (status, v) = d.api("POST", "/templates", Some(tpl));
    if status != 201 {
        bail!("deriving the server template: {status} {v}");
    }
    let inside = runtime == "gvisor";
    let ask = "python3 -c \"import urllib.request as u; print(u.urlopen('http://127.0.0.1:8080/').status)\"";
    let measure = |d: &Daemon| -> Result<Vec<Duration>> {
        let mut samples = Vec::with_capacity(n);
        for _ in 0..n + 1 {
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
    let cold = measure(d);
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
        Ok((measure(&warm_daemon)?, img["tookMs"].as_u64().unwrap_or(0)))
    })();
    warm_daemon.api("DELETE", &format!("/templates/{template}"), None);
    warm_daemon.kill9();
    d.api("DELETE", &format!("/templates/{template}"), None);
    let (cold, (warm, took)) = (cold?, warm?);
    Ok((
        series(&format!("{runtime} server template: create -> 200 (cold)"), cold),
        series(&format!("{runtime} from template memory image: -> 200"), warm),
        took,
    ))
}
