//! `warren-bench`: starts a real daemon and measures, in the same run and on the same root
//! filesystem, Warren against `crun`:
//!
//! * cold create → first output: `POST /sandboxes` then `Process/Start /bin/echo hi` until the
//!   first stdout byte, vs `crun run` of `/bin/echo hi` (namespaces incl. user, cgroup limits);
//! * exec roundtrip: `Process/Start /bin/true` through the HTTP API until the end of the stream, vs
//!   `crun exec` into a running container;
//! * idle footprint: RSS/PSS of an idle sandbox's agent and the daemon's memory per sandbox;
//! * the E2B Python SDK end to end (`Sandbox.create()` + `commands.run("echo hi")` + `kill()`,
//!   `bench/e2b_sdk_bench.py`) beside the same three calls made directly over HTTP, when
//!   `--sdk-python` names an interpreter with the `e2b` package (creates claim from a warm pool);
//! * warm pools: time to interactive (claim → first output of `echo` through the API) at 1, 16
//!   and 64 concurrent clients; sustained claim + exec + kill throughput while pools refill;
//! * pause and resume latency;
//! * proxied HTTP to a server inside a sandbox: Warren vs nginx to the same backend (`proxy.rs`);
//! * fork: N clones of a running sandbox (filesystem mode) until every clone has answered an exec;
//! * a template whose start command runs a web server: create → the server answers through the
//!   proxy, cold and claimed from a pool;
//! * density (`--density N`): N idle sandboxes, host memory per sandbox running and paused, and
//!   the time to start them all;
//! * the gVisor runtime beside `runsc` driven directly (`gvisor.rs`): create → output vs `runsc
//!   run`, and pause/wake of a sandbox holding `--gvisor-mib` MiB vs `runsc checkpoint/restore`.
//!
//! Prints a table (p50, p99, ratio) and writes JSON.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Parser;
use serde::Serialize;
use serde_json::json;
use warren_e2e::Daemon;

mod gvisor;
mod memory;
mod native_memory;
mod proxy;
mod template_server;

#[derive(Parser)]
struct Args {
    /// State directory of the benchmark's daemon (templates are built under ROOT/templates once).
    #[arg(long, default_value = "/var/lib/warren-bench")]
    root: PathBuf,
    /// Iterations of the cold-start measurements (exec uses 5×).
    #[arg(long, default_value_t = 40)]
    iterations: usize,
    /// Where to write the JSON results.
    #[arg(long, default_value = "bench/results/latest.json")]
    out: PathBuf,
    /// A Python with the `e2b` SDK installed (scripts/test.sh's virtualenv); skips the SDK
    /// measurement when not given.
    #[arg(long)]
    sdk_python: Option<PathBuf>,
    /// Seconds of the sustained claim + exec + kill run.
    #[arg(long, default_value_t = 60)]
    sustain_secs: u64,
    /// Sandboxes started for the density measurement (0 skips it).
    #[arg(long, default_value_t = 0)]
    density: usize,
    /// Claims per client in the time-to-interactive runs.
    #[arg(long, default_value_t = 10)]
    claims_per_client: usize,
    /// Samples of the server-template measurement (0 skips it).
    #[arg(long, default_value_t = 40)]
    server_iterations: usize,
    /// Clones in the fork measurement (0 skips it).
    #[arg(long, default_value_t = 100)]
    fork_count: usize,
    /// Seconds of each wrk run in the proxy comparison (0 skips it).
    #[arg(long, default_value_t = 5)]
    proxy_secs: u32,
    /// MiB of touched memory in the gVisor pause/wake measurement (0 skips the gVisor runs).
    #[arg(long, default_value_t = 256)]
    gvisor_mib: u64,
    /// Clones in the native memory fork (CRIU), and the template-from-memory runs (0 skips both).
    #[arg(long, default_value_t = 100)]
    native_fork_count: usize,
    /// MiB of touched memory in the source of the native memory fork.
    #[arg(long, default_value_t = 64)]
    native_fork_mib: u64,
    /// Rounds of the native memory fork (each a fresh source); the median is reported.
    #[arg(long, default_value_t = 3)]
    native_fork_rounds: usize,
    /// Records in the memory store measurement (0 skips it).
    #[arg(long, default_value_t = 0)]
    memory_docs: usize,
    /// Vector length in the memory store measurement.
    #[arg(long, default_value_t = 384)]
    memory_dim: usize,
    /// Tenants the memory store measurement's records are spread over (queries name one).
    #[arg(long, default_value_t = 1)]
    memory_tenants: usize,
    /// Queries per channel in the memory store measurement.
    #[arg(long, default_value_t = 300)]
    memory_queries: usize,
    /// Measure the memory store only (no daemon, no sandboxes).
    #[arg(long)]
    memory_only: bool,
    /// Give the known-item set its vectors from this embedding model (of --memory-models-dir;
    /// needs the `embed` feature) instead of the stand-in model.
    #[arg(long)]
    memory_model: Option<String>,
    #[arg(long, default_value = "/opt/warren/models")]
    memory_models_dir: std::path::PathBuf,
    /// Records of the known-item set (0: as many as --memory-docs, up to WordNet's synsets).
    #[arg(long, default_value_t = 0)]
    memory_quality_docs: usize,
    /// Run as the proxy benchmark's backend inside a sandbox (internal).
    #[arg(long, hide = true)]
    backend_port: Option<u16>,
}

#[derive(Serialize)]
struct Series {
    name: String,
    samples: usize,
    p50_ms: f64,
    p99_ms: f64,
    mean_ms: f64,
}

pub(crate) fn series(name: &str, mut d: Vec<Duration>) -> Series {
    d.sort();
    let ms = |x: Duration| x.as_secs_f64() * 1000.0;
    let pct = |p: f64| ms(d[((d.len() as f64 - 1.0) * p).round() as usize]);
    Series {
        name: name.into(),
        samples: d.len(),
        p50_ms: pct(0.50),
        p99_ms: pct(0.99),
        mean_ms: d.iter().map(|x| ms(*x)).sum::<f64>() / d.len() as f64,
    }
}

