//! `exec`: a new process inside a running container. It is born the way the init is (the
//! same fork, sync channel and set-up code), but joins every namespace and the cgroup of the
//! container's init instead of creating them, and builds no rootfs.
use crate::capabilities::CapabilitySets;
use crate::cgroups::Cgroup;
use crate::container::{self, ContainerError, Started};
use crate::hooks::HookSet;
use crate::identity::Identity;
use crate::namespaces::{clone_flag, NamespacePlan};
use crate::process::{self, console, InitConfig};
use crate::state::{ContainerDir, Status};
use nix::sched::CloneFlags;
use nix::unistd::Pid;
use oci_spec::runtime::{LinuxNamespaceType, Process};
use std::ffi::CString;
use std::path::{Path, PathBuf};

/// How to run the process, beyond the process itself.
#[derive(Default)]
pub struct ExecOptions {
    pub console_socket: Option<PathBuf>,
    /// Foreground without a console socket: rcrun takes the pty master itself.
    pub proxy_terminal: bool,
    pub pid_file: Option<PathBuf>,
    pub preserve_fds: i32,
    pub ignore_paused: bool,
}

/// /proc/<pid>/ns/<name> for a namespace type.
fn proc_ns_name(t: LinuxNamespaceType) -> &'static str {
    match t {
        LinuxNamespaceType::Mount => "mnt",
        LinuxNamespaceType::Cgroup => "cgroup",
        LinuxNamespaceType::Uts => "uts",
        LinuxNamespaceType::Ipc => "ipc",
        LinuxNamespaceType::User => "user",
        LinuxNamespaceType::Pid => "pid",
        LinuxNamespaceType::Network => "net",
        LinuxNamespaceType::Time => "time",
    }
}

fn cstrings(what: &str, v: &[String]) -> Result<Vec<CString>, ContainerError> {
    v.iter()
        .map(|s| {
            CString::new(s.as_bytes())
                .map_err(|_| ContainerError::Invalid(format!("{what} {s:?} contains a NUL byte")))
        })
        .collect()
}

/// Starts `process` in container `id` and returns once it is running.
pub fn exec(
    root: &Path,
    id: &str,
    process: &Process,
    opts: ExecOptions,
) -> Result<Started, ContainerError> {
    let dir = ContainerDir::open(root, id)?;
    let saved = dir.load()?;
    let status = container::status(&dir.path, &saved);
    match status {
        Status::Created | Status::Running => {}
        Status::Paused if opts.ignore_paused => {}
        s => {
            return Err(ContainerError::BadState {
                action: "exec in",
                id: id.into(),
                status: s,
            })
        }
    }
    let args = process.args().clone().unwrap_or_default();
    if args.first().is_none_or(|a| a.is_empty()) {
        return Err(ContainerError::Invalid(
            "exec needs a command to run".into(),
        ));
    }
    if !process.cwd().is_absolute() {
        return Err(ContainerError::Invalid(format!(
            "cwd {} must be an absolute path",
            process.cwd().display()
        )));
    }
    let init = saved.pid;
    let mut ns = NamespacePlan::from_spec(None);
    let namespaces = saved
        .config
        .linux()
        .as_ref()
        .and_then(|l| l.namespaces().clone())
        .unwrap_or_default();
    for n in &namespaces {
        let path = PathBuf::from(format!("/proc/{init}/ns/{}", proc_ns_name(n.typ())));
        ns.join.push((clone_flag(n.typ()), path));
    }
    ns.join
        .sort_by_key(|(f, _)| !f.contains(CloneFlags::CLONE_NEWUSER));
    let setgroups_allowed = std::fs::read_to_string(format!("/proc/{init}/setgroups"))
        .map(|s| s.trim() != "deny")
        .unwrap_or(true);
    let (caps, warnings) = CapabilitySets::from_spec(process.capabilities().as_ref());
    for w in warnings {
        log::warn!("{w}");
    }
    let terminal = process.terminal().unwrap_or(false);
    let (console, our_end) = console::for_terminal(
        terminal,
        opts.console_socket.as_deref(),
        opts.proxy_terminal,
    )?;
    let cfg = InitConfig {
        id: id.to_string(),
        ns,
        rootfs: None,
        cgroup: Cgroup::from_paths(saved.cgroup.clone()),
        hostname: None,
        domainname: None,
        sysctl: Default::default(),
        args: cstrings("argument", &args)?,
        env: cstrings("env entry", process.env().as_deref().unwrap_or_default())?,
        cwd: process.cwd().clone(),
        identity: Identity::from_spec(process.user()),
        setgroups_allowed,
        caps,
        rlimits: crate::rlimits::from_spec(process.rlimits().as_ref()),
        no_new_privs: process.no_new_privileges().unwrap_or(false),
        oom_score_adj: None,
        console_size: console::size(process),
        preserve_fds: opts.preserve_fds,
        new_keyring: false,
        hooks: HookSet::default(),
        bind_console: false,
        late_cgroup: status == Status::Paused,
        seccomp: crate::seccomp::plan_for(
            &saved.config,
            id,
            &saved.bundle,
            Some(Pid::from_raw(init)),
        )?,
    };
    let pid: Pid = process::spawn(&cfg, None, console, &mut |_| Ok(String::new()))?;
    // Other commands (kill, delete) must not wait on us while the process runs.
    drop(dir);
    let pty_master = our_end.as_ref().map(console::recv_master).transpose()?;
    if let Some(p) = &opts.pid_file {
        container::write_pid_file(p, pid)?;
    }
    Ok(Started { pid, pty_master })
}
