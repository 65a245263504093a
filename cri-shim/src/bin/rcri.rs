//! `rcri`: the CRI server (`rcri [serve]`), the per-container monitor (`rcri monitor`) and the
//! pod infra process (`rcri pause`), one binary so that the node needs nothing else.
//! The monitor and pause paths never start tokio: they dispatch straight from argv.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context as _, Result};
use clap::{Parser, Subcommand};

use rcri::config::Config;
use rcri::monitor::{self, MonitorArgs};

#[derive(Parser)]
#[command(
    name = "rcri",
    version,
    about = "a Kubernetes CRI server running pods on rcrun (or runc/crun)"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    serve: ServeArgs,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the CRI (the default)
    Serve(ServeArgs),
    /// Monitor one container (started by rcri, not by hand)
    Monitor(MonitorCli),
    /// The pod infra process: sleeps, reaps, exits 0 on SIGINT/SIGTERM
    Pause,
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell)
    Completion {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

#[derive(clap::Args, Clone, Default)]
struct ServeArgs {
    /// TOML config file (every key optional; flags win)
    #[arg(long)]
    config: Option<PathBuf>,
    /// Unix socket to serve on [default: /run/rcri/rcri.sock]
    #[arg(long)]
    listen: Option<PathBuf>,
    /// Persistent metadata and images [default: /var/lib/rcri]
    #[arg(long)]
    root: Option<PathBuf>,
    /// Volatile state: bundles, netns pins, exit files [default: /run/rcri]
    #[arg(long)]
    state: Option<PathBuf>,
    /// OCI runtime binary (runc command line) [default: rcrun next to rcri, else on PATH]
    #[arg(long)]
    runtime: Option<PathBuf>,
    /// The OCI runtime's --root [default: /run/rcri/runtime]
    #[arg(long)]
    runtime_root: Option<PathBuf>,
    /// CNI network configs [default: /etc/cni/net.d]
    #[arg(long)]
    cni_conf_dir: Option<PathBuf>,
    /// CNI plugin dirs, colon-separated [default: /opt/cni/bin:/usr/lib/cni]
    #[arg(long)]
    cni_bin_dir: Option<String>,
    /// Streaming server address (loopback) [default: 127.0.0.1:0]
    #[arg(long)]
    streaming_addr: Option<String>,
    /// tracing filter [default: info]
    #[arg(long)]
    log_level: Option<String>,
    /// Log lines as text or json [default: text]
    #[arg(long, value_parser = ["text", "json"])]
    log_format: Option<String>,
    /// OCI image layout to import at start (repeatable)
    #[arg(long = "import-layout")]
    import_layouts: Vec<PathBuf>,
    /// Bring-up only: copy this dir as rootfs for images not in the store
    #[arg(long)]
    fallback_rootfs: Option<PathBuf>,
}

#[derive(clap::Args)]
struct MonitorCli {
    #[arg(long)]
    id: String,
    #[arg(long)]
    bundle: PathBuf,
    #[arg(long)]
    log_path: Option<PathBuf>,
    #[arg(long)]
    exit_file: PathBuf,
    #[arg(long)]
    runtime: PathBuf,
    #[arg(long)]
    runtime_root: PathBuf,
    #[arg(long, default_value_t = 3)]
    sync_fd: i32,
    #[arg(long)]
    tty: bool,
    #[arg(long)]
    stdin: bool,
    #[arg(long)]
    stdin_once: bool,
}

fn main() {
    let cli = Cli::parse();
    let code = match cli.command {
        Some(Command::Monitor(m)) => monitor::run(&MonitorArgs {
            id: m.id,
            bundle: m.bundle,
            log_path: m.log_path,
            exit_file: m.exit_file,
            runtime: m.runtime,
            runtime_root: m.runtime_root,
            sync_fd: m.sync_fd,
            stdio: monitor::StdioMode {
                tty: m.tty,
                stdin: m.stdin,
                stdin_once: m.stdin_once,
            },
        }),
        Some(Command::Pause) => pause(),
        Some(Command::Completion { shell }) => completion(shell),
        Some(Command::Serve(args)) => report(serve(args)),
        None => report(serve(cli.serve)),
    };
    std::process::exit(code);
}

fn completion(shell: clap_complete::Shell) -> i32 {
    use clap::CommandFactory;
    // Into a buffer first: clap_complete panics when its writer fails (a closed pipe).
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "rcri", &mut script);
    match std::io::Write::write_all(&mut std::io::stdout(), &script) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("rcri: failed to write the completion script: {e}");
            1
        }
    }
}

fn report(result: Result<()>) -> i32 {
    match result {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("rcri: {e:#}");
            1
        }
    }
}