/// The clones a fork call answered with (the failed ones left out).
pub(crate) fn fork_clones(d: &Daemon, v: &serde_json::Value) -> Vec<warren_e2e::Sandbox> {
    v.as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| {
            let sb = e.get("sandbox")?;
            Some(warren_e2e::Sandbox {
                id: sb["sandboxID"].as_str()?.to_owned(),
                token: sb["envdAccessToken"].as_str()?.to_owned(),
                url: d.url(),
                http: d.http.clone(),
            })
        })
        .collect()
}

fn main() -> Result<()> {
    let args = Args::parse();
    if let Some(port) = args.backend_port {
        proxy::serve_backend(port);
    }
    let memory_run = |args: &Args| -> Result<Option<memory::MemoryBench>> {
        if args.memory_docs == 0 {
            return Ok(None);
        }
        let model = match &args.memory_model {
            Some(name) => Some(warren_memory::embed::Models::new(Some(args.memory_models_dir.clone())).get(name)?),
            None => None,
        };
        let sizes = memory::Sizes {
            docs: args.memory_docs,
            dim: args.memory_dim,
            tenants: args.memory_tenants,
            queries: args.memory_queries,
            quality_docs: args.memory_quality_docs,
        };
        let m = memory::measure(&args.root, &sizes, model.as_deref())?;
        for s in [&m.bm25, &m.vector, &m.vector_other_ef, &m.hybrid] {
            println!("{:<40} {:>8} {:>10.2} {:>10.2}", s.name, s.samples, s.p50_ms, s.p99_ms);
        }
        println!(
            "memory, {} records x {}-d over {} tenant(s): ingest {:.0} records/s; ANN recall@10 vs exact f32 {:.3} (ef {}: {:.3}; far queries {:.3}); {:.1} MiB on disk (rows {:.1}, text {:.1}, graphs {:.1}) vs {:.1} MiB raw JSON + f32 (ratio {:.2})",
            m.docs,
            m.dimension,
            m.tenants,
            m.ingest_docs_per_sec,
            m.ann_recall_at_10,
            m.other_ef,
            m.ann_recall_at_10_other_ef,
            m.ann_recall_at_10_far,
            m.bytes_on_disk as f64 / 1048576.0,
            m.bytes_rows as f64 / 1048576.0,
            m.bytes_text as f64 / 1048576.0,
            m.bytes_graphs as f64 / 1048576.0,
            m.raw_bytes as f64 / 1048576.0,
            m.storage_ratio
        );
        println!(
            "memory: the flush after the ingest (text commit + graph save) {:.2} s; opening the store again {:.2} s (graphs read), {:.2} s (graphs rebuilt)",
            m.flush_secs, m.reopen_secs, m.rebuild_secs
        );
        if let Some(rate) = m.embed_texts_per_sec {
            println!("memory: {} embedded {rate:.0} texts/s", m.quality_model);
        }
        println!(
            "memory known-item: linear fusion text weight {:.1} (chosen on {} dev queries; figures from the other {})",
            m.linear_text_weight, m.quality_queries, m.quality_queries
        );
        for q in &m.quality {
            println!(
                "memory known-item ({} records, {} test queries, {}) {:<13} MRR@10 {:.3}  nDCG@10 {:.3}  Recall@100 {:.3}",
                m.quality_docs,
                m.quality_queries,
                m.quality_model,
                q.channel,
                q.mrr_at_10,
                q.ndcg_at_10,
                q.recall_at_100
            );
        }
        Ok(Some(m))
    };
    if args.memory_only {
        let m = memory_run(&args)?;
        std::fs::write(&args.out, serde_json::to_vec_pretty(&json!({"memory": m, "host": host_info()}))?)?;
        println!("wrote {}", args.out.display());
        return Ok(());
    }
    // Room for the density run and the pools beside it.
    let daemon = Daemon::start_with(
        &args.root,
        "bench",
        &format!(
            "[sandbox]\nmax_sandboxes = {}\n[network]\nbridge = \"wtbench\"\ncidr = \"10.248.0.0/16\"\n",
            (args.density + 1000).max(4096)
        ),
    );
    let rootfs = args.root.join("templates/base/rootfs");
    let n = args.iterations.max(3);

    let cold = warren_cold(&daemon, n)?;
    // crun's sandbox has loopback only: compare with a daemon whose sandboxes have no network too.
    let cold_nonet = {
        let plain = Daemon::start_with(&args.root, "bench-nonet", "[network]\nenabled = false\n");
        let s = warren_cold(&plain, n).map(|mut s| {
            s.name = "warren, no network: create -> output".into();
            s
        });
        plain.kill9();
        s?
    };
    let exec = warren_exec(&daemon, n * 5)?;
    let server = match args.server_iterations {
        0 => None,
        k => Some(server_ready(&daemon, k)?),
    };
    let forked = match args.fork_count {
        0 => None,
        count => Some(fork_many(&daemon, count)?),
    };
    let proxied = match args.proxy_secs {
        0 => None,
        secs => Some(proxy::proxy_vs_nginx(&daemon, &args.root, secs)?),
    };
    let idle = idle_footprint(&daemon, 10)?;
    let sdk = match &args.sdk_python {
        Some(py) => {
            // The SDK creates with the default shape: a pool of that shape makes its creates claims.
            let pool = WarmPool::new(&daemon, "bench-sdk", None, 8, 32)?;
            let r = (e2b_sdk(&daemon, py, n)?, direct_create_run_kill(&daemon, n)?);
            pool.remove();
            Some(r)
        }
        None => None,
    };
    let tti: Vec<Series> = [1usize, 16, 64]
        .iter()
        .map(|c| time_to_interactive(&daemon, *c, args.claims_per_client))
        .collect::<Result<_>>()?;
    let sustained = sustained_claims(&daemon, Duration::from_secs(args.sustain_secs))?;
    let (pause, resume) = pause_resume(&daemon, n * 5)?;
    // One bridge holds at most 1023 sandboxes' links: thousands of sandboxes are measured on a
    // daemon without networking.
    let density = if args.density > 0 {
        let plain = Daemon::start_with(
            &args.root,
            "bench-nonet",
            &format!("[sandbox]\nmax_sandboxes = {}\n[network]\nenabled = false\n", args.density + 100),
        );
        let r = density(&plain, args.density);
        plain.kill9();
        Some(r?)
    } else {
        None
    };

    let bundle = crun_bundle(&args.root, &rootfs)?;
    let crun_cold = crun_run(&bundle, n)?;
    let crun_exec = crun_exec(&bundle, n * 5)?;
    let gv = match args.gvisor_mib {
        0 => None,
        mib => Some(gvisor::measure(&daemon, &args.root, &bundle, n, mib)?),
    };
    let native_mem = match args.native_fork_count {
        0 => None,
        clones => {
            // The phases before tore down hundreds of sandboxes; the kernel finishes that in the
            // background (network namespaces, subvolumes), and the fork is CPU-bound.
            wait_until_quiet(Duration::from_secs(60));
            Some(native_memory::measure(&daemon, &args.root, n, clones, args.native_fork_mib, args.native_fork_rounds)?)
        }
    };

    let mem = memory_run(&args)?;
    let report = json!({
        "memory": mem,
        "warren_cold_create_to_first_output": cold,
        "crun_run_to_first_output": crun_cold,
        "warren_cold_without_network": cold_nonet,
        "ratio_cold_without_network_p50": cold_nonet.p50_ms / crun_cold.p50_ms,
        "warren_exec_true_via_api": exec,
        "crun_exec_true": crun_exec,
        "ratio_cold_p50": cold.p50_ms / crun_cold.p50_ms,
        "ratio_exec_p50": exec.p50_ms / crun_exec.p50_ms,
        "idle": idle,
        "e2b_python_sdk_create_run_kill": sdk.as_ref().map(|s| &s.0.total),
        "e2b_python_sdk_phases": sdk.as_ref().map(|s| [&s.0.create, &s.0.run, &s.0.kill]),
        "direct_http_create_run_kill": sdk.as_ref().map(|s| &s.1),
        "pool_time_to_interactive": tti,
        "sustained_claim_exec_kill": sustained,
        "pause": pause,
        "resume": resume,
        "density": density,
        "proxy_vs_nginx": proxied,
        "fork": forked,
        "template_server_ready": server,
        "gvisor": gv,
        "native_memory": native_mem,
        "host": host_info(),
    });
    println!("{:<40} {:>8} {:>10} {:>10}", "measurement", "samples", "p50 ms", "p99 ms");
    let mut rows = vec![&cold, &cold_nonet, &crun_cold, &exec, &crun_exec];
    if let Some((s, direct)) = &sdk {
        rows.extend([&s.total, &s.create, &s.run, &s.kill, direct]);
    }
    rows.extend(tti.iter());
    rows.extend([&pause, &resume]);
    if let Some((cold, warm)) = &server {
        rows.extend([cold, warm]);
    }
    if let Some(g) = &gv {
        rows.extend([
            &g.warren_create,
            &g.runsc_run,
            &g.warren_exec,
            &g.warren_pause,
            &g.runsc_checkpoint,
            &g.runsc_checkpoint_default,
            &g.warren_wake,
            &g.runsc_restore,
            &g.runsc_restore_default,
            &g.server_cold,
            &g.server_from_memory,
            &g.server_pooled,
        ]);
        if let Some(n) = &g.native {
            rows.extend([&n.pause, &n.wake, &n.wake_memory_complete]);
        }
    }
    if let Some(m) = &native_mem {
        rows.extend([&m.server_cold, &m.server_from_memory, &m.server_pooled]);
    }
    for s in rows {
        println!("{:<40} {:>8} {:>10.2} {:>10.2}", s.name, s.samples, s.p50_ms, s.p99_ms);
    }
    if let Some(m) = &native_mem {
        let f = &m.fork;
        let rounds: Vec<String> = m.fork_rounds.iter().map(|r| format!("{:.0}", r.all_answer_ms)).collect();
        println!(
            "native fork {} clones in memory mode ({} MiB touched), median of rounds [{}] ms: call {:.0} ms, all answered an exec after {:.0} ms, all held their memory after {:.0} ms; PSS {:.1} MiB per clone (source {:.1} MiB)",
            f.clones, f.touched_mib, rounds.join(", "), f.call_ms, f.all_answer_ms, f.memory_complete_ms, f.clone_pss_mib, f.source_pss_mib
        );
        println!(
            "native server template: create -> 200 p50 {:.1} ms from its memory image (taken in {} ms) vs {:.1} ms cold",
            m.server_from_memory.p50_ms, m.server_image_took_ms, m.server_cold.p50_ms
        );
    }
    if let Some(g) = &gv {
        println!(
            "gvisor, {} MiB touched: wake p50 {:.0} ms vs runsc restore {:.0} ms with the same flags (ratio {:.2}), {:.0} ms with its defaults (ratio {:.2}); image {:.0} MiB (runsc {:.0} MiB); create p50 ratio to runsc run {:.2}",
            g.touched_mib,
            g.warren_wake.p50_ms,
            g.runsc_restore.p50_ms,
            g.warren_wake.p50_ms / g.runsc_restore.p50_ms,
            g.runsc_restore_default.p50_ms,
            g.warren_wake.p50_ms / g.runsc_restore_default.p50_ms,
            g.warren_image_mib,
            g.runsc_image_mib,
            g.warren_create.p50_ms / g.runsc_run.p50_ms
        );
        for f in &g.forks {
            println!(
                "gvisor fork {} clones in memory mode ({} MiB touched): call {:.0} ms, all answered an exec after {:.0} ms; PSS {:.0} MiB per clone (source {:.0} MiB)",
                f.clones, f.touched_mib, f.call_ms, f.all_answer_ms, f.clone_pss_mib, f.source_pss_mib
            );
        }
        println!("gvisor server template: memory image taken in {} ms", g.server_image_took_ms);
        if let Some(n) = &g.native {
            println!(
                "native memory pause (CRIU), {} MiB touched: wake p50 {:.0} ms (gvisor {:.0} ms, ratio {:.2}); pause p50 {:.0} ms (gvisor {:.0} ms); image {:.0} MiB (gvisor {:.0} MiB)",
                g.touched_mib,
                n.wake.p50_ms,
                g.warren_wake.p50_ms,
                n.wake.p50_ms / g.warren_wake.p50_ms,
                n.pause.p50_ms,
                g.warren_pause.p50_ms,
                n.image_mib,
                g.warren_image_mib
            );
        }
    }
    println!(
        "sustained claim+exec+kill: {:.0}/s over {:.0} s with {} clients ({} done, {} errors)",
        sustained.per_sec, sustained.secs, sustained.clients, sustained.completed, sustained.errors
    );
    if let Some(dn) = &density {
        println!(
            "density: {} sandboxes started in {:.1} s ({:.1}/s); host memory {:.2} MiB/sandbox running, {:.2} MiB/sandbox with half paused, {:.2} with half paused to disk",
            dn.sandboxes, dn.start_secs, dn.sandboxes as f64 / dn.start_secs, dn.host_mib_per_sandbox, dn.host_mib_per_sandbox_half_paused, dn.host_mib_per_sandbox_half_on_disk
        );
    }
    if let Some(f) = &forked {
        println!(
            "fork {} clones of a running sandbox: all answered an exec after {:.0} ms (fork call {:.0} ms; {} failed)",
            f.clones, f.all_answer_ms, f.fork_call_ms, f.failed
        );
    }
    if let Some(p) = &proxied {
        println!(
            "proxied HTTP, 64 connections (median of {} alternating rounds): warren {:.0} req/s, nginx {:.0} req/s, direct {:.0} req/s (ratio to nginx {:.2}; rounds warren {:?}, nginx {:?})",
            p.warren_rounds_rps.len(),
            p.warren.rps,
            p.nginx.rps,
            p.direct.rps,
            p.ratio_rps_vs_nginx,
            p.warren_rounds_rps.iter().map(|r| r.round() as u64).collect::<Vec<_>>(),
            p.nginx_rounds_rps.iter().map(|r| r.round() as u64).collect::<Vec<_>>()
        );
        println!(
            "proxied HTTP, 1 connection p50/p99 ms: warren {:.3}/{:.3}, nginx {:.3}/{:.3}, direct {:.3}/{:.3} (added p99: warren {:.3}, nginx {:.3})",
            p.warren.p50_ms, p.warren.p99_ms, p.nginx.p50_ms, p.nginx.p99_ms, p.direct.p50_ms, p.direct.p99_ms,
            p.warren_added_p99_ms, p.nginx_added_p99_ms
        );
    }
    println!("ratio cold p50 (warren / crun run):  {:.2}", cold.p50_ms / crun_cold.p50_ms);
    println!("ratio cold p50, both loopback only:  {:.2}", cold_nonet.p50_ms / crun_cold.p50_ms);
    println!("ratio exec p50 (warren / crun exec): {:.2}", exec.p50_ms / crun_exec.p50_ms);
    println!(
        "idle sandbox: agent RSS {:.2} MiB (PSS {:.2} MiB), daemon bookkeeping {:.3} MiB/sandbox",
        idle.agent_rss_mib, idle.agent_pss_mib, idle.daemon_mib_per_sandbox
    );
    if let Some(dir) = args.out.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&args.out, serde_json::to_string_pretty(&report)?)?;
    println!("wrote {}", args.out.display());
    daemon.kill9();
    Ok(())
}

