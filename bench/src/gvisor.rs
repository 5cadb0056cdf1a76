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
    /// runsc with the flags Warren checkpoints with (no compression, zero pages skipped).
    pub runsc_checkpoint: Series,
    pub runsc_restore: Series,
    /// runsc with its default flags (compressed images).
    pub runsc_checkpoint_default: Series,
    pub runsc_restore_default: Series,
    pub runsc_image_mib: f64,
    /// A template whose start command runs `python3 -m http.server`: create → the server answers
    /// (asked from inside: gVisor sandboxes have loopback only), booted cold (the start command
    /// runs) and restored from the template's memory image (taken once, after its ready check).
    pub server_cold: Series,
    pub server_from_memory: Series,
    /// Claimed from a pool of the template, whose sandboxes were restored from its memory image.
    pub server_pooled: Series,
    /// How long taking the template's memory image took (boot, start, ready check, checkpoint).
    pub server_image_took_ms: u64,
    /// Forks in memory mode of a sandbox holding `touched_mib`, and of one holding 16 MiB.
    pub forks: Vec<MemoryFork>,
    /// The same pause (`{"memory": true}`) and wake of a native sandbox holding `touched_mib`,
    /// saved with CRIU; absent when this host has no working CRIU.
    pub native: Option<NativeMemory>,
}

#[derive(Serialize)]
pub struct NativeMemory {
    pub pause: Series,
    pub wake: Series,
    /// Connect until the sandbox holds its memory again (anonymous memory ≥ 90 % of what it was):
    /// with lazy restores the pages arrive after the first answer.
    pub wake_memory_complete: Series,
    pub image_mib: f64,
}

/// A fork of 10 in memory mode: the call, and until every clone answered an exec; the source's
/// and (the mean) clone's memory: the PSS of their processes on the host.
#[derive(Serialize)]
pub struct MemoryFork {
    pub touched_mib: u64,
    pub clones: usize,
    pub call_ms: f64,
    pub all_answer_ms: f64,
    pub source_pss_mib: f64,
    pub clone_pss_mib: f64,
}

