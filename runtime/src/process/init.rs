//! What runs in the forked children: stage one joins and creates namespaces (and forks again
//! when a pid or time namespace needs it); the init then builds the container around itself
//! and finally execs the user's program. Nothing here returns to the caller's code.
use super::sync::{Channel, Message};
use super::{console, fifo, InitConfig, ProcessError};
use crate::hooks::HookKind;
use crate::namespaces;
use crate::seccomp::SeccompPlan;
use nix::sched::CloneFlags;
use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, SigmaskHow, Signal};
use nix::unistd::{chdir, fork, getcwd, ForkResult, Gid, Uid};
use std::ffi::CString;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

/// The fds the children inherit from the parent.
pub struct InitFds {
    pub sync: Channel,
    pub fifo: Option<OwnedFd>,
    pub console: Option<OwnedFd>,
    /// Born inside the container's cgroup (clone3 with CLONE_INTO_CGROUP): nothing to enter.
    pub in_cgroup: bool,
    /// Namespaces clone3 already created for us (empty after a plain fork).
    pub born_in: CloneFlags,
}

/// Formats an error with its causes, the way the parent prints it.
pub(crate) fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

fn exit_with(sync: &Channel, r: Result<std::convert::Infallible, ProcessError>) -> ! {
    let Err(e) = r;
    let _ = sync.send(&Message::Error(chain(&e)));
    // SAFETY: _exit skips atexit handlers and buffers that belong to the parent's copy.
    unsafe { libc::_exit(1) }
}

/// Stage one, in the first child.
pub fn stage1(cfg: &InitConfig, fds: InitFds) -> ! {
    let r = stage1_inner(cfg, &fds);
    exit_with(&fds.sync, r)
}

