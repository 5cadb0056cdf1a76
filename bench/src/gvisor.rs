//! The gVisor runtime beside `runsc` driven directly, on the same root filesystem: create → first
//! output vs `runsc run`, and a pause (checkpoint to disk) and wake (restore) of a sandbox holding
//! touched memory vs `runsc checkpoint` / `runsc restore` of a container holding the same.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use serde::Serialize;
use serde_json::json;
use warren_e2e::Daemon;

use crate::{series, Series};

#[derive(Serialize)]
pub struct Gvisor {
    pub warren_create: Series,
    pub runsc_run: Series,
    pub warren_exec: Series,
    pub touched_mib: u64,
    pub warren_pause: Series,
    pub warren_wake: Series,
    pub warren_image_mib: f64,
    pub runsc_checkpoint: Series,
    pub runsc_restore: Series,
    pub runsc_image_mib: f64,
    /// A template whose start command runs `python3 -m http.server`: create → the server answers
    /// (asked from inside: gVisor sandboxes have loopback only), booted cold and started from a
    /// memory snapshot of a ready sandbox.
    pub server_cold: Series,
    pub server_from_memory: Series,
}

/// A Python process that touches `mib` MiB of random bytes (incompressible, like real state) and
/// then sleeps; it writes `ready` once the memory is in place.
fn holder(mib: u64) -> String {
    format!(
        "python3 -c \"import os,time; b=os.urandom({mib}<<20); open('/tmp/ready','w').write('1'); time.sleep(1e9)\""
    )
}

fn dir_mib(p: &Path) -> f64 {
    std::fs::read_dir(p)
        .map(|rd| rd.flatten().filter_map(|e| e.metadata().ok()).map(|m| m.len()).sum::<u64>())
        .unwrap_or(0) as f64
        / (1024.0 * 1024.0)
}

pub fn measure(d: &Daemon, root: &Path, crun_bundle: &Path, n: usize, touched_mib: u64) -> Result<Gvisor> {
    // create → first output of `echo hi`, and `true` through the API.
    let mut create = Vec::with_capacity(n);
    for i in 0..n + 2 {
        let t = Instant::now();
        let sb = d.create(json!({"templateID": "base", "runtime": "gvisor"}));
        let r = sb.sh("echo hi");
        let took = t.elapsed();
        d.api("DELETE", &format!("/sandboxes/{}", sb.id), None);
        if r.stdout != "hi\n" {
            bail!("gvisor create: {r:?}");
        }
        if i >= 2 {
            create.push(took);
        }
    }
    let sb = d.create(json!({"templateID": "base", "runtime": "gvisor"}));
    let mut exec = Vec::with_capacity(n);
    for i in 0..n + 3 {
        let t = Instant::now();
        let r = sb.run(json!({"process": {"cmd": "/bin/true"}}), &[]);
        if r.exit_code != Some(0) {
            bail!("gvisor exec: {r:?}");
        }
        if i >= 3 {
            exec.push(t.elapsed());
        }
    }
    d.api("DELETE", &format!("/sandboxes/{}", sb.id), None);

    // Pause (checkpoint to disk) and wake (restore) with touched memory.
    let big = d.create(json!({"templateID": "base", "runtime": "gvisor", "memoryMB": touched_mib * 2 + 256}));
    big.sh(&format!("({} >/dev/null 2>&1 &)", holder(touched_mib)));
    warren_e2e::wait_for("the memory holder", Duration::from_secs(120), || {
        (big.sh("cat /tmp/ready 2>/dev/null").stdout == "1").then_some(())
    });
    let (mut pause, mut wake) = (Vec::new(), Vec::new());
    let mut image_mib = 0.0;
    let rounds = (n / 4).max(3);
    for _ in 0..rounds {
        let t = Instant::now();
        let (s, v) = d.api("POST", &format!("/sandboxes/{}/pause", big.id), Some(json!({})));
        pause.push(t.elapsed());
        if s != 204 {
            bail!("gvisor pause: {s} {v}");
        }
        image_mib = dir_mib(&d.data_dir.join("layers/.checkpoints").join(&big.id));
        let t = Instant::now();
        let (s, v) = d.api("POST", &format!("/sandboxes/{}/connect", big.id), Some(json!({"timeout": 600})));
        let r = big.sh("pgrep -c python3");
        wake.push(t.elapsed());
        if s != 201 || r.stdout.trim() != "1" {
            bail!("gvisor wake: {s} {v} {r:?}");
        }
    }
    d.api("DELETE", &format!("/sandboxes/{}", big.id), None);

    let (server_cold, server_from_memory) = server_ready(d, n)?;
    let (run, ckpt, restore, runsc_image) = runsc_direct(root, crun_bundle, n, rounds, touched_mib)?;
    Ok(Gvisor {
        warren_create: series("warren gvisor: create -> output", create),
        runsc_run: run,
        warren_exec: series("warren gvisor: exec true", exec),
        touched_mib,
        warren_pause: series("warren gvisor: pause (checkpoint)", pause),
        warren_wake: series("warren gvisor: wake -> exec", wake),
        warren_image_mib: image_mib,
        runsc_checkpoint: ckpt,
        runsc_restore: restore,
        runsc_image_mib: runsc_image,
        server_cold,
        server_from_memory,
    })
}

