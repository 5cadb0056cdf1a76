//! `warren`: the node daemon (`warren serve`) and the command-line client of its HTTP API.

mod client;
mod commands;
mod exec;
mod memory;
mod serve;

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// Every proxied request allocates and frees a few dozen small buffers across the runtime's
/// threads; with glibc's allocator that was a fifth of the daemon's user time per request.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "warren",
    version,
    about = "Sandboxes for AI agents: start in milliseconds, isolated, E2B-compatible."
)]
struct Cli {
    /// Print machine-readable JSON instead of tables.
    #[arg(long, global = true)]
    json: bool,
    /// Daemon URL for client verbs.
    #[arg(long, global = true, env = "WARREN_URL", default_value = "http://127.0.0.1:3049")]
    url: String,
    /// API key for client verbs (default: read from the data directory).
    #[arg(long, global = true, env = "WARREN_API_KEY", hide_env_values = true)]
    api_key: Option<String>,
    /// Data directory of the daemon (where `serve` keeps state and where clients find the API key).
    #[arg(long, global = true, env = "WARREN_DATA_DIR")]
    data_dir: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the node daemon (HTTP API, sandbox proxy, runtimes) in the foreground.
    Serve(ServeArgs),
    /// Create a sandbox, run one command in it with live output, kill it, and exit with its code.
    Run(RunArgs),
    /// Manage sandboxes.
    #[command(subcommand)]
    Sandbox(SandboxCmd),
    /// Manage templates (root filesystems sandboxes start from).
    #[command(subcommand)]
    Template(TemplateCmd),
    /// Manage warm pools (ready sandboxes that creates of their shape claim in milliseconds).
    #[command(subcommand)]
    Pool(PoolCmd),
    /// Manage API keys: each belongs to one team and sees only that team's sandboxes, pools and
    /// templates (needs an admin key, such as the data directory's).
    #[command(subcommand)]
    Key(KeyCmd),
    /// The agent memory store: collections of records recalled by text, vector or both, always
    /// within a tenant (`--tenant`).
    #[command(subcommand)]
    Memory(memory::MemoryCmd),
}

#[derive(Args)]
pub struct ServeArgs {
    /// TOML config file (every key optional; see ARCHITECTURE.md).
    #[arg(long, env = "WARREN_CONFIG")]
    pub config: Option<PathBuf>,
    /// Listen address (overrides the config).
    #[arg(long)]
    pub listen: Option<std::net::SocketAddr>,
    /// Do not build the `base` template on start.
    #[arg(long)]
    pub no_base: bool,
}

#[derive(Args)]
pub struct ShapeArgs {
    /// Template to start from.
    #[arg(long, short, default_value = "base")]
    pub template: String,
    /// CPU count.
    #[arg(long)]
    pub cpu: Option<u32>,
    /// Memory limit in MiB.
    #[arg(long)]
    pub memory: Option<u64>,
    /// Disk quota in MiB.
    #[arg(long)]
    pub disk: Option<u64>,
    /// Seconds until the sandbox is killed.
    #[arg(long)]
    pub timeout: Option<u64>,
    /// Environment variable for every process (KEY=VALUE; repeatable).
    #[arg(long = "env", short = 'e', value_parser = parse_kv)]
    pub env: Vec<(String, String)>,
    /// Runtime: `native` or `gvisor` (default: the daemon's).
    #[arg(long)]
    pub runtime: Option<String>,
}

#[derive(Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub shape: ShapeArgs,
    /// User to run as (default: the template's user).
    #[arg(long, short)]
    pub user: Option<String>,
    /// Working directory.
    #[arg(long)]
    pub cwd: Option<String>,
    /// Command and arguments.
    #[arg(trailing_var_arg = true, required = true, allow_hyphen_values = true)]
    pub command: Vec<String>,
}

#[derive(Subcommand)]
pub enum SandboxCmd {
    /// Create a sandbox and print its id.
    Create {
        #[command(flatten)]
        shape: ShapeArgs,
        /// Metadata KEY=VALUE (repeatable).
        #[arg(long = "metadata", short = 'm', value_parser = parse_kv)]
        metadata: Vec<(String, String)>,
    },
    /// List running sandboxes.
    List,
    /// Show one sandbox.
    Info { id: String },
    /// Kill sandboxes.
    Kill {
        #[arg(required = true)]
        ids: Vec<String>,
    },
    /// Set a sandbox's remaining lifetime in seconds.
    Timeout { id: String, seconds: u64 },
    /// Pause a sandbox: its processes stop with their memory kept (frozen in place on native,
    /// saved to disk on gvisor); resume carries on where it was.
    Pause {
        id: String,
        /// Save the memory to disk and free it (native: with CRIU), instead of freezing in place.
        #[arg(long, conflicts_with = "files_only")]
        memory: bool,
        /// Keep only the files: processes end, and a resume starts them again.
        #[arg(long)]
        files_only: bool,
    },
    /// Thaw a paused sandbox.
    Resume {
        id: String,
        /// Seconds it may run from now (default: the daemon's default timeout).
        #[arg(long)]
        timeout: Option<u64>,
    },
    /// Run a command in a sandbox and exit with its code.
    Exec {
        id: String,
        #[arg(long, short)]
        user: Option<String>,
        #[arg(long)]
        cwd: Option<String>,
        #[arg(long = "env", short = 'e', value_parser = parse_kv)]
        env: Vec<(String, String)>,
        #[arg(trailing_var_arg = true, required = true, allow_hyphen_values = true)]
        command: Vec<String>,
    },
    /// Files inside a sandbox.
    #[command(subcommand)]
    Files(FilesCmd),
}