fn stage1_inner(cfg: &InitConfig, fds: &InitFds) -> Result<std::convert::Infallible, ProcessError> {
    // /proc/<pid>/exe of this process is still the rcrun binary: keep other processes of the
    // container (which may share our pid namespace) from opening it (CVE-2019-5736).
    nix::sys::prctl::set_dumpable(false).map_err(|e| ProcessError::Sys("clear dumpable", e))?;
    close_inherited_fds(cfg, fds)?;
    // Before any namespace we make: the cgroup namespace must be rooted at the container's
    // own cgroup. (Those clone3 made already change nothing here: a copied mount namespace
    // still shows the host's cgroup files, and "0" means this process in any pid namespace.)
    if !fds.in_cgroup && !cfg.late_cgroup {
        cfg.cgroup.enter()?;
    }
    // Here, not in the init: lowering it needs CAP_SYS_RESOURCE over the host, which entering
    // a user namespace takes away; the init inherits the value through the fork.
    if let Some(adj) = cfg.oom_score_adj {
        std::fs::write("/proc/self/oom_score_adj", adj.to_string()).map_err(|source| {
            ProcessError::Io {
                action: "set oom_score_adj",
                path: PathBuf::from("/proc/self/oom_score_adj"),
                source,
            }
        })?;
    }
    let joins = cfg.ns.open_joins()?;
    // Last moment with the host's privileges, which id-mapping a mount needs.
    if let Some(rootfs) = &cfg.rootfs {
        crate::rootfs::idmap::prepare(&rootfs.mounts)?;
    }
    namespaces::join(joins)?;
    if cfg.ns.new_user {
        namespaces::unshare_flags(nix::sched::CloneFlags::CLONE_NEWUSER)?;
        fds.sync.send(&Message::UsernsReady)?;
        match fds.sync.recv()? {
            Some(Message::MappingDone) => {}
            other => {
                return Err(ProcessError::Protocol(format!(
                    "expected mapping-done, got {other:?}"
                )))
            }
        }
    }
    if cfg.ns.new_user || cfg.ns.joins_user() {
        // Become root of the user namespace so the rest of the set-up has its privileges.
        nix::unistd::setresgid(Gid::from_raw(0), Gid::from_raw(0), Gid::from_raw(0))
            .map_err(|e| ProcessError::Sys("become gid 0 in the user namespace", e))?;
        nix::unistd::setresuid(Uid::from_raw(0), Uid::from_raw(0), Uid::from_raw(0))
            .map_err(|e| ProcessError::Sys("become uid 0 in the user namespace", e))?;
    }
    namespaces::unshare_flags(cfg.ns.new - fds.born_in)?;
    namespaces::write_time_offsets(&cfg.ns)?;
    if fds.born_in.contains(CloneFlags::CLONE_NEWPID) {
        // Already pid 1 of the container; the parent has our pid from clone3.
        init(cfg, fds)
    } else if cfg.ns.needs_fork() {
        // The init shares the sync socket with us: it must not speak before the parent has
        // learnt its pid from us, or a fast init's Ready (or hook request) overtakes InitPid.
        let (pid_sent_r, pid_sent_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
            .map_err(|e| ProcessError::Sys("pipe for the init pid hand-off", e))?;
        // SAFETY: single-threaded; the child only runs our own code and then execs.
        match unsafe { fork() }.map_err(|e| ProcessError::Sys("fork the container init", e))? {
            ForkResult::Child => {
                drop(pid_sent_w);
                let mut byte = [0u8; 1];
                let got = loop {
                    match nix::unistd::read(&pid_sent_r, &mut byte) {
                        Err(nix::errno::Errno::EINTR) => continue,
                        r => break r,
                    }
                };
                drop(pid_sent_r);
                match got {
                    Ok(1) => init(cfg, fds),
                    // Stage one died before reporting us: the parent will see it go.
                    // SAFETY: see exit_with.
                    _ => unsafe { libc::_exit(1) },
                }
            }
            ForkResult::Parent { child } => {
                drop(pid_sent_r);
                fds.sync.send(&Message::InitPid(child.as_raw()))?;
                nix::unistd::write(&pid_sent_w, &[1u8])
                    .map_err(|e| ProcessError::Sys("release the container init", e))?;
                // SAFETY: see exit_with.
                unsafe { libc::_exit(0) }
            }
        }
    } else {
        fds.sync
            .send(&Message::InitPid(nix::unistd::getpid().as_raw()))?;
        init(cfg, fds)
    }
}

fn init(cfg: &InitConfig, fds: &InitFds) -> ! {
    let r = init_inner(cfg, fds);
    exit_with(&fds.sync, r)
}

fn init_inner(cfg: &InitConfig, fds: &InitFds) -> Result<std::convert::Infallible, ProcessError> {
    nix::unistd::setsid().map_err(|e| ProcessError::Sys("start a new session", e))?;
    if cfg.new_keyring {
        join_session_keyring(&cfg.id);
    }
    // Device nodes must get exactly the modes the spec gives.
    nix::sys::stat::umask(nix::sys::stat::Mode::empty());
    // Everything written through /proc happens before the container's mounts exist, through
    // the /proc we inherited: a mount from the config (or a volume another container shares)
    // over /proc/sys/... or /proc/self/... could otherwise redirect these writes to a file of
    // its choosing (CVE-2025-52881). The sysctl files serve the namespaces we are already in.
    if let Some(h) = &cfg.hostname {
        nix::unistd::sethostname(h).map_err(|e| ProcessError::Sys("set hostname", e))?;
    }
    if let Some(d) = &cfg.domainname {
        set_domainname(d)?;
    }
    crate::sysctl::apply(&cfg.sysctl)?;
    if let Some(rootfs) = &cfg.rootfs {
        rootfs.prepare()?;
    }
    let hook_state = create_hooks(cfg, fds)?;
    if let Some(rootfs) = &cfg.rootfs {
        rootfs.switch_root()?;
    }
    if let Some(sock) = &fds.console {
        console::setup(sock, cfg.console_size, cfg.bind_console)?;
    }
    if let Some(rootfs) = &cfg.rootfs {
        rootfs.finalize()?;
    }
    crate::rlimits::apply(&cfg.rlimits)?;
    // The cwd is entered while still root (as runc does first), and checked afterwards: a
    // cwd that resolves outside the container (e.g. /proc/self/fd/N of a leaked host
    // directory, CVE-2024-21626) makes getcwd fail, and the container is refused.
    chdir(&cfg.cwd).map_err(|e| ProcessError::Cwd(cfg.cwd.clone(), e.to_string()))?;
    match getcwd() {
        Ok(p) if p.is_absolute() => {}
        _ => {
            return Err(ProcessError::Cwd(
                cfg.cwd.clone(),
                "it resolves outside the container's root".into(),
            ))
        }
    }
    // Where the seccomp filter is loaded: as late as possible, so that rcrun's own set-up is
    // never filtered (a profile may well deny mount, pivot_root or sethostname).
    // - Without no_new_privs the kernel lets only a CAP_SYS_ADMIN process load a filter, and
    //   the capability changes below may drop it: load it here, as runc does. What rcrun
    //   still does afterwards (prctl, setgroups, setres[ug]id, capset, umask, stat/access of
    //   the program, sendto/sendmsg on the sync socket, the exec fifo, execve) is allowed by
    //   the usual profiles (Docker's and containerd's defaults).
    // - With no_new_privs it waits until just before execve, after the exec fifo, except for
    //   a filter with NOTIFY rules: its fd goes to the listener through the parent, which
    //   is gone once create returns, so that one is loaded just before Ready (again as runc).
    // Neither needs privileges, so both happen before any filter can deny them.
    reset_signals()?;
    // Everything above the preserved fds is closed by exec; the preserved ones are the
    // caller's and already inheritable.
    close_on_exec_from(3 + cfg.preserve_fds)?;
    if !cfg.no_new_privs {
        if let Some(plan) = &cfg.seccomp {
            load_seccomp(plan, &fds.sync)?;
        }
    }
    cfg.caps.apply_bounding()?;
    cfg.identity.apply(cfg.setgroups_allowed)?;
    cfg.caps.apply_process_sets()?;
    if cfg.no_new_privs {
        nix::sys::prctl::set_no_new_privs()
            .map_err(|e| ProcessError::Sys("set no_new_privs", e))?;
    }
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(cfg.identity.umask));
    let program = find_program(&cfg.args[0], &cfg.env)?;
    if cfg.no_new_privs {
        if let Some(plan) = cfg.seccomp.as_ref().filter(|p| p.notifies()) {
            load_seccomp(plan, &fds.sync)?;
        }
    }
    fds.sync.send(&Message::Ready)?;
    if cfg.late_cgroup {
        match fds.sync.recv()? {
            Some(Message::Go) => {}
            other => {
                return Err(ProcessError::Protocol(format!(
                    "expected go, got {other:?}"
                )))
            }
        }
    }
    // Held until execve closes it: that is how `start` learns the process runs.
    let _started = match &fds.fifo {
        Some(fifo) => Some(
            fifo::wait_for_start(fifo).map_err(|source| ProcessError::Io {
                action: "wait on",
                path: PathBuf::from("exec.fifo"),
                source,
            })?,
        ),
        None => None,
    };
    if let Some(state) = hook_state {
        cfg.hooks
            .run(HookKind::StartContainer, &with_status(&state, "created"))?;
    }
    if cfg.no_new_privs {
        if let Some(plan) = cfg.seccomp.as_ref().filter(|p| !p.notifies()) {
            // Compiled and checked by the parent before the fork, so what is left to fail
            // here is the kernel itself (e.g. out of memory).
            plan.apply()?;
        }
    }
    let Err(e) = nix::unistd::execve(&program, &cfg.args, &cfg.env);
    Err(ProcessError::Exec(
        cfg.args[0].to_string_lossy().into_owned(),
        e,
    ))
}

