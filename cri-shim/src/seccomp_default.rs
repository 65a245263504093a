//! The RuntimeDefault seccomp profile: what a container gets when kubelet asks for
//! `seccompProfile: RuntimeDefault`.
//!
//! Same shape as the default profiles of containerd, CRI-O and containers-common (written here
//! from scratch, not copied):
//!
//! - the default action is `SCMP_ACT_ERRNO` with `ENOSYS`: a syscall this list does not know
//!   (typically one newer than the profile) looks unimplemented, so libc and language runtimes
//!   take their fallback path instead of failing with EPERM;
//! - an allow list of the syscalls ordinary programs use, grouped by purpose below;
//! - syscalls whose only legitimate use needs a capability are allowed only when the container's
//!   capability set has it (as containerd decides from the spec's capabilities), and otherwise
//!   fail with `EPERM`, what the kernel itself would answer without the capability;
//! - `clone` may not create namespaces without CAP_SYS_ADMIN, and `clone3` (whose flags live in
//!   memory a filter cannot read) answers ENOSYS then, so glibc falls back to `clone`;
//! - `personality` only for the harmless personas.
//!
//! Privileged containers get no filter at all; that is decided by the caller.

use oci_spec::runtime::{
    Arch, LinuxSeccomp, LinuxSeccompAction, LinuxSeccompArg, LinuxSeccompArgBuilder,
    LinuxSeccompOperator, LinuxSyscall,
};

/// errno values the profile returns (the same on every Linux architecture listed).
pub const EPERM: u32 = 1;
pub const ENOSYS: u32 = 38;

/// The namespace flags of clone(2): creating any of these needs CAP_SYS_ADMIN.
const CLONE_NEWNS: u64 = 0x0002_0000;
const CLONE_NEWCGROUP: u64 = 0x0200_0000;
const CLONE_NEWUTS: u64 = 0x0400_0000;
const CLONE_NEWIPC: u64 = 0x0800_0000;
const CLONE_NEWUSER: u64 = 0x1000_0000;
const CLONE_NEWPID: u64 = 0x2000_0000;
const CLONE_NEWNET: u64 = 0x4000_0000;
const CLONE_NAMESPACE_FLAGS: [u64; 7] = [
    CLONE_NEWNS,
    CLONE_NEWCGROUP,
    CLONE_NEWUTS,
    CLONE_NEWIPC,
    CLONE_NEWUSER,
    CLONE_NEWPID,
    CLONE_NEWNET,
];

/// personality(2) values that change nothing security-relevant: PER_LINUX, PER_LINUX32,
/// UNAME26, UNAME26|PER_LINUX32, and 0xffffffff, which only queries the current persona.
const SAFE_PERSONALITIES: [u64; 5] = [0x0, 0x8, 0x2_0000, 0x2_0008, 0xffff_ffff];

