//! cgroups (v1 here): where a container is placed, device rules, and that resource limits are
//! refused until they are implemented. Only cgroups made for the tests' containers are touched.

use std::fs;

use anyhow::{Context, Result};
use e2e::*;

/// The v1 hierarchies with real controllers (not `name=systemd`, not the unified one).
fn controller_hierarchies() -> Result<Vec<Hierarchy>> {
    let all = hierarchies()?;
    let v1: Vec<Hierarchy> = all
        .into_iter()
        .filter(|h| !h.is_v2() && !h.controllers.starts_with("name="))
        .collect();
    anyhow::ensure!(!v1.is_empty(), "no cgroup v1 hierarchy mounted");
    Ok(v1)
}

fn first_controller(h: &Hierarchy) -> &str {
    h.controllers.split(',').next().unwrap_or_default()
}

fn assert_placed(pid: i32, cgroups_path: &str) -> Result<()> {
    for h in controller_hierarchies()? {
        let ctrl = first_controller(&h);
        let got = cgroup_of(&pid.to_string(), ctrl)?;
        let want = expected_cgroup(&h, cgroups_path);
        assert_eq!(got, want, "{} cgroup of the container", h.controllers);
        assert!(h.dir(&want).is_dir(), "{} missing", h.dir(&want).display());
    }
    Ok(())
}

fn assert_removed(cgroups_path: &str) -> Result<()> {
    for h in controller_hierarchies()? {
        let dir = h.dir(&expected_cgroup(&h, cgroups_path));
        assert!(!dir.exists(), "{} left after delete", dir.display());
    }
    Ok(())
}

#[test]
fn relative_cgroups_path_is_under_our_own_cgroup() -> Result<()> {
    let path = format!("{}/ctr", unique_id("rcrun-e2e-cg"));
    let mut bundle = Bundle::new()?;
    bundle
        .set("/linux/cgroupsPath", json!(path))
        .args(&["sleep", "60"]);
    let rt = Runtime::new()?;
    let id = unique_id("cg");
    rt.start_detached(&bundle, &id)?;
    let pid = rt.pid(&id)?;
    assert_placed(pid, &path)?;
    // The test process stays where it was.
    for h in controller_hierarchies()? {
        assert_eq!(own_cgroup(first_controller(&h))?, h.own);
    }
    rt.delete_force(&id)?.ok()?;
    assert_removed(&path)?;
    Ok(())
}

#[test]
fn empty_cgroups_path_means_own_cgroup_slash_id() -> Result<()> {
    let mut bundle = Bundle::new()?;
    bundle.remove("/linux/cgroupsPath").args(&["sleep", "60"]);
    let rt = Runtime::new()?;
    let id = unique_id("cg");
    rt.start_detached(&bundle, &id)?;
    let pid = rt.pid(&id)?;
    assert_placed(pid, &id)?;
    rt.delete_force(&id)?.ok()?;
    assert_removed(&id)?;
    Ok(())
}

#[test]
fn cgroups_are_removed_when_a_stopped_container_is_deleted() -> Result<()> {
    let mut bundle = Bundle::new()?;
    bundle.sh("exit 0");
    let rt = Runtime::new()?;
    let id = unique_id("cg");
    rt.start_detached(&bundle, &id)?;
    rt.wait_stopped(&id)?;
    rt.delete(&id)?.ok()?;
    assert_removed(&id)?;
    Ok(())
}