fn server_ready(d: &Daemon, n: usize) -> Result<(Series, Series)> {
    let tpl = json!({"templateID": "bench-gv-web", "from": "base", "startCmd": "exec python3 -m http.server 8080",
                     "readyCmd": "bash -c '</dev/tcp/127.0.0.1/8080'", "readyTimeout": 30});
    let (status, v) = d.api("POST", "/templates", Some(tpl));
    if status != 201 {
        bail!("deriving the server template: {status} {v}");
    }
    let ask = "python3 -c \"import urllib.request as u; print(u.urlopen('http://127.0.0.1:8080/').status)\"";
    let measure = |template: &str| -> Result<Vec<Duration>> {
        let mut samples = Vec::with_capacity(n);
        for _ in 0..n + 1 {
            let t = Instant::now();
            let sb = d.create(json!({"templateID": template, "runtime": "gvisor"}));
            let r = sb.sh(ask);
            samples.push(t.elapsed());
            d.api("DELETE", &format!("/sandboxes/{}", sb.id), None);
            if r.stdout.trim() != "200" {
                bail!("the server of {template} answered {r:?}");
            }
        }
        samples.remove(0);
        Ok(samples)
    };
    let result = (|| {
        let cold = measure("bench-gv-web")?;
        let src = d.create(json!({"templateID": "bench-gv-web", "runtime": "gvisor"}));
        let (status, v) = d.api(
            "POST",
            &format!("/sandboxes/{}/snapshots", src.id),
            Some(json!({"name": "bench-gv-web-mem", "memory": true})),
        );
        d.api("DELETE", &format!("/sandboxes/{}", src.id), None);
        if status != 201 {
            bail!("the memory snapshot: {status} {v}");
        }
        let warm = measure("bench-gv-web-mem");
        d.api("DELETE", "/templates/bench-gv-web-mem", None);
        Ok((cold, warm?))
    })();
    d.api("DELETE", "/templates/bench-gv-web", None);
    let (cold, warm) = result?;
    Ok((series("gvisor server template: create -> 200", cold), series("gvisor from memory snapshot: -> 200", warm)))
}

