//! The command line, mirroring runc's commands and flags; one file per command, each a thin
//! call into the library. anyhow lives only here, at the edge.
mod create;
mod delete;
mod events;
mod exec;
mod foreground;
mod kill;
mod list;
mod pause;
mod ps;
mod resume;
mod run;
mod spec;
mod start;
mod state;
mod update;

use crate::logging;
use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use std::path::PathBuf;

#[derive(Parser, Debug)]
#[command(
    name = "rcrun",
    about = "a low-level OCI container runtime, drop-in for runc",
    // runc's `-v, --version`, printing what `version_text` says (set in `main`; this one is
    // for `Cli::command()` alone).
    version = env!("CARGO_PKG_VERSION"),
    disable_version_flag = true
)]
pub struct Cli {
    /// Print the version
    #[arg(short = 'v', long = "version", action = clap::ArgAction::Version)]
    version: Option<bool>,
    /// Root directory for container state
    #[arg(long, global = true, default_value = crate::state::DEFAULT_ROOT)]
    pub root: PathBuf,
    /// Log file (default: stderr)
    #[arg(long, global = true)]
    pub log: Option<PathBuf>,
    /// Log format: text or json
    #[arg(long = "log-format", global = true, default_value = "text")]
    pub log_format: String,
    /// Enable debug logging
    #[arg(long, global = true)]
    pub debug: bool,
    /// Use systemd to manage cgroups (not supported)
    #[arg(long = "systemd-cgroup", global = true)]
    pub systemd_cgroup: bool,
    /// Accepted for runc compatibility ("true", "false" or "auto"); rootless mode is not
    /// implemented, so only "false" and "auto" (as root) are honoured
    #[arg(long = "rootless", id = "global_rootless")]
    pub rootless: Option<String>,
    /// Accepted for runc compatibility and ignored
    #[arg(long, global = true, hide = true)]
    pub criu: Option<String>,
    #[command(subcommand)]
    pub command: Command,
}

/// The flags `create` and `run` share.
#[derive(clap::Args, Debug, Clone)]
pub struct CreateArgs {
    /// Path to the bundle directory
    #[arg(short, long, default_value = ".")]
    pub bundle: PathBuf,
    /// File to write the container's init pid to
    #[arg(long = "pid-file")]
    pub pid_file: Option<PathBuf>,
    /// Unix socket that receives the pty master when process.terminal is true
    #[arg(long = "console-socket")]
    pub console_socket: Option<PathBuf>,
    /// Use MS_MOVE + chroot instead of pivot_root
    #[arg(long = "no-pivot")]
    pub no_pivot: bool,
    /// Do not create a new session keyring for the container
    #[arg(long = "no-new-keyring")]
    pub no_new_keyring: bool,
    /// Pass N additional fds (3 .. 3+N-1) to the container
    #[arg(long = "preserve-fds", default_value_t = 0)]
    pub preserve_fds: i32,
    /// Container id
    pub id: String,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Create a container (its process waits for `start`)
    Create(CreateArgs),
    /// Start a created container
    Start { id: String },
    /// Print the OCI state of a container
    State { id: String },
    /// Send a signal to the container's init (or all its processes)
    Kill {
        /// Send the signal to every process of the container
        #[arg(short, long)]
        all: bool,
        id: String,
        #[arg(default_value = "SIGTERM")]
        signal: String,
    },
    /// Delete a container and everything it holds
    Delete {
        /// Kill a running container first
        #[arg(short, long)]
        force: bool,
        id: String,
    },
    /// Create and start a container
    Run {
        /// Return once the container runs instead of waiting for it
        #[arg(short, long)]
        detach: bool,
        #[command(flatten)]
        create: CreateArgs,
    },
    /// List containers
    List {
        /// table or json
        #[arg(short, long, default_value = "table")]
        format: String,
        /// Print only the ids
        #[arg(short, long)]
        quiet: bool,
    },
    /// Write a default config.json
    Spec {
        #[arg(short, long, default_value = ".")]
        bundle: PathBuf,
        #[arg(long)]
        rootless: bool,
    },
    /// Run a new process in a running container
    Exec(exec::ExecArgs),
    /// List the processes of a container
    Ps(ps::PsArgs),
    /// Freeze every process of a container
    Pause { id: String },
    /// Thaw a paused container
    Resume { id: String },
    /// Change a running container's resource limits
    Update(update::UpdateArgs),
    /// Stream a container's events (OOM kills) and usage stats as JSON
    Events(events::EventsArgs),
    /// Print what this runtime supports (runtime-spec features.md)
    Features,
    /// Checkpoint a container (not supported)
    Checkpoint(Unimplemented),
    /// Restore a container (not supported)
    Restore(Unimplemented),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell)
    #[command(hide = true)]
    Completion {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

#[derive(clap::Args, Debug)]
pub struct Unimplemented {
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    args: Vec<String>,
}

impl Command {
    fn name(&self) -> &'static str {
        match self {
            Command::Create(_) => "create",
            Command::Start { .. } => "start",
            Command::State { .. } => "state",
            Command::Kill { .. } => "kill",
            Command::Delete { .. } => "delete",
            Command::Run { .. } => "run",
            Command::List { .. } => "list",
            Command::Spec { .. } => "spec",
            Command::Exec(_) => "exec",
            Command::Ps(_) => "ps",
            Command::Pause { .. } => "pause",
            Command::Resume { .. } => "resume",
            Command::Update(_) => "update",
            Command::Events(_) => "events",
            Command::Features => "features",
            Command::Checkpoint(_) => "checkpoint",
            Command::Restore(_) => "restore",
            Command::Completion { .. } => "completion",
        }
    }
}

