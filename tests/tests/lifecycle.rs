//! The container lifecycle through the runc CLI: create, start, state, kill, delete, run, list,
//! --pid-file, spec.

use std::fs;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};
use e2e::*;

/// A loop that ends on SIGTERM with status 42 (a pid-namespace init ignores signals it has no
/// handler for, so plain `sleep` would not die of SIGTERM).
/// Sets the trap first, then says so: a SIGTERM before the trap would be ignored by pid 1.
const WAIT_FOR_TERM: &str =
    "trap 'exit 42' TERM; echo ready > /shared/ready; while true; do sleep 0.1; done";

#[test]
fn create_does_not_run_the_process_until_start() -> Result<()> {
    let mut bundle = Bundle::new()?;
    let shared = bundle.share()?;
    bundle.sh("touch /shared/ran; exec sleep 60");
    let rt = Runtime::new()?;
    let id = unique_id("lifecycle");

    rt.create(&bundle, &id)?.ok()?;
    let state = rt.state(&id)?;
    assert_eq!(state["status"], "created", "state after create: {state}");
    assert_eq!(state["id"], id.as_str(), "{state}");
    assert!(state["ociVersion"].is_string(), "no ociVersion: {state}");
    assert_eq!(
        Path::new(state["bundle"].as_str().unwrap_or_default()),
        bundle.path(),
        "bundle in state: {state}"
    );
    let pid = rt.pid(&id)?;
    assert!(pid_alive(pid), "init {pid} not alive after create: {state}");
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        !shared.join("ran").exists(),
        "the container process ran before start"
    );
    assert!(rt.root().join(&id).exists(), "no state dir after create");

    rt.start(&id)?.ok()?;
    wait_for("the process to run", WAIT_TIMEOUT, || {
        Ok(shared.join("ran").exists())
    })?;
    assert_eq!(rt.status(&id)?, "running");
    assert_eq!(rt.pid(&id)?, pid, "the init pid changed at start");

    rt.kill(&id, "KILL")?.ok()?;
    rt.wait_stopped(&id)?;
    rt.delete(&id)?.ok()?;
    assert!(!rt.root().join(&id).exists(), "state dir left after delete");
    let out = rt.rcrun(&["state", &id])?;
    assert!(!out.success(), "state of a deleted container: {out}");
    wait_for("the init to be reaped", WAIT_TIMEOUT, || {
        Ok(!pid_alive(pid))
    })?;
    Ok(())
}

#[test]
fn process_exit_makes_the_container_stopped() -> Result<()> {
    let mut bundle = Bundle::new()?;
    bundle.sh("exit 0");
    let rt = Runtime::new()?;
    let id = unique_id("lifecycle");
    rt.start_detached(&bundle, &id)?;
    let state = rt.wait_stopped(&id)?;
    assert_eq!(state["status"], "stopped", "{state}");
    rt.delete(&id)?.ok()?;
    assert!(!rt.root().join(&id).exists(), "state dir left after delete");
    Ok(())
}

#[test]
fn start_twice_fails() -> Result<()> {
    let mut bundle = Bundle::new()?;
    bundle.args(&["sleep", "60"]);
    let rt = Runtime::new()?;
    let id = unique_id("lifecycle");
    rt.start_detached(&bundle, &id)?;
    let out = rt.start(&id)?;
    assert!(!out.success(), "second start succeeded: {out}");
    assert!(!out.error_line().is_empty(), "no error message: {out}");
    assert_eq!(rt.status(&id)?, "running");

    rt.kill(&id, "KILL")?.ok()?;
    rt.wait_stopped(&id)?;
    let out = rt.start(&id)?;
    assert!(
        !out.success(),
        "start of a stopped container succeeded: {out}"
    );
    Ok(())
}

#[test]
fn delete_of_a_running_container_needs_force() -> Result<()> {
    let mut bundle = Bundle::new()?;
    bundle.args(&["sleep", "60"]);
    let rt = Runtime::new()?;
    let id = unique_id("lifecycle");
    rt.start_detached(&bundle, &id)?;
    let pid = rt.pid(&id)?;

    let out = rt.delete(&id)?;
    assert!(
        !out.success(),
        "delete of a running container succeeded: {out}"
    );
    assert!(!out.error_line().is_empty(), "no error message: {out}");
    assert_eq!(rt.status(&id)?, "running");
    assert!(pid_alive(pid));

    rt.delete_force(&id)?.ok()?;
    assert!(!rt.root().join(&id).exists(), "state dir left after delete");
    wait_for("the init to die", WAIT_TIMEOUT, || Ok(!pid_alive(pid)))?;
    Ok(())
}

