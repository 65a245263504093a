//! `linux.seccomp`: the container's syscall filter, built with libseccomp.
//!
//! The parent compiles the whole profile into a libseccomp filter context before anything is
//! created on the host ([`SeccompPlan::from_spec`]), so a profile libseccomp or the kernel would
//! refuse fails `create` up front and leaves nothing behind. The init inherits the compiled
//! context through fork and only loads it ([`SeccompPlan::apply`]); where in the init that
//! happens, and why, is explained in `process::init`.
//!
//! Semantics follow runc, so that profiles written for runc (Docker's, containerd's, the ones
//! kubelet passes) mean the same here: syscall names this libseccomp does not know are skipped,
//! a rule whose action equals the default action is dropped, and the arguments of one rule are
//! AND'ed unless two of them compare the same argument (see [`condition_sets`]).
use libseccomp::error::SeccompError as ScmpError;
use libseccomp::{
    ScmpAction, ScmpArch, ScmpArgCompare, ScmpCompareOp, ScmpFilterContext, ScmpSyscall,
    ScmpVersion,
};
use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags};
use nix::unistd::Pid;
use oci_spec::runtime::{
    Arch, ContainerProcessState, ContainerState, LinuxSeccomp, LinuxSeccompAction, LinuxSeccompArg,
    LinuxSeccompFilterFlag, LinuxSeccompOperator, Spec, State, SECCOMP_FD_NAME,
};
use std::collections::HashMap;
use std::io::{IoSlice, Write};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

/// Linux system calls take at most six arguments.
const MAX_ARGS: usize = 6;

/// The syscall the init hands the notify fd to rcrun with (SCM_RIGHTS). A NOTIFY rule on it
/// would make the init wait for a listener that can only get the fd through that very call,
/// so it is refused, as runc refuses NOTIFY on `write` for the same reason.
pub const FD_PASSING_SYSCALL: &str = "sendmsg";

/// libseccomp's optimizer builds a binary tree of syscalls, which pays off for long profiles;
/// runc uses the same threshold (libseccomp <= 2.5.4 misbehaves with the tree and no rules).
const BINARY_TREE_MIN_SYSCALLS: usize = 32;

/// The kernel refuses a classic BPF program longer than this (BPF_MAXINSNS).
const MAX_BPF_INSTRUCTIONS: u64 = 4096;

