//! `warren serve`: loads the config once, prepares the data directory and API key, starts the
//! runtime, the engine and the HTTP listener, and builds the `base` template on first start.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result};
use tracing::info;
use warren_types::config::Config;
use warren_types::TemplateId;

use crate::ServeArgs;

fn load_config(args: &ServeArgs, data_dir: Option<PathBuf>) -> Result<Config> {
    let mut cfg = match &args.config {
        Some(p) => {
            let text = std::fs::read_to_string(p).with_context(|| format!("reading config {}", p.display()))?;
            toml::from_str(&text).with_context(|| format!("config {} is invalid", p.display()))?
        }
        None => Config::default(),
    };
    if let Some(d) = data_dir {
        cfg.data_dir = d;
    }
    if let Some(l) = args.listen {
        cfg.listen = l;
    }
    Ok(cfg)
}

/// One daemon per data directory: a second one would fight the first over sandboxes and cgroups.
fn lock_data_dir(cfg: &Config) -> Result<std::fs::File> {
    use std::os::fd::AsRawFd;
    let path = cfg.data_dir.join("lock");
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))?;
    // SAFETY: flock on a descriptor we own.
    if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        anyhow::bail!(
            "another warren serve is already using the data directory {}; stop it or pass --data-dir",
            cfg.data_dir.display()
        );
    }
    Ok(f)
}

fn agent_binary(cfg: &Config) -> Result<PathBuf> {
    if let Some(p) = &cfg.native.agent_path {
        return Ok(p.clone());
    }
    let exe = std::env::current_exe().context("locating the warren executable")?;
    Ok(exe.with_file_name("warren-agent"))
}

fn network_settings(
    cfg: &warren_types::config::Config,
) -> Result<Option<warren_runtime::native::network::NetworkSettings>> {
    if !cfg.network.enabled {
        return Ok(None);
    }
    let (subnet, prefix) = cfg.network.subnet().map_err(anyhow::Error::msg)?;
    let dns = cfg.network.dns.clone().unwrap_or_else(warren_runtime::native::network::host_nameservers);
    Ok(Some(warren_runtime::native::network::NetworkSettings {
        bridge: cfg.network.bridge.clone(),
        subnet,
        prefix,
        dns,
    }))
}

/// The CRIU that memory snapshots of native sandboxes stand on, when this host has a working one;
/// the start-up log says which, or why not.
fn native_criu(cfg: &warren_types::config::Config) -> Option<std::path::PathBuf> {
    match warren_runtime::native::criu::probe(&cfg.native.criu) {
        Ok(version) => {
            info!(
                criu = %cfg.native.criu.display(),
                version,
                "native runtime: memory snapshots available (pause with {{\"memory\": true}} saves a sandbox's \
                 processes and memory to disk)"
            );
            Some(cfg.native.criu.clone())
        }
        Err(why) => {
            info!(
                "native runtime: no memory snapshots: {why}; pauses freeze in place, and runtime \"gvisor\" \
                 keeps memory on disk"
            );
            None
        }
    }
}

/// Whether native restores copy memory in lazily (configured, and possible here).
fn native_lazy_pages(cfg: &warren_types::config::Config, criu: &std::path::Path) -> bool {
    if !cfg.native.lazy_restore {
        info!("native runtime: memory is restored eagerly (native.lazy_restore = false)");
        return false;
    }
    match warren_runtime::native::criu::lazy_pages(criu) {
        Ok(()) => {
            info!("native runtime: restored sandboxes run at once, their memory copied in behind them (lazy pages)");
            true
        }
        Err(why) => {
            info!("native runtime: memory is restored eagerly: {why}");
            false
        }
    }
}