/// A template that starts `python3 -m http.server` with a ready check: create → first HTTP 200
/// from the server through the proxy, cold and from a pool of that template.
fn server_ready(d: &Daemon, n: usize) -> Result<(Series, Series)> {
    let tpl = json!({"templateID": "bench-web", "from": "base", "startCmd": "exec python3 -m http.server 8080",
                     "readyCmd": "bash -c '</dev/tcp/127.0.0.1/8080'", "readyTimeout": 30});
    let (status, v) = d.api("POST", "/templates", Some(tpl));
    if status != 201 {
        bail!("deriving the server template: {status} {v}");
    }
    let get = |id: &str| -> Result<()> {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(("127.0.0.1", d.port))?;
        s.set_read_timeout(Some(Duration::from_secs(15)))?;
        write!(s, "GET / HTTP/1.1\r\nHost: 8080-{id}.localhost:{}\r\nConnection: close\r\n\r\n", d.port)?;
        let mut out = String::new();
        s.read_to_string(&mut out).with_context(|| format!("reading the answer of the server in {id}"))?;
        if !out.starts_with("HTTP/1.1 200") {
            bail!("the server of {id} answered: {}", out.lines().next().unwrap_or(""));
        }
        Ok(())
    };
    let measure = |body: serde_json::Value| -> Result<Vec<Duration>> {
        let mut samples = Vec::with_capacity(n);
        for _ in 0..n + 1 {
            let t = Instant::now();
            let sb = d.create(body.clone());
            get(&sb.id)?;
            samples.push(t.elapsed());
            d.api("DELETE", &format!("/sandboxes/{}", sb.id), None);
        }
        samples.remove(0);
        Ok(samples)
    };
    let cold = measure(json!({"templateID": "bench-web"}))?;
    d.api("DELETE", "/pools/bench-web", None);
    let pool = json!({"name": "bench-web", "templateID": "bench-web", "memoryMB": 384, "minReady": 4, "maxSize": 8});
    if d.api("POST", "/pools", Some(pool)).0 != 201 {
        bail!("creating the server pool");
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    while d.api("GET", "/pools/bench-web", None).1["ready"].as_u64() < Some(4) {
        if Instant::now() > deadline {
            bail!("the server pool did not fill");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut warm = Vec::with_capacity(n);
    for _ in 0..n {
        // Claims one at a time, each with a refilled pool, as an interactive user would.
        let refill = Instant::now() + Duration::from_secs(60);
        while d.api("GET", "/pools/bench-web", None).1["ready"].as_u64() < Some(2) {
            if Instant::now() > refill {
                bail!("the server pool did not refill");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let t = Instant::now();
        let sb = d.create(json!({"templateID": "bench-web", "memoryMB": 384}));
        get(&sb.id)?;
        warm.push(t.elapsed());
        d.api("DELETE", &format!("/sandboxes/{}", sb.id), None);
    }
    d.api("DELETE", "/pools/bench-web", None);
    d.api("DELETE", "/templates/bench-web", None);
    Ok((series("server template: create -> HTTP 200", cold), series("server template: claim -> HTTP 200", warm)))
}

#[derive(Serialize)]
struct Fork {
    clones: usize,
    failed: usize,
    /// From the fork call until it answered (every clone booted).
    fork_call_ms: f64,
    /// From the fork call until every clone has answered `/bin/true` through the API.
    all_answer_ms: f64,
}

/// Forks `count` clones of a sandbox with some files in it in filesystem mode, then execs in each
/// (in parallel).
fn fork_many(d: &Daemon, count: usize) -> Result<Fork> {
    let src = d.create(json!({"templateID": "base", "timeout": 600}));
    let r = src.sh("mkdir -p /home/user/work && seq 1 100000 > /home/user/work/data && echo ok");
    if r.stdout != "ok\n" {
        bail!("preparing the fork source: {r:?}");
    }
    let t = Instant::now();
    let (status, v) = d.api(
        "POST",
        &format!("/sandboxes/{}/fork", src.id),
        Some(json!({"count": count, "timeout": 600, "memory": false})),
    );
    let fork_call = t.elapsed();
    if status != 201 {
        bail!("fork answered {status}: {v}");
    }
    let clones = fork_clones(d, &v);
    let failed = count - clones.len();
    std::thread::scope(|s| {
        for chunk in clones.chunks(clones.len().div_ceil(8).max(1)) {
            s.spawn(move || {
                for c in chunk {
                    c.run(json!({"process": {"cmd": "/bin/true"}}), &[]);
                }
            });
        }
    });
    let all = t.elapsed();
    for c in &clones {
        d.api("DELETE", &format!("/sandboxes/{}", c.id), None);
    }
    d.api("DELETE", &format!("/sandboxes/{}", src.id), None);
    Ok(Fork {
        clones: clones.len(),
        failed,
        fork_call_ms: fork_call.as_secs_f64() * 1000.0,
        all_answer_ms: all.as_secs_f64() * 1000.0,
    })
}

fn warren_cold(d: &Daemon, n: usize) -> Result<Series> {
    let mut samples = Vec::with_capacity(n);
    for _ in 0..n + 2 {
        let t = Instant::now();
        let sb = d.create(json!({"templateID": "base"}));
        let mut frames =
            sb.stream("process.Process/Start", json!({"process": {"cmd": "/bin/echo", "args": ["hi"]}}), &[]);
        loop {
            let (_, msg) = frames.next_frame().context("stream ended before any output")?;
            if msg["event"]["data"]["stdout"].is_string() {
                break;
            }
        }
        samples.push(t.elapsed());
        d.api("DELETE", &format!("/sandboxes/{}", sb.id), None);
    }
    samples.drain(..2); // warm-up
    Ok(series("warren: create -> first output", samples))
}

struct SdkSeries {
    total: Series,
    create: Series,
    run: Series,
    kill: Series,
}

/// Runs bench/e2b_sdk_bench.py against the daemon with the unmodified SDK.
fn e2b_sdk(d: &Daemon, python: &Path, n: usize) -> Result<SdkSeries> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("e2b_sdk_bench.py");
    let out = Command::new(python)
        .arg(&script)
        .arg(n.to_string())
        .env("E2B_API_KEY", d.key())
        .env("E2B_API_URL", d.url())
        .env("E2B_SANDBOX_URL", d.url())
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("running {} with {}", script.display(), python.display()))?;
    if !out.status.success() {
        bail!("the E2B SDK benchmark failed ({})", out.status);
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).context("reading the SDK benchmark's JSON")?;
    let get = |key: &str, name: &str| -> Result<Series> {
        let ms: Vec<f64> = serde_json::from_value(v[key].clone()).with_context(|| format!("field {key}"))?;
        Ok(series(name, ms.into_iter().map(|m| Duration::from_secs_f64(m / 1000.0)).collect()))
    };
    Ok(SdkSeries {
        total: get("total_ms", "e2b python sdk: create+run+kill")?,
        create: get("create_ms", "  of which Sandbox.create()")?,
        run: get("run_ms", "  of which commands.run(echo hi)")?,
        kill: get("kill_ms", "  of which kill()")?,
    })
}

/// The same three calls as the SDK benchmark, straight over HTTP: what the SDK adds is the difference.
fn direct_create_run_kill(d: &Daemon, n: usize) -> Result<Series> {
    let mut samples = Vec::with_capacity(n);
    for _ in 0..n + 2 {
        let t = Instant::now();
        let sb = d.create(json!({"templateID": "base"}));
        let r = sb.run(json!({"process": {"cmd": "/bin/bash", "args": ["-l", "-c", "echo hi"]}}), &[]);
        d.api("DELETE", &format!("/sandboxes/{}", sb.id), None);
        samples.push(t.elapsed());
        if r.stdout != "hi\n" {
            bail!("unexpected output {:?}", r.stdout);
        }
    }
    samples.drain(..2);
    Ok(series("direct HTTP: create+run+kill", samples))
}

/// A pool created for one measurement and removed after it.
struct WarmPool<'a> {
    d: &'a Daemon,
    name: String,
}

impl<'a> WarmPool<'a> {
    /// Creates the pool (shape: base, default CPU and disk, `memory_mb` or the default) and waits
    /// until `min_ready` sandboxes are ready.
    fn new(d: &'a Daemon, name: &str, memory_mb: Option<u64>, min_ready: u32, max_size: u32) -> Result<Self> {
        d.api("DELETE", &format!("/pools/{name}"), None);
        let mut spec = json!({"name": name, "templateID": "base", "minReady": min_ready, "maxSize": max_size,
                              "refillConcurrency": 2, "emptyWaitMs": 2000});
        if let Some(m) = memory_mb {
            spec["memoryMB"] = json!(m);
        }
        let (status, v) = d.api("POST", "/pools", Some(spec));
        if status != 201 {
            bail!("creating pool {name}: {v}");
        }
        let deadline = Instant::now() + Duration::from_secs(300);
        while d.api("GET", &format!("/pools/{name}"), None).1["ready"].as_u64() < Some(u64::from(min_ready)) {
            if Instant::now() > deadline {
                bail!("pool {name} did not fill");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(WarmPool { d, name: name.into() })
    }

    fn remove(self) {
        self.d.api("DELETE", &format!("/pools/{}", self.name), None);
    }
}

/// Claim → first stdout byte of `echo hi` through the HTTP API, `clients` at once. The pool holds
/// a ready sandbox for every claim of the run, so this measures claims, not how fast a drained
/// pool refills (the sustained run measures that).
fn time_to_interactive(d: &Daemon, clients: usize, per_client: usize) -> Result<Series> {
    let size = (clients * per_client).max(8) as u32;
    let pool = WarmPool::new(d, "bench-tti", Some(256), size, size)?;
    let samples = std::sync::Mutex::new(Vec::new());
    let failed = std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|s| {
        for _ in 0..clients {
            s.spawn(|| {
                for _ in 0..per_client {
                    let t = Instant::now();
                    let Ok((sb, _)) = d.try_create(json!({"templateID": "base", "memoryMB": 256})) else {
                        failed.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        continue;
                    };
                    let mut frames = sb.stream(
                        "process.Process/Start",
                        json!({"process": {"cmd": "/bin/echo", "args": ["hi"]}}),
                        &[],
                    );
                    while let Some((_, msg)) = frames.next_frame() {
                        if msg["event"]["data"]["stdout"].is_string() {
                            samples.lock().unwrap().push(t.elapsed());
                            break;
                        }
                    }
                    drop(frames);
                    d.api("DELETE", &format!("/sandboxes/{}", sb.id), None);
                }
            });
        }
    });
    pool.remove();
    let samples = samples.into_inner().unwrap();
    let failed = failed.into_inner();
    if samples.is_empty() || failed > 0 {
        bail!("time to interactive at {clients} clients: {failed} creates failed");
    }
    Ok(series(&format!("pool claim -> first output, {clients} clients"), samples))
}

#[derive(Serialize)]
struct Sustained {
    clients: usize,
    secs: f64,
    completed: usize,
    errors: usize,
    per_sec: f64,
}

/// Claim + exec `true` + kill in a loop from several clients while the pool refills.
fn sustained_claims(d: &Daemon, length: Duration) -> Result<Sustained> {
    let clients = 8;
    let pool = WarmPool::new(d, "bench-sustain", Some(258), 32, 256)?;
    d.api("PATCH", "/pools/bench-sustain", Some(json!({"refillConcurrency": 4, "targetFreeFraction": 0.5})));
    let done = std::sync::atomic::AtomicUsize::new(0);
    let errors = std::sync::atomic::AtomicUsize::new(0);
    let started = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..clients {
            s.spawn(|| {
                while started.elapsed() < length {
                    let Ok((sb, _)) = d.try_create(json!({"templateID": "base", "memoryMB": 258})) else {
                        errors.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        continue;
                    };
                    let r = sb.run(json!({"process": {"cmd": "/bin/true"}}), &[]);
                    d.api("DELETE", &format!("/sandboxes/{}", sb.id), None);
                    if r.exit_code == Some(0) {
                        done.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    } else {
                        errors.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                }
            });
        }
    });
    let secs = started.elapsed().as_secs_f64();
    pool.remove();
    let completed = done.into_inner();
    Ok(Sustained { clients, secs, completed, errors: errors.into_inner(), per_sec: completed as f64 / secs })
}

fn pause_resume(d: &Daemon, n: usize) -> Result<(Series, Series)> {
    let sb = d.create(json!({"templateID": "base"}));
    sb.sh("sleep 600 >/dev/null 2>&1 &");
    let (mut p, mut r) = (Vec::with_capacity(n), Vec::with_capacity(n));
    for i in 0..n + 5 {
        let t = Instant::now();
        let (s1, v1) = d.api("POST", &format!("/sandboxes/{}/pause", sb.id), Some(json!({})));
        let tp = t.elapsed();
        let t = Instant::now();
        let (s2, v2) = d.api("POST", &format!("/sandboxes/{}/connect", sb.id), Some(json!({"timeout": 300})));
        let tr = t.elapsed();
        if s1 != 204 || s2 != 201 {
            bail!("pause {s1} {v1} / resume {s2} {v2}");
        }
        if i >= 5 {
            p.push(tp);
            r.push(tr);
        }
    }
    d.api("DELETE", &format!("/sandboxes/{}", sb.id), None);
    Ok((series("pause (POST /pause)", p), series("resume (POST /connect)", r)))
}

#[derive(Serialize)]
struct Density {
    sandboxes: usize,
    start_secs: f64,
    host_mib_per_sandbox: f64,
    host_mib_per_sandbox_half_paused: f64,
    /// With half of them paused to disk (`memory: false`).
    host_mib_per_sandbox_half_on_disk: f64,
}

/// Waits (up to `max`) until the CPUs have been at least 90 % idle for half a second.
fn wait_until_quiet(max: Duration) {
    let busy_idle = || -> Option<(u64, u64)> {
        let stat = std::fs::read_to_string("/proc/stat").ok()?;
        let v: Vec<u64> = stat.lines().next()?.split_whitespace().skip(1).filter_map(|f| f.parse().ok()).collect();
        // user nice system idle iowait irq softirq steal
        Some((v.iter().take(8).sum(), v.get(3)? + v.get(4)?))
    };
    let deadline = Instant::now() + max;
    while Instant::now() < deadline {
        let Some((t0, i0)) = busy_idle() else { return };
        std::thread::sleep(Duration::from_millis(500));
        let Some((t1, i1)) = busy_idle() else { return };
        if t1 > t0 && (i1 - i0) * 10 >= (t1 - t0) * 9 {
            return;
        }
    }
}

fn mem_available_kib() -> f64 {
    std::fs::read_to_string("/proc/meminfo").map(|s| kib(&s, "MemAvailable:")).unwrap_or(0.0)
}

/// Starts `n` sandboxes (4 clients at once), lets them go idle, and reads the host's available
/// memory before and after, then with half of them paused.
fn density(d: &Daemon, n: usize) -> Result<Density> {
    let before = mem_available_kib();
    let ids = std::sync::Mutex::new(Vec::with_capacity(n));
    let next = std::sync::atomic::AtomicUsize::new(0);
    let started = Instant::now();
    let failure = std::sync::Mutex::new(None);
    std::thread::scope(|s| {
        for _ in 0..4 {
            s.spawn(|| {
                while next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) < n {
                    let (status, v) = d.api("POST", "/sandboxes", Some(json!({"templateID": "base", "timeout": 3600})));
                    if status != 201 {
                        *failure.lock().unwrap() = Some(format!("create {status}: {v}"));
                        return;
                    }
                    ids.lock().unwrap().push(v["sandboxID"].as_str().unwrap_or_default().to_owned());
                }
            });
        }
    });
    let start_secs = started.elapsed().as_secs_f64();
    let ids = ids.into_inner().unwrap();
    let result = (|| {
        if let Some(f) = failure.lock().unwrap().take() {
            bail!("density run stopped after {} sandboxes: {f}", ids.len());
        }
        // Agents hand back their start-up memory after a second idle.
        std::thread::sleep(Duration::from_millis(2000));
        let running = (before - mem_available_kib()) / 1024.0 / ids.len() as f64;
        for id in ids.iter().step_by(2) {
            d.api("POST", &format!("/sandboxes/{id}/pause"), Some(json!({})));
        }
        let half = (before - mem_available_kib()) / 1024.0 / ids.len() as f64;
        // The same half moved to disk: its processes end and their memory goes back to the host.
        for id in ids.iter().step_by(2) {
            d.api("POST", &format!("/sandboxes/{id}/pause"), Some(json!({"memory": false})));
        }
        std::thread::sleep(Duration::from_millis(2000));
        let half_on_disk = (before - mem_available_kib()) / 1024.0 / ids.len() as f64;
        Ok(Density {
            sandboxes: ids.len(),
            start_secs,
            host_mib_per_sandbox: running,
            host_mib_per_sandbox_half_paused: half,
            host_mib_per_sandbox_half_on_disk: half_on_disk,
        })
    })();
    for id in &ids {
        d.api("DELETE", &format!("/sandboxes/{id}"), None);
    }
    result
}

fn warren_exec(d: &Daemon, n: usize) -> Result<Series> {
    let sb = d.create(json!({"templateID": "base"}));
    let mut samples = Vec::with_capacity(n);
    for _ in 0..n + 5 {
        let t = Instant::now();
        let r = sb.run(json!({"process": {"cmd": "/bin/true"}}), &[]);
        samples.push(t.elapsed());
        if r.exit_code != Some(0) {
            bail!("exec of /bin/true failed: {r:?}");
        }
    }
    d.api("DELETE", &format!("/sandboxes/{}", sb.id), None);
    samples.drain(..5);
    Ok(series("warren: exec true via HTTP API", samples))
}

#[derive(Serialize)]
struct Idle {
    sandboxes: usize,
    agent_rss_mib: f64,
    agent_pss_mib: f64,
    daemon_mib_per_sandbox: f64,
}

fn kib(status: &str, key: &str) -> f64 {
    status
        .lines()
        .find(|l| l.starts_with(key))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

fn daemon_pid(d: &Daemon) -> Option<i32> {
    let cfg = d.config.display().to_string();
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let pid: i32 = e.file_name().to_str()?.parse().ok()?;
        let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
        let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
        (cmd.contains(" serve ") && cmd.contains(&cfg)).then_some(pid)
    })
}

