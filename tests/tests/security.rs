//! Regression tests named after the attacks they replay.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::thread::sleep;
use std::time::Duration;

use anyhow::{Context, Result};
use e2e::*;

/// CVE-2024-21626 ("Leaky Vessels"): a runtime fd to a host directory (e.g. /sys/fs/cgroup)
/// leaked into the container init, and `process.cwd = /proc/self/fd/N` made the process start
/// in the host's filesystem, from where `..` reaches the host's `/`.
#[test]
fn cve_2024_21626_cwd_through_a_leaked_fd_never_reaches_the_host() -> Result<()> {
    let name = unique_id("rcrun-e2e-cve-2024-21626");
    let marker = HostFile::create(format!("/{name}"), "HOST-ROOT-MARKER\n")?;
    let _ = &marker;
    let up = "../".repeat(12);
    for n in 3..=9 {
        let mut bundle = Bundle::new()?;
        bundle.cwd(&format!("/proc/self/fd/{n}")).sh(&format!(
            "echo cwd=$(readlink /proc/self/cwd); cat {up}{name} 2>/dev/null; \
             cat /proc/self/cwd/{up}{name} 2>/dev/null; ls {up}"
        ));
        let rt = Runtime::new()?;
        let id = unique_id("cve");
        let out = rt.run(&bundle, &id)?;
        assert!(
            !out.stdout.contains("HOST-ROOT-MARKER") && !out.stdout.contains(&name),
            "cwd /proc/self/fd/{n} reached the host's /: {out}"
        );
    }
    Ok(())
}

/// The fds of the container process: only its stdio, nothing of the runtime's.
#[test]
fn cve_2024_21626_no_runtime_fd_leaks_into_the_container() -> Result<()> {
    let mut bundle = Bundle::new()?;
    bundle.sh("ls -l /proc/self/fd");
    let rt = Runtime::new()?;
    let out = rt.run(&bundle, &unique_id("cve"))?.ok()?;
    for line in out.stdout.lines().filter(|l| l.contains(" -> ")) {
        // `... 3 -> /proc/<ls pid>/fd`: the directory ls is reading is its own.
        let (left, target) = line.split_once(" -> ").unwrap_or_default();
        let fd: u32 = left
            .split_whitespace()
            .last()
            .and_then(|f| f.parse().ok())
            .with_context(|| format!("bad ls line {line:?}"))?;
        let own_dir = target.starts_with("/proc/") && target.ends_with("/fd");
        assert!(fd <= 2 || own_dir, "fd {fd} -> {target} leaked: {out}");
    }

    // From the host: the running init has exactly 0, 1 and 2.
    let mut bundle = Bundle::new()?;
    bundle.args(&["sleep", "60"]);
    let id = unique_id("cve");
    rt.start_detached(&bundle, &id)?;
    let pid = rt.pid(&id)?;
    let mut fds: Vec<String> = fs::read_dir(format!("/proc/{pid}/fd"))?
        .flatten()
        .map(|e| {
            let target = fs::read_link(e.path()).unwrap_or_default();
            format!(
                "{} -> {}",
                e.file_name().to_string_lossy(),
                target.display()
            )
        })
        .collect();
    fds.sort();
    let numbers: Vec<&str> = fds
        .iter()
        .map(|f| f.split(' ').next().unwrap_or_default())
        .collect();
    assert_eq!(numbers, ["0", "1", "2"], "fds of the init: {fds:#?}");
    Ok(())
}

/// Copies the shared libraries `binary` needs (per `ldd`) to the same paths under `rootfs`.
fn install_libraries(binary: &Path, rootfs: &Path) -> Result<()> {
    let out = run_command(Command::new("ldd").arg(binary), COMMAND_TIMEOUT)?;
    for line in out.stdout.lines() {
        let path = match line.split_once("=>") {
            Some((_, right)) => right.split_whitespace().next(),
            None => line.split_whitespace().next(),
        };
        let Some(path) = path.filter(|p| p.starts_with('/')) else {
            continue;
        };
        let dest = rootfs.join(path.trim_start_matches('/'));
        if let Some(parent) = dest.parent() {
            fs::create_dir_all(parent)?;
        }
        fs::copy(path, &dest).with_context(|| format!("copy {path}"))?;
    }
    Ok(())
}