/// `runsc` on the crun baseline's bundle (same root filesystem, same limits), with the flags
/// Warren uses: run → output, then checkpoint / restore of a container holding the same memory.
fn runsc_direct(
    root: &Path,
    crun_bundle: &Path,
    n: usize,
    rounds: usize,
    touched_mib: u64,
) -> Result<(Series, Series, Series, f64)> {
    let state = root.join("runsc-state");
    std::fs::create_dir_all(&state)?;
    let runsc = || {
        let mut c = Command::new("runsc");
        c.arg(format!("--root={}", state.display()))
            .args(["--network=none", "--platform=systrap", "--overlay2=none"])
            .stdin(Stdio::null());
        c
    };
    let mut run = Vec::with_capacity(n);
    for i in 0..n + 2 {
        let id = format!("warren-bench-runsc-{}-{i}", std::process::id());
        let t = Instant::now();
        let out = runsc().args(["run", "--bundle"]).arg(crun_bundle).arg(&id).stderr(Stdio::piped()).output()?;
        let took = t.elapsed();
        let _ = runsc().args(["delete", "--force", &id]).output();
        if out.stdout != b"hi\n" {
            bail!("runsc run failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        if i >= 2 {
            run.push(took);
        }
    }

    // A writable root (the memory holder writes its ready file there) and enough memory.
    let mut cfg: serde_json::Value = serde_json::from_slice(&std::fs::read(crun_bundle.join("config.json"))?)?;
    cfg["process"]["args"] = json!(["/bin/sh", "-c", holder(touched_mib)]);
    cfg["linux"]["resources"]["memory"]["limit"] = json!((touched_mib * 2 + 256) << 20);
    cfg["mounts"] = json!([
        {"destination": "/proc", "type": "proc", "source": "proc"},
        {"destination": "/tmp", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "nodev", "mode=1777"]},
    ]);
    let bundle = root.join("runsc-bundle-mem");
    std::fs::create_dir_all(&bundle)?;
    std::fs::write(bundle.join("config.json"), serde_json::to_vec_pretty(&cfg)?)?;
    let image = root.join("runsc-image");
    let id = format!("warren-bench-runsc-mem-{}", std::process::id());
    let st = runsc().args(["run", "--detach", "--bundle"]).arg(&bundle).arg(&id).stdout(Stdio::null()).status()?;
    if !st.success() {
        bail!("runsc run --detach failed");
    }
    let ready = || {
        let out = runsc().args(["exec", &id, "cat", "/tmp/ready"]).stderr(Stdio::null()).output();
        out.map(|o| o.stdout == b"1").unwrap_or(false)
    };
    let deadline = Instant::now() + Duration::from_secs(120);
    while !ready() {
        if Instant::now() > deadline {
            let _ = runsc().args(["delete", "--force", &id]).output();
            bail!("the runsc memory holder never got ready");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let (mut ckpt, mut restore) = (Vec::new(), Vec::new());
    let mut image_mib = 0.0;
    let result = (|| {
        for _ in 0..rounds {
            let _ = std::fs::remove_dir_all(&image);
            std::fs::create_dir_all(&image)?;
            let t = Instant::now();
            let out = runsc().arg("checkpoint").arg(format!("--image-path={}", image.display())).arg(&id).output()?;
            ckpt.push(t.elapsed());
            if !out.status.success() {
                bail!("runsc checkpoint: {}", String::from_utf8_lossy(&out.stderr));
            }
            image_mib = dir_mib(&image);
            let _ = runsc().args(["delete", "--force", &id]).output();
            let t = Instant::now();
            let st = runsc()
                .arg("restore")
                .arg(format!("--image-path={}", image.display()))
                .arg("--bundle")
                .arg(&bundle)
                .args(["--detach", &id])
                .stdout(Stdio::null())
                .status()?;
            // Restored once a command runs in it again, as Warren's wake is timed.
            let ok = st.success() && ready();
            restore.push(t.elapsed());
            if !ok {
                bail!("runsc restore failed");
            }
        }
        Ok(())
    })();
    let _ = runsc().args(["delete", "--force", &id]).output();
    let _ = std::fs::remove_dir_all(&image);
    result?;
    Ok((
        series("runsc: run -> output", run),
        series("runsc: checkpoint", ckpt),
        series("runsc: restore -> exec", restore),
        image_mib,
    ))
}
