//! Bad input: each case fails with a non-zero status and a clear one-line error, and leaves
//! nothing behind (no state dir, cgroup, mount or process).

use std::fs;

use anyhow::Result;
use e2e::*;

/// `create --bundle <bundle> [EXTRA] ID` without writing the bundle's config first.
fn create_as_is(rt: &Runtime, bundle: &Bundle, id: &str, extra: &[&str]) -> Result<Output> {
    rt.track(id);
    let mut cmd = rt.command(&["create", "--bundle"]);
    cmd.arg(bundle.path()).args(extra).arg(id);
    rt.output(&mut cmd)
}

/// A failed command with a non-empty error whose message fits on one line.
fn assert_clear_failure(out: &Output) {
    assert!(!out.success(), "succeeded: {out}");
    let lines: Vec<&str> = out
        .stderr
        .lines()
        .filter(|l| !l.trim().is_empty())
        .collect();
    assert_eq!(lines.len(), 1, "not one line of error: {out}");
    assert!(lines[0].len() > 10, "error too terse: {out}");
}

#[test]
fn missing_config_json() -> Result<()> {
    let bundle = Bundle::new()?;
    let rt = Runtime::new()?;
    let id = unique_id("bad");
    let out = create_as_is(&rt, &bundle, &id, &[])?;
    assert_clear_failure(&out);
    assert!(out.stderr.contains("config.json"), "{out}");
    assert_nothing_left(&rt, &bundle, &id)
}

#[test]
fn malformed_json() -> Result<()> {
    let bundle = Bundle::new()?;
    fs::write(
        bundle.path().join("config.json"),
        "{ \"ociVersion\": \"1.0.2\", ",
    )?;
    let rt = Runtime::new()?;
    let id = unique_id("bad");
    let out = create_as_is(&rt, &bundle, &id, &[])?;
    assert_clear_failure(&out);
    assert_nothing_left(&rt, &bundle, &id)
}

#[test]
fn wrong_type_in_a_field() -> Result<()> {
    let mut bundle = Bundle::new()?;
    bundle.set("/hostname", json!(5));
    bundle.write()?;
    let rt = Runtime::new()?;
    let id = unique_id("bad");
    let out = create_as_is(&rt, &bundle, &id, &[])?;
    assert_clear_failure(&out);
    assert!(out.stderr.contains("hostname"), "field not named: {out}");
    assert_nothing_left(&rt, &bundle, &id)
}

#[test]
fn missing_rootfs() -> Result<()> {
    let bundle = Bundle::new()?;
    bundle.write()?;
    fs::remove_dir_all(bundle.rootfs())?;
    let rt = Runtime::new()?;
    let id = unique_id("bad");
    let out = create_as_is(&rt, &bundle, &id, &[])?;
    assert_clear_failure(&out);
    assert!(out.stderr.contains("rootfs"), "{out}");
    assert_nothing_left(&rt, &bundle, &id)
}

#[test]
fn invalid_container_ids() -> Result<()> {
    let long = "a".repeat(1025);
    for id in ["", "/", "..", ".", "a/b", "../escape", long.as_str()] {
        let bundle = Bundle::new()?;
        bundle.write()?;
        let rt = Runtime::new()?;
        let out = create_as_is(&rt, &bundle, id, &[])?;
        assert!(!out.success(), "id {id:?} accepted: {out}");
        assert!(!out.error_line().is_empty(), "id {id:?}: no message: {out}");
        assert_nothing_left(&rt, &bundle, id)?;
        let entries: Vec<_> = fs::read_dir(rt.root())
            .map(|d| d.flatten().map(|e| e.file_name()).collect())
            .unwrap_or_default();
        assert!(entries.is_empty(), "id {id:?} left {entries:?} in the root");
        assert!(
            !rt.root()
                .parent()
                .unwrap_or(rt.root())
                .join("escape")
                .exists(),
            "id {id:?} escaped the root"
        );
    }
    Ok(())
}