/// What container A runs: it watches its pid namespace for a process whose command line
/// mentions `blockfifo` (container B's), opens that process's /proc/PID/exe, and keeps trying
/// to write to the binary behind it, through the fd and through the path, logging to /shared.
const OVERWRITE_EXE: &str = r#"
touch /shared/log
done=" "
while [ ! -e /shared/stop ]; do
  for d in /proc/[0-9]*; do
    pid=${d#/proc/}
    case "$done" in *" $pid "*) continue ;; esac
    cmd=$(tr '\0' ' ' < $d/cmdline 2>/dev/null)
    case "$cmd" in *blockfifo*) ;; *) continue ;; esac
    exe=$(readlink $d/exe 2>/dev/null) || exe=unreadable
    case "$exe" in */busybox) continue ;; esac
    done="$done$pid "
    echo "seen $pid $exe" >> /shared/log
    (
      exec 3< $d/exe || exit 0
      echo "opened $pid" >> /shared/log
      i=0
      while [ $i -lt 100 ]; do
        if (echo evil > /proc/self/fd/3) 2>/dev/null; then echo "WROTE-FD $pid" >> /shared/log; fi
        if (echo evil >> $d/exe) 2>/dev/null; then echo "WROTE-EXE $pid" >> /shared/log; fi
        i=$((i + 1))
        sleep 0.05
      done
    ) 2>/dev/null &
  done
  sleep 0.02
done
"#;

/// CVE-2019-5736: a container process that execs /proc/self/exe runs the runtime's own binary;
/// another process in its pid namespace opens it through /proc/PID/exe and, once it stops
/// running, overwrites the runtime binary on the host. Run against a copy of the binary, so a
/// failed defence damages nothing.
#[test]
fn cve_2019_5736_container_cannot_overwrite_the_runtime_binary() -> Result<()> {
    let dir = temp_dir("cve-2019-5736")?;
    let copy = dir.path().join("rcrun-copy");
    fs::copy(rcrun_bin(), &copy).context("copy the runtime binary")?;
    fs::set_permissions(&copy, fs::Permissions::from_mode(0o755))?;
    let before = sha256(&copy)?;

    // A: the attacker.
    let mut attacker = Bundle::new()?;
    let shared = attacker.share()?;
    attacker.sh(OVERWRITE_EXE);
    let rt = Runtime::new()?;
    let a = unique_id("cve-a");
    rt.start_detached(&attacker, &a)?;
    let a_pid = rt.pid(&a)?;
    wait_for("the attacker to start", WAIT_TIMEOUT, || {
        Ok(shared.join("log").exists())
    })?;

    // B: started by the copy, in A's pid namespace, execs /proc/self/exe with arguments that keep
    // it alive: the runtime blocks opening its log file (a fifo nobody reads), and `state` would
    // block reading a fifo too.
    let mut victim = Bundle::new()?;
    victim
        .readonly(false)
        .namespace("pid", Some(&format!("/proc/{a_pid}/ns/pid")))
        .args(&[
            "/proc/self/exe",
            "--log",
            "/blockfifo",
            "--root",
            "/fakeroot",
            "state",
            "x",
        ]);
    nix::unistd::mkfifo(
        &victim.rootfs().join("blockfifo"),
        nix::sys::stat::Mode::from_bits_truncate(0o666),
    )?;
    fs::create_dir_all(victim.rootfs().join("fakeroot/x"))?;
    nix::unistd::mkfifo(
        &victim.rootfs().join("fakeroot/x/state.json"),
        nix::sys::stat::Mode::from_bits_truncate(0o666),
    )?;
    // The binary must be able to run in B's busybox rootfs, or the exec fails for want of a
    // dynamic loader and proves nothing.
    install_libraries(&copy, &victim.rootfs())?;
    let rt_copy = Runtime::with_bin(&copy)?;
    let b = unique_id("cve-b");
    let log = || fs::read_to_string(shared.join("log")).unwrap_or_default();
    // Refusing to run B, or B's exec of /proc/self/exe failing, are defences too; what must
    // never happen is a write reaching the binary.
    let created = rt_copy.create(&victim, &b)?;
    if created.success() {
        rt_copy.start(&b)?;
        wait_for("B's process to be seen or to stop", WAIT_TIMEOUT, || {
            Ok(log().contains("seen") || rt_copy.status(&b).is_ok_and(|s| s == "stopped"))
        })
        .with_context(|| format!("attacker log:\n{}", log()))?;
        // Give the attacker time to open the exe, then end B's process so a write is no longer
        // refused with ETXTBSY, and let the attacker retry for a while.
        let _ = wait_for(
            "the attacker to open the exe",
            Duration::from_secs(2),
            || Ok(log().contains("opened")),
        );
        rt_copy.kill(&b, "KILL")?;
        let _ = rt_copy.wait_stopped(&b);
        sleep(Duration::from_secs(2));
    }
    fs::write(shared.join("stop"), "")?;
    eprintln!("B created: {}; attacker log:\n{}", created.success(), log());

    let after = sha256(&copy)?;
    let log = log();
    assert_eq!(
        before, after,
        "the runtime binary was overwritten; log:\n{log}"
    );
    assert!(!log.contains("WROTE"), "a write succeeded; log:\n{log}");
    Ok(())
}