/// Memory pauses and wakes of a native sandbox holding `touched_mib` (CRIU), timed as gVisor's
/// are: the pause call, and the connect until a first command answers. `None` when the daemon
/// says native sandboxes cannot save memory here.
fn native_memory(d: &Daemon, rounds: usize, touched_mib: u64) -> Result<Option<NativeMemory>> {
    let sb = d.create(json!({"templateID": "base", "runtime": "native", "memoryMB": touched_mib * 2 + 256}));
    sb.sh(&format!("({} >/dev/null 2>&1 &)", holder(touched_mib)));
    warren_e2e::wait_for("the native memory holder", Duration::from_secs(120), || {
        (sb.sh("cat /tmp/ready 2>/dev/null").stdout == "1").then_some(())
    });
    let (mut pause, mut wake, mut complete) = (Vec::new(), Vec::new(), Vec::new());
    let mut image_mib = 0.0;
    let held = crate::native_memory::anon_mib(&sb.id);
    let result = (|| {
        for _ in 0..rounds {
            let t = Instant::now();
            let (s, v) = d.api("POST", &format!("/sandboxes/{}/pause", sb.id), Some(json!({"memory": true})));
            if s == 400 && pause.is_empty() {
                eprintln!("native memory pauses not measured: {v}");
                return Ok(false);
            }
            pause.push(t.elapsed());
            if s != 204 {
                bail!("native memory pause: {s} {v}");
            }
            image_mib = dir_mib(&d.data_dir.join("images").join(&sb.id));
            let t = Instant::now();
            let (s, v) = d.api("POST", &format!("/sandboxes/{}/connect", sb.id), Some(json!({"timeout": 600})));
            let r = sb.run(json!({"process": {"cmd": "/bin/cat", "args": ["/tmp/ready"]}}), &[]);
            wake.push(t.elapsed());
            let deadline = Instant::now() + Duration::from_secs(60);
            while Instant::now() < deadline && crate::native_memory::anon_mib(&sb.id) < held * 0.9 {
                std::thread::sleep(Duration::from_millis(2));
            }
            complete.push(t.elapsed());
            let held = sb.sh("pgrep -c python3");
            if s != 201 || r.stdout != "1" || held.stdout.trim() != "1" {
                bail!("native wake: {s} {v} {r:?} {held:?}");
            }
        }
        Ok(true)
    })();
    d.api("DELETE", &format!("/sandboxes/{}", sb.id), None);
    Ok(result?.then(|| NativeMemory {
        pause: series("warren native: pause (memory, CRIU)", pause),
        wake: series("warren native: wake -> exec (CRIU)", wake),
        wake_memory_complete: series("warren native: wake -> memory back", complete),
        image_mib,
    }))
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
    // runsc's rounds alternate with Warren's, so a drift of the host's speed hits both alike.
    let mut direct = RunscDirect::start(root, crun_bundle, n, touched_mib)?;
    let rounds = n.max(6);
    let warren_round = |pause: &mut Vec<Duration>, wake: &mut Vec<Duration>, image_mib: &mut f64| -> Result<()> {
        let t = Instant::now();
        let (s, v) = d.api("POST", &format!("/sandboxes/{}/pause", big.id), Some(json!({})));
        pause.push(t.elapsed());
        if s != 204 {
            bail!("gvisor pause: {s} {v}");
        }
        *image_mib = dir_mib(&d.data_dir.join("images").join(&big.id));
        let t = Instant::now();
        let (s, v) = d.api("POST", &format!("/sandboxes/{}/connect", big.id), Some(json!({"timeout": 600})));
        // The same first command as runsc's side: `cat /tmp/ready`, no shell.
        let r = big.run(json!({"process": {"cmd": "/bin/cat", "args": ["/tmp/ready"]}}), &[]);
        wake.push(t.elapsed());
        let held = big.sh("pgrep -c python3");
        if s != 201 || r.stdout != "1" || held.stdout.trim() != "1" {
            bail!("gvisor wake: {s} {v} {r:?} {held:?}");
        }
        Ok(())
    };
    let interleaved = (|| {
        for _ in 0..rounds {
            warren_round(&mut pause, &mut wake, &mut image_mib)?;
            direct.round(true)?;
            direct.round(false)?;
        }
        Ok(())
    })();
    let direct = direct.finish(interleaved)?;
    // Fork 10 clones of it in memory mode (it keeps running), and of a sandbox holding little.
    let fork_big = fork_memory(d, &big, touched_mib);
    d.api("DELETE", &format!("/sandboxes/{}", big.id), None);
    let fork_big = fork_big?;
    let small = d.create(json!({"templateID": "base", "runtime": "gvisor"}));
    small.sh(&format!("({} >/dev/null 2>&1 &)", holder(16)));
    warren_e2e::wait_for("the small memory holder", Duration::from_secs(120), || {
        (small.sh("cat /tmp/ready 2>/dev/null").stdout == "1").then_some(())
    });
    let fork_small = fork_memory(d, &small, 16);
    d.api("DELETE", &format!("/sandboxes/{}", small.id), None);
    let forks = vec![fork_big, fork_small?];

    let native = native_memory(d, rounds, touched_mib)?;
    let t = crate::template_server::measure(d, root, n, "gvisor")?;
    Ok(Gvisor {
        warren_create: series("warren gvisor: create -> output", create),
        runsc_run: direct.run,
        warren_exec: series("warren gvisor: exec true", exec),
        touched_mib,
        warren_pause: series("warren gvisor: pause (checkpoint)", pause),
        warren_wake: series("warren gvisor: wake -> exec", wake),
        warren_image_mib: image_mib,
        runsc_checkpoint: direct.checkpoint,
        runsc_restore: direct.restore,
        runsc_checkpoint_default: direct.checkpoint_default,
        runsc_restore_default: direct.restore_default,
        runsc_image_mib: direct.image_mib,
        server_cold: t.cold,
        server_from_memory: t.from_memory,
        server_pooled: t.pooled,
        server_image_took_ms: t.image_took_ms,
        forks,
        native,
    })
}