#[test]
fn delete_force_of_a_created_container() -> Result<()> {
    let mut bundle = Bundle::new()?;
    bundle.args(&["sleep", "60"]);
    let rt = Runtime::new()?;
    let id = unique_id("lifecycle");
    rt.create(&bundle, &id)?.ok()?;
    let pid = rt.pid(&id)?;
    rt.delete_force(&id)?.ok()?;
    assert!(!rt.root().join(&id).exists(), "state dir left after delete");
    wait_for("the init to die", WAIT_TIMEOUT, || Ok(!pid_alive(pid)))?;
    Ok(())
}

#[test]
fn create_with_an_existing_id_fails() -> Result<()> {
    let mut bundle = Bundle::new()?;
    bundle.args(&["sleep", "60"]);
    let rt = Runtime::new()?;
    let id = unique_id("lifecycle");
    rt.create(&bundle, &id)?.ok()?;
    let pid = rt.pid(&id)?;

    let other = Bundle::new()?;
    let out = rt.create(&other, &id)?;
    assert!(
        !out.success(),
        "second create with the same id succeeded: {out}"
    );
    assert!(!out.error_line().is_empty(), "no error message: {out}");
    let state = rt.state(&id)?;
    assert_eq!(state["status"], "created", "{state}");
    assert_eq!(rt.pid(&id)?, pid, "the first container was replaced");
    Ok(())
}

#[test]
fn run_exits_with_the_container_status() -> Result<()> {
    let mut bundle = Bundle::new()?;
    bundle.sh("echo hello from the container; exit 7");
    let rt = Runtime::new()?;
    let id = unique_id("lifecycle");
    let out = rt.run(&bundle, &id)?;
    assert_eq!(out.code(), 7, "{out}");
    assert!(out.stdout.contains("hello from the container"), "{out}");
    Ok(())
}

#[test]
fn run_of_a_container_killed_by_sigkill_exits_137() -> Result<()> {
    let mut bundle = Bundle::new()?;
    bundle.args(&["sleep", "60"]);
    bundle.write()?;
    let rt = Runtime::new()?;
    let id = unique_id("lifecycle");
    rt.track(&id);
    let mut cmd = rt.command(&["run", "--bundle"]);
    cmd.arg(bundle.path()).arg(&id);
    let runner = std::thread::spawn(move || run_command(&mut cmd, COMMAND_TIMEOUT));
    let started = rt.wait_status(&id, "running", WAIT_TIMEOUT);
    let killed = started.and_then(|_| rt.kill(&id, "KILL")?.ok());
    let out = runner.join().expect("run thread panicked")?;
    killed?;
    assert_eq!(out.code(), 128 + 9, "{out}");
    Ok(())
}

#[test]
fn run_detach_returns_while_the_container_runs() -> Result<()> {
    let mut bundle = Bundle::new()?;
    bundle.args(&["sleep", "60"]);
    let rt = Runtime::new()?;
    let id = unique_id("lifecycle");
    let pid_file = rt.root().join("detached.pid");
    let out = rt.run_with(
        &bundle,
        &id,
        &["--detach", "--pid-file", &pid_file.to_string_lossy()],
    )?;
    assert!(out.success(), "{out}");
    assert_eq!(rt.status(&id)?, "running");
    let pid: i32 = fs::read_to_string(&pid_file)?.trim().parse()?;
    assert_eq!(pid, rt.pid(&id)?, "pid file vs state");
    Ok(())
}

#[test]
fn kill_accepts_signal_names_with_and_without_sig_and_numbers() -> Result<()> {
    for signal in ["KILL", "SIGKILL", "9"] {
        let mut bundle = Bundle::new()?;
        bundle.args(&["sleep", "60"]);
        let rt = Runtime::new()?;
        let id = unique_id("kill");
        rt.start_detached(&bundle, &id)?;
        let out = rt.kill(&id, signal)?;
        assert!(out.success(), "kill {signal}: {out}");
        rt.wait_stopped(&id)
            .with_context(|| format!("after kill {signal}"))?;
    }
    Ok(())
}