fn agent_pids(parent: &str) -> Vec<i32> {
    std::fs::read_dir("/proc")
        .map(|rd| {
            rd.flatten()
                .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
                .filter(|pid| {
                    std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == "warren-agent")
                        && std::fs::read_to_string(format!("/proc/{pid}/cgroup")).is_ok_and(|c| c.contains(parent))
                })
                .collect()
        })
        .unwrap_or_default()
}

fn idle_footprint(d: &Daemon, n: usize) -> Result<Idle> {
    let pid = daemon_pid(d).context("finding the daemon's pid")?;
    let rss = || std::fs::read_to_string(format!("/proc/{pid}/status")).map(|s| kib(&s, "VmRSS:")).unwrap_or(0.0);
    // Warm the daemon's allocator and connection paths before the baseline.
    let warm = d.create(json!({"templateID": "base"}));
    d.api("DELETE", &format!("/sandboxes/{}", warm.id), None);
    let before = rss();
    let boxes: Vec<_> = (0..n).map(|_| d.create(json!({"templateID": "base"}))).collect();
    for b in &boxes {
        b.sh("true");
    }
    // Let every agent go idle: agents return freed memory after a second without activity.
    std::thread::sleep(Duration::from_millis(1500));
    let after = rss();
    let agents = agent_pids(&format!("warren-e2e-{}", d.name));
    let (mut r, mut p) = (0.0, 0.0);
    for a in &agents {
        r += std::fs::read_to_string(format!("/proc/{a}/status")).map(|s| kib(&s, "VmRSS:")).unwrap_or(0.0);
        p += std::fs::read_to_string(format!("/proc/{a}/smaps_rollup")).map(|s| kib(&s, "Pss:")).unwrap_or(0.0);
    }
    for b in &boxes {
        d.api("DELETE", &format!("/sandboxes/{}", b.id), None);
    }
    let k = agents.len().max(1) as f64;
    Ok(Idle {
        sandboxes: agents.len(),
        agent_rss_mib: r / k / 1024.0,
        agent_pss_mib: p / k / 1024.0,
        daemon_mib_per_sandbox: (after - before).max(0.0) / n as f64 / 1024.0,
    })
}