/// Forks 10 clones of `src` (a sandbox running a memory holder of `mib` MiB) in memory mode.
fn fork_memory(d: &Daemon, src: &warren_e2e::Sandbox, mib: u64) -> Result<MemoryFork> {
    let clones = 10;
    let source_mib = sandbox_pss_mib(&src.id)?;
    let t = Instant::now();
    let (s, v) = d.api("POST", &format!("/sandboxes/{}/fork", src.id), Some(json!({"count": clones, "timeout": 600})));
    let call = t.elapsed();
    let forked = crate::fork_clones(d, &v);
    // Each clone carries on with the source's memory holder.
    let answered = forked.iter().all(|c| c.sh("pgrep -c python3").stdout.trim() == "1");
    let all = t.elapsed();
    let per_clone: Vec<f64> = forked.iter().filter_map(|c| sandbox_pss_mib(&c.id).ok()).collect();
    for c in &forked {
        d.api("DELETE", &format!("/sandboxes/{}", c.id), None);
    }
    if s != 201 || forked.len() != clones || !answered {
        bail!("gvisor fork of {clones}: {s} {v}");
    }
    Ok(MemoryFork {
        touched_mib: mib,
        clones,
        call_ms: call.as_secs_f64() * 1e3,
        all_answer_ms: all.as_secs_f64() * 1e3,
        source_pss_mib: source_mib,
        clone_pss_mib: per_clone.iter().sum::<f64>() / per_clone.len().max(1) as f64,
    })
}

/// Proportional set size of a gVisor sandbox: every process in its cgroup (runsc's sandbox and
/// gofer and the sandbox's address-space stubs), shared pages split among their users.
fn sandbox_pss_mib(id: &str) -> Result<f64> {
    let sentry = std::fs::read_dir("/proc")?
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().bytes().all(|b| b.is_ascii_digit()))
        .find(|e| {
            let c = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
            c.starts_with(b"runsc-sandbox") && String::from_utf8_lossy(&c).contains(id)
        })
        .ok_or_else(|| anyhow::anyhow!("no runsc-sandbox process for {id}"))?;
    let cgroups = std::fs::read_to_string(sentry.path().join("cgroup"))?;
    let procs = cgroups
        .lines()
        .find_map(|l| {
            let mut f = l.splitn(3, ':');
            let (_, ctl, path) = (f.next()?, f.next()?, f.next()?);
            match ctl {
                "memory" => Some(format!("/sys/fs/cgroup/memory{path}/cgroup.procs")),
                "" => Some(format!("/sys/fs/cgroup{path}/cgroup.procs")),
                _ => None,
            }
        })
        .ok_or_else(|| anyhow::anyhow!("no memory cgroup for {id}"))?;
    let mut kib = 0u64;
    for pid in std::fs::read_to_string(&procs)?.split_whitespace() {
        let rollup = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).unwrap_or_default();
        kib += rollup
            .lines()
            .find_map(|l| l.strip_prefix("Pss:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .unwrap_or(0);
    }
    Ok(kib as f64 / 1024.0)
}

/// `runsc` on the crun baseline's bundle (same root filesystem, same limits), with the flags
/// Warren uses: run → output, then checkpoint / restore rounds of a container holding the same
/// memory, with Warren's checkpoint flags and with runsc's defaults.
struct RunscDirect {
    state: std::path::PathBuf,
    bundle: std::path::PathBuf,
    image: std::path::PathBuf,
    id: String,
    run: Vec<Duration>,
    checkpoint: Vec<Duration>,
    restore: Vec<Duration>,
    checkpoint_default: Vec<Duration>,
    restore_default: Vec<Duration>,
    image_mib: f64,
}

/// What the runsc side measured.
struct RunscFigures {
    run: Series,
    checkpoint: Series,
    restore: Series,
    checkpoint_default: Series,
    restore_default: Series,
    image_mib: f64,
}

impl RunscDirect {
    fn runsc(&self) -> Command {
        let mut c = Command::new("runsc");
        c.arg(format!("--root={}", self.state.display()))
            .args(["--network=none", "--platform=systrap", "--overlay2=none"])
            .stdin(Stdio::null());
        c
    }