/// Syscalls every container may use, by purpose. Names a given libseccomp or architecture does
/// not know are skipped by the runtime, so 32-bit and newer-kernel names can be listed freely.
const ALLOWED: &[(&str, &[&str])] = &[
    (
        // Starting, ending and waiting for processes. `clone` is not here: its namespace flags
        // are checked by a rule of its own; `clone3` neither (see the module doc).
        "process lifecycle",
        &[
            "execve",
            "execveat",
            "exit",
            "exit_group",
            "fork",
            "vfork",
            "wait4",
            "waitid",
            "waitpid",
            "restart_syscall",
            "set_tid_address",
            "set_robust_list",
            "get_robust_list",
            "rseq",
            "prctl",
            "arch_prctl",
            "capget",
            "capset",
            "seccomp",
            "getcpu",
            "uretprobe",
        ],
    ),
    (
        // Identity: the kernel checks CAP_SETUID/CAP_SETGID for changes, so the syscalls
        // themselves are harmless.
        "credentials",
        &[
            "getuid",
            "getuid32",
            "geteuid",
            "geteuid32",
            "getgid",
            "getgid32",
            "getegid",
            "getegid32",
            "getresuid",
            "getresuid32",
            "getresgid",
            "getresgid32",
            "getgroups",
            "getgroups32",
            "setuid",
            "setuid32",
            "setgid",
            "setgid32",
            "setreuid",
            "setreuid32",
            "setregid",
            "setregid32",
            "setresuid",
            "setresuid32",
            "setresgid",
            "setresgid32",
            "setgroups",
            "setgroups32",
            "setfsuid",
            "setfsuid32",
            "setfsgid",
            "setfsgid32",
        ],
    ),
    (
        // Process ids, sessions, process groups, scheduling and limits of the caller's own
        // processes (the kernel checks permissions for others).
        "process attributes",
        &[
            "getpid",
            "getppid",
            "gettid",
            "getpgid",
            "getpgrp",
            "setpgid",
            "getsid",
            "setsid",
            "getpriority",
            "setpriority",
            "getrlimit",
            "ugetrlimit",
            "setrlimit",
            "prlimit64",
            "getrusage",
            "times",
            "umask",
            "sched_yield",
            "sched_getaffinity",
            "sched_setaffinity",
            "sched_getattr",
            "sched_setattr",
            "sched_getparam",
            "sched_setparam",
            "sched_getscheduler",
            "sched_setscheduler",
            "sched_get_priority_max",
            "sched_get_priority_min",
            "sched_rr_get_interval",
            "sched_rr_get_interval_time64",
            "ioprio_get",
            "ioprio_set",
            "pidfd_open",
            "pidfd_send_signal",
        ],
    ),
    (
        // Signals, to the caller's own processes.
        "signals",
        &[
            "kill",
            "tkill",
            "tgkill",
            "rt_sigaction",
            "rt_sigpending",
            "rt_sigprocmask",
            "rt_sigqueueinfo",
            "rt_tgsigqueueinfo",
            "rt_sigreturn",
            "rt_sigsuspend",
            "rt_sigtimedwait",
            "rt_sigtimedwait_time64",
            "sigaction",
            "sigaltstack",
            "signal",
            "signalfd",
            "signalfd4",
            "sigpending",
            "sigprocmask",
            "sigreturn",
            "sigsuspend",
            "pause",
        ],
    ),
    (
        // The address space: allocation, protection keys, shared memory of the caller. mlock
        // is bounded by RLIMIT_MEMLOCK without CAP_IPC_LOCK.
        "memory",
        &[
            "brk",
            "mmap",
            "mmap2",
            "munmap",
            "mremap",
            "mprotect",
            "madvise",
            "mincore",
            "msync",
            "mlock",
            "mlock2",
            "mlockall",
            "munlock",
            "munlockall",
            "membarrier",
            "memfd_create",
            "mseal",
            "map_shadow_stack",
            "pkey_alloc",
            "pkey_free",
            "pkey_mprotect",
            "remap_file_pages",
            "set_thread_area",
            "get_thread_area",
            "modify_ldt",
        ],
    ),
    (
        // Threads and waiting: futexes, clocks, timers, sleeping. Setting the clock is
        // capability-gated below; adjtimex/clock_adjtime only read it without CAP_SYS_TIME.
        "time and synchronisation",
        &[
            "futex",
            "futex_time64",
            "futex_waitv",
            "futex_wait",
            "futex_wake",
            "futex_requeue",
            "nanosleep",
            "clock_nanosleep",
            "clock_nanosleep_time64",
            "clock_gettime",
            "clock_gettime64",
            "clock_getres",
            "clock_getres_time64",
            "clock_adjtime",
            "clock_adjtime64",
            "adjtimex",
            "gettimeofday",
            "time",
            "alarm",
            "getitimer",
            "setitimer",
            "timer_create",
            "timer_delete",
            "timer_getoverrun",
            "timer_gettime",
            "timer_gettime64",
            "timer_settime",
            "timer_settime64",
            "timerfd_create",
            "timerfd_gettime",
            "timerfd_gettime64",
            "timerfd_settime",
            "timerfd_settime64",
        ],
    ),
    (
        // Files and directories through descriptors and paths: the kernel's permission checks
        // (and CAP_CHOWN, CAP_FOWNER, CAP_MKNOD...) apply as usual.
        "files",
        &[
            "open",
            "openat",
            "openat2",
            "creat",
            "close",
            "close_range",
            "read",
            "readv",
            "pread64",
            "preadv",
            "preadv2",
            "write",
            "writev",
            "pwrite64",
            "pwritev",
            "pwritev2",
            "lseek",
            "_llseek",
            "dup",
            "dup2",
            "dup3",
            "fcntl",
            "fcntl64",
            "ioctl",
            "flock",
            "fsync",
            "fdatasync",
            "sync",
            "syncfs",
            "sync_file_range",
            "sync_file_range2",
            "truncate",
            "truncate64",
            "ftruncate",
            "ftruncate64",
            "fallocate",
            "fadvise64",
            "fadvise64_64",
            "arm_fadvise64_64",
            "arm_sync_file_range",
            "readahead",
            "cachestat",
            "copy_file_range",
            "sendfile",
            "sendfile64",
            "splice",
            "tee",
            "vmsplice",
            "stat",
            "stat64",
            "lstat",
            "lstat64",
            "fstat",
            "fstat64",
            "fstatat64",
            "newfstatat",
            "statx",
            "statfs",
            "statfs64",
            "fstatfs",
            "fstatfs64",
            "access",
            "faccessat",
            "faccessat2",
            "getcwd",
            "chdir",
            "fchdir",
            "getdents",
            "getdents64",
            "mkdir",
            "mkdirat",
            "mknod",
            "mknodat",
            "rmdir",
            "link",
            "linkat",
            "unlink",
            "unlinkat",
            "symlink",
            "symlinkat",
            "readlink",
            "readlinkat",
            "rename",
            "renameat",
            "renameat2",
            "chmod",
            "fchmod",
            "fchmodat",
            "fchmodat2",
            "chown",
            "chown32",
            "fchown",
            "fchown32",
            "fchownat",
            "lchown",
            "lchown32",
            "utime",
            "utimes",
            "utimensat",
            "utimensat_time64",
            "futimesat",
            "getxattr",
            "lgetxattr",
            "fgetxattr",
            "getxattrat",
            "setxattr",
            "lsetxattr",
            "fsetxattr",
            "setxattrat",
            "listxattr",
            "llistxattr",
            "flistxattr",
            "listxattrat",
            "removexattr",
            "lremovexattr",
            "fremovexattr",
            "removexattrat",
            "inotify_init",
            "inotify_init1",
            "inotify_add_watch",
            "inotify_rm_watch",
            "fanotify_mark",
            "landlock_create_ruleset",
            "landlock_add_rule",
            "landlock_restrict_self",
        ],
    ),
    (
        // Waiting on many descriptors, and the descriptor kinds made for it.
        "event loops",
        &[
            "select",
            "_newselect",
            "pselect6",
            "pselect6_time64",
            "poll",
            "ppoll",
            "ppoll_time64",
            "epoll_create",
            "epoll_create1",
            "epoll_ctl",
            "epoll_ctl_old",
            "epoll_wait",
            "epoll_wait_old",
            "epoll_pwait",
            "epoll_pwait2",
            "eventfd",
            "eventfd2",
            "pipe",
            "pipe2",
        ],
    ),
    (
        // Asynchronous I/O (the classic AIO interface; io_uring is left to the default, ENOSYS,
        // which its users treat as "use the fallback").
        "aio",
        &[
            "io_setup",
            "io_destroy",
            "io_submit",
            "io_cancel",
            "io_getevents",
            "io_pgetevents",
            "io_pgetevents_time64",
        ],
    ),
    (
        // Sockets: the network namespace confines them; raw sockets need CAP_NET_RAW anyway.
        "sockets",
        &[
            "socket",
            "socketpair",
            "socketcall",
            "bind",
            "listen",
            "accept",
            "accept4",
            "connect",
            "getsockname",
            "getpeername",
            "getsockopt",
            "setsockopt",
            "shutdown",
            "send",
            "sendto",
            "sendmsg",
            "sendmmsg",
            "recv",
            "recvfrom",
            "recvmsg",
            "recvmmsg",
            "recvmmsg_time64",
        ],
    ),
    (
        // System V and POSIX IPC, confined by the pod's IPC namespace.
        "ipc",
        &[
            "ipc",
            "msgget",
            "msgctl",
            "msgsnd",
            "msgrcv",
            "semget",
            "semctl",
            "semop",
            "semtimedop",
            "semtimedop_time64",
            "shmget",
            "shmctl",
            "shmat",
            "shmdt",
            "mq_open",
            "mq_unlink",
            "mq_getsetattr",
            "mq_notify",
            "mq_timedsend",
            "mq_timedsend_time64",
            "mq_timedreceive",
            "mq_timedreceive_time64",
        ],
    ),
    (
        // Read-only information about the system.
        "system information",
        &["uname", "sysinfo", "getrandom"],
    ),
    (
        // ARM's own entry points of generic operations (listed for arm64 hosts).
        "arm specifics",
        &["breakpoint", "cacheflush", "set_tls"],
    ),
];

