//! Memory snapshots of native sandboxes (CRIU): a fork of many clones from one running sandbox
//! holding touched memory, and a template whose start command launched a server, created from
//! its memory image against booted cold. (Memory pauses and wakes are measured beside gVisor's,
//! in `gvisor.rs`.)

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use serde::Serialize;
use serde_json::json;
use warren_e2e::Daemon;

use crate::Series;

#[derive(Serialize)]
pub struct NativeMemory {
    /// The round of median time to all answered (see `fork_rounds`).
    pub fork: NativeFork,
    /// Every round, in order. The first fork after the host sat idle pays its hypervisor for
    /// the clones' fresh memory (this guest hands freed memory back to its host, and touching it
    /// again costs a host fault per block: 0.3 to 3 s per GiB), the later rounds reuse what the
    /// round before freed; the median is the steady figure, the first is kept beside it.
    pub fork_rounds: Vec<NativeFork>,
    /// Create → the template's server answers a request through the proxy, booted cold (the start
    /// command and ready check run) and restored from the template's memory image.
    pub server_cold: Series,
    pub server_from_memory: Series,
    /// Claimed from a pool of the template, whose sandboxes were restored from its memory image.
    pub server_pooled: Series,
    pub server_image_took_ms: u64,
}

/// A fork of `clones` copies of a sandbox holding `touched_mib` in a Python process: the call,
/// and until every clone answered an exec (asked eight at a time) with the token its copy of
/// the source's process holds in memory; memory on the host (PSS of every process in the cgroup).
#[derive(Serialize, Clone)]
pub struct NativeFork {
    pub touched_mib: u64,
    pub clones: usize,
    pub call_ms: f64,
    pub all_answer_ms: f64,
    /// Until every clone holds its memory (anonymous memory ≥ 90 % of the source's): with lazy
    /// restores the pages arrive after the clones answer.
    pub memory_complete_ms: f64,
    pub source_pss_mib: f64,
    pub clone_pss_mib: f64,
}

/// A Python process holding `mib` MiB of random bytes (incompressible, like real state) and a
/// random token, which it writes to `/tmp/told` when sent SIGUSR1: a clone that tells its
/// source's token has that variable in its own memory (the file system has no copy of it).
fn holder(mib: u64) -> String {
    format!(
        "python3 -c \"import os,signal,time; b=os.urandom({mib}<<20); t=os.urandom(8).hex(); \
         signal.signal(signal.SIGUSR1, lambda *_: open('/tmp/told','w').write(t)); \
         open('/tmp/ready','w').write('1'); time.sleep(1e9)\""
    )
}

/// Asks a sandbox's memory holder for its token (see [`holder`]).
const ASK_TOKEN: &str = "rm -f /tmp/told; pkill -USR1 -x python3 || exit 1; \
    for i in $(seq 500); do [ -s /tmp/told ] && exec cat /tmp/told; sleep 0.01; done; exit 1";