/// Loads the seccomp filter. The fd of a NOTIFY filter goes to the parent, which forwards it
/// to listenerPath (a host path, and only the parent knows the container's state); the init
/// waits until it did, so a notified syscall never waits on a listener that lacks the fd.
fn load_seccomp(plan: &SeccompPlan, sync: &Channel) -> Result<(), ProcessError> {
    let Some(fd) = plan.apply()? else {
        return Ok(());
    };
    sync.send_fd(&Message::SeccompFd, fd.as_fd())?;
    match sync.recv()? {
        Some(Message::SeccompDone) => Ok(()),
        other => Err(ProcessError::Protocol(format!(
            "expected seccomp-done, got {other:?}"
        ))),
    }
}

/// Lets the parent run prestart and createRuntime hooks while our mounts are in place but
/// before the switch of root, then runs createContainer hooks here, in the container's
/// namespaces. Returns the state document for startContainer, or None without such hooks.
fn create_hooks(cfg: &InitConfig, fds: &InitFds) -> Result<Option<String>, ProcessError> {
    if !cfg.hooks.needs_create_sync() {
        return Ok(None);
    }
    fds.sync.send(&Message::CreateHooks)?;
    let state = match fds.sync.recv()? {
        Some(Message::HooksDone(state)) => state,
        other => {
            return Err(ProcessError::Protocol(format!(
                "expected hooks-done, got {other:?}"
            )))
        }
    };
    cfg.hooks.run(HookKind::CreateContainer, state.as_bytes())?;
    Ok(Some(state))
}

/// The same state document with another status.
fn with_status(state: &str, status: &str) -> Vec<u8> {
    match serde_json::from_str::<serde_json::Value>(state) {
        Ok(mut v) => {
            v["status"] = serde_json::Value::from(status);
            serde_json::to_vec(&v).unwrap_or_else(|_| state.as_bytes().to_vec())
        }
        Err(_) => state.as_bytes().to_vec(),
    }
}