/// Syscalls allowed only when the container has one of the capabilities: without it they fail
/// with EPERM (the kernel would mostly say so too, but many of them are attack surface even
/// when they fail late, and some are not namespaced at all).
const CAPABILITY_GATED: &[(&[&str], &[&str])] = &[
    (
        // Mounts, namespaces, host names, file handles, kernel keyrings (not namespaced),
        // fanotify of whole mounts, swap, quotas.
        &["CAP_SYS_ADMIN"],
        &[
            "mount",
            "mount_setattr",
            "umount",
            "umount2",
            "pivot_root",
            "fsopen",
            "fsconfig",
            "fsmount",
            "fspick",
            "open_tree",
            "move_mount",
            "unshare",
            "setns",
            "clone3",
            "sethostname",
            "setdomainname",
            "name_to_handle_at",
            "lookup_dcookie",
            "fanotify_init",
            "quotactl",
            "quotactl_fd",
            "swapon",
            "swapoff",
            "keyctl",
            "add_key",
            "request_key",
        ],
    ),
    // Loading programs into the kernel.
    (&["CAP_SYS_ADMIN", "CAP_BPF"], &["bpf"]),
    // Performance counters see other processes and the kernel.
    (&["CAP_SYS_ADMIN", "CAP_PERFMON"], &["perf_event_open"]),
    // The kernel log.
    (&["CAP_SYS_ADMIN", "CAP_SYSLOG"], &["syslog"]),
    // Opening any inode by handle bypasses the directory permissions (the shocker escape).
    (&["CAP_DAC_READ_SEARCH"], &["open_by_handle_at"]),
    // Rebooting or replacing the running kernel.
    (
        &["CAP_SYS_BOOT"],
        &["reboot", "kexec_load", "kexec_file_load"],
    ),
    (&["CAP_SYS_CHROOT"], &["chroot"]),
    // Kernel modules.
    (
        &["CAP_SYS_MODULE"],
        &["init_module", "finit_module", "delete_module"],
    ),
    // Process accounting to a file, host-wide.
    (&["CAP_SYS_PACCT"], &["acct"]),
    // Inspecting or changing other processes' memory; userfaultfd makes kernel races easy to
    // win, so it goes with them.
    (
        &["CAP_SYS_PTRACE"],
        &[
            "ptrace",
            "process_vm_readv",
            "process_vm_writev",
            "process_madvise",
            "pidfd_getfd",
            "kcmp",
            "userfaultfd",
        ],
    ),
    // Raw I/O ports.
    (&["CAP_SYS_RAWIO"], &["iopl", "ioperm"]),
    // Setting the host's clock (the clock is not namespaced).
    (
        &["CAP_SYS_TIME"],
        &["settimeofday", "stime", "clock_settime", "clock_settime64"],
    ),
    (&["CAP_SYS_TTY_CONFIG"], &["vhangup"]),
    // NUMA placement of memory, also of other processes.
    (
        &["CAP_SYS_NICE"],
        &[
            "get_mempolicy",
            "set_mempolicy",
            "set_mempolicy_home_node",
            "mbind",
            "migrate_pages",
            "move_pages",
        ],
    ),
];