/// An OCI bundle over the same template rootfs, with the same namespaces and uid mapping.
fn crun_bundle(root: &Path, rootfs: &Path) -> Result<PathBuf> {
    // crun refuses a host with v1 controllers beside an empty v2 tree until a v1 hugetlb hierarchy
    // is mounted; mount one for the baseline if it is missing.
    if Path::new("/sys/fs/cgroup/cpu").exists() && !Path::new("/sys/fs/cgroup/hugetlb/cgroup.procs").exists() {
        std::fs::create_dir_all("/sys/fs/cgroup/hugetlb").ok();
        let _ =
            Command::new("mount").args(["-t", "cgroup", "-o", "hugetlb", "cgroup", "/sys/fs/cgroup/hugetlb"]).status();
    }
    let bundle = root.join("crun-bundle");
    std::fs::create_dir_all(&bundle)?;
    let mapping = json!([{"containerID": 0, "hostID": 1_000_000, "size": 65536}]);
    let config = json!({
        "ociVersion": "1.0.0",
        "root": {"path": rootfs, "readonly": true},
        "hostname": "crun",
        "process": {
            "terminal": false, "user": {"uid": 0, "gid": 0}, "cwd": "/",
            "args": ["/bin/echo", "hi"],
            "env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
            "noNewPrivileges": true,
        },
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
            {"destination": "/dev/pts", "type": "devpts", "source": "devpts", "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"]},
            {"destination": "/dev/shm", "type": "tmpfs", "source": "shm", "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]},
            {"destination": "/tmp", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "nodev", "mode=1777"]},
        ],
        "linux": {
            "namespaces": [{"type": "pid"}, {"type": "network"}, {"type": "ipc"}, {"type": "uts"}, {"type": "user"}, {"type": "mount"}, {"type": "cgroup"}],
            "uidMappings": mapping, "gidMappings": mapping,
            "resources": {"memory": {"limit": 536_870_912u64}, "cpu": {"quota": 100_000, "period": 100_000}, "pids": {"limit": 1024}},
        },
    });
    std::fs::write(bundle.join("config.json"), serde_json::to_vec_pretty(&config)?)?;
    Ok(bundle)
}