#[test]
fn duplicate_id_leaves_the_first_container_alone() -> Result<()> {
    let mut first = Bundle::new()?;
    first.args(&["sleep", "60"]);
    let rt = Runtime::new()?;
    let id = unique_id("bad");
    rt.create(&first, &id)?.ok()?;
    let pid = rt.pid(&id)?;

    let second = Bundle::new()?;
    let out = rt.create(&second, &id)?;
    assert_clear_failure(&out);
    let second_path = second.path().to_string_lossy().into_owned();
    assert!(!mountinfo_contains(&second_path), "a mount of the second");
    assert!(processes_mentioning(&second_path).is_empty());
    let state = rt.state(&id)?;
    assert_eq!(state["status"], "created", "{state}");
    assert_eq!(rt.pid(&id)?, pid);
    assert!(pid_alive(pid));
    Ok(())
}

#[test]
fn unknown_signal_for_kill() -> Result<()> {
    let mut bundle = Bundle::new()?;
    bundle.args(&["sleep", "60"]);
    let rt = Runtime::new()?;
    let id = unique_id("bad");
    rt.start_detached(&bundle, &id)?;
    for signal in ["SIGNOPE", "NOPE", "999", "-1"] {
        let out = rt.kill(&id, signal)?;
        assert!(!out.success(), "kill {signal} accepted: {out}");
        assert!(!out.error_line().is_empty(), "no message: {out}");
    }
    assert_eq!(rt.status(&id)?, "running");
    Ok(())
}

#[test]
fn console_socket_that_does_not_exist() -> Result<()> {
    let mut bundle = Bundle::new()?;
    bundle.terminal(true);
    bundle.write()?;
    let rt = Runtime::new()?;
    let id = unique_id("bad");
    let missing = rt.root().join("no-such.sock");
    let out = create_as_is(
        &rt,
        &bundle,
        &id,
        &["--console-socket", &missing.to_string_lossy()],
    )?;
    assert!(!out.success(), "{out}");
    assert!(!out.error_line().is_empty(), "no message: {out}");
    assert_nothing_left(&rt, &bundle, &id)
}

#[test]
fn mount_that_fails_in_the_child_leaves_nothing() -> Result<()> {
    for mount in [
        json!({"destination": "/bad", "type": "no-such-fs", "source": "none"}),
        json!({"destination": "/bad", "type": "bind", "source": "/no/such/source",
               "options": ["rbind"]}),
    ] {
        let mut bundle = Bundle::new()?;
        bundle.add_mount(mount.clone());
        let rt = Runtime::new()?;
        let id = unique_id("bad");
        let out = rt.create(&bundle, &id)?;
        assert!(!out.success(), "{mount} accepted: {out}");
        assert!(!out.error_line().is_empty(), "no message: {out}");
        assert_nothing_left(&rt, &bundle, &id)?;
    }
    Ok(())
}

#[test]
fn missing_executable() -> Result<()> {
    let mut bundle = Bundle::new()?;
    bundle.args(&["/no/such/binary"]);
    let rt = Runtime::new()?;
    let id = unique_id("bad");
    let out = rt.run(&bundle, &id)?;
    assert!(!out.success(), "{out}");
    assert!(!out.error_line().is_empty(), "no message: {out}");
    rt.delete_force(&id)?;
    assert_nothing_left(&rt, &bundle, &id)
}

#[test]
fn errors_go_to_the_log_file_as_json() -> Result<()> {
    let bundle = Bundle::new()?;
    let rt = Runtime::new()?;
    let id = unique_id("bad");
    let log = rt.root().join("rcrun.log");
    rt.track(&id);
    let mut cmd = rt.command(&["--log"]);
    cmd.arg(&log)
        .args(["--log-format", "json", "create", "--bundle"])
        .arg(bundle.path())
        .arg(&id);
    // Global flags after `--root`: also accepted by runc.
    let out = rt.output(&mut cmd)?;
    assert!(!out.success(), "{out}");
    let text = fs::read_to_string(&log).unwrap_or_default();
    let errors: Vec<Value> = text
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["level"] == "error")
        .collect();
    assert!(
        errors
            .iter()
            .any(|e| e["msg"].as_str().is_some_and(|m| !m.is_empty())),
        "no error line with a msg in the log:\n{text}\n{out}"
    );
    assert_nothing_left(&rt, &bundle, &id)
}