    /// Measures `runsc run`, then starts the memory holder and waits until it is ready.
    fn start(root: &Path, crun_bundle: &Path, n: usize, touched_mib: u64) -> Result<RunscDirect> {
        let state = root.join("runsc-state");
        std::fs::create_dir_all(&state)?;
        let mut me = RunscDirect {
            state,
            bundle: root.join("runsc-bundle-mem"),
            image: root.join("runsc-image"),
            id: format!("warren-bench-runsc-mem-{}", std::process::id()),
            run: Vec::with_capacity(n),
            checkpoint: Vec::new(),
            restore: Vec::new(),
            checkpoint_default: Vec::new(),
            restore_default: Vec::new(),
            image_mib: 0.0,
        };
        for i in 0..n + 2 {
            let id = format!("warren-bench-runsc-{}-{i}", std::process::id());
            let t = Instant::now();
            let out = me.runsc().args(["run", "--bundle"]).arg(crun_bundle).arg(&id).stderr(Stdio::piped()).output()?;
            let took = t.elapsed();
            let _ = me.runsc().args(["delete", "--force", &id]).output();
            if out.stdout != b"hi\n" {
                bail!("runsc run failed: {}", String::from_utf8_lossy(&out.stderr));
            }
            if i >= 2 {
                me.run.push(took);
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
        std::fs::create_dir_all(&me.bundle)?;
        std::fs::write(me.bundle.join("config.json"), serde_json::to_vec_pretty(&cfg)?)?;
        let st = me
            .runsc()
            .args(["run", "--detach", "--bundle"])
            .arg(&me.bundle)
            .arg(&me.id)
            .stdout(Stdio::null())
            .status()?;
        if !st.success() {
            bail!("runsc run --detach failed");
        }
        let deadline = Instant::now() + Duration::from_secs(120);
        while !me.ready() {
            if Instant::now() > deadline {
                let _ = me.runsc().args(["delete", "--force", &me.id]).output();
                bail!("the runsc memory holder never got ready");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(me)
    }

    fn ready(&self) -> bool {
        let out = self.runsc().args(["exec", &self.id, "cat", "/tmp/ready"]).stderr(Stdio::null()).output();
        out.map(|o| o.stdout == b"1").unwrap_or(false)
    }

    /// One checkpoint and restore, with Warren's checkpoint flags or with runsc's defaults
    /// (compressed images).
    fn round(&mut self, warren_flags: bool) -> Result<()> {
        let _ = std::fs::remove_dir_all(&self.image);
        std::fs::create_dir_all(&self.image)?;
        let t = Instant::now();
        let mut cmd = self.runsc();
        cmd.arg("checkpoint").arg(format!("--image-path={}", self.image.display()));
        if warren_flags {
            cmd.args(["--compression=none", "--exclude-committed-zero-pages"]);
        }
        let out = cmd.arg(&self.id).output()?;
        let took = t.elapsed();
        if warren_flags { &mut self.checkpoint } else { &mut self.checkpoint_default }.push(took);
        if !out.status.success() {
            bail!("runsc checkpoint: {}", String::from_utf8_lossy(&out.stderr));
        }
        if warren_flags {
            self.image_mib = dir_mib(&self.image);
        }
        let _ = self.runsc().args(["delete", "--force", &self.id]).output();
        let t = Instant::now();
        let st = self
            .runsc()
            .arg("restore")
            .arg(format!("--image-path={}", self.image.display()))
            .arg("--bundle")
            .arg(&self.bundle)
            .args(["--detach", &self.id])
            .stdout(Stdio::null())
            .status()?;
        // Restored once a command runs in it again, as Warren's wake is timed.
        let ok = st.success() && self.ready();
        let took = t.elapsed();
        if warren_flags { &mut self.restore } else { &mut self.restore_default }.push(took);
        if !ok {
            bail!("runsc restore failed");
        }
        Ok(())
    }

    /// Removes the container and its image; the figures if `rounds` went well.
    fn finish(self, rounds: Result<()>) -> Result<RunscFigures> {
        let _ = self.runsc().args(["delete", "--force", &self.id]).output();
        let _ = std::fs::remove_dir_all(&self.image);
        rounds?;
        Ok(RunscFigures {
            run: series("runsc: run -> output", self.run),
            checkpoint: series("runsc: checkpoint (Warren's flags)", self.checkpoint),
            restore: series("runsc: restore -> exec (Warren's flags)", self.restore),
            checkpoint_default: series("runsc: checkpoint (defaults)", self.checkpoint_default),
            restore_default: series("runsc: restore -> exec (defaults)", self.restore_default),
            image_mib: self.image_mib,
        })
    }
}
