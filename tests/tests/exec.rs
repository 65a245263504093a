//! `exec`: a new process inside a running container sees the container's namespaces, cgroup,
//! hostname and root, gets the container's or the given identity, and reports its exit status.

use std::fs;

use anyhow::Result;
use e2e::*;

fn running(rt: &Runtime, hostname: &str) -> Result<(String, Bundle)> {
    let mut bundle = Bundle::new()?;
    bundle.hostname(hostname).args(&["sleep", "60"]);
    let id = unique_id("exec");
    rt.start_detached(&bundle, &id)?;
    Ok((id, bundle))
}

#[test]
fn exec_sees_the_containers_namespaces_cgroup_and_root() -> Result<()> {
    let rt = Runtime::new()?;
    let (id, _bundle) = running(&rt, "execbox")?;
    let init = rt.pid(&id)?;
    let out = rt
        .rcrun(&[
            "exec",
            &id,
            "sh",
            "-c",
            "hostname; echo pid $$; for n in pid net mnt; do readlink /proc/self/ns/$n; done; ls /; exit 7",
        ])?;
    assert_eq!(out.code(), 7, "{out}");
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines[0], "execbox", "{out}");
    assert_ne!(
        lines[1],
        format!("pid {init}"),
        "the exec'd process is in the host pid namespace"
    );
    for (i, ns) in ["pid", "net", "mnt"].iter().enumerate() {
        let want = fs::read_link(format!("/proc/{init}/ns/{ns}"))?;
        assert_eq!(
            lines[2 + i],
            want.to_string_lossy(),
            "{ns} namespace differs: {out}"
        );
    }
    assert!(
        out.stdout.contains("\nproc\n"),
        "not the container's root: {out}"
    );
    Ok(())
}

#[test]
fn exec_joins_the_containers_cgroup_and_detach_writes_the_pid_file() -> Result<()> {
    let rt = Runtime::new()?;
    let (id, bundle) = running(&rt, "execbox")?;
    let init = rt.pid(&id)?;
    let pid_file = bundle.path().join("exec.pid");
    rt.rcrun(&[
        "exec",
        "--detach",
        "--pid-file",
        pid_file.to_str().unwrap_or_default(),
        &id,
        "sleep",
        "30",
    ])?
    .ok()?;
    let pid: i32 = fs::read_to_string(&pid_file)?.trim().parse()?;
    assert_eq!(
        fs::read_to_string(format!("/proc/{pid}/cgroup"))?,
        fs::read_to_string(format!("/proc/{init}/cgroup"))?
    );
    Ok(())
}

#[test]
fn exec_flags_set_user_env_cwd_and_terminal() -> Result<()> {
    let rt = Runtime::new()?;
    let (id, _bundle) = running(&rt, "execbox")?;
    let out = rt
        .rcrun(&[
            "exec",
            "--user",
            "1000:1000",
            "--additional-gids",
            "44",
            "--env",
            "FOO=bar",
            "--cwd",
            "/tmp",
            &id,
            "sh",
            "-c",
            "id -u; id -g; id -G; echo $FOO; pwd",
        ])?
        .ok()?;
    assert_eq!(
        out.stdout.lines().collect::<Vec<_>>(),
        ["1000", "1000", "1000 44", "bar", "/tmp"],
        "{out}"
    );
    // --tty without a console socket in the foreground: rcrun relays the pty itself.
    let out = rt.rcrun(&["exec", "--tty", &id, "tty"])?.ok()?;
    assert!(out.stdout.contains("/dev/pts/"), "{out}");
    Ok(())
}