#[test]
fn kill_sends_sigterm_by_default() -> Result<()> {
    for signal in [None, Some("TERM"), Some("SIGTERM"), Some("15")] {
        let mut bundle = Bundle::new()?;
        let shared = bundle.share()?;
        bundle.sh(WAIT_FOR_TERM);
        let rt = Runtime::new()?;
        let id = unique_id("kill");
        rt.start_detached(&bundle, &id)?;
        wait_for("the trap to be set", WAIT_TIMEOUT, || {
            Ok(shared.join("ready").exists())
        })?;
        let out = match signal {
            Some(signal) => rt.kill(&id, signal)?,
            None => rt.rcrun(&["kill", &id])?,
        };
        assert!(out.success(), "kill {signal:?}: {out}");
        rt.wait_stopped(&id)
            .with_context(|| format!("after kill {signal:?}"))?;
    }
    Ok(())
}

#[test]
fn kill_all_kills_every_process_of_the_container() -> Result<()> {
    let mut bundle = Bundle::new()?;
    let shared = bundle.share()?;
    // Without a pid namespace, killing the init does not take its children with it.
    bundle.remove_namespace("pid");
    bundle.sh("sleep 60 & echo $! > /shared/child; wait");
    let rt = Runtime::new()?;
    let id = unique_id("kill");
    rt.start_detached(&bundle, &id)?;
    wait_for("the child pid", WAIT_TIMEOUT, || {
        Ok(fs::read_to_string(shared.join("child")).is_ok_and(|s| s.ends_with('\n')))
    })?;
    let child: i32 = fs::read_to_string(shared.join("child"))?.trim().parse()?;
    assert!(pid_alive(child));
    let out = rt.rcrun(&["kill", "--all", &id, "KILL"])?;
    assert!(out.success(), "{out}");
    rt.wait_stopped(&id)?;
    wait_for("the child to die", WAIT_TIMEOUT, || Ok(!pid_alive(child)))?;
    Ok(())
}

#[test]
fn kill_of_a_stopped_container_fails() -> Result<()> {
    let mut bundle = Bundle::new()?;
    bundle.sh("exit 0");
    let rt = Runtime::new()?;
    let id = unique_id("kill");
    rt.start_detached(&bundle, &id)?;
    rt.wait_stopped(&id)?;
    let out = rt.kill(&id, "KILL")?;
    assert!(!out.success(), "kill of a stopped container: {out}");
    // runc's wording, which containerd's shim matches to treat the container as gone.
    assert!(out.stderr.contains("container not running"), "{out}");
    Ok(())
}

