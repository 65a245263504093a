//! `exec`: the process comes from --process, or from the container's own process with the
//! command line and flags laid over it, as runc does.
use super::foreground;
use crate::exec::ExecOptions;
use anyhow::Context;
use oci_spec::runtime::{Capability, Process};
use std::path::{Path, PathBuf};

#[derive(clap::Args, Debug)]
pub struct ExecArgs {
    /// Return once the process runs instead of waiting for it
    #[arg(short, long)]
    pub detach: bool,
    /// Give the process a terminal
    #[arg(short, long)]
    pub tty: bool,
    /// Unix socket that receives the pty master
    #[arg(long = "console-socket")]
    pub console_socket: Option<PathBuf>,
    /// Working directory inside the container
    #[arg(long)]
    pub cwd: Option<PathBuf>,
    /// Set an environment variable (KEY=VALUE)
    #[arg(short, long)]
    pub env: Vec<String>,
    /// UID[:GID] to run as
    #[arg(short, long)]
    pub user: Option<String>,
    /// An additional group id
    #[arg(short = 'g', long = "additional-gids")]
    pub additional_gids: Vec<u32>,
    /// Add a capability
    #[arg(short, long)]
    pub cap: Vec<String>,
    /// Set no_new_privs for the process
    #[arg(long = "no-new-privs")]
    pub no_new_privs: bool,
    /// A process.json giving the whole process (overrides the other flags)
    #[arg(short, long)]
    pub process: Option<PathBuf>,
    /// File to write the process's pid to
    #[arg(long = "pid-file")]
    pub pid_file: Option<PathBuf>,
    /// Pass N additional fds (3 .. 3+N-1) to the process
    #[arg(long = "preserve-fds", default_value_t = 0)]
    pub preserve_fds: i32,
    /// Exec even if the container is paused
    #[arg(long = "ignore-paused")]
    pub ignore_paused: bool,
    /// AppArmor profile (not supported on this host)
    #[arg(long)]
    pub apparmor: Option<String>,
    /// SELinux label (not supported on this host)
    #[arg(long = "process-label")]
    pub process_label: Option<String>,
    /// Container id
    pub id: String,
    /// Command and arguments
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub command: Vec<String>,
}

fn build_process(root: &Path, a: &ExecArgs) -> anyhow::Result<Process> {
    if let Some(path) = &a.process {
        let data =
            std::fs::read(path).with_context(|| format!("failed to read {}", path.display()))?;
        return serde_json::from_slice(&data)
            .with_context(|| format!("invalid process file {}", path.display()));
    }
    if a.command.is_empty() {
        anyhow::bail!("exec needs a command to run (or --process)");
    }
    crate::state::validate_id(&a.id)?;
    let saved = crate::state::load(&root.join(&a.id))?;
    let mut p = saved.config.process().clone().unwrap_or_default();
    p.set_args(Some(a.command.clone()));
    p.set_terminal(Some(a.tty));
    if let Some(cwd) = &a.cwd {
        p.set_cwd(cwd.clone());
    }
    if !a.env.is_empty() {
        let mut env = p.env().clone().unwrap_or_default();
        for kv in &a.env {
            let key = kv.split('=').next().unwrap_or_default();
            env.retain(|e| e.split('=').next() != Some(key));
            env.push(kv.clone());
        }
        p.set_env(Some(env));
    }
    if let Some(user) = &a.user {
        let (uid, gid) = match user.split_once(':') {
            Some((u, g)) => (u, Some(g)),
            None => (user.as_str(), None),
        };
        let bad = || anyhow::anyhow!("invalid --user {user:?}: use UID[:GID] with numbers");
        p.user_mut().set_uid(uid.parse().map_err(|_| bad())?);
        if let Some(g) = gid {
            p.user_mut().set_gid(g.parse().map_err(|_| bad())?);
        }
    }
    if !a.additional_gids.is_empty() {
        p.user_mut()
            .set_additional_gids(Some(a.additional_gids.clone()));
    }
    if !a.cap.is_empty() {
        let mut caps = p.capabilities().clone().unwrap_or_default();
        for name in &a.cap {
            let short = name.trim_start_matches("CAP_");
            let cap: Capability = short
                .parse()
                .map_err(|_| anyhow::anyhow!("unknown capability {name:?}"))?;
            let add = |set: &Option<oci_spec::runtime::Capabilities>| {
                let mut set = set.clone().unwrap_or_default();
                set.insert(cap);
                Some(set)
            };
            let (b, e, pm) = (
                add(caps.bounding()),
                add(caps.effective()),
                add(caps.permitted()),
            );
            caps.set_bounding(b);
            caps.set_effective(e);
            caps.set_permitted(pm);
        }
        p.set_capabilities(Some(caps));
    }
    if a.no_new_privs {
        p.set_no_new_privileges(Some(true));
    }
    Ok(p)
}

pub fn run(root: &Path, a: &ExecArgs) -> anyhow::Result<i32> {
    if a.apparmor.as_deref().is_some_and(|s| !s.is_empty()) {
        anyhow::bail!("AppArmor is not enabled on this host: --apparmor cannot be honoured");
    }
    if a.process_label.as_deref().is_some_and(|s| !s.is_empty()) {
        anyhow::bail!("SELinux is not enabled on this host: --process-label cannot be honoured");
    }
    crate::process::exe_seal::ensure_sealed()?;
    let process = build_process(root, a)?;
    let opts = ExecOptions {
        console_socket: a.console_socket.clone(),
        proxy_terminal: !a.detach,
        pid_file: a.pid_file.clone(),
        preserve_fds: a.preserve_fds,
        ignore_paused: a.ignore_paused,
    };
    if a.detach {
        crate::exec::exec(root, &a.id, &process, opts)?;
        return Ok(0);
    }
    let set = foreground::prepare()?;
    let started = crate::exec::exec(root, &a.id, &process, opts)?;
    foreground::wait_forwarding(started.pid, &set, started.pty_master)
}