#[test]
fn exec_with_a_process_json() -> Result<()> {
    let rt = Runtime::new()?;
    let (id, bundle) = running(&rt, "execbox")?;
    let process = bundle.path().join("process.json");
    fs::write(
        &process,
        json!({
            "args": ["sh", "-c", "echo from-json $A; grep CapEff /proc/self/status"],
            "env": ["PATH=/bin:/usr/bin", "A=1"],
            "cwd": "/",
            "user": {"uid": 0, "gid": 0},
            "capabilities": {"bounding": ["CAP_KILL"], "effective": ["CAP_KILL"], "permitted": ["CAP_KILL"]},
        })
        .to_string(),
    )?;
    let out = rt
        .rcrun(&[
            "exec",
            "--process",
            process.to_str().unwrap_or_default(),
            &id,
        ])?
        .ok()?;
    assert!(out.stdout.contains("from-json 1"), "{out}");
    assert!(out.stdout.contains("CapEff:\t0000000000000020"), "{out}");
    Ok(())
}

#[test]
fn exec_failures_are_clear_and_leave_the_container_alone() -> Result<()> {
    let rt = Runtime::new()?;
    let (id, bundle) = running(&rt, "execbox")?;
    let init = rt.pid(&id)?;
    let out = rt.rcrun(&["exec", &id, "/no/such/binary"])?;
    assert!(!out.success(), "{out}");
    if testing_rcrun() {
        assert!(out.error_line().contains("/no/such/binary"), "{out}");
    }
    let out = rt.rcrun(&["exec", "--user", "nobody-by-name", &id, "true"])?;
    assert!(!out.success(), "{out}");
    let bad = bundle.path().join("bad.json");
    fs::write(&bad, "{\"args\": 5}")?;
    let out = rt.rcrun(&["exec", "--process", bad.to_str().unwrap_or_default(), &id])?;
    assert!(!out.success(), "{out}");
    assert_eq!(rt.status(&id)?, "running");
    assert_eq!(rt.pid(&id)?, init);
    // No exec'd process is left in the container: only its init.
    let procs = fs::read_to_string(cgroup_procs_file(init)?)?;
    assert_eq!(
        procs.split_whitespace().count(),
        1,
        "leftover processes: {procs}"
    );
    rt.kill(&id, "KILL")?.ok()?;
    rt.wait_stopped(&id)?;
    let out = rt.rcrun(&["exec", &id, "true"])?;
    assert!(
        !out.success(),
        "exec into a stopped container must fail: {out}"
    );
    Ok(())
}

/// cgroup.procs of the container's cgroup in the pids hierarchy (v1) or the unified one.
fn cgroup_procs_file(pid: i32) -> Result<std::path::PathBuf> {
    let text = fs::read_to_string(format!("/proc/{pid}/cgroup"))?;
    for line in text.lines() {
        let mut parts = line.splitn(3, ':');
        let (_, ctrl, path) = (parts.next(), parts.next(), parts.next());
        if ctrl == Some("pids") {
            return Ok(format!("/sys/fs/cgroup/pids{}/cgroup.procs", path.unwrap_or("/")).into());
        }
        if ctrl == Some("") && fs::metadata("/sys/fs/cgroup/cgroup.controllers").is_ok() {
            return Ok(format!("/sys/fs/cgroup{}/cgroup.procs", path.unwrap_or("/")).into());
        }
    }
    anyhow::bail!("no pids cgroup for {pid}: {text}")
}

#[test]
fn exec_into_a_paused_container_needs_ignore_paused() -> Result<()> {
    if !testing_rcrun() {
        return Ok(());
    }
    let rt = Runtime::new()?;
    let (id, _bundle) = running(&rt, "execbox")?;
    rt.rcrun(&["pause", &id])?.ok()?;
    let out = rt.rcrun(&["exec", &id, "true"])?;
    assert!(!out.success(), "{out}");
    assert!(out.error_line().contains("paused"), "{out}");
    // With --ignore-paused the process is created; it runs once the container is resumed.
    rt.rcrun(&["exec", "--detach", "--ignore-paused", &id, "true"])?
        .ok()?;
    rt.rcrun(&["resume", &id])?.ok()?;
    assert_eq!(rt.status(&id)?, "running");
    Ok(())
}
