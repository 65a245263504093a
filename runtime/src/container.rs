//! The container lifecycle of the runtime spec: creating → created → running → stopped, and
//! the operations allowed in each state. Built from `bundle`, `state`, `cgroups` and `process`.
use crate::bundle::{Bundle, BundleError};
use crate::capabilities::CapabilitySets;
use crate::cgroups::{Cgroup, CgroupError};
use crate::hooks::{HookKind, HookSet, HookState};
use crate::identity::Identity;
use crate::namespaces::NamespacePlan;
use crate::process::{self, console, fifo, InitConfig, ProcessError};
use crate::rootfs::{RootfsError, RootfsPlan};
use crate::state::{ContainerDir, OciState, Saved, StateError, Status};
use nix::sched::CloneFlags;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::ffi::CString;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

mod control;
pub use control::{events, merge_resources, pause, pids, resume, stats, update, Event};

#[derive(Debug, thiserror::Error)]
pub enum ContainerError {
    #[error(transparent)]
    Bundle(#[from] BundleError),
    #[error(transparent)]
    State(#[from] StateError),
    #[error(transparent)]
    Cgroup(#[from] CgroupError),
    #[error(transparent)]
    Rootfs(#[from] RootfsError),
    #[error(transparent)]
    Process(#[from] ProcessError),
    #[error(transparent)]
    Seccomp(#[from] crate::seccomp::SeccompError),
    #[error(transparent)]
    Fifo(#[from] fifo::FifoError),
    #[error(transparent)]
    Console(#[from] console::ConsoleError),
    #[error("cannot {action} container {id:?}: it is {status}")]
    BadState {
        action: &'static str,
        id: String,
        status: Status,
    },
    /// Worded as runc's ErrNotRunning: containerd's shim recognises "container not running"
    /// and treats the container as already gone.
    #[error("cannot signal {0:?}: container not running")]
    NotRunning(String),
    #[error("invalid config.json: {0}")]
    Invalid(String),
    #[error("failed to signal container {id:?} (pid {pid})")]
    Signal {
        id: String,
        pid: i32,
        #[source]
        source: nix::Error,
    },
    #[error("failed to write pid file {path}")]
    PidFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("container {id:?} did not stop within {secs} s of SIGKILL")]
    StopTimeout { id: String, secs: u64 },
}

/// What `create` and `run` are asked for, in the order a reader thinks of it (youki's shape).
pub struct ContainerBuilder {
    id: String,
    root: PathBuf,
    pid_file: Option<PathBuf>,
    console_socket: Option<PathBuf>,
    preserve_fds: i32,
    no_pivot: bool,
    no_new_keyring: bool,
    proxy_terminal: bool,
}

/// A container that `run` started.
pub struct Started {
    pub pid: Pid,
    /// The pty master, when rcrun itself holds the container's terminal (foreground `run`
    /// without --console-socket).
    pub pty_master: Option<OwnedFd>,
}

impl ContainerBuilder {
    pub fn new(id: &str, root: &Path) -> Self {
        ContainerBuilder {
            id: id.to_string(),
            root: root.to_path_buf(),
            pid_file: None,
            console_socket: None,
            preserve_fds: 0,
            no_pivot: false,
            no_new_keyring: false,
            proxy_terminal: false,
        }
    }
    pub fn with_pid_file(mut self, p: Option<PathBuf>) -> Self {
        self.pid_file = p;
        self
    }
    pub fn with_console_socket(mut self, p: Option<PathBuf>) -> Self {
        self.console_socket = p;
        self
    }
    pub fn with_preserve_fds(mut self, n: i32) -> Self {
        self.preserve_fds = n;
        self
    }
    pub fn with_no_pivot(mut self, b: bool) -> Self {
        self.no_pivot = b;
        self
    }
    pub fn with_no_new_keyring(mut self, b: bool) -> Self {
        self.no_new_keyring = b;
        self
    }
    /// For a foreground `run`: without a console socket, rcrun takes the pty master itself.
    pub fn with_terminal_proxy(mut self, b: bool) -> Self {
        self.proxy_terminal = b;
        self
    }

    /// `create`: the container exists and its init waits on the exec fifo.
    pub fn create(self, bundle: &Path) -> Result<Pid, ContainerError> {
        self.build(bundle, true).map(|s| s.pid)
    }

    /// `run`: like create, but the init execs as soon as it is ready (no fifo round trip).
    pub fn create_and_start(self, bundle: &Path) -> Result<Started, ContainerError> {
        self.build(bundle, false)
    }

    fn build(self, bundle_dir: &Path, wait_for_start: bool) -> Result<Started, ContainerError> {
        crate::state::validate_id(&self.id)?;
        let bundle = Bundle::load(bundle_dir)?;
        let (cfg, warnings) = init_config(&self, &bundle)?;
        for w in warnings {
            log::warn!("{w}");
        }
        let terminal = bundle
            .spec
            .process()
            .as_ref()
            .and_then(|p| p.terminal())
            .unwrap_or(false);
        let (console, our_end) = console::for_terminal(
            terminal,
            self.console_socket.as_deref(),
            self.proxy_terminal,
        )?;
        // From here on, everything made is undone by the guard unless create succeeds.
        let dir = ContainerDir::create(&self.root, &self.id)?;
        let mut guard = CreateGuard {
            dir: Some(dir),
            cgroup: None,
            pid: None,
        };
        let mut saved = Saved {
            id: self.id.clone(),
            pid: 0,
            pid_start: 0,
            bundle: bundle.dir.clone(),
            rootfs: bundle.rootfs.clone(),
            created: humantime::format_rfc3339_nanos(SystemTime::now()).to_string(),
            owner: owner_name(),
            annotations: bundle.spec.annotations().clone().unwrap_or_default(),
            cgroup: cfg.cgroup.paths().clone(),
            private_pid_ns: cfg.ns.private_pid(),
            config: bundle.spec.clone(),
        };
        // Saved before the cgroup exists, with no pid yet: if we are killed from here on (kill
        // -9 during a slow createRuntime hook), `delete --force` still learns which cgroups to
        // remove instead of leaving them behind with the state dir gone.
        if let Some(dir) = &guard.dir {
            dir.save(&saved)?;
        }
        guard.cgroup = Some(cfg.cgroup.clone());
        cfg.cgroup.create(
            bundle
                .spec
                .linux()
                .as_ref()
                .and_then(|l| l.resources().as_ref()),
        )?;
        // linux.devices get no allow rule of their own: as in runc, access to them is what
        // resources.devices says (callers such as containerd add the rules they want).
        let dir = guard
            .dir
            .as_ref()
            .ok_or_else(|| ContainerError::Invalid("lost state dir".into()))?;
        let fifo_fd: Option<OwnedFd> = if wait_for_start {
            Some(fifo::create(&dir.fifo_path())?)
        } else {
            None
        };
        let state_of = |status: &'static str, pid: Pid| {
            HookState {
                oci_version: bundle.spec.version(),
                id: &self.id,
                status,
                pid: pid.as_raw(),
                bundle: &bundle.dir,
                annotations: bundle.spec.annotations().as_ref(),
            }
            .to_json()
        };
        let mut runtime_hooks = |init: Pid| -> Result<String, ProcessError> {
            let state = state_of("creating", init);
            cfg.hooks.run(HookKind::Prestart, &state)?;
            cfg.hooks.run(HookKind::CreateRuntime, &state)?;
            Ok(String::from_utf8_lossy(&state).into_owned())
        };
        let pid = process::spawn(&cfg, fifo_fd, console, &mut runtime_hooks)?;
        guard.pid = Some(pid);
        // The init sent the master before it reported ready, so it is waiting in the socket.
        let pty_master = our_end.as_ref().map(console::recv_master).transpose()?;
        saved.pid = pid.as_raw();
        saved.pid_start = start_time(pid).unwrap_or(0);
        dir.save(&saved)?;
        if let Some(p) = &self.pid_file {
            write_pid_file(p, pid)?;
        }
        guard.disarm();
        if !wait_for_start {
            cfg.hooks
                .run_warn(HookKind::Poststart, &state_of("running", pid));
        }
        Ok(Started { pid, pty_master })
    }
}

/// Undoes a failed create: kills the init, removes its cgroup and the state dir.
struct CreateGuard {
    dir: Option<ContainerDir>,
    cgroup: Option<Cgroup>,
    pid: Option<Pid>,
}

impl CreateGuard {
    fn disarm(&mut self) {
        self.dir = None;
        self.cgroup = None;
        self.pid = None;
    }
}

impl Drop for CreateGuard {
    fn drop(&mut self) {
        if let Some(pid) = self.pid {
            let _ = kill(pid, Signal::SIGKILL);
            let _ = wait_gone(pid, 0, Duration::from_secs(5));
        }
        if let Some(cg) = &self.cgroup {
            if let Err(e) = cg.destroy() {
                log::warn!("cleanup after failed create: {}", process::chain(&e));
            }
        }
        if let Some(dir) = self.dir.take() {
            if let Err(e) = dir.remove() {
                log::warn!("cleanup after failed create: {}", process::chain(&e));
            }
        }
    }
}

fn cstrings<'a>(
    what: &str,
    v: impl Iterator<Item = &'a String>,
) -> Result<Vec<CString>, ContainerError> {
    v.map(|s| {
        CString::new(s.as_bytes())
            .map_err(|_| ContainerError::Invalid(format!("{what} {s:?} contains a NUL byte")))
    })
    .collect()
}

/// Turns the validated spec into the init's typed instructions; returns warnings to log.
fn init_config(
    b: &ContainerBuilder,
    bundle: &Bundle,
) -> Result<(InitConfig, Vec<String>), ContainerError> {
    let spec = &bundle.spec;
    let linux = spec.linux().as_ref();
    let process = spec
        .process()
        .as_ref()
        .ok_or_else(|| ContainerError::Invalid("process is missing".into()))?;
    let ns = NamespacePlan::from_spec(linux);
    let in_userns = ns.new_user || ns.joins_user();
    // A joined mount namespace gets the full set-up too (as runc does); without any, the
    // container's mounts would land in the caller's namespace and outlive the container, so
    // rcrun refuses where runc would leave them behind.
    let joins_mnt = ns
        .join
        .iter()
        .any(|(f, _)| f.contains(CloneFlags::CLONE_NEWNS));
    let rootfs = if ns.has_new(CloneFlags::CLONE_NEWNS) || joins_mnt {
        Some(RootfsPlan::from_bundle(bundle, b.no_pivot, in_userns)?)
    } else {
        return Err(ContainerError::Invalid(
            "the container needs a mount namespace (linux.namespaces has no \"mount\"): \
             rcrun does not mount into the caller's namespace"
                .into(),
        ));
    };
    let cgroups_path = linux
        .and_then(|l| l.cgroups_path().as_ref())
        .map(|p| p.to_string_lossy().into_owned());
    let cgroup = Cgroup::resolve(cgroups_path.as_deref(), &b.id)?;
    cgroup.check_applicable(linux.and_then(|l| l.resources().as_ref()))?;
    let rootfs = rootfs.map(|mut r| {
        r.cgroup_dirs = cgroup.paths().dirs.clone();
        r
    });
    let (caps, warnings) = CapabilitySets::from_spec(process.capabilities().as_ref());
    let args = cstrings("process.args entry", process.args().iter().flatten())?;
    let env = cstrings("process.env entry", process.env().iter().flatten())?;
    // In a user namespace we set up ourselves, setgroups is allowed (we write the maps as
    // root); in a joined one it depends on its setgroups file.
    let setgroups_allowed = if ns.joins_user() && !ns.new_user {
        ns.join
            .iter()
            .find(|(f, _)| f.contains(CloneFlags::CLONE_NEWUSER))
            .and_then(|(_, p)| {
                let pid_dir = p.parent()?.parent()?;
                std::fs::read_to_string(pid_dir.join("setgroups")).ok()
            })
            .map(|s| s.trim() != "deny")
            .unwrap_or(true)
    } else {
        true
    };
    Ok((
        InitConfig {
            id: b.id.clone(),
            rootfs,
            cgroup,
            hostname: spec.hostname().clone().filter(|h| !h.is_empty()),
            domainname: spec.domainname().clone().filter(|h| !h.is_empty()),
            sysctl: linux.and_then(|l| l.sysctl().clone()).unwrap_or_default(),
            args,
            env,
            cwd: process.cwd().clone(),
            identity: Identity::from_spec(process.user()),
            setgroups_allowed,
            caps,
            rlimits: crate::rlimits::from_spec(process.rlimits().as_ref()),
            no_new_privs: process.no_new_privileges().unwrap_or(false),
            oom_score_adj: process.oom_score_adj(),
            console_size: console::size(process),
            preserve_fds: b.preserve_fds,
            new_keyring: !b.no_new_keyring,
            hooks: HookSet::from_spec(spec.hooks().as_ref()).map_err(BundleError::from)?,
            bind_console: true,
            late_cgroup: false,
            seccomp: crate::seccomp::plan_for(spec, &b.id, &bundle.dir, None)?,
            ns,
        },
        warnings,
    ))
}

pub(crate) fn write_pid_file(path: &Path, pid: Pid) -> Result<(), ContainerError> {
    let err = |source| ContainerError::PidFile {
        path: path.to_path_buf(),
        source,
    };
    // Written to a temp file and renamed, so a reader never sees an empty pid file.
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp"));
    std::fs::write(&tmp, pid.as_raw().to_string()).map_err(err)?;
    std::fs::rename(&tmp, path).map_err(err)
}

fn owner_name() -> String {
    let uid = nix::unistd::geteuid();
    nix::unistd::User::from_uid(uid)
        .ok()
        .flatten()
        .map(|u| u.name)
        .unwrap_or_else(|| uid.to_string())
}

/// Field 3 (state) and 22 (starttime) of /proc/<pid>/stat.
fn proc_stat(pid: Pid) -> Option<(char, u64)> {
    let data = crate::kernel_file::read(format!("/proc/{pid}/stat")).ok()?;
    // The command name may contain spaces and parentheses; fields resume after the last ')'.
    let rest = &data[data.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let state = fields.first()?.chars().next()?;
    let start = fields.get(19)?.parse().ok()?;
    Some((state, start))
}

fn start_time(pid: Pid) -> Option<u64> {
    proc_stat(pid).map(|(_, s)| s)
}

/// Whether the saved init is still alive (and is the same process, not a reused pid).
pub(crate) fn init_alive(saved: &Saved) -> bool {
    if saved.pid <= 0 {
        return false;
    }
    match proc_stat(Pid::from_raw(saved.pid)) {
        Some((state, start)) => {
            state != 'Z' && state != 'X' && (saved.pid_start == 0 || start == saved.pid_start)
        }
        None => false,
    }
}

fn wait_gone(pid: Pid, pid_start: u64, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        // Reap it if it happens to be our child (run, or a failed create).
        let _ = nix::sys::wait::waitpid(pid, Some(nix::sys::wait::WaitPidFlag::WNOHANG));
        match proc_stat(pid) {
            None => return true,
            Some((s, _)) if s == 'Z' || s == 'X' => return true,
            Some((_, start)) if pid_start != 0 && start != pid_start => return true,
            _ => {}
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The container's status, read from the real process.
pub fn status(dir: &Path, saved: &Saved) -> Status {
    if !init_alive(saved) {
        Status::Stopped
    } else if Cgroup::from_paths(saved.cgroup.clone())
        .is_frozen()
        .unwrap_or(false)
    {
        Status::Paused
    } else if dir.join(crate::state::EXEC_FIFO).exists() {
        Status::Created
    } else {
        Status::Running
    }
}

pub fn oci_state(root: &Path, id: &str) -> Result<OciState, ContainerError> {
    crate::state::validate_id(id)?;
    let dir = root.join(id);
    let saved = crate::state::load(&dir)?;
    Ok(to_oci_state(&dir, saved))
}

fn to_oci_state(dir: &Path, saved: Saved) -> OciState {
    let status = status(dir, &saved);
    OciState {
        oci_version: saved.config.version().clone(),
        id: saved.id,
        status,
        pid: if status == Status::Stopped {
            0
        } else {
            saved.pid
        },
        bundle: saved.bundle,
        rootfs: saved.rootfs,
        created: saved.created,
        owner: saved.owner,
        annotations: saved.annotations,
    }
}

pub fn list(root: &Path) -> Result<Vec<OciState>, ContainerError> {
    let mut out = Vec::new();
    for id in crate::state::list_ids(root)? {
        let dir = root.join(&id);
        match crate::state::load(&dir) {
            Ok(saved) => out.push(to_oci_state(&dir, saved)),
            // A container deleted while we listed.
            Err(StateError::NotFound(_)) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(out)
}

pub fn start(root: &Path, id: &str) -> Result<(), ContainerError> {
    let dir = ContainerDir::open(root, id)?;
    let saved = dir.load()?;
    match status(&dir.path, &saved) {
        Status::Created => {}
        s => {
            return Err(ContainerError::BadState {
                action: "start",
                id: id.into(),
                status: s,
            })
        }
    }
    fifo::release(&dir.fifo_path(), || init_alive(&saved))?;
    run_saved_hooks(&saved, HookKind::Poststart, "running");
    Ok(())
}

pub fn kill_container(
    root: &Path,
    id: &str,
    sig: crate::signal::KillSignal,
    all: bool,
) -> Result<(), ContainerError> {
    let dir = ContainerDir::open(root, id)?;
    let saved = dir.load()?;
    let st = status(&dir.path, &saved);
    if st == Status::Stopped {
        if !all {
            return Err(ContainerError::NotRunning(id.into()));
        }
        // As runc: `kill --all` of a stopped container still reaches what is left in its
        // cgroup (children of an init that exited, in a pid namespace shared with others) —
        // containerd's shim relies on it after every exit. Never the recorded pid: it may
        // have been reused.
        let cgroup = Cgroup::from_paths(saved.cgroup.clone());
        if !saved.cgroup.dirs.iter().any(|d| d.exists()) {
            return Ok(());
        }
        return Ok(cgroup.signal_all(sig)?);
    }
    signal_container(&saved, sig, all)
}

fn signal_container(
    saved: &Saved,
    sig: crate::signal::KillSignal,
    all: bool,
) -> Result<(), ContainerError> {
    let err = |pid: i32| {
        let id = saved.id.clone();
        move |source| ContainerError::Signal { id, pid, source }
    };
    if all {
        Cgroup::from_paths(saved.cgroup.clone()).signal_all(sig)?;
        // The init may not be in the cgroup list yet if it raced; signal it too. It may
        // also be gone already, killed through the cgroup.
        return match sig.send(Pid::from_raw(saved.pid)) {
            Ok(()) | Err(nix::Error::ESRCH) => Ok(()),
            Err(e) => Err(err(saved.pid)(e)),
        };
    }
    sig.send(Pid::from_raw(saved.pid)).map_err(err(saved.pid))
}

pub fn delete(root: &Path, id: &str, force: bool) -> Result<(), ContainerError> {
    let dir = match ContainerDir::open(root, id) {
        Ok(d) => d,
        Err(StateError::NotFound(_)) if force => {
            // A create that died before writing state.json leaves at most an empty dir.
            let path = root.join(id);
            crate::state::validate_id(id)?;
            if path.is_dir() {
                let _ = std::fs::remove_dir_all(&path);
            }
            return Ok(());
        }
        Err(e) => return Err(e.into()),
    };
    let saved = dir.load()?;
    if saved.pid == 0 {
        // A create that was killed before its init was recorded: whatever it left in the
        // cgroup goes (the cgroup is signalled, never pid 0), and it never ran, so no poststop.
        let cgroup = Cgroup::from_paths(saved.cgroup.clone());
        let _ = cgroup.signal_all(crate::signal::KillSignal::KILL);
        cgroup.destroy()?;
        dir.remove()?;
        return Ok(());
    }
    let st = status(&dir.path, &saved);
    match st {
        Status::Stopped => {}
        Status::Created => kill_and_wait(&saved)?,
        _ if force => kill_and_wait(&saved)?,
        _ => {
            return Err(ContainerError::BadState {
                action: "delete (use --force)",
                id: id.into(),
                status: st,
            })
        }
    }
    destroy(dir, &saved)
}

fn kill_and_wait(saved: &Saved) -> Result<(), ContainerError> {
    // Every process of the cgroup: without its own pid namespace, killing the init does not
    // take the others with it, and a paused container's tasks only die once thawed (which
    // signal_all does).
    match signal_container(saved, crate::signal::KillSignal::KILL, true) {
        Ok(())
        | Err(ContainerError::Signal {
            source: nix::Error::ESRCH,
            ..
        }) => {}
        Err(e) => return Err(e),
    }
    if !wait_gone(
        Pid::from_raw(saved.pid),
        saved.pid_start,
        Duration::from_secs(10),
    ) {
        return Err(ContainerError::StopTimeout {
            id: saved.id.clone(),
            secs: 10,
        });
    }
    Ok(())
}

fn destroy(dir: ContainerDir, saved: &Saved) -> Result<(), ContainerError> {
    Cgroup::from_paths(saved.cgroup.clone()).destroy()?;
    dir.remove()?;
    run_saved_hooks(saved, HookKind::Poststop, "stopped");
    Ok(())
}

/// poststart and poststop: failures are warnings (runtime-spec "Lifecycle").
fn run_saved_hooks(saved: &Saved, kind: HookKind, status: &'static str) {
    let hooks = match HookSet::from_spec(saved.config.hooks().as_ref()) {
        Ok(h) => h,
        Err(e) => {
            log::warn!("{}", process::chain(&e));
            return;
        }
    };
    let state = HookState {
        oci_version: saved.config.version(),
        id: &saved.id,
        status,
        pid: saved.pid,
        bundle: &saved.bundle,
        annotations: saved.config.annotations().as_ref(),
    };
    hooks.run_warn(kind, &state.to_json());
}

/// For `run` in the foreground: after the init exited, remove what the container left.
pub fn cleanup_after_run(root: &Path, id: &str) -> Result<(), ContainerError> {
    let dir = ContainerDir::open(root, id)?;
    let saved = dir.load()?;
    if init_alive(&saved) {
        kill_and_wait(&saved)?;
    } else if !saved.private_pid_ns {
        // Orphans of a container that shares our pid namespace may still be in its cgroup.
        let _ = signal_container(&saved, crate::signal::KillSignal::KILL, true);
    }
    destroy(dir, &saved)
}
