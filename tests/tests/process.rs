//! The container process: capabilities, no_new_privs, user and groups, umask, rlimits, cwd, env,
//! terminal, preserved fds, oom_score_adj, exit codes and signals.

use std::fs;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;

use anyhow::Result;
use e2e::*;

fn run_sh(bundle: &mut Bundle, script: &str) -> Result<Output> {
    bundle.sh(script);
    let rt = Runtime::new()?;
    rt.run(bundle, &unique_id("process"))
}

/// The value of a /proc/self/status field in output that printed the file.
fn status_field<'a>(out: &'a Output, field: &str) -> Option<&'a str> {
    out.stdout
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .map(str::trim)
}

#[test]
fn capabilities_are_exactly_the_configured_sets() -> Result<()> {
    let mut bundle = Bundle::new()?;
    bundle.capabilities(&["CAP_CHOWN", "CAP_KILL"]);
    let out = run_sh(&mut bundle, "cat /proc/self/status")?.ok()?;
    // CAP_CHOWN = bit 0, CAP_KILL = bit 5.
    for field in ["CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"] {
        assert_eq!(
            status_field(&out, field),
            Some("0000000000000021"),
            "{field}: {out}"
        );
    }
    Ok(())
}

#[test]
fn capabilities_of_a_non_root_user_come_from_the_ambient_set() -> Result<()> {
    let mut bundle = Bundle::new()?;
    bundle.user(1000, 1000, &[]);
    bundle.set(
        "/process/capabilities",
        json!({
            "bounding": ["CAP_CHOWN", "CAP_KILL", "CAP_NET_RAW"],
            "effective": ["CAP_KILL"],
            "permitted": ["CAP_KILL"],
            "inheritable": ["CAP_KILL"],
            "ambient": ["CAP_KILL"],
        }),
    );
    let out = run_sh(&mut bundle, "cat /proc/self/status")?.ok()?;
    // CAP_NET_RAW = bit 13.
    for (field, want) in [
        ("CapBnd", "0000000000002021"),
        ("CapInh", "0000000000000020"),
        ("CapPrm", "0000000000000020"),
        ("CapEff", "0000000000000020"),
        ("CapAmb", "0000000000000020"),
    ] {
        assert_eq!(status_field(&out, field), Some(want), "{field}: {out}");
    }
    Ok(())
}

#[test]
fn no_new_privileges_follows_the_config() -> Result<()> {
    for (nnp, want) in [(true, "1"), (false, "0")] {
        let mut bundle = Bundle::new()?;
        bundle.set("/process/noNewPrivileges", json!(nnp));
        let out = run_sh(&mut bundle, "cat /proc/self/status")?.ok()?;
        assert_eq!(
            status_field(&out, "NoNewPrivs"),
            Some(want),
            "noNewPrivileges {nnp}: {out}"
        );
    }
    Ok(())
}

#[test]
fn user_group_and_additional_groups() -> Result<()> {
    let mut bundle = Bundle::new()?;
    bundle.user(1000, 1000, &[10, 20]);
    let out = run_sh(&mut bundle, "id -u; id -g; cat /proc/self/status; id")?.ok()?;
    let mut lines = out.stdout.lines();
    assert_eq!(lines.next(), Some("1000"), "{out}");
    assert_eq!(lines.next(), Some("1000"), "{out}");
    assert_eq!(status_field(&out, "Uid"), Some("1000\t1000\t1000\t1000"));
    assert_eq!(status_field(&out, "Gid"), Some("1000\t1000\t1000\t1000"));
    let groups: Vec<&str> = status_field(&out, "Groups")
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    assert_eq!(groups, ["10", "20"], "{out}");
    assert!(out.stdout.contains("uid=1000(user)"), "{out}");
    Ok(())
}

#[test]
fn no_additional_groups_means_none_not_the_runtimes() -> Result<()> {
    let mut bundle = Bundle::new()?;
    bundle.user(1000, 1000, &[]);
    let out = run_sh(&mut bundle, "cat /proc/self/status")?.ok()?;
    assert_eq!(status_field(&out, "Groups"), Some(""), "{out}");
    Ok(())
}

#[test]
fn umask_from_the_config() -> Result<()> {
    let mut bundle = Bundle::new()?;
    bundle.set("/process/user/umask", json!(0o077));
    let out = run_sh(&mut bundle, "umask")?.ok()?;
    assert_eq!(out.stdout.trim(), "0077", "{out}");
    Ok(())
}