#[test]
fn device_rules_deny_and_allow() -> Result<()> {
    let mut bundle = Bundle::new()?;
    bundle.set(
        "/linux/devices",
        json!([
            {"path": "/dev/fuse", "type": "c", "major": 10, "minor": 229, "fileMode": 0o666},
            {"path": "/dev/e2e-zero", "type": "c", "major": 1, "minor": 5, "fileMode": 0o666},
        ]),
    );
    bundle.set(
        "/linux/resources/devices",
        json!([
            {"allow": false, "access": "rwm"},
            {"allow": true, "type": "c", "major": 1, "minor": 5, "access": "rwm"},
            {"allow": false, "type": "c", "major": 10, "minor": 229, "access": "rwm"},
        ]),
    );
    let shared = bundle.share()?;
    bundle.sh(
        "(exec 3</dev/fuse) 2>&1; (exec 3</dev/fuse) 2>/dev/null && echo FUSE-OPENED; \
         head -c 2 /dev/e2e-zero | od -An -tx1; touch /shared/done; sleep 60",
    );
    let rt = Runtime::new()?;
    let id = unique_id("cg");
    rt.start_detached(&bundle, &id)?;
    let pid = rt.pid(&id)?;
    wait_for("the container's checks", WAIT_TIMEOUT, || {
        Ok(shared.join("done").exists())
    })?;

    let devices = controller_hierarchies()?
        .into_iter()
        .find(|h| h.has("devices"))
        .context("no devices hierarchy")?;
    let cgroup = cgroup_of(&pid.to_string(), "devices")?;
    let list = fs::read_to_string(devices.dir(&cgroup).join("devices.list"))?;
    let rules: Vec<&str> = list.lines().collect();
    assert!(rules.contains(&"c 1:5 rwm"), "devices.list: {list}");
    assert!(!rules.contains(&"a *:* rwm"), "everything allowed: {list}");
    assert!(
        !rules.iter().any(|r| r.starts_with("c 10:229")),
        "fuse allowed: {list}"
    );

    rt.kill(&id, "KILL")?.ok()?;
    rt.wait_stopped(&id)?;
    let id2 = unique_id("cg");
    // The container's own view, through `run`.
    bundle.sh(
        "(exec 3</dev/fuse) 2>&1; (exec 3</dev/fuse) 2>/dev/null && echo FUSE-OPENED; \
         head -c 2 /dev/e2e-zero | od -An -tx1",
    );
    let out = rt.run(&bundle, &id2)?;
    assert!(out.stdout.contains("Operation not permitted"), "{out}");
    assert!(!out.stdout.contains("FUSE-OPENED"), "{out}");
    assert!(
        out.stdout.contains("00 00"),
        "allowed device unreadable: {out}"
    );
    Ok(())
}

/// Resource limits are either applied (visible in the container's cgroup) or, while a runtime
/// does not implement them yet, refused with "not implemented" and nothing left behind; never
/// silently ignored.
#[test]
fn resource_limits_are_applied_or_refused() -> Result<()> {
    for (what, resources, file, want) in [
        (
            "memory",
            json!({"memory": {"limit": 67108864}}),
            "memory.limit_in_bytes",
            "67108864",
        ),
        ("cpu", json!({"cpu": {"shares": 512}}), "cpu.shares", "512"),
        ("pids", json!({"pids": {"limit": 100}}), "pids.max", "100"),
    ] {
        let mut bundle = Bundle::new()?;
        bundle
            .set("/linux/resources", resources)
            .args(&["sleep", "60"]);
        let rt = Runtime::new()?;
        let id = unique_id("cg");
        let out = rt.create(&bundle, &id)?;
        if !out.success() {
            assert!(
                out.stderr.to_lowercase().contains("not implemented"),
                "{what} limit refused without saying 'not implemented': {out}"
            );
            assert_nothing_left(&rt, &bundle, &id)?;
            continue;
        }
        let pid = rt.pid(&id)?;
        let controller = file.split('.').next().unwrap_or_default();
        let h = controller_hierarchies()?
            .into_iter()
            .find(|h| h.has(controller))
            .with_context(|| format!("no {controller} hierarchy"))?;
        let cgroup = cgroup_of(&pid.to_string(), controller)?;
        assert_eq!(cgroup, expected_cgroup(&h, &id), "{what}: placement");
        let value = fs::read_to_string(h.dir(&cgroup).join(file))?;
        assert_eq!(value.trim(), want, "{what}: {file}");
    }
    Ok(())
}