fn crun_run(bundle: &Path, n: usize) -> Result<Series> {
    let mut samples = Vec::with_capacity(n);
    for i in 0..n + 2 {
        let id = format!("warren-bench-run-{}-{i}", std::process::id());
        let t = Instant::now();
        let out =
            Command::new("crun").args(["run", "--bundle"]).arg(bundle).arg(&id).stderr(Stdio::piped()).output()?;
        samples.push(t.elapsed());
        if out.stdout != b"hi\n" {
            bail!("crun run failed: {}", String::from_utf8_lossy(&out.stderr));
        }
    }
    samples.drain(..2);
    Ok(series("crun: run -> output", samples))
}

fn crun_exec(bundle: &Path, n: usize) -> Result<Series> {
    let id = format!("warren-bench-exec-{}", std::process::id());
    let cfg_path = bundle.join("config.json");
    let mut cfg: serde_json::Value = serde_json::from_slice(&std::fs::read(&cfg_path)?)?;
    cfg["process"]["args"] = json!(["/bin/sleep", "infinity"]);
    let long = bundle.with_file_name("crun-bundle-exec");
    std::fs::create_dir_all(&long)?;
    std::fs::write(long.join("config.json"), serde_json::to_vec_pretty(&cfg)?)?;
    let st = Command::new("crun").args(["run", "--detach", "--bundle"]).arg(&long).arg(&id).status()?;
    if !st.success() {
        bail!("crun run --detach failed");
    }
    let mut samples = Vec::with_capacity(n);
    let result = (|| {
        for _ in 0..n + 5 {
            let t = Instant::now();
            let st = Command::new("crun").args(["exec", &id, "/bin/true"]).status()?;
            samples.push(t.elapsed());
            if !st.success() {
                bail!("crun exec failed");
            }
        }
        Ok(())
    })();
    let _ = Command::new("crun").args(["delete", "--force", &id]).status();
    result?;
    samples.drain(..5);
    Ok(series("crun: exec true", samples))
}

fn host_info() -> serde_json::Value {
    let cpus = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let crun = Command::new("crun")
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).lines().next().unwrap_or("").to_owned())
        .unwrap_or_default();
    json!({"cpus": cpus, "kernel": kernel.trim(), "crun": crun})
}