#[test]
fn rlimits_from_the_config() -> Result<()> {
    // Lower than the host's: without CAP_SYS_RESOURCE here, a hard limit cannot be raised.
    let mut bundle = Bundle::new()?;
    bundle
        .rlimit("RLIMIT_NOFILE", 100, 200)
        .rlimit("RLIMIT_CORE", 0, 0);
    let out = run_sh(&mut bundle, "ulimit -n; ulimit -Hn; ulimit -c")?.ok()?;
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines, ["100", "200", "0"], "{out}");
    Ok(())
}

#[test]
fn cwd_from_the_config() -> Result<()> {
    let mut bundle = Bundle::new()?;
    bundle.cwd("/home/user");
    let out = run_sh(&mut bundle, "pwd")?.ok()?;
    assert_eq!(out.stdout.trim(), "/home/user", "{out}");
    Ok(())
}

#[test]
fn env_is_exactly_the_configs() -> Result<()> {
    let mut bundle = Bundle::new()?;
    bundle.env("E2E_FOO", "bar baz").env("E2E_EMPTY", "");
    bundle.sh("env");
    bundle.write()?;
    let rt = Runtime::new()?;
    let id = unique_id("process");
    rt.track(&id);
    let mut cmd = rt.command(&["run", "--bundle"]);
    cmd.arg(bundle.path())
        .arg(&id)
        .env("E2E_HOST_ONLY", "leaked");
    let out = rt.output(&mut cmd)?.ok()?;
    let env: Vec<&str> = out.stdout.lines().collect();
    assert!(env.contains(&"E2E_FOO=bar baz"), "{out}");
    assert!(env.contains(&"E2E_EMPTY="), "{out}");
    assert!(env.contains(&"TERM=xterm"), "{out}");
    assert!(env.iter().any(|e| e.starts_with("PATH=")), "{out}");
    assert!(
        !out.stdout.contains("E2E_HOST_ONLY"),
        "the runtime's env leaked: {out}"
    );
    Ok(())
}

#[test]
fn args_are_passed_verbatim() -> Result<()> {
    let mut bundle = Bundle::new()?;
    bundle.args(&[
        "sh",
        "-c",
        "for a in \"$@\"; do echo \"<$a>\"; done",
        "sh",
        "a b",
        "",
        "*",
    ]);
    let rt = Runtime::new()?;
    let out = rt.run(&bundle, &unique_id("process"))?.ok()?;
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines, ["<a b>", "<>", "<*>"], "{out}");
    Ok(())
}

#[test]
fn terminal_through_the_console_socket() -> Result<()> {
    let mut bundle = Bundle::new()?;
    bundle
        .terminal(true)
        .sh("tty; [ -t 0 ] && [ -t 1 ] && echo stdio-is-a-tty; echo done; sleep 1");
    let console = ConsoleSocket::new()?;
    let rt = Runtime::new()?;
    let id = unique_id("tty");
    let out = rt.create_with(&bundle, &id, &["--console-socket", &console.path_str()])?;
    assert!(out.success(), "{out}");
    let master = console.receive(WAIT_TIMEOUT)?;
    rt.start(&id)?.ok()?;
    let text = read_pty(&master, WAIT_TIMEOUT, |t| t.contains("done"))?;
    assert!(text.contains("/dev/pts/0"), "tty said: {text:?}");
    assert!(text.contains("stdio-is-a-tty"), "{text:?}");
    rt.wait_stopped(&id)?;
    Ok(())
}

#[test]
fn terminal_input_reaches_the_container() -> Result<()> {
    let mut bundle = Bundle::new()?;
    bundle.terminal(true).sh("read line; echo \"got:$line\"");
    let console = ConsoleSocket::new()?;
    let rt = Runtime::new()?;
    let id = unique_id("tty");
    rt.create_with(&bundle, &id, &["--console-socket", &console.path_str()])?
        .ok()?;
    let master = console.receive(WAIT_TIMEOUT)?;
    rt.start(&id)?.ok()?;
    nix::unistd::write(&master, b"hello\n")?;
    let text = read_pty(&master, WAIT_TIMEOUT, |t| t.contains("got:hello"))?;
    assert!(text.contains("got:hello"), "{text:?}");
    rt.wait_stopped(&id)?;
    Ok(())
}