/// Obsolete or host-wide syscalls no capability of a container justifies: always EPERM.
const ALWAYS_DENIED: &[&str] = &[
    "_sysctl",
    "bdflush",
    "create_module",
    "get_kernel_syms",
    "query_module",
    "nfsservctl",
    "uselib",
    "ustat",
    "sysfs",
    "vm86",
    "vm86old",
];

/// The architectures a filter must cover on this host: the native one and those whose binaries
/// it can also run (32-bit x86 and x32 on x86_64, arm on arm64). Elsewhere, only the native one.
fn architectures() -> Vec<Arch> {
    match std::env::consts::ARCH {
        "x86_64" => vec![Arch::ScmpArchX86_64, Arch::ScmpArchX86, Arch::ScmpArchX32],
        "x86" => vec![Arch::ScmpArchX86],
        "aarch64" => vec![Arch::ScmpArchAarch64, Arch::ScmpArchArm],
        _ => Vec::new(),
    }
}

fn rule(names: &[&str], action: LinuxSeccompAction, errno: Option<u32>) -> LinuxSyscall {
    let mut r = LinuxSyscall::default();
    r.set_names(names.iter().map(|n| n.to_string()).collect());
    r.set_action(action);
    r.set_errno_ret(errno);
    r
}

fn arg0(op: LinuxSeccompOperator, value: u64, value_two: Option<u64>) -> LinuxSeccompArg {
    let mut b = LinuxSeccompArgBuilder::default()
        .index(0usize)
        .op(op)
        .value(value);
    if let Some(v2) = value_two {
        b = b.value_two(v2);
    }
    // Every field has a default, so building cannot fail.
    b.build().unwrap_or_default()
}