/// The backends this daemon offers, its default first. gVisor is offered when runsc works here;
/// when it does not, the reason is logged (and starting fails if it is the configured default).
fn select_runtimes(
    cfg: &warren_types::config::Config,
    native: warren_runtime::native::NativeRuntime,
) -> Result<Arc<dyn warren_runtime::Runtime>> {
    let layers = native.layer_store();
    let native: Arc<dyn warren_runtime::Runtime> = Arc::new(native);
    let mut backends = vec![native];
    if cfg.gvisor.enabled || cfg.default_runtime == "gvisor" {
        let settings = warren_runtime::gvisor::GvisorSettings {
            run_dir: cfg.run_dir.join("gvisor"),
            runsc: cfg.gvisor.runsc.clone(),
            platform: cfg.gvisor.platform.clone(),
            uid_base: cfg.native.uid_base,
            uid_count: cfg.native.uid_count,
            agent_binary: agent_binary(cfg)?,
            cgroup_parent: format!("{}.gvisor", cfg.native.cgroup_parent),
            compress_images: cfg.gvisor.compress_images,
            debug_log: cfg.gvisor.debug_log.clone(),
            image_root: cfg.data_dir.join("images"),
        };
        match warren_runtime::gvisor::GvisorRuntime::new(settings, layers) {
            Ok(g) => {
                info!(platform = %cfg.gvisor.platform, "gvisor runtime ready");
                backends.push(Arc::new(g));
            }
            Err(e) if cfg.default_runtime == "gvisor" => {
                return Err(anyhow::Error::new(e).context("starting the gvisor runtime (default_runtime)"))
            }
            Err(e) => tracing::warn!(error = %e, "the gvisor runtime is not available"),
        }
    }
    match backends.iter().position(|b| b.name() == cfg.default_runtime) {
        Some(i) => backends.swap(0, i),
        None => anyhow::bail!("default_runtime = {:?}: use \"native\" or \"gvisor\"", cfg.default_runtime),
    }
    Ok(Arc::new(warren_runtime::select::Runtimes::new(backends)))
}

pub fn run(args: &ServeArgs, data_dir: Option<PathBuf>) -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_env("WARREN_LOG").unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .init();
    let cfg = load_config(args, data_dir)?;
    std::fs::create_dir_all(&cfg.data_dir)
        .with_context(|| format!("creating data directory {}", cfg.data_dir.display()))?;
    let _lock = lock_data_dir(&cfg)?;
    let criu = native_criu(&cfg);
    let mut runtime = warren_runtime::native::NativeRuntime::new(warren_runtime::native::NativeSettings {
        data_dir: cfg.data_dir.clone(),
        run_dir: cfg.run_dir.clone(),
        uid_base: cfg.native.uid_base,
        uid_count: cfg.native.uid_count,
        storage_size_gb: cfg.native.storage_size_gb,
        agent_binary: agent_binary(&cfg)?,
        spawner_exe: std::env::current_exe().context("locating the warren executable")?,
        cgroup_parent: cfg.native.cgroup_parent.clone(),
        network: network_settings(&cfg)?,
        lazy_pages: criu.as_deref().is_some_and(|c| native_lazy_pages(&cfg, c)),
        criu,
        image_root: cfg.data_dir.join("images"),
        favor_cgroup_migrations: cfg.native.favor_cgroup_migrations,
    })
    .context("starting the native runtime")?;
    info!(cgroup = runtime.cgroup_version(), "native runtime ready");
    // SAFETY: no thread has been started yet (the async runtime is built below); checked inside.
    match unsafe { runtime.start_zygote() } {
        Ok(pid) => info!(pid, "spawner zygote started"),
        Err(e) => tracing::warn!(error = %e, "no spawner zygote; every sandbox will be spawned by exec"),
    }
    let runtime = select_runtimes(&cfg, runtime)?;
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(cfg.listen)
            .await
            .with_context(|| format!("binding {} (is another warren serve running?)", cfg.listen))?;
        let domain = cfg.domain();
        let no_base = args.no_base;
        let memory = if cfg.memory.enabled { Some(open_memory(&cfg).await) } else { None };
        let engine = warren_node::Engine::start(cfg, runtime).await.context("starting the node engine")?;
        if !no_base {
            let base = TemplateId::parse("base").expect("valid id");
            let missing = engine.templates.get(&base).is_none_or(|r| r.status != warren_node::templates::Status::Ready);
            if missing {
                info!("building the base template (first start); follow it with `warren template build base`");
                engine.templates.build(base, vec![], None, None)?;
            }
        }
        let memory_at_exit = memory.clone();
        let state = Arc::new(warren_api::AppState {
            engine,
            domain,
            idempotency: Default::default(),
            ports: warren_api::upstream::Upstreams::new(),
            memory,
        });
        let shutdown = async {
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            info!("shutting down; running sandboxes keep running and are re-attached on the next start");
        };
        warren_api::serve(listener, state, shutdown).await?;
        if let Some(Some(Ok(m))) = memory_at_exit.map(|s| s.get().cloned()) {
            // Saved graphs and committed text indexes make the next start read, not rebuild.
            match tokio::task::spawn_blocking(move || m.checkpoint()).await {
                Ok(Ok(())) => info!("memory store saved"),
                Ok(Err(e)) => tracing::warn!(error = %e, "saving the memory store at shutdown"),
                Err(e) => tracing::warn!(error = %e, "saving the memory store at shutdown"),
            }
        }
        Ok(())
    })
}