#[test]
fn preserve_fds_passes_extra_fds() -> Result<()> {
    let dir = temp_dir("fds")?;
    fs::write(dir.path().join("three"), "content of fd 3\n")?;
    fs::write(dir.path().join("four"), "content of fd 4\n")?;
    let three = fs::File::open(dir.path().join("three"))?;
    let four = fs::File::open(dir.path().join("four"))?;

    for preserve in [true, false] {
        let mut bundle = Bundle::new()?;
        bundle.sh("cat <&3; cat <&4; ls /proc/self/fd | tr '\\n' ' '");
        bundle.write()?;
        let rt = Runtime::new()?;
        let id = unique_id("fds");
        rt.track(&id);
        let mut cmd = rt.command(&["run", "--bundle"]);
        cmd.arg(bundle.path());
        if preserve {
            cmd.args(["--preserve-fds", "2"]);
        }
        cmd.arg(&id);
        let (fd3, fd4) = (three.as_raw_fd(), four.as_raw_fd());
        // SAFETY: only async-signal-safe calls (fcntl, dup2) between fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                // Move both out of the way first: either may already be 3 or 4.
                let a = libc::fcntl(fd3, libc::F_DUPFD, 100);
                let b = libc::fcntl(fd4, libc::F_DUPFD, 100);
                if a < 0 || b < 0 || libc::dup2(a, 3) < 0 || libc::dup2(b, 4) < 0 {
                    return Err(io::Error::last_os_error());
                }
                libc::close(a);
                libc::close(b);
                Ok(())
            });
        }
        let out = rt.output(&mut cmd)?;
        if preserve {
            assert!(out.success(), "{out}");
            assert!(out.stdout.contains("content of fd 3"), "{out}");
            assert!(out.stdout.contains("content of fd 4"), "{out}");
        } else {
            assert!(
                !out.stdout.contains("content of fd"),
                "fds passed without --preserve-fds: {out}"
            );
        }
    }
    Ok(())
}

#[test]
fn oom_score_adj_from_the_config() -> Result<()> {
    // Raising works without privileges; lowering below the runtime's own value would not here.
    let mut bundle = Bundle::new()?;
    bundle.set("/process/oomScoreAdj", json!(500));
    let out = run_sh(&mut bundle, "cat /proc/self/oom_score_adj")?.ok()?;
    assert_eq!(out.stdout.trim(), "500", "{out}");
    Ok(())
}

#[test]
fn run_exit_codes_pass_through() -> Result<()> {
    for code in [0, 1, 42, 255] {
        let mut bundle = Bundle::new()?;
        let out = run_sh(&mut bundle, &format!("exit {code}"))?;
        assert_eq!(out.code(), code, "{out}");
    }
    Ok(())
}

#[test]
fn run_of_a_process_killed_by_a_signal_exits_128_plus_n() -> Result<()> {
    // Without a pid namespace the shell can signal itself (a pid-namespace init could not).
    for (signal, n) in [("TERM", 15), ("KILL", 9), ("USR1", 10)] {
        let mut bundle = Bundle::new()?;
        bundle.remove_namespace("pid");
        let out = run_sh(&mut bundle, &format!("kill -{signal} $$; sleep 5"))?;
        assert_eq!(out.code(), 128 + n, "SIG{signal}: {out}");
    }
    Ok(())
}

#[test]
fn kill_delivers_the_signal_to_the_process() -> Result<()> {
    let mut bundle = Bundle::new()?;
    let shared = bundle.share()?;
    bundle.sh(
        "trap 'echo got-usr1 > /shared/usr1; exit 5' USR1; touch /shared/ready; \
         while true; do sleep 0.1; done",
    );
    let rt = Runtime::new()?;
    let id = unique_id("process");
    rt.start_detached(&bundle, &id)?;
    wait_for("the trap", WAIT_TIMEOUT, || {
        Ok(shared.join("ready").exists())
    })?;
    rt.kill(&id, "SIGUSR1")?.ok()?;
    rt.wait_stopped(&id)?;
    assert_eq!(fs::read_to_string(shared.join("usr1"))?, "got-usr1\n");
    Ok(())
}

/// The container of a foreground `run` reads the caller's stdin (what containerd's shim and
/// `rcri monitor` hand it): rcrun must neither close nor replace fd 0 on its way (a regression:
/// an fsconfig result of 0 wrapped as an fd closed it).
#[test]
fn run_passes_the_callers_stdin_to_the_container() -> Result<()> {
    let mut bundle = Bundle::new()?;
    bundle.args(&["/bin/cat"]);
    bundle.write()?;
    let rt = Runtime::new()?;
    let id = unique_id("stdin");
    let mut input = tempfile::tempfile()?;
    io::Write::write_all(&mut input, b"through stdin\n")?;
    io::Seek::seek(&mut input, io::SeekFrom::Start(0))?;
    let mut cmd = rt.command(&["run", "--bundle"]);
    cmd.arg(bundle.path()).arg(&id);
    cmd.stdin(input);
    let out = cmd.output()?;
    let _ = rt.delete_force(&id);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "through stdin\n");
    Ok(())
}