#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    #[error("invalid linux.seccomp: SCMP_ACT_NOTIFY cannot be the default action (rcrun's own last syscalls would wait for a listener that does not have the fd yet)")]
    NotifyDefault,
    #[error("invalid linux.seccomp: SCMP_ACT_NOTIFY cannot be used for {0:?}: rcrun passes the listener fd with it")]
    NotifyOnFdPassing(String),
    #[error("invalid linux.seccomp: SCMP_ACT_NOTIFY needs listenerPath")]
    NoListenerPath,
    #[error("seccomp SCMP_ACT_NOTIFY is not supported here: it needs libseccomp API level 6 (libseccomp >= 2.5, linux >= 5.7), this host has level {level} with libseccomp {version}")]
    NotifyUnsupported { level: u32, version: String },
    #[error("invalid linux.seccomp: errnoRet {value} of {what} is out of range (0 to 65535)")]
    ErrnoRange { what: String, value: u32 },
    #[error("invalid linux.seccomp: an entry of syscalls has an empty name")]
    EmptyName,
    #[error("invalid linux.seccomp: argument index {index} of the rule for {syscall:?} is out of range (a syscall has arguments 0 to 5)")]
    ArgIndex { syscall: String, index: usize },
    #[error("seccomp architecture {arch} is not supported by libseccomp {version}")]
    Arch {
        arch: String,
        version: String,
        #[source]
        source: ScmpError,
    },
    #[error("seccomp flag {flag} is not supported by this kernel or by libseccomp {version}")]
    Flag {
        flag: String,
        version: String,
        #[source]
        source: ScmpError,
    },
    #[error("failed to add the seccomp rule for {syscall:?}")]
    Rule {
        syscall: String,
        #[source]
        source: ScmpError,
    },
    #[error("failed to {0}")]
    Filter(&'static str, #[source] ScmpError),
    #[error("the seccomp filter is too long: {0} BPF instructions, the kernel takes at most 4096")]
    TooLong(u64),
    #[error("failed to {0}")]
    Export(&'static str, #[source] std::io::Error),
    #[error("failed to load the seccomp filter")]
    Load(#[source] ScmpError),
    #[error("failed to get the seccomp notify fd")]
    NotifyFd(#[source] ScmpError),
    #[error("failed to connect to the seccomp listener {path}")]
    Connect {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("failed to send the seccomp notify fd to {path}")]
    Send {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("failed to encode the container state for the seccomp listener")]
    Encode(#[source] serde_json::Error),
}

/// Where the notify fd goes, and what the listener is told about the container.
#[derive(Debug, Clone)]
struct Listener {
    path: PathBuf,
    metadata: Option<String>,
    /// The container's state without its pid, which is known only after the fork.
    state: State,
}

/// A compiled seccomp profile, ready to be loaded by the init.
pub struct SeccompPlan {
    filter: ScmpFilterContext,
    /// Whether a NOTIFY rule made it into the filter, so loading it yields a listener fd.
    notify: bool,
    listener: Option<Listener>,
    /// Names this libseccomp does not know, skipped (kept for tests and the debug log).
    skipped: Vec<String>,
}

impl std::fmt::Debug for SeccompPlan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SeccompPlan")
            .field("notify", &self.notify)
            .field("listener", &self.listener)
            .field("skipped", &self.skipped)
            .finish_non_exhaustive()
    }
}

fn library_version() -> String {
    ScmpVersion::current()
        .map(|v| format!("{}.{}.{}", v.major, v.minor, v.micro))
        .unwrap_or_else(|_| "(unknown version)".into())
}

/// The return code of an ERRNO or TRACE action: the kernel keeps 16 bits of it.
fn return_code(errno_ret: Option<u32>, what: &str) -> Result<u16, SeccompError> {
    match errno_ret {
        None => Ok(libc::EPERM as u16),
        Some(v) => u16::try_from(v).map_err(|_| SeccompError::ErrnoRange {
            what: what.to_string(),
            value: v,
        }),
    }
}

/// The libseccomp action for a spec action. errnoRet counts only for ERRNO and TRACE and
/// defaults to EPERM there, as in runc.
fn action(
    a: LinuxSeccompAction,
    errno_ret: Option<u32>,
    what: &str,
) -> Result<ScmpAction, SeccompError> {
    Ok(match a {
        // SCMP_ACT_KILL predates KILL_PROCESS and has always meant the thread.
        LinuxSeccompAction::ScmpActKill | LinuxSeccompAction::ScmpActKillThread => {
            ScmpAction::KillThread
        }
        LinuxSeccompAction::ScmpActKillProcess => ScmpAction::KillProcess,
        LinuxSeccompAction::ScmpActTrap => ScmpAction::Trap,
        LinuxSeccompAction::ScmpActErrno => {
            ScmpAction::Errno(i32::from(return_code(errno_ret, what)?))
        }
        LinuxSeccompAction::ScmpActTrace => ScmpAction::Trace(return_code(errno_ret, what)?),
        LinuxSeccompAction::ScmpActLog => ScmpAction::Log,
        LinuxSeccompAction::ScmpActNotify => ScmpAction::Notify,
        LinuxSeccompAction::ScmpActAllow => ScmpAction::Allow,
    })
}

fn arch(a: Arch) -> ScmpArch {
    match a {
        Arch::ScmpArchNative => ScmpArch::Native,
        Arch::ScmpArchX86 => ScmpArch::X86,
        Arch::ScmpArchX86_64 => ScmpArch::X8664,
        Arch::ScmpArchX32 => ScmpArch::X32,
        Arch::ScmpArchArm => ScmpArch::Arm,
        Arch::ScmpArchAarch64 => ScmpArch::Aarch64,
        Arch::ScmpArchMips => ScmpArch::Mips,
        Arch::ScmpArchMips64 => ScmpArch::Mips64,
        Arch::ScmpArchMips64n32 => ScmpArch::Mips64N32,
        Arch::ScmpArchMipsel => ScmpArch::Mipsel,
        Arch::ScmpArchMipsel64 => ScmpArch::Mipsel64,
        Arch::ScmpArchMipsel64n32 => ScmpArch::Mipsel64N32,
        Arch::ScmpArchPpc => ScmpArch::Ppc,
        Arch::ScmpArchPpc64 => ScmpArch::Ppc64,
        Arch::ScmpArchPpc64le => ScmpArch::Ppc64Le,
        Arch::ScmpArchS390 => ScmpArch::S390,
        Arch::ScmpArchS390x => ScmpArch::S390X,
        Arch::ScmpArchParisc => ScmpArch::Parisc,
        Arch::ScmpArchParisc64 => ScmpArch::Parisc64,
        Arch::ScmpArchRiscv64 => ScmpArch::Riscv64,
        Arch::ScmpArchLoongarch64 => ScmpArch::Loongarch64,
        Arch::ScmpArchM68k => ScmpArch::M68k,
        Arch::ScmpArchSh => ScmpArch::Sh,
        Arch::ScmpArchSheb => ScmpArch::Sheb,
    }
}

/// One argument comparison. For SCMP_CMP_MASKED_EQ the spec's `value` is the mask and
/// `valueTwo` the value the masked argument must equal (`arg & value == valueTwo`), which is
/// how Docker's profile uses it for clone's flags.
fn condition(syscall: &str, arg: &LinuxSeccompArg) -> Result<ScmpArgCompare, SeccompError> {
    let index = arg.index();
    if index >= MAX_ARGS {
        return Err(SeccompError::ArgIndex {
            syscall: syscall.to_string(),
            index,
        });
    }
    let (op, datum) = match arg.op() {
        LinuxSeccompOperator::ScmpCmpNe => (ScmpCompareOp::NotEqual, arg.value()),
        LinuxSeccompOperator::ScmpCmpLt => (ScmpCompareOp::Less, arg.value()),
        LinuxSeccompOperator::ScmpCmpLe => (ScmpCompareOp::LessOrEqual, arg.value()),
        LinuxSeccompOperator::ScmpCmpEq => (ScmpCompareOp::Equal, arg.value()),
        LinuxSeccompOperator::ScmpCmpGe => (ScmpCompareOp::GreaterEqual, arg.value()),
        LinuxSeccompOperator::ScmpCmpGt => (ScmpCompareOp::Greater, arg.value()),
        LinuxSeccompOperator::ScmpCmpMaskedEq => (
            ScmpCompareOp::MaskedEqual(arg.value()),
            arg.value_two().unwrap_or(0),
        ),
    };
    // index < 6, so the cast cannot truncate.
    Ok(ScmpArgCompare::new(index as u32, op, datum))
}

/// The rules one syscall entry becomes, each a list of comparisons that must all hold.
///
/// libseccomp allows one comparison per argument in a rule. runc therefore AND's the
/// arguments of an entry in one rule, except when two of them compare the same argument:
/// then each comparison becomes a rule of its own, which OR's them (that is how profiles say
/// "arg0 is A or B"). Profiles rely on both behaviours, so rcrun keeps them.
pub fn condition_sets(
    syscall: &str,
    args: &[LinuxSeccompArg],
) -> Result<Vec<Vec<ScmpArgCompare>>, SeccompError> {
    let conds = args
        .iter()
        .map(|a| condition(syscall, a))
        .collect::<Result<Vec<_>, _>>()?;
    let mut per_index = [0usize; MAX_ARGS];
    for a in args {
        per_index[a.index()] += 1;
    }
    if conds.is_empty() {
        Ok(vec![Vec::new()])
    } else if per_index.iter().any(|&n| n > 1) {
        Ok(conds.into_iter().map(|c| vec![c]).collect())
    } else {
        Ok(vec![conds])
    }
}

fn set_flag(filter: &mut ScmpFilterContext, flag: LinuxSeccompFilterFlag) -> Result<(), ScmpError> {
    match flag {
        LinuxSeccompFilterFlag::SeccompFilterFlagLog => filter.set_ctl_log(true).map(|_| ()),
        LinuxSeccompFilterFlag::SeccompFilterFlagSpecAllow => filter.set_ctl_ssb(true).map(|_| ()),
        LinuxSeccompFilterFlag::SeccompFilterFlagWaitKillableRecv => {
            filter.set_ctl_waitkill(true).map(|_| ())
        }
        // TSYNC synchronises the filter across threads; the init is single-threaded when it
        // loads the filter and execs right after, so there is nothing to synchronise (runc
        // accepts and ignores it too).
        LinuxSeccompFilterFlag::SeccompFilterFlagTsync => Ok(()),
    }
}

/// The compiled `linux.seccomp` of `spec` for a process of container `id`, or None when the
/// spec has no profile. `init` as in [`SeccompPlan::for_container`].
pub fn plan_for(
    spec: &Spec,
    id: &str,
    bundle: &Path,
    init: Option<Pid>,
) -> Result<Option<SeccompPlan>, SeccompError> {
    let Some(profile) = spec.linux().as_ref().and_then(|l| l.seccomp().as_ref()) else {
        return Ok(None);
    };
    let annotations = spec.annotations().clone().unwrap_or_default();
    Ok(Some(SeccompPlan::from_spec(profile)?.for_container(
        spec.version(),
        id,
        bundle,
        &annotations,
        init,
    )))
}

/// Generates the BPF program once, so that a profile too long for the kernel fails here and
/// not in the init, where with no_new_privs the filter is loaded after `create` returned.
fn check_length(filter: &ScmpFilterContext) -> Result<(), SeccompError> {
    use nix::sys::memfd::{memfd_create, MFdFlags};
    let mem = memfd_create("rcrun-seccomp-bpf", MFdFlags::MFD_CLOEXEC)
        .map_err(|e| SeccompError::Export("create a memfd for the seccomp program", e.into()))?;
    filter
        .export_bpf(&mem)
        .map_err(|e| SeccompError::Filter("generate the seccomp program", e))?;
    let len = std::fs::File::from(mem)
        .metadata()
        .map_err(|e| SeccompError::Export("measure the seccomp program", e))?
        .len();
    let insns = len / std::mem::size_of::<libc::sock_filter>() as u64;
    if insns > MAX_BPF_INSTRUCTIONS {
        return Err(SeccompError::TooLong(insns));
    }
    Ok(())
}

impl SeccompPlan {
    /// Checks the profile and compiles it. Nothing here touches the calling process: building
    /// a libseccomp filter context only allocates memory.
    pub fn from_spec(spec: &LinuxSeccomp) -> Result<SeccompPlan, SeccompError> {
        let default = action(
            spec.default_action(),
            spec.default_errno_ret(),
            "defaultAction",
        )?;
        if default == ScmpAction::Notify {
            return Err(SeccompError::NotifyDefault);
        }
        let syscalls = spec.syscalls().as_deref().unwrap_or_default();
        let wants_notify = syscalls
            .iter()
            .any(|s| s.action() == LinuxSeccompAction::ScmpActNotify);
        if wants_notify {
            if spec.listener_path().is_none() {
                return Err(SeccompError::NoListenerPath);
            }
            // API level 6: libseccomp >= 2.5 on a kernel with user notification that also
            // reports TSYNC failures with ESRCH (linux >= 5.7), the level runc requires.
            if !libseccomp::check_api(6, ScmpVersion::from((2, 5, 0))).unwrap_or(false) {
                return Err(SeccompError::NotifyUnsupported {
                    level: libseccomp::get_api(),
                    version: library_version(),
                });
            }
        }

        let mut filter = ScmpFilterContext::new(default)
            .map_err(|e| SeccompError::Filter("create the seccomp filter", e))?;
        // process.noNewPrivileges decides no_new_privs, not libseccomp (which would set it on
        // load by default).
        filter
            .set_ctl_nnp(false)
            .map_err(|e| SeccompError::Filter("leave no_new_privs to the spec", e))?;
        // Without this, libseccomp reports every failure of seccomp(2) as ECANCELED; with it,
        // the kernel's own errno (EACCES, EINVAL, ...) reaches the error message.
        if let Err(e) = filter.set_api_sysrawrc(true) {
            log::debug!("seccomp: raw kernel error codes not available: {e}");
        }
        let version = library_version();
        for a in spec.architectures().iter().flatten() {
            let scmp = arch(*a);
            let present = filter.is_arch_present(scmp).unwrap_or(false);
            if !present {
                filter.add_arch(scmp).map_err(|source| SeccompError::Arch {
                    arch: a.to_string(),
                    version: version.clone(),
                    source,
                })?;
            }
        }
        match spec.flags() {
            // No flags at all (not even an empty list): runc disables the speculative store
            // bypass mitigation for filtered processes when it can, as the kernel's own
            // default used to; rcrun does the same so a container behaves alike under both.
            None => {
                if let Err(e) = filter.set_ctl_ssb(true) {
                    log::debug!("seccomp: SECCOMP_FILTER_FLAG_SPEC_ALLOW not available: {e}");
                }
            }
            Some(flags) => {
                for flag in flags {
                    set_flag(&mut filter, *flag).map_err(|source| SeccompError::Flag {
                        flag: flag.to_string(),
                        version: version.clone(),
                        source,
                    })?;
                }
            }
        }
        if syscalls.len() > BINARY_TREE_MIN_SYSCALLS {
            if let Err(e) = filter.set_ctl_optimize(2) {
                log::debug!("seccomp: binary tree optimization not available: {e}");
            }
        }

        let mut notify = false;
        let mut skipped = Vec::new();
        for entry in syscalls {
            let what = format!("the rule for {}", entry.names().join(", "));
            let act = action(entry.action(), entry.errno_ret(), &what)?;
            for name in entry.names() {
                if name.is_empty() {
                    return Err(SeccompError::EmptyName);
                }
                if act == ScmpAction::Notify && name == FD_PASSING_SYSCALL {
                    return Err(SeccompError::NotifyOnFdPassing(name.clone()));
                }
                // Validated even when the rule is dropped below, so a typo in an argument
                // is not hidden by a syscall this host happens not to know.
                let sets = condition_sets(name, entry.args().as_deref().unwrap_or_default())?;
                if act == default {
                    // libseccomp refuses such a rule (EACCES); it changes nothing anyway.
                    continue;
                }
                let Ok(nr) = ScmpSyscall::from_name(name) else {
                    skipped.push(name.clone());
                    continue;
                };
                for conds in &sets {
                    filter
                        .add_rule_conditional(act, nr, conds)
                        .map_err(|source| SeccompError::Rule {
                            syscall: name.clone(),
                            source,
                        })?;
                }
                notify |= act == ScmpAction::Notify;
            }
        }
        check_length(&filter)?;
        if !skipped.is_empty() {
            log::debug!(
                "seccomp: syscalls unknown to libseccomp {version} on this architecture, ignored: {}",
                skipped.join(", ")
            );
        }
        let listener = spec.listener_path().as_ref().map(|path| Listener {
            path: path.clone(),
            metadata: spec.listener_metadata().clone().filter(|m| !m.is_empty()),
            state: State::default(),
        });
        Ok(SeccompPlan {
            filter,
            notify,
            listener,
            skipped,
        })
    }

    /// Fills in what the seccomp listener is told about the container. `init` is None while
    /// the container's init itself is being created (state "creating", its pid filled in
    /// once known); for a process exec'd into a running container it is the init's pid.
    pub fn for_container(
        mut self,
        oci_version: &str,
        id: &str,
        bundle: &Path,
        annotations: &HashMap<String, String>,
        init: Option<Pid>,
    ) -> Self {
        if let Some(l) = &mut self.listener {
            let mut state = State::default();
            state
                .set_version(oci_version.to_string())
                .set_id(id.to_string())
                .set_status(if init.is_some() {
                    ContainerState::Running
                } else {
                    ContainerState::Creating
                })
                .set_pid(init.map(Pid::as_raw))
                .set_bundle(bundle.to_path_buf())
                .set_annotations((!annotations.is_empty()).then(|| annotations.clone()));
            l.state = state;
        }
        self
    }

    /// Whether loading the filter yields a notify fd that must reach the listener.
    pub fn notifies(&self) -> bool {
        self.notify
    }

    /// Syscall names of the profile that were skipped because libseccomp does not know them.
    pub fn skipped(&self) -> &[String] {
        &self.skipped
    }

    /// In the init: loads the filter into this process. Returns the notify fd when the
    /// filter has NOTIFY rules. Without no_new_privs this needs CAP_SYS_ADMIN.
    pub fn apply(&self) -> Result<Option<OwnedFd>, SeccompError> {
        self.filter.load().map_err(SeccompError::Load)?;
        if !self.notify {
            return Ok(None);
        }
        let fd = self
            .filter
            .get_notify_fd()
            .map_err(SeccompError::NotifyFd)?;
        // SAFETY: the kernel created this listener fd for us on load; libseccomp only
        // remembers its number and never closes it unless asked to reset, so the OwnedFd is
        // its only owner.
        Ok(Some(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    /// In the parent: sends the notify fd of process `pid` and the container's state to
    /// listenerPath in the format runc uses (an OCI ContainerProcessState with
    /// `fds: ["seccompFd"]` and the fd in SCM_RIGHTS), so existing seccomp agents work with
    /// rcrun. The parent connects, not the init: the path names a socket on the host.
    pub fn send_to_listener(&self, fd: BorrowedFd<'_>, pid: Pid) -> Result<(), SeccompError> {
        let Some(l) = &self.listener else {
            return Err(SeccompError::NoListenerPath);
        };
        let mut state = l.state.clone();
        if state.pid().is_none() {
            state.set_pid(Some(pid.as_raw()));
        }
        let mut msg = ContainerProcessState::default();
        msg.set_version(state.version().clone())
            .set_fds(vec![SECCOMP_FD_NAME.to_string()])
            .set_pid(pid.as_raw())
            .set_metadata(l.metadata.clone())
            .set_state(state);
        let data = serde_json::to_vec(&msg).map_err(SeccompError::Encode)?;
        let send_err = |source| SeccompError::Send {
            path: l.path.clone(),
            source,
        };
        let mut stream = UnixStream::connect(&l.path).map_err(|source| SeccompError::Connect {
            path: l.path.clone(),
            source,
        })?;
        let fds = [fd.as_raw_fd()];
        let sent = sendmsg::<()>(
            stream.as_raw_fd(),
            &[IoSlice::new(&data)],
            &[ControlMessage::ScmRights(&fds)],
            // A listener that went away must give us EPIPE, not kill rcrun with SIGPIPE.
            MsgFlags::MSG_NOSIGNAL,
            None,
        )
        .map_err(|e| send_err(std::io::Error::from(e)))?;
        // A stream socket may take less than all of it; the fd went with the first byte.
        if sent < data.len() {
            stream.write_all(&data[sent..]).map_err(send_err)?;
        }
        Ok(())
    }
}

/// The `linux.seccomp` part of `rcrun features` (runtime-spec features.md), probed on this
/// host: an architecture or flag is listed only if this libseccomp and kernel take it, NOTIFY
/// only where user notification works.
pub fn features() -> serde_json::Value {
    use LinuxSeccompAction as A;
    let notify = libseccomp::check_api(6, ScmpVersion::from((2, 5, 0))).unwrap_or(false);
    let actions: Vec<String> = [
        A::ScmpActAllow,
        A::ScmpActErrno,
        A::ScmpActKill,
        A::ScmpActKillProcess,
        A::ScmpActKillThread,
        A::ScmpActLog,
        A::ScmpActNotify,
        A::ScmpActTrace,
        A::ScmpActTrap,
    ]
    .into_iter()
    .filter(|a| notify || *a != A::ScmpActNotify)
    .map(|a| a.to_string())
    .collect();
    use LinuxSeccompOperator as O;
    let operators: Vec<String> = [
        O::ScmpCmpEq,
        O::ScmpCmpGe,
        O::ScmpCmpGt,
        O::ScmpCmpLe,
        O::ScmpCmpLt,
        O::ScmpCmpMaskedEq,
        O::ScmpCmpNe,
    ]
    .into_iter()
    .map(|o| o.to_string())
    .collect();
    let archs: Vec<String> = ALL_ARCHS
        .iter()
        .filter(|a| {
            ScmpFilterContext::new(ScmpAction::Allow).is_ok_and(|mut f| {
                f.is_arch_present(arch(**a)).unwrap_or(false) || f.add_arch(arch(**a)).is_ok()
            })
        })
        .map(|a| a.to_string())
        .collect();
    let known_flags = [
        LinuxSeccompFilterFlag::SeccompFilterFlagTsync,
        LinuxSeccompFilterFlag::SeccompFilterFlagSpecAllow,
        LinuxSeccompFilterFlag::SeccompFilterFlagLog,
        LinuxSeccompFilterFlag::SeccompFilterFlagWaitKillableRecv,
    ];
    let supported_flags: Vec<String> = known_flags
        .iter()
        .filter(|f| {
            ScmpFilterContext::new(ScmpAction::Allow)
                .is_ok_and(|mut c| set_flag(&mut c, **f).is_ok())
        })
        .map(|f| f.to_string())
        .collect();
    let known_flags: Vec<String> = known_flags.iter().map(|f| f.to_string()).collect();
    serde_json::json!({
        "enabled": true,
        "actions": actions,
        "operators": operators,
        "archs": archs,
        "knownFlags": known_flags,
        "supportedFlags": supported_flags,
    })
}

/// Every architecture the runtime spec names, native excluded (it is not an architecture).
const ALL_ARCHS: &[Arch] = &[
    Arch::ScmpArchX86,
    Arch::ScmpArchX86_64,
    Arch::ScmpArchX32,
    Arch::ScmpArchArm,
    Arch::ScmpArchAarch64,
    Arch::ScmpArchMips,
    Arch::ScmpArchMips64,
    Arch::ScmpArchMips64n32,
    Arch::ScmpArchMipsel,
    Arch::ScmpArchMipsel64,
    Arch::ScmpArchMipsel64n32,
    Arch::ScmpArchPpc,
    Arch::ScmpArchPpc64,
    Arch::ScmpArchPpc64le,
    Arch::ScmpArchS390,
    Arch::ScmpArchS390x,
    Arch::ScmpArchParisc,
    Arch::ScmpArchParisc64,
    Arch::ScmpArchRiscv64,
    Arch::ScmpArchLoongarch64,
    Arch::ScmpArchM68k,
    Arch::ScmpArchSh,
    Arch::ScmpArchSheb,
];

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(json: serde_json::Value) -> LinuxSeccomp {
        serde_json::from_value(json).expect("test profile parses")
    }

    fn plan(json: serde_json::Value) -> Result<SeccompPlan, SeccompError> {
        SeccompPlan::from_spec(&spec(json))
    }

    fn arg(index: usize, op: &str, value: u64) -> LinuxSeccompArg {
        serde_json::from_value(serde_json::json!({"index": index, "value": value, "op": op}))
            .expect("test arg parses")
    }

    #[test]
    fn a_plain_profile_compiles() {
        let p = plan(serde_json::json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
            "syscalls": [
                {"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13},
                {"names": ["personality"], "action": "SCMP_ACT_ERRNO",
                 "args": [{"index": 0, "value": 255, "valueTwo": 8, "op": "SCMP_CMP_MASKED_EQ"}]},
                {"names": ["chroot"], "action": "SCMP_ACT_KILL_PROCESS"},
                {"names": ["acct"], "action": "SCMP_ACT_KILL"},
                {"names": ["syslog"], "action": "SCMP_ACT_TRAP"},
                {"names": ["uselib"], "action": "SCMP_ACT_LOG"},
                {"names": ["ptrace"], "action": "SCMP_ACT_TRACE", "errnoRet": 1},
                {"names": ["getpid"], "action": "SCMP_ACT_KILL_THREAD"}
            ]
        }))
        .expect("compiles");
        assert!(!p.notifies());
        assert!(p.skipped().is_empty(), "{:?}", p.skipped());
    }

    #[test]
    fn every_operator_is_accepted() {
        for op in [
            "SCMP_CMP_NE",
            "SCMP_CMP_LT",
            "SCMP_CMP_LE",
            "SCMP_CMP_EQ",
            "SCMP_CMP_GE",
            "SCMP_CMP_GT",
            "SCMP_CMP_MASKED_EQ",
        ] {
            plan(serde_json::json!({
                "defaultAction": "SCMP_ACT_ALLOW",
                "syscalls": [{"names": ["personality"], "action": "SCMP_ACT_ERRNO",
                              "args": [{"index": 0, "value": 8, "op": op}]}]
            }))
            .unwrap_or_else(|e| panic!("{op}: {e}"));
        }
    }

    #[test]
    fn unknown_syscall_names_are_skipped() {
        let p = plan(serde_json::json!({
            "defaultAction": "SCMP_ACT_ERRNO",
            "syscalls": [{"names": ["read", "no_such_syscall_xyz"], "action": "SCMP_ACT_ALLOW"}]
        }))
        .expect("compiles");
        assert_eq!(p.skipped(), ["no_such_syscall_xyz"]);
    }

    #[test]
    fn a_rule_with_the_default_action_is_dropped() {
        plan(serde_json::json!({
            "defaultAction": "SCMP_ACT_ERRNO",
            "syscalls": [{"names": ["mkdir"], "action": "SCMP_ACT_ERRNO"}]
        }))
        .expect("compiles although libseccomp refuses such a rule");
    }

    #[test]
    fn unknown_action_operator_arch_and_flag_fail_to_parse() {
        for bad in [
            serde_json::json!({"defaultAction": "SCMP_ACT_BOGUS"}),
            serde_json::json!({"defaultAction": "SCMP_ACT_ALLOW",
                "syscalls": [{"names": ["read"], "action": "SCMP_ACT_NOPE"}]}),
            serde_json::json!({"defaultAction": "SCMP_ACT_ALLOW", "architectures": ["SCMP_ARCH_VAX"]}),
            serde_json::json!({"defaultAction": "SCMP_ACT_ALLOW",
                "syscalls": [{"names": ["read"], "action": "SCMP_ACT_ERRNO",
                              "args": [{"index": 0, "value": 1, "op": "SCMP_CMP_ALMOST"}]}]}),
            serde_json::json!({"defaultAction": "SCMP_ACT_ALLOW", "flags": ["SECCOMP_FILTER_FLAG_MAGIC"]}),
        ] {
            let text = bad.to_string();
            let err = serde_json::from_value::<LinuxSeccomp>(bad)
                .expect_err("must not parse")
                .to_string();
            assert!(err.contains("unknown variant"), "{text}: {err}");
        }
    }

    #[test]
    fn notify_needs_a_listener_and_is_not_the_default() {
        let e = plan(serde_json::json!({"defaultAction": "SCMP_ACT_NOTIFY"})).expect_err("refused");
        assert!(matches!(e, SeccompError::NotifyDefault), "{e}");
        let e = plan(serde_json::json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{"names": ["mkdir"], "action": "SCMP_ACT_NOTIFY"}]
        }))
        .expect_err("refused");
        assert!(matches!(e, SeccompError::NoListenerPath), "{e}");
        let e = plan(serde_json::json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "listenerPath": "/run/agent.sock",
            "syscalls": [{"names": ["sendmsg"], "action": "SCMP_ACT_NOTIFY"}]
        }))
        .expect_err("refused");
        assert!(matches!(e, SeccompError::NotifyOnFdPassing(_)), "{e}");
        let p = plan(serde_json::json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "listenerPath": "/run/agent.sock",
            "listenerMetadata": "hello",
            "syscalls": [{"names": ["mkdir"], "action": "SCMP_ACT_NOTIFY"}]
        }))
        .expect("compiles");
        assert!(p.notifies());
    }

    #[test]
    fn out_of_range_values_are_refused() {
        let e = plan(serde_json::json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{"names": ["mkdir"], "action": "SCMP_ACT_ERRNO", "errnoRet": 70000}]
        }))
        .expect_err("refused");
        assert!(
            matches!(e, SeccompError::ErrnoRange { value: 70000, .. }),
            "{e}"
        );
        let e = plan(serde_json::json!({
            "defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": 65536
        }))
        .expect_err("refused");
        assert!(e.to_string().contains("defaultAction"), "{e}");
        let e = plan(serde_json::json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{"names": ["mkdir"], "action": "SCMP_ACT_ERRNO",
                          "args": [{"index": 6, "value": 1, "op": "SCMP_CMP_EQ"}]}]
        }))
        .expect_err("refused");
        assert!(matches!(e, SeccompError::ArgIndex { index: 6, .. }), "{e}");
        let e = plan(serde_json::json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{"names": [""], "action": "SCMP_ACT_ERRNO"}]
        }))
        .expect_err("refused");
        assert!(matches!(e, SeccompError::EmptyName), "{e}");
    }

    #[test]
    fn args_on_distinct_indexes_make_one_rule() {
        let sets = condition_sets(
            "clone",
            &[arg(0, "SCMP_CMP_EQ", 1), arg(1, "SCMP_CMP_NE", 2)],
        )
        .expect("valid");
        assert_eq!(sets.len(), 1);
        assert_eq!(sets[0].len(), 2);
    }

    #[test]
    fn args_on_the_same_index_make_one_rule_each() {
        let sets = condition_sets(
            "personality",
            &[
                arg(0, "SCMP_CMP_EQ", 0),
                arg(0, "SCMP_CMP_EQ", 8),
                arg(1, "SCMP_CMP_EQ", 3),
            ],
        )
        .expect("valid");
        assert_eq!(sets.len(), 3);
        assert!(sets.iter().all(|s| s.len() == 1));
        // And libseccomp takes them.
        plan(serde_json::json!({
            "defaultAction": "SCMP_ACT_ERRNO",
            "syscalls": [{"names": ["personality"], "action": "SCMP_ACT_ALLOW", "args": [
                {"index": 0, "value": 0, "op": "SCMP_CMP_EQ"},
                {"index": 0, "value": 8, "op": "SCMP_CMP_EQ"}
            ]}]
        }))
        .expect("compiles");
    }

    #[test]
    fn no_args_make_one_unconditional_rule() {
        let sets = condition_sets("read", &[]).expect("valid");
        assert_eq!(sets, vec![Vec::<ScmpArgCompare>::new()]);
    }

    #[test]
    fn masked_eq_takes_the_mask_from_value() {
        let a: LinuxSeccompArg = serde_json::from_value(serde_json::json!(
            {"index": 0, "value": 0x7E020000u64, "valueTwo": 0, "op": "SCMP_CMP_MASKED_EQ"}
        ))
        .expect("parses");
        let c = condition("clone", &a).expect("valid");
        assert_eq!(
            c,
            ScmpArgCompare::new(0, ScmpCompareOp::MaskedEqual(0x7E020000), 0)
        );
    }

    #[test]
    fn a_profile_too_long_for_the_kernel_is_refused() {
        // Each value compared costs a few instructions; thousands exceed BPF_MAXINSNS.
        let args: Vec<serde_json::Value> = (0..6000u64)
            .map(|v| serde_json::json!({"index": 0, "value": v, "op": "SCMP_CMP_EQ"}))
            .collect();
        let e = plan(serde_json::json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{"names": ["personality"], "action": "SCMP_ACT_ERRNO", "args": args}]
        }))
        .expect_err("refused");
        assert!(matches!(e, SeccompError::TooLong(_)), "{e}");
    }

    #[test]
    fn features_list_what_compiles() {
        let f = features();
        assert_eq!(f["enabled"], true);
        assert_eq!(f["operators"].as_array().map(Vec::len), Some(7));
        for a in f["archs"].as_array().expect("archs") {
            plan(serde_json::json!({"defaultAction": "SCMP_ACT_ALLOW", "architectures": [a]}))
                .unwrap_or_else(|e| panic!("{a}: {e}"));
        }
        for flag in f["supportedFlags"].as_array().expect("flags") {
            plan(serde_json::json!({"defaultAction": "SCMP_ACT_ALLOW", "flags": [flag]}))
                .unwrap_or_else(|e| panic!("{flag}: {e}"));
        }
        assert!(f["archs"]
            .as_array()
            .expect("archs")
            .contains(&serde_json::json!("SCMP_ARCH_X86_64")));
    }

    #[test]
    fn supported_flags_compile() {
        plan(serde_json::json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "flags": ["SECCOMP_FILTER_FLAG_LOG", "SECCOMP_FILTER_FLAG_TSYNC"]
        }))
        .expect("compiles");
    }

    #[test]
    fn the_listener_state_has_the_runc_shape() {
        let p = plan(serde_json::json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "listenerPath": "/nonexistent/agent.sock",
            "listenerMetadata": "meta",
            "syscalls": [{"names": ["mkdir"], "action": "SCMP_ACT_NOTIFY"}]
        }))
        .expect("compiles")
        .for_container("1.0.2", "c1", Path::new("/b"), &HashMap::new(), None);
        let l = p.listener.as_ref().expect("listener");
        assert_eq!(l.state.id(), "c1");
        assert_eq!(l.metadata.as_deref(), Some("meta"));
        let devnull = std::fs::File::open("/dev/null").expect("open /dev/null");
        let e = p
            .send_to_listener(std::os::fd::AsFd::as_fd(&devnull), Pid::from_raw(1))
            .expect_err("no listener there");
        assert!(matches!(e, SeccompError::Connect { .. }), "{e}");
    }
}