/// `kill --all` of a stopped container succeeds and reaches what its init left in the cgroup,
/// as with runc: containerd's shim runs it after every exit, and without it CRI could never
/// stop or remove such a container.
#[test]
fn kill_all_of_a_stopped_container_kills_what_is_left_in_its_cgroup() -> Result<()> {
    let mut bundle = Bundle::new()?;
    // Without a pid namespace of its own, the init's child outlives it.
    bundle.remove_namespace("pid");
    let marks = temp_dir("kill-all")?;
    let pid_file = marks.path().join("child.pid");
    bundle.bind(marks.path(), "/marks", &[]);
    bundle.sh("sleep 300 & echo $! > /marks/child.pid; exit 0");
    let rt = Runtime::new()?;
    let id = unique_id("killall");
    rt.start_detached(&bundle, &id)?;
    rt.wait_stopped(&id)?;
    let deadline = std::time::Instant::now() + WAIT_TIMEOUT;
    let child: i32 = loop {
        if let Some(p) = fs::read_to_string(&pid_file)
            .ok()
            .and_then(|s| s.trim().parse().ok())
        {
            break p;
        }
        anyhow::ensure!(std::time::Instant::now() < deadline, "no child pid written");
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    // The pid as the container saw it is the host's: no pid namespace of its own.
    assert!(std::path::Path::new(&format!("/proc/{child}")).exists());
    let out = rt.rcrun(&["kill", "--all", &id, "KILL"])?;
    assert!(out.success(), "kill --all of a stopped container: {out}");
    let deadline = std::time::Instant::now() + WAIT_TIMEOUT;
    while std::path::Path::new(&format!("/proc/{child}/stat")).exists()
        && fs::read_to_string(format!("/proc/{child}/stat")).is_ok_and(|s| !s.contains(") Z "))
    {
        anyhow::ensure!(
            std::time::Instant::now() < deadline,
            "child {child} survived kill --all"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    rt.delete(&id)?.ok()?;
    Ok(())
}

#[test]
fn list_shows_containers_as_table_json_and_quiet() -> Result<()> {
    let rt = Runtime::new()?;
    let mut bundles = Vec::new();
    let mut ids = Vec::new();
    for _ in 0..2 {
        let mut bundle = Bundle::new()?;
        bundle.args(&["sleep", "60"]);
        let id = unique_id("list");
        rt.create(&bundle, &id)?.ok()?;
        bundles.push(bundle);
        ids.push(id);
    }
    rt.start(&ids[1])?.ok()?;

    let table = rt.rcrun(&["list"])?.ok()?;
    let header = table.stdout.lines().next().unwrap_or_default();
    for column in ["ID", "PID", "STATUS", "BUNDLE"] {
        assert!(header.contains(column), "no {column} column: {table}");
    }
    for (id, status) in [(&ids[0], "created"), (&ids[1], "running")] {
        let line = table
            .stdout
            .lines()
            .find(|l| l.split_whitespace().next() == Some(id.as_str()));
        let line = line.with_context(|| format!("{id} not listed: {table}"))?;
        assert!(line.contains(status), "{id} not {status}: {table}");
    }

    let json = rt.rcrun(&["list", "--format", "json"])?.ok()?;
    let list: Value = serde_json::from_str(&json.stdout).context(json.to_string())?;
    let list = list.as_array().context("list is not an array")?;
    assert_eq!(list.len(), 2, "{json}");
    for (id, status) in [(&ids[0], "created"), (&ids[1], "running")] {
        let entry = list
            .iter()
            .find(|c| c["id"] == id.as_str())
            .with_context(|| format!("{id} not in {json}"))?;
        assert_eq!(entry["status"], status, "{json}");
        assert!(entry["pid"].as_i64().unwrap_or(0) > 0, "{json}");
    }

    let quiet = rt.rcrun(&["list", "--quiet"])?.ok()?;
    let mut listed: Vec<&str> = quiet.stdout.lines().collect();
    listed.sort_unstable();
    let mut want: Vec<&str> = ids.iter().map(String::as_str).collect();
    want.sort_unstable();
    assert_eq!(listed, want, "{quiet}");
    Ok(())
}

#[test]
fn pid_file_holds_the_init_pid() -> Result<()> {
    let mut bundle = Bundle::new()?;
    bundle.args(&["sleep", "60"]);
    let rt = Runtime::new()?;
    let id = unique_id("lifecycle");
    let pid_file = rt.root().join("init.pid");
    rt.create_with(&bundle, &id, &["--pid-file", &pid_file.to_string_lossy()])?
        .ok()?;
    let text = fs::read_to_string(&pid_file).context("no pid file")?;
    let pid: i32 = text.trim().parse().context(text.clone())?;
    assert_eq!(pid, rt.pid(&id)?, "pid file vs state");
    Ok(())
}

#[test]
fn state_shows_annotations() -> Result<()> {
    let mut bundle = Bundle::new()?;
    bundle.args(&["sleep", "60"]);
    bundle.set(
        "/annotations",
        json!({"org.example.test": "hello", "io.rcrun.e2e": "1"}),
    );
    let rt = Runtime::new()?;
    let id = unique_id("lifecycle");
    rt.create(&bundle, &id)?.ok()?;
    let state = rt.state(&id)?;
    assert_eq!(state["annotations"]["org.example.test"], "hello", "{state}");
    assert_eq!(state["annotations"]["io.rcrun.e2e"], "1", "{state}");
    Ok(())
}

#[test]
fn commands_on_an_unknown_container_fail() -> Result<()> {
    let rt = Runtime::new()?;
    let id = unique_id("nothing");
    for args in [
        vec!["state", &id],
        vec!["start", &id],
        vec!["kill", &id, "KILL"],
        vec!["delete", &id],
    ] {
        let out = rt.rcrun(&args)?;
        assert!(!out.success(), "{args:?} succeeded: {out}");
        assert!(!out.error_line().is_empty(), "no error message: {out}");
    }
    Ok(())
}

#[test]
fn spec_writes_the_default_config() -> Result<()> {
    let dir = temp_dir("spec")?;
    let rt = Runtime::new()?;
    let out = rt.rcrun(&["spec", "--bundle", &dir.path().to_string_lossy()])?;
    assert!(out.success(), "{out}");
    let text = fs::read_to_string(dir.path().join("config.json"))?;
    let config: Value = serde_json::from_str(&text).context(text.clone())?;
    let caps = &config["process"]["capabilities"]["bounding"];
    for cap in ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"] {
        assert!(
            caps.as_array().is_some_and(|a| a.contains(&json!(cap))),
            "{cap} missing: {text}"
        );
    }
    for (key, path) in [
        ("maskedPaths", "/proc/kcore"),
        ("readonlyPaths", "/proc/sys"),
    ] {
        let list = &config["linux"][key];
        assert!(
            list.as_array().is_some_and(|a| a.contains(&json!(path))),
            "{key} without {path}: {text}"
        );
    }
    assert_eq!(config["root"]["path"], "rootfs", "{text}");
    assert!(config["ociVersion"].is_string(), "{text}");
    let namespaces = config["linux"]["namespaces"].to_string();
    for ns in ["pid", "network", "ipc", "uts", "mount"] {
        assert!(namespaces.contains(ns), "no {ns} namespace: {text}");
    }

    // Never overwrite an existing config.
    fs::write(dir.path().join("config.json"), "{\"mine\": true}")?;
    let out = rt.rcrun(&["spec", "--bundle", &dir.path().to_string_lossy()])?;
    assert!(!out.success(), "spec overwrote config.json: {out}");
    assert!(!out.error_line().is_empty(), "no error message: {out}");
    assert_eq!(
        fs::read_to_string(dir.path().join("config.json"))?,
        "{\"mine\": true}"
    );
    Ok(())
}

#[test]
fn spec_rootless_has_a_user_namespace() -> Result<()> {
    let dir = temp_dir("spec")?;
    let rt = Runtime::new()?;
    let out = rt.rcrun(&[
        "spec",
        "--rootless",
        "--bundle",
        &dir.path().to_string_lossy(),
    ])?;
    assert!(out.success(), "{out}");
    let text = fs::read_to_string(dir.path().join("config.json"))?;
    let config: Value = serde_json::from_str(&text).context(text.clone())?;
    let namespaces = config["linux"]["namespaces"]
        .as_array()
        .context("no namespaces")?;
    assert!(
        namespaces.iter().any(|n| n["type"] == "user"),
        "no user namespace: {text}"
    );
    assert!(
        config["linux"]["uidMappings"]
            .as_array()
            .is_some_and(|m| !m.is_empty()),
        "no uidMappings: {text}"
    );
    Ok(())
}

/// Real-time signals reach the container by name and by number: systemd images stop on
/// `SIGRTMIN+3` (their STOPSIGNAL), which containerd and rcri pass to `kill` as given.
#[test]
fn kill_sends_real_time_signals() -> Result<()> {
    // glibc's SIGRTMIN is 34 (it keeps 32 and 33 for itself), as the container's sh sees it.
    for (signal, number) in [("SIGRTMIN+3", 37), ("RTMAX-1", 63), ("40", 40)] {
        let mut bundle = Bundle::new()?;
        bundle.sh(&format!(
            "trap 'exit {}' {number}; while :; do sleep 0.05; done",
            number - 30
        ));
        bundle.write()?;
        let rt = Runtime::new()?;
        let id = unique_id("rtsig");
        rt.track(&id);
        let mut cmd = rt.command(&["run", "--bundle"]);
        cmd.arg(bundle.path()).arg(&id);
        let runner = std::thread::spawn(move || run_command(&mut cmd, COMMAND_TIMEOUT));
        let started = rt.wait_status(&id, "running", WAIT_TIMEOUT);
        // The trap must be set before the signal comes: sh sets it first thing.
        std::thread::sleep(std::time::Duration::from_millis(300));
        let killed = started.and_then(|_| rt.kill(&id, signal)?.ok());
        if killed.is_err() {
            let _ = rt.kill(&id, "KILL");
        }
        let out = runner.join().expect("run thread panicked")?;
        killed.with_context(|| format!("kill {signal}"))?;
        assert_eq!(out.code(), number - 30, "kill {signal}: {out}");
    }
    let rt = Runtime::new()?;
    for bad in ["RTMIN+99", "0", "65"] {
        let out = rt.kill("no-such-container-rt", bad)?;
        assert!(
            !out.success() && out.stderr.contains("unknown signal"),
            "{bad}: {out}"
        );
    }
    Ok(())
}