/// The RuntimeDefault profile for a container whose capability set (bounding = effective, as
/// rcri builds it) is `caps` (names like `CAP_SYS_ADMIN`).
pub fn runtime_default(caps: &[String]) -> LinuxSeccomp {
    let has = |cap: &str| caps.iter().any(|c| c == cap);
    let mut syscalls = Vec::new();

    for (_purpose, names) in ALLOWED {
        syscalls.push(rule(names, LinuxSeccompAction::ScmpActAllow, None));
    }

    // personality: one rule per harmless value.
    for value in SAFE_PERSONALITIES {
        let mut r = rule(&["personality"], LinuxSeccompAction::ScmpActAllow, None);
        r.set_args(Some(vec![arg0(
            LinuxSeccompOperator::ScmpCmpEq,
            value,
            None,
        )]));
        syscalls.push(r);
    }

    let mut allowed: Vec<&str> = Vec::new();
    let mut denied: Vec<&str> = ALWAYS_DENIED.to_vec();
    for (needs, names) in CAPABILITY_GATED {
        if needs.iter().any(|c| has(c)) {
            allowed.extend_from_slice(names);
        } else {
            // clone3 without CAP_SYS_ADMIN is left to the default action, ENOSYS, so that
            // glibc falls back to clone, whose flags the rules below can see.
            denied.extend(names.iter().filter(|n| **n != "clone3"));
        }
    }
    if !allowed.is_empty() {
        syscalls.push(rule(&allowed, LinuxSeccompAction::ScmpActAllow, None));
    }
    syscalls.push(rule(&denied, LinuxSeccompAction::ScmpActErrno, Some(EPERM)));

    if has("CAP_SYS_ADMIN") {
        syscalls.push(rule(&["clone"], LinuxSeccompAction::ScmpActAllow, None));
    } else {
        // clone without any namespace flag: (flags & all_ns_flags) == 0.
        let ns_mask = CLONE_NAMESPACE_FLAGS.iter().fold(0, |m, f| m | f);
        let mut allow = rule(&["clone"], LinuxSeccompAction::ScmpActAllow, None);
        allow.set_args(Some(vec![arg0(
            LinuxSeccompOperator::ScmpCmpMaskedEq,
            ns_mask,
            Some(0),
        )]));
        syscalls.push(allow);
        // ... and with one, EPERM as the kernel answers without CAP_SYS_ADMIN (one rule per
        // flag; the rules are disjoint from the allow rule).
        for flag in CLONE_NAMESPACE_FLAGS {
            let mut deny = rule(&["clone"], LinuxSeccompAction::ScmpActErrno, Some(EPERM));
            deny.set_args(Some(vec![arg0(
                LinuxSeccompOperator::ScmpCmpMaskedEq,
                flag,
                Some(flag),
            )]));
            syscalls.push(deny);
        }
    }

    let mut profile = LinuxSeccomp::default();
    profile.set_default_action(LinuxSeccompAction::ScmpActErrno);
    profile.set_default_errno_ret(Some(ENOSYS));
    let arches = architectures();
    if !arches.is_empty() {
        profile.set_architectures(Some(arches));
    }
    profile.set_syscalls(Some(syscalls));
    profile
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn caps(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    /// Docker's default set, which rcri gives a container unless told otherwise.
    fn default_caps() -> Vec<String> {
        caps(&[
            "CAP_CHOWN",
            "CAP_DAC_OVERRIDE",
            "CAP_FSETID",
            "CAP_FOWNER",
            "CAP_MKNOD",
            "CAP_NET_RAW",
            "CAP_SETGID",
            "CAP_SETUID",
            "CAP_SETFCAP",
            "CAP_SETPCAP",
            "CAP_NET_BIND_SERVICE",
            "CAP_SYS_CHROOT",
            "CAP_KILL",
            "CAP_AUDIT_WRITE",
        ])
    }

    /// The unconditional action of each syscall name (rules without args).
    fn plain_actions(p: &LinuxSeccomp) -> HashMap<String, (LinuxSeccompAction, Option<u32>)> {
        let mut out = HashMap::new();
        for r in p.syscalls().as_deref().unwrap_or_default() {
            if r.args().as_ref().is_some_and(|a| !a.is_empty()) {
                continue;
            }
            for n in r.names() {
                let prev = out.insert(n.clone(), (r.action(), r.errno_ret()));
                assert!(prev.is_none(), "{n} has two unconditional rules");
            }
        }
        out
    }

    fn allowed(p: &LinuxSeccomp, name: &str) -> bool {
        plain_actions(p).get(name).map(|a| a.0) == Some(LinuxSeccompAction::ScmpActAllow)
    }

    fn eperm(p: &LinuxSeccomp, name: &str) -> bool {
        plain_actions(p).get(name) == Some(&(LinuxSeccompAction::ScmpActErrno, Some(EPERM)))
    }

    #[test]
    fn serialises_and_parses_back_as_an_oci_profile() {
        let p = runtime_default(&default_caps());
        let json = serde_json::to_value(&p).unwrap();
        assert_eq!(json["defaultAction"], "SCMP_ACT_ERRNO");
        assert_eq!(json["defaultErrnoRet"], 38);
        if std::env::consts::ARCH == "x86_64" {
            assert_eq!(
                json["architectures"],
                serde_json::json!(["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"])
            );
        }
        let back: LinuxSeccomp = serde_json::from_value(json.clone()).unwrap();
        assert_eq!(back, p);
        // And as the linux.seccomp of a whole spec.
        let spec = serde_json::json!({"ociVersion": "1.0.2", "linux": {"seccomp": json}});
        let spec: oci_spec::runtime::Spec = serde_json::from_value(spec).unwrap();
        assert!(spec.linux().as_ref().unwrap().seccomp().is_some());
    }

    #[test]
    fn ordinary_syscalls_are_allowed() {
        let p = runtime_default(&default_caps());
        for name in [
            "read",
            "write",
            "openat",
            "close",
            "execve",
            "mmap",
            "futex",
            "pipe2",
            "wait4",
            "socket",
            "epoll_wait",
            "rt_sigaction",
            "getdents64",
            "newfstatat",
            "statx",
            "arch_prctl",
            "chroot", // CAP_SYS_CHROOT is in the default set
        ] {
            assert!(allowed(&p, name), "{name} should be allowed");
        }
    }

    #[test]
    fn capability_gated_syscalls_follow_the_capability_set() {
        let without = runtime_default(&default_caps());
        for name in [
            "mount",
            "umount2",
            "pivot_root",
            "unshare",
            "setns",
            "ptrace",
            "process_vm_readv",
            "reboot",
            "init_module",
            "settimeofday",
            "clock_settime",
            "acct",
            "keyctl",
            "add_key",
            "request_key",
            "bpf",
            "perf_event_open",
            "userfaultfd",
            "kexec_load",
            "open_by_handle_at",
        ] {
            assert!(eperm(&without, name), "{name} should be EPERM");
        }
        // Nothing unlocks the obsolete ones.
        assert!(eperm(&without, "nfsservctl"));

        let mut admin = default_caps();
        admin.push("CAP_SYS_ADMIN".into());
        let with = runtime_default(&admin);
        for name in [
            "mount",
            "umount2",
            "pivot_root",
            "unshare",
            "setns",
            "clone3",
        ] {
            assert!(
                allowed(&with, name),
                "{name} should be allowed with SYS_ADMIN"
            );
        }
        assert!(eperm(&with, "ptrace"));
        assert!(eperm(&with, "nfsservctl"));

        let with = runtime_default(&caps(&["CAP_SYS_PTRACE", "CAP_SYS_TIME", "CAP_BPF"]));
        for name in ["ptrace", "process_vm_writev", "settimeofday", "bpf"] {
            assert!(allowed(&with, name), "{name}");
        }
        assert!(eperm(&with, "mount"));
        assert!(eperm(&with, "perf_event_open"));
        // Without CAP_SYS_CHROOT, chroot is refused.
        assert!(eperm(&with, "chroot"));
    }

    #[test]
    fn clone_needs_sys_admin_for_namespaces_and_clone3_falls_back() {
        let p = runtime_default(&default_caps());
        let rules: Vec<&LinuxSyscall> = p
            .syscalls()
            .as_deref()
            .unwrap()
            .iter()
            .filter(|r| r.names().iter().any(|n| n == "clone"))
            .collect();
        // No unconditional clone rule: one masked allow, one EPERM per namespace flag.
        assert!(rules
            .iter()
            .all(|r| r.args().as_ref().is_some_and(|a| a.len() == 1)));
        let allow: Vec<_> = rules
            .iter()
            .filter(|r| r.action() == LinuxSeccompAction::ScmpActAllow)
            .collect();
        assert_eq!(allow.len(), 1);
        let a = allow[0].args().as_ref().unwrap()[0];
        assert_eq!(a.op(), LinuxSeccompOperator::ScmpCmpMaskedEq);
        assert_eq!(a.index(), 0);
        assert_eq!(a.value(), 0x7e02_0000);
        assert_eq!(a.value_two(), Some(0));
        assert_eq!(rules.len(), 1 + CLONE_NAMESPACE_FLAGS.len());
        // clone3 has no rule: the default action, ENOSYS, answers it.
        assert!(!p
            .syscalls()
            .as_deref()
            .unwrap()
            .iter()
            .any(|r| r.names().iter().any(|n| n == "clone3")));

        let mut admin = default_caps();
        admin.push("CAP_SYS_ADMIN".into());
        let p = runtime_default(&admin);
        assert!(allowed(&p, "clone"));
        assert!(allowed(&p, "clone3"));
    }

    #[test]
    fn personality_only_for_safe_values() {
        let p = runtime_default(&default_caps());
        assert!(!plain_actions(&p).contains_key("personality"));
        let values: Vec<u64> = p
            .syscalls()
            .as_deref()
            .unwrap()
            .iter()
            .filter(|r| r.names() == &["personality".to_string()])
            .map(|r| {
                assert_eq!(r.action(), LinuxSeccompAction::ScmpActAllow);
                let args = r.args().as_ref().unwrap();
                assert_eq!(args.len(), 1);
                assert_eq!(args[0].op(), LinuxSeccompOperator::ScmpCmpEq);
                args[0].value()
            })
            .collect();
        assert_eq!(values, SAFE_PERSONALITIES);
    }

    #[test]
    fn every_name_has_one_unconditional_action_whatever_the_caps() {
        // plain_actions asserts there are no duplicates.
        for set in [
            Vec::new(),
            default_caps(),
            caps(&["CAP_SYS_ADMIN", "CAP_BPF", "CAP_PERFMON", "CAP_SYSLOG"]),
        ] {
            let p = runtime_default(&set);
            let actions = plain_actions(&p);
            assert!(actions.len() > 300, "{}", actions.len());
            assert!(!actions.contains_key("clone3") || set.iter().any(|c| c == "CAP_SYS_ADMIN"));
        }
    }
}
