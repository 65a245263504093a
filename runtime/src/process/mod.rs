//! How the container's init is born: a fork (no re-exec, so no copy of the runtime), a second
//! fork when a pid or time namespace needs one, and a sync channel to the parent that carries
//! user-namespace mapping requests, the init's pid, the seccomp notify fd, readiness and
//! errors.
pub mod console;
pub mod exe_seal;
pub mod fifo;
mod init;
pub mod sync;

use crate::capabilities::{CapabilityError, CapabilitySets};
use crate::cgroups::{Cgroup, CgroupError};
use crate::hooks::{HookError, HookSet};
use crate::identity::{Identity, IdentityError};
use crate::namespaces::{self, NamespaceError, NamespacePlan};
use crate::rlimits::{Rlimit, RlimitError};
use crate::rootfs::{RootfsError, RootfsPlan};
use crate::seccomp::{SeccompError, SeccompPlan};
use crate::sysctl::SysctlError;
use nix::sched::CloneFlags;
use nix::sys::signal::{kill, Signal};
use nix::sys::wait::waitpid;
use nix::unistd::{fork, ForkResult, Pid};
use std::collections::HashMap;
use std::ffi::CString;
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use sync::{Channel, Message, SyncError};

pub(crate) use init::chain;

#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    #[error("failed to {0}")]
    Sys(&'static str, #[source] nix::Error),
    #[error("failed to {action} {path}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot use cwd {0}: {1}")]
    Cwd(PathBuf, String),
    #[error("cannot run {0:?}: {1}")]
    NotFound(String, String),
    #[error("failed to exec {0:?}")]
    Exec(String, #[source] nix::Error),
    #[error("container init failed: {0}")]
    Init(String),
    #[error("container init exited before it was ready")]
    InitExited,
    #[error("sync protocol error: {0}")]
    Protocol(String),
    #[error(transparent)]
    Sync(#[from] SyncError),
    #[error(transparent)]
    Namespace(#[from] NamespaceError),
    #[error(transparent)]
    Rootfs(#[from] RootfsError),
    #[error(transparent)]
    Cgroup(#[from] CgroupError),
    #[error(transparent)]
    Capability(#[from] CapabilityError),
    #[error(transparent)]
    Identity(#[from] IdentityError),
    #[error(transparent)]
    Rlimit(#[from] RlimitError),
    #[error(transparent)]
    Sysctl(#[from] SysctlError),
    #[error(transparent)]
    Console(#[from] console::ConsoleError),
    #[error(transparent)]
    Hook(#[from] HookError),
    #[error(transparent)]
    Seccomp(#[from] SeccompError),
}

/// Everything the init needs, converted and validated before the fork.
pub struct InitConfig {
    pub id: String,
    pub ns: NamespacePlan,
    /// None when the container joins an existing mount namespace.
    pub rootfs: Option<RootfsPlan>,
    pub cgroup: Cgroup,
    pub hostname: Option<String>,
    pub domainname: Option<String>,
    pub sysctl: HashMap<String, String>,
    pub args: Vec<CString>,
    pub env: Vec<CString>,
    pub cwd: PathBuf,
    pub identity: Identity,
    pub setgroups_allowed: bool,
    pub caps: CapabilitySets,
    pub rlimits: Vec<Rlimit>,
    pub no_new_privs: bool,
    pub oom_score_adj: Option<i32>,
    pub console_size: Option<(u16, u16)>,
    pub preserve_fds: i32,
    pub new_keyring: bool,
    pub hooks: HookSet,
    /// Whether the pty becomes /dev/console (the container's init, not an exec).
    pub bind_console: bool,
    /// Enter the cgroup only once set up (exec into a paused container: a frozen cgroup would
    /// stop the set-up halfway, and the caller with it). The parent moves it, then says Go.
    pub late_cgroup: bool,
    /// The compiled filter of linux.seccomp; the init loads it (see init.rs for where).
    pub seccomp: Option<SeccompPlan>,
}

/// Kills and reaps what a failed spawn started.
struct SpawnGuard {
    stage1: Pid,
    init: Option<Pid>,
    armed: bool,
}

impl Drop for SpawnGuard {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        if let Some(init) = self.init {
            let _ = kill(init, Signal::SIGKILL);
        }
        let _ = kill(self.stage1, Signal::SIGKILL);
        let _ = waitpid(self.stage1, None);
        if let Some(init) = self.init.filter(|p| *p != self.stage1) {
            // It is our child only when we are a subreaper (run); otherwise init reaps it.
            let _ = waitpid(init, Some(nix::sys::wait::WaitPidFlag::WNOHANG));
        }
    }
}

/// The kernel's `struct clone_args` (linux/sched.h), up to the cgroup field (CLONE_ARGS_SIZE_VER2).
#[repr(C)]
#[derive(Default)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
    set_tid: u64,
    set_tid_size: u64,
    cgroup: u64,
}

const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;

/// How the first child was born.
struct Born {
    forked: ForkResult,
    /// Inside the container's cgroup already (CLONE_INTO_CGROUP).
    in_cgroup: bool,
    /// The namespaces it was created in (see `NamespacePlan::born_with`).
    ns: CloneFlags,
}

/// Forks the first child. With clone3 it is born inside the container's cgroup on v2 (so it is
/// never counted against, or frozen with, the caller's, and no cgroup.procs write is needed)
/// and in the namespaces `ns` (so a new pid namespace needs no second fork). If clone3 refuses
/// (old kernels, or a namespace or cgroup it cannot make), it falls back to a plain fork and
/// the child does it all itself, reporting any error properly from there.
fn fork_into(cgroup: Option<OwnedFd>, ns: CloneFlags) -> Result<Born, ProcessError> {
    if cgroup.is_some() || !ns.is_empty() {
        let mut args = CloneArgs {
            // CloneFlags are c_int; the namespace bits are all positive.
            flags: u64::from(ns.bits().unsigned_abs()),
            exit_signal: libc::SIGCHLD as u64,
            ..Default::default()
        };
        if let Some(fd) = &cgroup {
            args.flags |= CLONE_INTO_CGROUP;
            args.cgroup = std::os::fd::AsRawFd::as_raw_fd(fd) as u64;
        }
        // SAFETY: without CLONE_VM, clone3 duplicates the process like fork (the child
        // continues on its copy of this stack); rcrun is single-threaded, so no lock is held.
        let r = unsafe {
            libc::syscall(
                libc::SYS_clone3,
                &mut args as *mut CloneArgs,
                std::mem::size_of::<CloneArgs>(),
            )
        };
        let forked = match r {
            0 => Some(ForkResult::Child),
            p if p > 0 => Some(ForkResult::Parent {
                child: Pid::from_raw(p as i32),
            }),
            _ => {
                log::debug!(
                    "clone3 ({ns:?}, into cgroup: {}) failed: {}; forking instead",
                    cgroup.is_some(),
                    nix::Error::last()
                );
                None
            }
        };
        if let Some(forked) = forked {
            return Ok(Born {
                forked,
                in_cgroup: cgroup.is_some(),
                ns,
            });
        }
    }
    // SAFETY: rcrun is single-threaded, so the child may allocate and run our code.
    let forked = unsafe { fork() }.map_err(|e| ProcessError::Sys("fork", e))?;
    Ok(Born {
        forked,
        in_cgroup: false,
        ns: CloneFlags::empty(),
    })
}

/// Forks the container's init and waits until it is set up. Returns its pid (in our pid
/// namespace). With an exec fifo the init then blocks until `start`; without one it execs.
/// `runtime_hooks` runs prestart and createRuntime hooks for the given init pid and returns
/// the state document the container-side hooks get.
pub fn spawn(
    cfg: &InitConfig,
    fifo: Option<OwnedFd>,
    console: Option<OwnedFd>,
    runtime_hooks: &mut dyn FnMut(Pid) -> Result<String, ProcessError>,
) -> Result<Pid, ProcessError> {
    let (parent, child) = Channel::pair()?;
    let target = if cfg.late_cgroup {
        None
    } else {
        cfg.cgroup.v2_dir_fd()
    };
    let born = fork_into(target, cfg.ns.born_with())?;
    match born.forked {
        ForkResult::Child => {
            drop(parent);
            init::stage1(
                cfg,
                init::InitFds {
                    sync: child,
                    fifo,
                    console,
                    in_cgroup: born.in_cgroup,
                    born_in: born.ns,
                },
            )
        }
        ForkResult::Parent { child: stage1 } => {
            drop(child);
            drop(fifo);
            drop(console);
            // Born in its pid namespace, the child is the init itself; it knows itself only
            // as pid 1 there, so it reports nothing and we already know.
            let pid_known = born.ns.contains(CloneFlags::CLONE_NEWPID);
            let mut guard = SpawnGuard {
                stage1,
                init: pid_known.then_some(stage1),
                armed: true,
            };
            let mut seccomp_fd: Option<OwnedFd> = None;
            loop {
                let (msg, fd) = parent.recv_with_fd()?;
                match msg {
                    Some(Message::UsernsReady) => {
                        namespaces::write_id_maps(stage1, &cfg.ns)?;
                        parent.send(&Message::MappingDone)?;
                    }
                    Some(Message::InitPid(_)) if pid_known => {
                        return Err(ProcessError::Protocol(
                            "init-pid from an init born in its pid namespace".into(),
                        ))
                    }
                    Some(Message::InitPid(p)) => guard.init = Some(Pid::from_raw(p)),
                    Some(Message::SeccompFd) => {
                        seccomp_fd = Some(fd.ok_or_else(|| {
                            ProcessError::Protocol("seccomp-fd came without an fd".into())
                        })?);
                    }
                    Some(Message::CreateHooks) => {
                        let init = guard.init.ok_or_else(|| {
                            ProcessError::Protocol("hooks before init pid".into())
                        })?;
                        let state = runtime_hooks(init)?;
                        parent.send(&Message::HooksDone(state))?;
                    }
                    Some(Message::Ready) => break,
                    Some(Message::Error(msg)) => return Err(ProcessError::Init(msg)),
                    Some(other) => {
                        return Err(ProcessError::Protocol(format!("unexpected {other:?}")))
                    }
                    None => return Err(ProcessError::InitExited),
                }
                // The listener is told the init's pid, which stage one may report only after
                // the init loaded its filter; the init waits for SeccompDone meanwhile.
                if let (Some(init), Some(fd)) = (guard.init, &seccomp_fd) {
                    let plan = cfg.seccomp.as_ref().ok_or_else(|| {
                        ProcessError::Protocol("seccomp fd without a seccomp profile".into())
                    })?;
                    plan.send_to_listener(std::os::fd::AsFd::as_fd(fd), init)?;
                    seccomp_fd = None;
                    parent.send(&Message::SeccompDone)?;
                }
            }
            let init = guard
                .init
                .ok_or_else(|| ProcessError::Protocol("ready before init pid".into()))?;
            if init != stage1 {
                waitpid(stage1, None).map_err(|e| ProcessError::Sys("reap stage one", e))?;
            }
            if cfg.late_cgroup {
                cfg.cgroup.add_task(init)?;
                parent.send(&Message::Go)?;
            }
            guard.armed = false;
            Ok(init)
        }
    }
}