/// Resolves the program the way execvp would, but with the container's own PATH.
fn find_program(arg0: &CString, env: &[CString]) -> Result<CString, ProcessError> {
    let name = arg0.to_string_lossy();
    let runnable = |p: &Path| {
        std::fs::metadata(p).is_ok_and(|m| m.is_file())
            && nix::unistd::access(p, nix::unistd::AccessFlags::X_OK).is_ok()
    };
    if name.contains('/') {
        return if runnable(Path::new(name.as_ref())) {
            Ok(arg0.clone())
        } else {
            Err(ProcessError::NotFound(
                name.into_owned(),
                "no such executable file".into(),
            ))
        };
    }
    let path = env
        .iter()
        .filter_map(|e| e.to_str().ok())
        .find_map(|e| e.strip_prefix("PATH="))
        .unwrap_or("/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin");
    for dir in path.split(':').filter(|d| !d.is_empty()) {
        let candidate = Path::new(dir).join(name.as_ref());
        if runnable(&candidate) {
            return CString::new(candidate.into_os_string().into_encoded_bytes())
                .map_err(|_| ProcessError::NotFound(name.into_owned(), "bad path".into()));
        }
    }
    Err(ProcessError::NotFound(
        name.into_owned(),
        "executable file not found in $PATH".into(),
    ))
}

/// The parent's fds (its lock on the state directory, the log file, ...) are of no use to
/// the container and some name host directories: a cwd of /proc/self/fd/N would put the
/// container on the host (CVE-2024-21626). Only the sync channel, the fifo, the console socket
/// and the caller's preserved fds stay.
fn close_inherited_fds(cfg: &InitConfig, fds: &InitFds) -> Result<(), ProcessError> {
    let keep: Vec<i32> = [
        Some(fds.sync.as_raw_fd()),
        fds.fifo.as_ref().map(|f| f.as_raw_fd()),
        fds.console.as_ref().map(|f| f.as_raw_fd()),
    ]
    .into_iter()
    .flatten()
    .collect();
    let first = 3 + cfg.preserve_fds;
    let entries = std::fs::read_dir("/proc/self/fd").map_err(|source| ProcessError::Io {
        action: "list",
        path: PathBuf::from("/proc/self/fd"),
        source,
    })?;
    let open: Vec<i32> = entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    for fd in open {
        if fd >= first && !keep.contains(&fd) {
            // SAFETY: this child never returns to the code that owned these fds; it execs or
            // exits, so nothing will use or close them again.
            unsafe { libc::close(fd) };
        }
    }
    Ok(())
}

/// Signal dispositions and the mask survive exec; the container must start with defaults
/// (Rust's runtime, for one, ignores SIGPIPE).
fn reset_signals() -> Result<(), ProcessError> {
    let dfl = SigAction::new(SigHandler::SigDfl, SaFlags::empty(), SigSet::empty());
    for sig in Signal::iterator() {
        if sig == Signal::SIGKILL || sig == Signal::SIGSTOP {
            continue;
        }
        // SAFETY: installing SIG_DFL involves no handler code.
        let _ = unsafe { sigaction(sig, &dfl) };
    }
    nix::sys::signal::sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None)
        .map_err(|e| ProcessError::Sys("clear the signal mask", e))
}

fn close_on_exec_from(first: i32) -> Result<(), ProcessError> {
    let first = u32::try_from(first).unwrap_or(3);
    // SAFETY: close_range only changes fd flags of this process.
    let r = unsafe {
        libc::syscall(
            libc::SYS_close_range,
            first,
            u32::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
        )
    };
    if r == 0 {
        return Ok(());
    }
    // Kernels before 5.11 (ENOSYS), or a seccomp filter around rcrun itself (EPERM): mark
    // them one by one, as runc does.
    let entries = std::fs::read_dir("/proc/self/fd").map_err(|source| ProcessError::Io {
        action: "list",
        path: PathBuf::from("/proc/self/fd"),
        source,
    })?;
    let fds: Vec<i32> = entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .filter(|fd| *fd >= first as i32)
        .collect();
    for fd in fds {
        // SAFETY: F_SETFD only changes the flags of an fd number; a number that was the
        // read_dir's own (now closed) fd just fails with EBADF.
        unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
    }
    Ok(())
}

fn set_domainname(name: &str) -> Result<(), ProcessError> {
    // SAFETY: the pointer and length describe `name`, which outlives the call.
    let r = unsafe { libc::setdomainname(name.as_ptr().cast(), name.len()) };
    nix::errno::Errno::result(r)
        .map(|_| ())
        .map_err(|e| ProcessError::Sys("set domainname", e))
}

/// A session keyring of the container's own, so it cannot read the caller's keys. Failures
/// (keyrings disabled, or not permitted in a user namespace) leave the inherited one, as runc
/// does.
fn join_session_keyring(id: &str) {
    const KEYCTL_JOIN_SESSION_KEYRING: libc::c_long = 1;
    if let Ok(name) = CString::new(format!("_ses.{id}")) {
        // SAFETY: keyctl reads the NUL-terminated name, which outlives the call.
        unsafe {
            libc::syscall(libc::SYS_keyctl, KEYCTL_JOIN_SESSION_KEYRING, name.as_ptr());
        }
    }
}