#[derive(Subcommand)]
pub enum FilesCmd {
    /// List a directory.
    Ls {
        id: String,
        path: String,
        #[arg(long, default_value_t = 1)]
        depth: u32,
    },
    /// Print a file.
    Read { id: String, path: String },
    /// Write a file from a local file or stdin (`-`).
    Write {
        id: String,
        path: String,
        #[arg(default_value = "-")]
        source: String,
    },
    /// Create a directory (with parents).
    Mkdir { id: String, path: String },
    /// Remove a file or directory.
    Rm { id: String, path: String },
}

/// The sizing knobs of a pool (create and resize).
#[derive(Args)]
pub struct PoolSizeArgs {
    /// Ready sandboxes kept at least.
    #[arg(long)]
    pub min_ready: Option<u32>,
    /// Ready sandboxes kept at most (default: --min-ready).
    #[arg(long)]
    pub max_size: Option<u32>,
    /// Sandboxes booted at once while refilling (default 2).
    #[arg(long)]
    pub refill_concurrency: Option<u32>,
    /// Keep this fraction of the pool (ready + in use) ready, e.g. 0.5; negative clears it.
    #[arg(long, allow_hyphen_values = true)]
    pub target_free: Option<f64>,
    /// How long a claim waits for a ready sandbox when the pool is empty (ms).
    #[arg(long)]
    pub empty_wait_ms: Option<u64>,
    /// What a claim does when the pool stays empty: `cold` (create one) or `fail` (503).
    #[arg(long, value_parser = ["cold", "fail"])]
    pub on_empty: Option<String>,
}

#[derive(Subcommand)]
pub enum PoolCmd {
    /// Create a pool for one shape (template, CPU, memory, disk).
    Create {
        name: String,
        #[arg(long, short, default_value = "base")]
        template: String,
        #[arg(long)]
        cpu: Option<u32>,
        /// Memory limit in MiB.
        #[arg(long)]
        memory: Option<u64>,
        /// Disk quota in MiB.
        #[arg(long)]
        disk: Option<u64>,
        #[command(flatten)]
        size: PoolSizeArgs,
        /// CPU count for a claimed sandbox's first --burst-secs seconds.
        #[arg(long, requires = "burst_secs")]
        burst_cpu: Option<u32>,
        #[arg(long, requires = "burst_cpu")]
        burst_secs: Option<u64>,
    },
    /// List pools.
    List,
    /// Show one pool.
    Info { name: String },
    /// Change a pool's size settings.
    Resize {
        name: String,
        #[command(flatten)]
        size: PoolSizeArgs,
    },
    /// Remove a pool (its ready sandboxes are killed; claimed ones keep running).
    Rm { name: String },
}

#[derive(Subcommand)]
pub enum TemplateCmd {
    /// List templates.
    List,
    /// Build a template from Debian packages (the base set plus --package) and show its progress.
    Build {
        name: String,
        #[arg(long = "package", short = 'p')]
        packages: Vec<String>,
        /// Let every team use it (admin keys only); otherwise only your key's team can.
        #[arg(long)]
        public: bool,
    },
    /// Remove a template.
    Rm { name: String },
}

#[derive(Subcommand)]
pub enum KeyCmd {
    /// Create a key for a team and print it (the only time it is shown).
    Create {
        /// The team it belongs to (created implicitly; 1-63 of a-z, 0-9, '-').
        #[arg(long)]
        team: String,
        /// A label: who or what uses the key.
        #[arg(long, default_value = "")]
        name: String,
        /// May manage keys and public templates and read host-wide metrics.
        #[arg(long)]
        admin: bool,
    },
    /// List keys (ids, teams and prefixes; never the keys).
    List,
    /// Revoke a key at once.
    Rm { id: String },
}

fn parse_kv(s: &str) -> Result<(String, String), String> {
    let (k, v) = s.split_once('=').ok_or_else(|| format!("{s:?} is not KEY=VALUE"))?;
    if k.is_empty() {
        return Err(format!("{s:?} has an empty key"));
    }
    Ok((k.to_owned(), v.to_owned()))
}

fn main() {
    // The sandbox spawner runs as a fresh exec of this binary (see warren_runtime::native::spawn).
    if std::env::args_os().nth(1).is_some_and(|a| a == warren_runtime::native::spawn::SPAWN_ARG) {
        warren_runtime::native::spawn::main();
    }
    let cli = Cli::parse();
    let code = match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("warren: {e:#}");
            1
        }
    };
    std::process::exit(code);
}

fn run(cli: Cli) -> anyhow::Result<i32> {
    let data_dir = cli.data_dir.clone().unwrap_or_else(|| warren_types::config::Config::default().data_dir);
    if let Command::Serve(args) = &cli.command {
        return serve::run(args, cli.data_dir.clone()).map(|_| 0);
    }
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(async move {
        let client = client::Client::new(&cli.url, cli.api_key.clone(), &data_dir)?;
        let out = commands::Output { json: cli.json };
        match cli.command {
            Command::Serve(_) => unreachable!("handled above"),
            Command::Run(args) => commands::run(&client, &out, args).await,
            Command::Sandbox(cmd) => commands::sandbox(&client, &out, cmd).await,
            Command::Template(cmd) => commands::template(&client, &out, cmd).await,
            Command::Pool(cmd) => commands::pool(&client, &out, cmd).await,
            Command::Key(cmd) => commands::key(&client, &out, cmd).await,
            Command::Memory(cmd) => memory::memory(&client, &out, cmd).await,
        }
    })
}
