//! OCI hooks: each kind runs at its point of the lifecycle, in the namespace the spec says,
//! with the state on stdin; failures before start fail the container and leave nothing.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use anyhow::Result;
use e2e::*;

/// A host script that appends "<name> <status> <its mount namespace>" to `log`.
fn recorder(dir: &Path, log: &Path) -> Result<std::path::PathBuf> {
    let path = dir.join("hook.sh");
    fs::write(
        &path,
        format!(
            "#!/bin/sh\nstate=$(cat)\nstatus=$(echo \"$state\" | sed -n 's/.*\"status\":\"\\([a-z]*\\)\".*/\\1/p')\necho \"$1 $status $(readlink /proc/self/ns/mnt)\" >> {}\n",
            log.display()
        ),
    )?;
    fs::set_permissions(&path, fs::Permissions::from_mode(0o755))?;
    Ok(path)
}

fn hook(path: &Path, name: &str) -> Value {
    json!({"path": path, "args": ["hook.sh", name]})
}

#[test]
fn hooks_run_in_lifecycle_order_with_the_state_on_stdin() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let log = dir.path().join("log");
    let script = recorder(dir.path(), &log)?;
    let mut bundle = Bundle::new()?;
    let shared = bundle.share()?;
    let inner = shared.join("inner.log");
    bundle
        .hostname("hooked")
        .sh("echo process >> /shared/inner.log; sleep 60");
    // startContainer runs inside the container (its paths are the container's).
    bundle.set(
        "/hooks",
        json!({
            "prestart": [hook(&script, "prestart")],
            "createRuntime": [hook(&script, "createRuntime")],
            "createContainer": [hook(&script, "createContainer")],
            "startContainer": [{"path": "/bin/sh", "args": ["sh", "-c", "echo startContainer $(hostname) >> /shared/inner.log"]}],
            "poststart": [hook(&script, "poststart")],
            "poststop": [hook(&script, "poststop")],
        }),
    );
    let rt = Runtime::new()?;
    let id = unique_id("hooks");
    rt.create(&bundle, &id)?.ok()?;
    let after_create = fs::read_to_string(&log)?;
    assert!(
        !inner.exists(),
        "startContainer or the process ran before start"
    );
    rt.start(&id)?.ok()?;
    wait_for("the process", Duration::from_secs(10), || {
        Ok(fs::read_to_string(&inner)
            .unwrap_or_default()
            .contains("process"))
    })?;
    rt.kill(&id, "KILL")?.ok()?;
    rt.wait_stopped(&id)?;
    rt.delete(&id)?.ok()?;
    let host = fs::read_link("/proc/self/ns/mnt")?;
    let host = host.display();
    let lines: Vec<String> = fs::read_to_string(&log)?
        .lines()
        .map(String::from)
        .collect();
    assert_eq!(
        lines,
        [
            format!("prestart creating {host}"),
            format!("createRuntime creating {host}"),
            // createContainer runs in the container's (mount) namespace.
            lines.get(2).cloned().unwrap_or_default(),
            format!("poststart running {host}"),
            format!("poststop stopped {host}"),
        ],
        "after create: {after_create}"
    );
    assert!(
        lines[2].starts_with("createContainer creating"),
        "{lines:?}"
    );
    assert_ne!(
        lines[2],
        format!("createContainer creating {host}"),
        "not in the container's mount namespace"
    );
    let inner = fs::read_to_string(&inner)?;
    assert_eq!(
        inner.lines().collect::<Vec<_>>(),
        ["startContainer hooked", "process"]
    );
    Ok(())
}

#[test]
fn a_missing_hook_binary_fails_create_and_leaves_nothing() -> Result<()> {
    let mut bundle = Bundle::new()?;
    bundle.set(
        "/hooks",
        json!({"createRuntime": [{"path": "/nonexistent/hook"}]}),
    );
    let rt = Runtime::new()?;
    let id = unique_id("hooks");
    let out = rt.create(&bundle, &id)?;
    assert!(!out.success(), "{out}");
    if testing_rcrun() {
        assert!(out.error_line().contains("/nonexistent/hook"), "{out}");
    }
    assert_nothing_left(&rt, &bundle, &id)
}

#[test]
fn a_hook_that_times_out_fails_create_and_leaves_nothing() -> Result<()> {
    let mut bundle = Bundle::new()?;
    bundle.set(
        "/hooks",
        json!({"prestart": [{"path": "/bin/sleep", "args": ["sleep", "30"], "timeout": 1}]}),
    );
    let rt = Runtime::new()?;
    let id = unique_id("hooks");
    let started = std::time::Instant::now();
    let out = rt.create(&bundle, &id)?;
    assert!(!out.success(), "{out}");
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "the timeout was not enforced"
    );
    if testing_rcrun() {
        assert!(out.error_line().contains("timed out"), "{out}");
    }
    assert_nothing_left(&rt, &bundle, &id)
}

#[test]
fn a_hook_that_ignores_stdin_and_failing_poststop_do_not_break_rcrun() -> Result<()> {
    let mut bundle = Bundle::new()?;
    bundle.args(&["true"]).set(
        "/hooks",
        json!({
            "createRuntime": [{"path": "/bin/true"}],
            "poststop": [{"path": "/bin/false"}],
        }),
    );
    let rt = Runtime::new()?;
    let out = rt.run(&bundle, &unique_id("hooks"))?;
    assert_eq!(out.code(), 0, "{out}");
    Ok(())
}