/// The pod's infra process. As PID 1 of the pod's PID namespace the kernel drops signals it has
/// no handler for, but signals that are blocked stay pending, so blocking them and waiting with
/// sigwait both receives SIGTERM/SIGINT and needs no handler. Orphans of a shared PID namespace
/// are reaped on SIGCHLD.
fn pause() -> i32 {
    use nix::sys::signal::{SigSet, Signal};
    use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
    let mut set = SigSet::empty();
    for s in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGCHLD] {
        set.add(s);
    }
    if let Err(e) = set.thread_block() {
        eprintln!("pause: failed to block signals: {e}");
        return 1;
    }
    loop {
        match set.wait() {
            Ok(Signal::SIGCHLD) => loop {
                match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                    Ok(WaitStatus::StillAlive) | Err(_) => break,
                    Ok(_) => {}
                }
            },
            Ok(_) => return 0,
            Err(e) => {
                eprintln!("pause: sigwait failed: {e}");
                return 1;
            }
        }
    }
}

fn load_config(args: ServeArgs) -> Result<Config> {
    let mut config = Config::load(args.config.as_deref())?;
    if let Some(v) = args.listen {
        config.listen = v;
    }
    if let Some(v) = args.root {
        config.root_dir = v;
    }
    if let Some(v) = args.state {
        config.state_dir = v;
    }
    if let Some(v) = args.runtime {
        config.runtime = v;
    }
    if let Some(v) = args.runtime_root {
        config.runtime_root = v;
    }
    if let Some(v) = args.cni_conf_dir {
        config.cni_conf_dir = v;
    }
    if let Some(v) = args.cni_bin_dir {
        config.cni_bin_dirs = std::env::split_paths(&v).collect();
    }
    if let Some(v) = args.streaming_addr {
        config.streaming_addr = v;
    }
    if let Some(v) = args.log_level {
        config.log_level = v;
    }
    if let Some(v) = args.log_format {
        config.log_format = v;
    }
    config.import_layouts.extend(args.import_layouts);
    if args.fallback_rootfs.is_some() {
        config.fallback_rootfs = args.fallback_rootfs;
    }
    config.validate()?;
    config.runtime = config.resolved_runtime()?;
    Ok(config)
}

fn serve(args: ServeArgs) -> Result<()> {
    let config = load_config(args)?;
    let filter =
        tracing_subscriber::EnvFilter::try_new(&config.log_level).context("invalid log level")?;
    // Colours only for a person at a terminal, not in a file or the journal.
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    if config.log_format == "json" {
        logs.json().init();
    } else {
        logs.init();
    }
    let rcri_exe = std::env::current_exe().context("failed to find our own binary")?;
    for dir in [&config.root_dir, &config.state_dir, &config.runtime_root] {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("failed to create {}", dir.display()))?;
    }
    let store = rcri::store::Store::open(&config.root_dir.join("metadata"))
        .context("failed to open the metadata store")?;
    let images = rcri::image::ImageStore::open(&config.root_dir.join("images"))
        .context("failed to open the image store")?;
    for layout in &config.import_layouts {
        match images.import_oci_layout(layout) {
            Ok(imported) => {
                tracing::info!(layout = %layout.display(), images = imported.len(), "imported OCI layout")
            }
            Err(e) => {
                tracing::error!(layout = %layout.display(), error = %format!("{:#}", anyhow::Error::from(e)), "failed to import OCI layout")
            }
        }
    }
    let runtime = rcri::runtime_client::RuntimeClient::new(
        config.runtime.clone(),
        config.runtime_root.clone(),
    );
    let cni = rcri::cni::Cni {
        conf_dir: config.cni_conf_dir.clone(),
        bin_dirs: config.cni_bin_dirs.clone(),
    };
    let listen = config.listen.clone();
    let ctx = Arc::new(rcri::Context::new(
        config, store, runtime, cni, images, rcri_exe,
    ));

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .context("failed to start the async runtime")?;
    rt.block_on(async move {
        rcri::sandbox::recover(&ctx).await;
        rcri::container::recover(&ctx).await;
        rcri::streaming::server::start(ctx.streaming.clone(), &ctx.config.streaming_addr)
            .await
            .context("failed to start the streaming server")?;
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            let mut term =
                match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                    Ok(s) => s,
                    Err(e) => {
                        tracing::error!(error = %e, "cannot watch SIGTERM");
                        return;
                    }
                };
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
            tracing::info!("shutting down; containers and monitors keep running");
            let _ = stop_tx.send(true);
        });
        let mut graceful = stop_rx.clone();
        let shutdown = async move {
            let _ = graceful.wait_for(|stop| *stop).await;
        };
        // Graceful shutdown waits for open connections; a client that keeps an idle one (kubelet
        // always does) must not hold the daemon forever.
        let mut deadline = stop_rx;
        let grace = async move {
            let _ = deadline.wait_for(|stop| *stop).await;
            tokio::time::sleep(std::time::Duration::from_secs(3)).await;
        };
        tokio::select! {
            result = rcri::server::serve(ctx, &listen, shutdown) => result.map_err(anyhow::Error::from),
            () = grace => {
                let _ = std::fs::remove_file(&listen);
                Ok(())
            }
        }
    })?;
    Ok(())
}
