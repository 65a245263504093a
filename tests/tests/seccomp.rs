//! linux.seccomp: filtered syscalls fail the way the profile says, from inside real containers,
//! with and without noNewPrivileges; NOTIFY hands the listener its fd and the container's
//! state; bad profiles fail `create` cleanly.

use std::io::{ErrorKind, IoSliceMut};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixListener;
use std::path::Path;
use std::thread::sleep;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use e2e::*;
use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};

/// SIGSYS ends the process: `run` reports 128 + 31.
const SIGSYS_EXIT: i32 = 128 + libc::SIGSYS;

fn rule(names: &[&str], action: &str) -> Value {
    json!({"names": names, "action": action})
}

fn errno_rule(names: &[&str], errno: i32) -> Value {
    json!({"names": names, "action": "SCMP_ACT_ERRNO", "errnoRet": errno})
}

/// A profile that allows everything except what `rules` say.
fn allow_but(rules: Vec<Value>) -> Value {
    json!({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": rules})
}

fn bundle_with(profile: Value, no_new_privs: bool) -> Result<Bundle> {
    let mut bundle = Bundle::new()?;
    bundle
        .set("/linux/seccomp", profile)
        .set("/process/noNewPrivileges", json!(no_new_privs));
    Ok(bundle)
}

fn run(bundle: &Bundle) -> Result<Output> {
    let rt = Runtime::new()?;
    rt.run(bundle, &unique_id("seccomp"))
}

#[test]
fn errno_action_returns_eperm_with_and_without_no_new_privileges() -> Result<()> {
    for nnp in [true, false] {
        let mut bundle = bundle_with(allow_but(vec![errno_rule(&["mkdir", "mkdirat"], 1)]), nnp)?;
        bundle.sh("mkdir /tmp/x; echo mkdir=$?; echo alive");
        let out = run(&bundle)?.ok()?;
        assert!(out.stdout.contains("mkdir=1"), "nnp={nnp}: {out}");
        assert!(out.stdout.contains("alive"), "nnp={nnp}: {out}");
        assert!(
            out.stderr.contains("Operation not permitted"),
            "nnp={nnp}: {out}"
        );
    }
    Ok(())
}

#[test]
fn errno_ret_is_the_errno_the_syscall_returns() -> Result<()> {
    let mut bundle = bundle_with(
        allow_but(vec![errno_rule(&["mkdir", "mkdirat"], libc::EACCES)]),
        true,
    )?;
    bundle.sh("mkdir /tmp/x");
    let out = run(&bundle)?;
    assert_eq!(out.code(), 1, "{out}");
    assert!(out.stderr.contains("Permission denied"), "{out}");
    Ok(())
}

#[test]
fn masked_eq_compares_the_masked_bits() -> Result<()> {
    // personality(PER_LINUX32 = 8) is denied by (arg0 & 0xff) == 8; PER_LINUX (0) is not.
    let profile = allow_but(vec![json!({
        "names": ["personality"],
        "action": "SCMP_ACT_ERRNO",
        "args": [{"index": 0, "value": 255, "valueTwo": 8, "op": "SCMP_CMP_MASKED_EQ"}]
    })]);
    let mut bundle = bundle_with(profile, true)?;
    bundle.sh("linux32 true; echo l32=$?; linux64 true; echo l64=$?");
    let out = run(&bundle)?.ok()?;
    assert!(out.stdout.contains("l32=1"), "{out}");
    assert!(out.stdout.contains("l64=0"), "{out}");
    assert!(out.stderr.contains("Operation not permitted"), "{out}");
    Ok(())
}

#[test]
fn args_on_the_same_index_are_alternatives() -> Result<()> {
    // runc's rule: two comparisons of one argument become two rules, i.e. OR.
    let profile = allow_but(vec![json!({
        "names": ["personality"],
        "action": "SCMP_ACT_ERRNO",
        "args": [
            {"index": 0, "value": 8, "op": "SCMP_CMP_EQ"},
            {"index": 0, "value": 0, "op": "SCMP_CMP_EQ"}
        ]
    })]);
    let mut bundle = bundle_with(profile, true)?;
    bundle.sh("linux32 true; echo l32=$?; linux64 true; echo l64=$?");
    let out = run(&bundle)?.ok()?;
    assert!(out.stdout.contains("l32=1"), "{out}");
    assert!(out.stdout.contains("l64=1"), "{out}");
    Ok(())
}

#[test]
fn args_on_different_indexes_must_all_match() -> Result<()> {
    // kill(1, SIGUSR1) is denied; kill(1, SIGUSR2) and kill(other, SIGUSR1) are not.
    let profile = allow_but(vec![json!({
        "names": ["kill"],
        "action": "SCMP_ACT_ERRNO",
        "args": [
            {"index": 0, "value": 1, "op": "SCMP_CMP_EQ"},
            {"index": 1, "value": libc::SIGUSR1, "op": "SCMP_CMP_EQ"}
        ]
    })]);
    let mut bundle = bundle_with(profile, true)?;
    bundle.sh(
        "trap '' USR1 USR2; kill -USR1 1; echo r1=$?; kill -USR2 1; echo r2=$?; \
         sleep 30 & kill -USR1 $!; echo r3=$?",
    );
    let out = run(&bundle)?.ok()?;
    assert!(out.stdout.contains("r1=1"), "{out}");
    assert!(out.stdout.contains("r2=0"), "{out}");
    assert!(out.stdout.contains("r3=0"), "{out}");
    Ok(())
}

#[test]
fn kill_actions_and_trap_end_the_container_with_sigsys() -> Result<()> {
    for action in [
        "SCMP_ACT_KILL_PROCESS",
        "SCMP_ACT_KILL_THREAD",
        "SCMP_ACT_KILL",
        "SCMP_ACT_TRAP",
    ] {
        for nnp in [true, false] {
            let mut bundle =
                bundle_with(allow_but(vec![rule(&["mkdir", "mkdirat"], action)]), nnp)?;
            bundle.args(&["mkdir", "/tmp/x"]);
            let out = run(&bundle)?;
            assert_eq!(out.code(), SIGSYS_EXIT, "{action} nnp={nnp}: {out}");
        }
    }
    Ok(())
}

#[test]
fn trace_without_a_tracer_fails_with_enosys() -> Result<()> {
    let mut bundle = bundle_with(
        allow_but(vec![rule(&["mkdir", "mkdirat"], "SCMP_ACT_TRACE")]),
        true,
    )?;
    bundle.sh("mkdir /tmp/x");
    let out = run(&bundle)?;
    assert_eq!(out.code(), 1, "{out}");
    assert!(out.stderr.contains("Function not implemented"), "{out}");
    Ok(())
}

#[test]
fn log_allows_the_syscall() -> Result<()> {
    let mut bundle = bundle_with(
        allow_but(vec![rule(&["mkdir", "mkdirat"], "SCMP_ACT_LOG")]),
        true,
    )?;
    bundle.readonly(false).sh("mkdir /tmp/logged && echo made");
    let out = run(&bundle)?.ok()?;
    assert!(out.stdout.contains("made"), "{out}");
    Ok(())
}

#[test]
fn unknown_syscall_names_are_skipped() -> Result<()> {
    let mut bundle = bundle_with(
        allow_but(vec![errno_rule(
            &["no_such_syscall_in_any_kernel", "mkdir", "mkdirat"],
            libc::EACCES,
        )]),
        true,
    )?;
    bundle.sh("mkdir /tmp/x");
    let out = run(&bundle)?;
    assert!(out.stderr.contains("Permission denied"), "{out}");
    Ok(())
}

/// A profile that denies what rcrun needs to build the container (mounts, pivot_root,
/// hostname, namespaces) and, with noNewPrivileges, what it does after that up to execve
/// (uid/gid and capability changes, prctl, umask, chdir, close_range, the sync socket): the
/// filter is loaded after all of it, so the container still starts.
#[test]
fn a_profile_that_denies_what_set_up_needs_still_starts() -> Result<()> {
    let set_up = [
        "mount",
        "umount2",
        "pivot_root",
        "sethostname",
        "setdomainname",
        "unshare",
        "setns",
        "chroot",
        "keyctl",
        "mknod",
        "mknodat",
        "symlink",
        "symlinkat",
    ];
    let late = [
        "setgroups",
        "setresuid",
        "setresgid",
        "capset",
        "prctl",
        "umask",
        "chdir",
        "close_range",
        "sendto",
        "sendmsg",
    ];
    for nnp in [true, false] {
        let mut names: Vec<&str> = set_up.to_vec();
        if nnp {
            names.extend(late);
        }
        let mut bundle = bundle_with(allow_but(vec![errno_rule(&names, 1)]), nnp)?;
        // rcrun made /dev's symlinks and set the hostname; the container itself cannot.
        bundle
            .hostname("filtered")
            .sh("echo host=$(hostname); ls -l /dev/fd; ln -s x /dev/lnk; echo ln=$?");
        let out = run(&bundle)?.ok()?;
        assert!(out.stdout.contains("host=filtered"), "nnp={nnp}: {out}");
        assert!(out.stdout.contains("/proc/self/fd"), "nnp={nnp}: {out}");
        assert!(out.stdout.contains("ln=1"), "nnp={nnp}: {out}");
        assert!(
            out.stderr.contains("Operation not permitted"),
            "nnp={nnp}: {out}"
        );
    }
    Ok(())
}

/// Where the filter is loaded, seen from the host (`Seccomp:` in /proc/PID/status is 2 once a
/// filter is on): with noNewPrivileges, only after `start` (just before execve); without it,
/// already in the created container (before the capabilities are dropped).
#[test]
fn the_filter_is_loaded_as_late_as_no_new_privileges_allows() -> Result<()> {
    for nnp in [true, false] {
        let mut bundle = bundle_with(allow_but(vec![errno_rule(&["mkdir"], 1)]), nnp)?;
        bundle.args(&["sleep", "60"]);
        let rt = Runtime::new()?;
        let id = unique_id("seccomp");
        rt.create(&bundle, &id)?.ok()?;
        let pid = rt.pid(&id)?;
        let created = proc_status(pid, "Seccomp")?;
        // runc loads it before the exec fifo even with noNewPrivileges; rcrun after.
        if testing_rcrun() || !nnp {
            let want = if nnp { "0" } else { "2" };
            assert_eq!(created, want, "nnp={nnp} while created");
        }
        rt.start(&id)?.ok()?;
        wait_for("the filter", WAIT_TIMEOUT, || {
            Ok(proc_status(pid, "Seccomp")? == "2")
        })?;
    }
    Ok(())
}

/// Syscalls a shell and rcrun's last steps need; everything else gets defaultErrnoRet. The
/// shape of the profiles Docker and containerd ship (default ERRNO plus an allow list).
const ALLOWED: &[&str] = &[
    "access",
    "arch_prctl",
    "brk",
    "capget",
    "capset",
    "chdir",
    "clock_gettime",
    "clock_nanosleep",
    "clone",
    "clone3",
    "close",
    "close_range",
    "dup",
    "dup2",
    "dup3",
    "execve",
    "exit",
    "exit_group",
    "faccessat",
    "faccessat2",
    "fchdir",
    "fchown",
    "fchownat",
    "fcntl",
    "fork",
    "fstat",
    "fstatfs",
    "futex",
    "getcwd",
    "getdents64",
    "getegid",
    "geteuid",
    "getgid",
    "getgroups",
    "getpgrp",
    "getpid",
    "getppid",
    "getrandom",
    "getresgid",
    "getresuid",
    "getrlimit",
    "gettid",
    "getuid",
    "ioctl",
    "lseek",
    "lstat",
    "madvise",
    "mmap",
    "mprotect",
    "munmap",
    "nanosleep",
    "newfstatat",
    "open",
    "openat",
    "pipe",
    "pipe2",
    "poll",
    "ppoll",
    "prctl",
    "pread64",
    "prlimit64",
    "read",
    "readlink",
    "readlinkat",
    "readv",
    "recvfrom",
    "recvmsg",
    "rseq",
    "rt_sigaction",
    "rt_sigprocmask",
    "rt_sigreturn",
    "sendmsg",
    "sendto",
    "set_robust_list",
    "set_tid_address",
    "setgid",
    "setgroups",
    "setpgid",
    "setresgid",
    "setresuid",
    "setsid",
    "setuid",
    "sigaltstack",
    "stat",
    "statfs",
    "statx",
    "sysinfo",
    "umask",
    "uname",
    "vfork",
    "wait4",
    "waitid",
    "write",
    "writev",
];

#[test]
fn an_allow_list_profile_works_with_and_without_no_new_privileges() -> Result<()> {
    for nnp in [true, false] {
        let profile = json!({
            "defaultAction": "SCMP_ACT_ERRNO",
            // An errno nothing else would give mkdir here.
            "defaultErrnoRet": libc::EXDEV,
            "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
            "syscalls": [rule(ALLOWED, "SCMP_ACT_ALLOW")]
        });
        let mut bundle = bundle_with(profile, nnp)?;
        // A non-root user, so that the uid change and capability drop run under the filter.
        bundle
            .user(1000, 1000, &[])
            .sh("echo uid=$(id -u); mkdir /tmp/x; echo mkdir=$?");
        let out = run(&bundle)?.ok()?;
        assert!(out.stdout.contains("uid=1000"), "nnp={nnp}: {out}");
        assert!(out.stdout.contains("mkdir=1"), "nnp={nnp}: {out}");
        assert!(
            out.stderr.contains("Invalid cross-device link"),
            "nnp={nnp}: {out}"
        );
    }
    Ok(())
}

#[test]
fn exec_gets_the_containers_filter() -> Result<()> {
    let mut bundle = bundle_with(allow_but(vec![errno_rule(&["mkdir", "mkdirat"], 1)]), true)?;
    bundle.args(&["sleep", "60"]);
    let rt = Runtime::new()?;
    let id = unique_id("seccomp");
    rt.start_detached(&bundle, &id)?;
    let out = rt.rcrun(&["exec", &id, "mkdir", "/tmp/x"])?;
    assert!(!out.success(), "{out}");
    assert!(out.stderr.contains("Operation not permitted"), "{out}");
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// SCMP_ACT_NOTIFY
// ---------------------------------------------------------------------------------------------

/// What the test's seccomp agent saw.
struct Notified {
    state: Value,
    /// The pid the kernel reported for the notified syscall.
    caller: u32,
    nr: i32,
}

/// A minimal seccomp agent: accepts one connection on `listener`, takes the fd and the state
/// JSON, answers the first notification with ELOOP and returns.
fn agent(listener: UnixListener, timeout: Duration) -> Result<Notified> {
    let deadline = Instant::now() + timeout;
    listener.set_nonblocking(true)?;
    let stream = loop {
        match listener.accept() {
            Ok((s, _)) => break s,
            Err(e) if e.kind() == ErrorKind::WouldBlock && Instant::now() < deadline => {
                sleep(Duration::from_millis(10))
            }
            Err(e) => return Err(e).context("no connection from the runtime"),
        }
    };
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(timeout))?;
    let mut buf = vec![0u8; 64 * 1024];
    let mut iov = [IoSliceMut::new(&mut buf)];
    let mut space = nix::cmsg_space!([std::os::fd::RawFd; 1]);
    let msg = recvmsg::<()>(
        stream.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        MsgFlags::MSG_CMSG_CLOEXEC,
    )
    .context("recvmsg from the runtime")?;
    let mut fd = None;
    for c in msg.cmsgs().context("control messages")? {
        if let ControlMessageOwned::ScmRights(fds) = c {
            for raw in fds {
                // SAFETY: the kernel just installed this fd in our table; nobody else owns it.
                fd.get_or_insert(unsafe { OwnedFd::from_raw_fd(raw) });
            }
        }
    }
    let n = msg.bytes;
    let fd = fd.context("no fd came with the state")?;
    let state: Value = serde_json::from_slice(&buf[..n]).with_context(|| {
        format!(
            "state is not JSON: {:?}",
            String::from_utf8_lossy(&buf[..n])
        )
    })?;

    let mut pfd = [nix::poll::PollFd::new(
        std::os::fd::AsFd::as_fd(&fd),
        nix::poll::PollFlags::POLLIN,
    )];
    let ready = nix::poll::poll(&mut pfd, nix::poll::PollTimeout::try_from(timeout)?)?;
    if ready == 0 {
        bail!("no notification within {timeout:?}; state was {state}");
    }
    // SAFETY: plain C structs the kernel fills in or reads; the kernel wants RECV's zeroed.
    let mut req: libc::seccomp_notif = unsafe { std::mem::zeroed() };
    // SAFETY: the ioctl writes one seccomp_notif into `req`, which outlives the call.
    let r = unsafe { libc::ioctl(fd.as_raw_fd(), libc::SECCOMP_IOCTL_NOTIF_RECV, &mut req) };
    nix::errno::Errno::result(r).context("SECCOMP_IOCTL_NOTIF_RECV")?;
    let resp = libc::seccomp_notif_resp {
        id: req.id,
        val: 0,
        error: -libc::ELOOP,
        flags: 0,
    };
    // SAFETY: the ioctl reads one seccomp_notif_resp, which outlives the call.
    let r = unsafe { libc::ioctl(fd.as_raw_fd(), libc::SECCOMP_IOCTL_NOTIF_SEND, &resp) };
    nix::errno::Errno::result(r).context("SECCOMP_IOCTL_NOTIF_SEND")?;
    Ok(Notified {
        state,
        caller: req.pid,
        nr: req.data.nr,
    })
}

#[test]
fn notify_listener_receives_the_fd_and_the_state() -> Result<()> {
    for nnp in [true, false] {
        let dir = temp_dir("seccomp-agent")?;
        let sock = dir.path().join("agent.sock");
        let listener = UnixListener::bind(&sock)?;
        let agent = std::thread::spawn(move || agent(listener, Duration::from_secs(15)));

        let mut bundle = bundle_with(
            json!({
                "defaultAction": "SCMP_ACT_ALLOW",
                "listenerPath": sock,
                "listenerMetadata": "test-metadata",
                "syscalls": [rule(&["mkdir", "mkdirat"], "SCMP_ACT_NOTIFY")]
            }),
            nnp,
        )?;
        bundle.set("/annotations", json!({"org.example.key": "value"}));
        // mkdir is the init itself, so the caller the kernel reports is the container's pid.
        bundle.args(&["mkdir", "/tmp/notified"]);
        let rt = Runtime::new()?;
        let id = unique_id("seccomp");
        let out = rt.run(&bundle, &id)?;
        let seen = agent
            .join()
            .map_err(|_| anyhow::anyhow!("the agent thread panicked"))??;

        // The agent's answer reached the container.
        assert_eq!(out.code(), 1, "nnp={nnp}: {out}");
        assert!(
            out.stderr.contains("Too many levels of symbolic links"),
            "nnp={nnp}: {out}"
        );
        assert!(
            seen.nr == libc::SYS_mkdir as i32 || seen.nr == libc::SYS_mkdirat as i32,
            "nnp={nnp}: notified syscall {}",
            seen.nr
        );
        // runc's ContainerProcessState.
        let s = &seen.state;
        assert_eq!(s["fds"], json!(["seccompFd"]), "{s}");
        assert_eq!(s["metadata"], "test-metadata", "{s}");
        assert_eq!(s["pid"], json!(seen.caller), "{s}");
        assert!(s["ociVersion"].is_string(), "{s}");
        assert_eq!(s["state"]["id"], json!(id), "{s}");
        assert_eq!(s["state"]["status"], "creating", "{s}");
        assert_eq!(s["state"]["pid"], json!(seen.caller), "{s}");
        assert_eq!(
            Path::new(s["state"]["bundle"].as_str().unwrap_or_default()),
            bundle.path().canonicalize()?,
            "{s}"
        );
        assert_eq!(s["state"]["annotations"]["org.example.key"], "value", "{s}");
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Bad input: create fails with a clear one-line message and leaves nothing behind
// ---------------------------------------------------------------------------------------------

fn assert_refused(profile: Value, expect: &str) -> Result<()> {
    let bundle = bundle_with(profile, true)?;
    let rt = Runtime::new()?;
    let id = unique_id("seccomp-bad");
    let out = rt.create(&bundle, &id)?;
    assert!(!out.success(), "accepted: {out}");
    // The wording is rcrun's (the suite also runs against runc, see the harness).
    if testing_rcrun() {
        assert!(
            out.error_line().contains(expect),
            "expected {expect:?}: {out}"
        );
        assert!(out.error_line().contains("seccomp"), "not named: {out}");
    }
    let lines = out.stderr.lines().filter(|l| !l.trim().is_empty()).count();
    assert_eq!(lines, 1, "not one line of error: {out}");
    assert_nothing_left(&rt, &bundle, &id)?;
    let left: Vec<_> = std::fs::read_dir(rt.root())
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "left {left:?} under --root");
    Ok(())
}

#[test]
fn unknown_default_action_is_refused() -> Result<()> {
    assert_refused(json!({"defaultAction": "SCMP_ACT_BOGUS"}), "SCMP_ACT_BOGUS")
}

#[test]
fn unknown_rule_action_is_refused() -> Result<()> {
    assert_refused(
        allow_but(vec![rule(&["mkdir"], "SCMP_ACT_EXPLODE")]),
        "SCMP_ACT_EXPLODE",
    )
}

#[test]
fn unknown_architecture_is_refused() -> Result<()> {
    assert_refused(
        json!({"defaultAction": "SCMP_ACT_ALLOW", "architectures": ["SCMP_ARCH_VAX"]}),
        "SCMP_ARCH_VAX",
    )
}

#[test]
fn unknown_operator_is_refused() -> Result<()> {
    assert_refused(
        allow_but(vec![json!({
            "names": ["personality"],
            "action": "SCMP_ACT_ERRNO",
            "args": [{"index": 0, "value": 8, "op": "SCMP_CMP_ROUGHLY"}]
        })]),
        "SCMP_CMP_ROUGHLY",
    )
}

#[test]
fn unknown_flag_is_refused() -> Result<()> {
    assert_refused(
        json!({"defaultAction": "SCMP_ACT_ALLOW", "flags": ["SECCOMP_FILTER_FLAG_TURBO"]}),
        "SECCOMP_FILTER_FLAG_TURBO",
    )
}

#[test]
fn argument_index_out_of_range_is_refused() -> Result<()> {
    assert_refused(
        allow_but(vec![json!({
            "names": ["personality"],
            "action": "SCMP_ACT_ERRNO",
            "args": [{"index": 6, "value": 8, "op": "SCMP_CMP_EQ"}]
        })]),
        "argument index 6",
    )
}

#[test]
fn errno_ret_out_of_range_is_refused() -> Result<()> {
    assert_refused(allow_but(vec![errno_rule(&["mkdir"], 70000)]), "70000")
}

#[test]
fn notify_without_listener_path_is_refused() -> Result<()> {
    assert_refused(
        allow_but(vec![rule(&["mkdir"], "SCMP_ACT_NOTIFY")]),
        "listenerPath",
    )
}

#[test]
fn notify_as_default_action_is_refused() -> Result<()> {
    assert_refused(
        json!({"defaultAction": "SCMP_ACT_NOTIFY", "listenerPath": "/nonexistent.sock"}),
        "default action",
    )
}

/// The listener is only contacted after the init loaded its filter: a missing one must still
/// leave no process, state dir or cgroup behind.
#[test]
fn notify_with_no_listener_at_the_path_leaves_nothing() -> Result<()> {
    let dir = temp_dir("seccomp-agent")?;
    let sock = dir.path().join("nobody-listens.sock");
    for nnp in [true, false] {
        let mut bundle = bundle_with(
            json!({
                "defaultAction": "SCMP_ACT_ALLOW",
                "listenerPath": sock,
                "syscalls": [rule(&["mkdir"], "SCMP_ACT_NOTIFY")]
            }),
            nnp,
        )?;
        bundle.args(&["sleep", "60"]);
        let rt = Runtime::new()?;
        let id = unique_id("seccomp-bad");
        let out = rt.create(&bundle, &id)?;
        assert!(!out.success(), "accepted: {out}");
        if testing_rcrun() {
            assert!(
                out.error_line().contains("seccomp listener"),
                "nnp={nnp}: {out}"
            );
        }
        assert_nothing_left(&rt, &bundle, &id)?;
    }
    Ok(())
}