/// How long a start waits for the memory store before it listens without it: long enough for a
/// store of tens of thousands of records, so small stores are open when the API comes up.
const MEMORY_OPEN_WAIT: std::time::Duration = std::time::Duration::from_secs(3);

/// Opens the memory store in the background (memory calls answer 503 with Retry-After until it
/// is open; if opening fails, 503 with the reason) and starts its upkeep once it is.
async fn open_memory(cfg: &Config) -> warren_api::MemorySlot {
    let slot = warren_api::MemorySlot::default();
    let (done, opened) = tokio::sync::oneshot::channel();
    let (m, dir, s) = (cfg.memory.clone(), cfg.data_dir.join("memory"), slot.clone());
    tokio::task::spawn_blocking(move || {
        let t0 = std::time::Instant::now();
        let limits = warren_memory::types::Limits {
            purge_after_secs: m.purge_after_secs,
            max_text_bytes: m.max_text_bytes,
            max_records_per_upsert: m.max_records_per_upsert,
            ..Default::default()
        };
        let result = warren_memory::MemoryStore::open_with_models(&dir, limits, m.models_dir.clone())
            .map(Arc::new)
            .map_err(|e| format!("{}: {e}", dir.display()));
        match &result {
            Ok(store) => {
                info!(took_ms = t0.elapsed().as_millis() as u64, "memory store open");
                memory_upkeep(&m, store.clone());
            }
            Err(e) => {
                tracing::error!(error = %e, "the memory store could not be opened; memory calls answer 503 until it is fixed and warren restarted")
            }
        }
        let _ = s.set(result);
        let _ = done.send(());
    });
    if tokio::time::timeout(MEMORY_OPEN_WAIT, opened).await.is_err() {
        info!("the memory store is still opening; memory calls answer 503 with Retry-After until it is open");
    }
    slot
}

/// Logs which embedding models the store can run and starts its upkeep: text index commits and
/// graph saves every few seconds (so that a restart replays little), expiry and purges every
/// minute. Called from a blocking task inside the runtime.
fn memory_upkeep(m: &warren_types::config::MemoryConfig, store: Arc<warren_memory::MemoryStore>) {
    let models = store.embedding_models();
    match (warren_memory::embed::SUPPORTED, models.is_empty()) {
        (true, false) => info!(models = %models.join(", "), "memory store: local embeddings available"),
        (true, true) => info!(
            dir = ?m.models_dir,
            "memory store: no embedding models installed (scripts/models.sh installs all-MiniLM-L6-v2)"
        ),
        (false, _) => info!("memory store: local embeddings are not built in (build with --features embed)"),
    }
    let s = store;
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(5));
        for round in 0u64.. {
            tick.tick().await;
            let s = s.clone();
            let done = tokio::task::spawn_blocking(move || {
                s.flush()?;
                if round % 12 == 11 {
                    s.purge()?;
                }
                Ok::<_, warren_memory::MemoryError>(())
            })
            .await;
            if let Ok(Err(e)) = done {
                tracing::warn!(error = %e, "memory store upkeep");
            }
        }
    });
}