/// What `rcrun --version` prints after "rcrun ", in runc's shape (`runc version 1.1.5`,
/// `commit: …`, `spec: …`, `go: …`, `libseccomp: …`): tools such as docker's `info` read the
/// first two lines.
pub fn version_text() -> String {
    let libseccomp = libseccomp::ScmpVersion::current()
        .map(|v| v.to_string())
        .unwrap_or_else(|_| String::from("unknown"));
    format!(
        "version {}\ncommit: {}\nspec: {}\nrust: {}\nlibseccomp: {}",
        env!("CARGO_PKG_VERSION"),
        env!("RCRUN_COMMIT"),
        crate::features::SPEC_VERSION,
        env!("RCRUN_RUSTC_VERSION"),
        libseccomp
    )
}

/// The clap command with the version text filled in.
fn command() -> clap::Command {
    // clap wants a 'static str here; the process prints it at most once, so leaking is fine.
    let version: &'static str = Box::leak(version_text().into_boxed_str());
    Cli::command().version(version)
}

/// Runs rcrun with the process's arguments and returns the exit code.
pub fn main() -> i32 {
    // The commands that start a process in a container re-execute the binary sealed; doing it
    // first spares the image that is thrown away the whole parse. A failure here is reported
    // by the command's own call, once logging is set up.
    if seals(std::env::args_os().skip(1)) {
        let _ = crate::process::exe_seal::ensure_sealed();
    }
    let cli = match Cli::from_arg_matches(&command().get_matches()) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    let format = match logging::parse_format(&cli.log_format) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("rcrun: {e}");
            return 1;
        }
    };
    if let Err(e) = logging::init(cli.log.as_deref(), format, cli.debug) {
        eprintln!("rcrun: {}", crate::process::chain(&e));
        return 1;
    }
    match dispatch(&cli) {
        Ok(code) => code,
        Err(e) => {
            let msg = format!("{e:#}");
            // With --log the caller (e.g. containerd's shim) reads the error from the file;
            // without it the logger already writes to stderr.
            if cli.log.is_some() {
                log::error!("{msg}");
            }
            eprintln!("rcrun: {msg}");
            1
        }
    }
}

/// Whether the command line names a command that seals the binary (create, run, exec), found
/// by skipping the global flags; anything it cannot tell is left to clap and the command.
fn seals(args: impl Iterator<Item = std::ffi::OsString>) -> bool {
    let mut args = args;
    while let Some(arg) = args.next() {
        match arg.to_str() {
            Some("--root" | "--log" | "--log-format" | "--criu" | "--rootless") => {
                args.next();
            }
            Some(flag) if flag.starts_with('-') => {}
            Some(command) => return matches!(command, "create" | "run" | "exec"),
            None => return false,
        }
    }
    false
}

fn dispatch(cli: &Cli) -> anyhow::Result<i32> {
    if cli.rootless.as_deref() == Some("true") {
        anyhow::bail!("not implemented yet: --rootless true (rootless containers)");
    }
    if cli.systemd_cgroup {
        anyhow::bail!("not implemented yet: --systemd-cgroup (use the cgroupfs driver)");
    }
    let root = &cli.root;
    match &cli.command {
        Command::Create(a) => create::run(root, a).map(|()| 0),
        Command::Start { id } => start::run(root, id).map(|()| 0),
        Command::State { id } => state::run(root, id).map(|()| 0),
        Command::Kill { all, id, signal } => kill::run(root, id, signal, *all).map(|()| 0),
        Command::Delete { force, id } => delete::run(root, id, *force).map(|()| 0),
        Command::Run { detach, create } => run::run(root, create, *detach),
        Command::List { format, quiet } => list::run(root, format, *quiet).map(|()| 0),
        Command::Spec { bundle, rootless } => spec::run(bundle, *rootless).map(|()| 0),
        Command::Exec(a) => exec::run(root, a),
        Command::Ps(a) => ps::run(root, a).map(|()| 0),
        Command::Pause { id } => pause::run(root, id).map(|()| 0),
        Command::Resume { id } => resume::run(root, id).map(|()| 0),
        Command::Update(a) => update::run(root, a).map(|()| 0),
        Command::Events(a) => events::run(root, a).map(|()| 0),
        Command::Completion { shell } => {
            // Into a buffer first: clap_complete panics when its writer fails (e.g. a closed
            // pipe), a plain write reports it.
            let mut script = Vec::new();
            clap_complete::generate(*shell, &mut command(), "rcrun", &mut script);
            use std::io::Write;
            std::io::stdout()
                .write_all(&script)
                .map_err(|e| anyhow::anyhow!("failed to write the completion script: {e}"))?;
            Ok(0)
        }
        Command::Features => {
            println!(
                "{}",
                serde_json::to_string_pretty(&crate::features::features())?
            );
            Ok(0)
        }
        other => anyhow::bail!("not implemented yet: rcrun {}", other.name()),
    }
}

#[cfg(test)]
mod tests {
    use super::seals;

    fn args(line: &str) -> impl Iterator<Item = std::ffi::OsString> + '_ {
        line.split_whitespace().map(std::ffi::OsString::from)
    }

    #[test]
    fn the_sealing_commands_are_found_past_the_global_flags() {
        assert!(seals(args("run -b . x")));
        assert!(seals(args(
            "--root /run/x --log run --log-format json create x"
        )));
        assert!(seals(args("--debug --root=/r exec -t x sh")));
        assert!(seals(args("--rootless false --criu c run x")));
    }

    #[test]
    fn other_commands_and_unclear_lines_do_not_seal_early() {
        assert!(!seals(args("state run")));
        assert!(!seals(args("--root run delete x")));
        assert!(!seals(args("--version")));
        assert!(!seals(args("")));
        assert!(!seals(args("--log")));
    }
}