/// PSS of the processes of native sandbox `id` (found in any daemon's memory cgroup).
pub fn pss_mib(id: &str) -> f64 {
    let Ok(parents) = std::fs::read_dir("/sys/fs/cgroup/memory") else { return 0.0 };
    let procs = parents.flatten().map(|p| p.path().join(id).join("cgroup.procs")).find(|p| p.is_file());
    let Some(procs) = procs else { return 0.0 };
    let mut kib = 0u64;
    for pid in std::fs::read_to_string(procs).unwrap_or_default().split_whitespace() {
        let rollup = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).unwrap_or_default();
        kib += rollup
            .lines()
            .find_map(|l| l.strip_prefix("Pss:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .unwrap_or(0);
    }
    kib as f64 / 1024.0
}

/// Anonymous memory charged to native sandbox `id` (its memory cgroup's `rss` on cgroup v1,
/// `anon` on v2): what a restore has to copy back, without the shared file pages PSS splits.
pub fn anon_mib(id: &str) -> f64 {
    let roots = ["/sys/fs/cgroup/memory", "/sys/fs/cgroup"];
    for (root, key) in roots.iter().zip(["rss", "anon"]) {
        let Ok(parents) = std::fs::read_dir(root) else { continue };
        let stat = parents.flatten().map(|p| p.path().join(id).join("memory.stat")).find(|p| p.is_file());
        let Some(stat) = stat else { continue };
        let text = std::fs::read_to_string(stat).unwrap_or_default();
        let bytes = text.lines().find_map(|l| l.strip_prefix(key).and_then(|v| v.strip_prefix(' ')));
        return bytes.and_then(|b| b.trim().parse::<u64>().ok()).unwrap_or(0) as f64 / (1024.0 * 1024.0);
    }
    0.0
}

pub fn measure(
    d: &Daemon,
    root: &Path,
    n: usize,
    clones: usize,
    touched_mib: u64,
    rounds: usize,
) -> Result<NativeMemory> {
    let mut fork_rounds = Vec::with_capacity(rounds.max(1));
    for _ in 0..rounds.max(1) {
        fork_rounds.push(fork(d, clones, touched_mib)?);
    }
    let mut order: Vec<usize> = (0..fork_rounds.len()).collect();
    order.sort_by(|&a, &b| fork_rounds[a].all_answer_ms.total_cmp(&fork_rounds[b].all_answer_ms));
    let median = fork_rounds[order[order.len() / 2]].clone();
    let t = crate::template_server::measure(d, root, n, "native")?;
    Ok(NativeMemory {
        fork: median,
        fork_rounds,
        server_cold: t.cold,
        server_from_memory: t.from_memory,
        server_pooled: t.pooled,
        server_image_took_ms: t.image_took_ms,
    })
}

fn fork(d: &Daemon, clones: usize, mib: u64) -> Result<NativeFork> {
    let src = d.create(json!({"templateID": "base", "memoryMB": mib * 2 + 256, "timeout": 900}));
    src.sh(&format!("({} >/dev/null 2>&1 &)", holder(mib)));
    warren_e2e::wait_for("the memory holder", Duration::from_secs(120), || {
        (src.sh("cat /tmp/ready 2>/dev/null").stdout == "1").then_some(())
    });
    let token = src.sh(ASK_TOKEN).stdout;
    if token.len() != 16 {
        bail!("the memory holder told no token: {token:?}");
    }
    let source_pss_mib = pss_mib(&src.id);
    let source_anon = anon_mib(&src.id);
    let t = Instant::now();
    let (s, v) = d.api("POST", &format!("/sandboxes/{}/fork", src.id), Some(json!({"count": clones, "timeout": 600})));
    let call = t.elapsed();
    let forked = crate::fork_clones(d, &v);
    // Asked the way a client of many clones would: several at a time.
    let answered = std::thread::scope(|s| {
        let askers: Vec<_> = forked
            .chunks(forked.len().div_ceil(8).max(1))
            .map(|chunk| {
                let token = &token;
                s.spawn(move || chunk.iter().all(|c| c.sh(ASK_TOKEN).stdout == *token))
            })
            .collect();
        askers.into_iter().all(|a| a.join().unwrap_or(false))
    });
    let all = t.elapsed();
    let deadline = Instant::now() + Duration::from_secs(120);
    while Instant::now() < deadline && forked.iter().any(|c| anon_mib(&c.id) < source_anon * 0.9) {
        std::thread::sleep(Duration::from_millis(20));
    }
    let complete = t.elapsed();
    let per_clone: Vec<f64> = forked.iter().map(|c| pss_mib(&c.id)).collect();
    for c in forked.iter().chain([&src]) {
        d.api("DELETE", &format!("/sandboxes/{}", c.id), None);
    }
    if s != 201 || forked.len() != clones || !answered {
        bail!("native memory fork of {clones}: {s} {v}");
    }
    Ok(NativeFork {
        touched_mib: mib,
        clones,
        call_ms: call.as_secs_f64() * 1e3,
        all_answer_ms: all.as_secs_f64() * 1e3,
        memory_complete_ms: complete.as_secs_f64() * 1e3,
        source_pss_mib,
        clone_pss_mib: per_clone.iter().sum::<f64>() / per_clone.len().max(1) as f64,
    })
}
