//! Resource limits on a pure cgroup v2 hierarchy. Every test skips itself elsewhere (this
//! file is run inside hack/vmtest.sh's VM). Assertions are on counters and cgroup files.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use e2e::*;

/// Whether /sys/fs/cgroup is a cgroup2 mount and no v1 hierarchy is mounted.
fn pure_v2() -> bool {
    let text = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mounts = parse_mountinfo(&text);
    let v2_root = mounts
        .iter()
        .any(|m| m.fs_type == "cgroup2" && m.mount_point == "/sys/fs/cgroup");
    let any_v1 = mounts.iter().any(|m| m.fs_type == "cgroup");
    let pure = v2_root && !any_v1;
    if !pure {
        eprintln!("skipped: not a cgroup v2 host");
    }
    pure
}

/// The container's v2 cgroup directory, from its init's /proc/PID/cgroup.
fn cg_dir(pid: i32) -> Result<PathBuf> {
    let cgroup = cgroup_of(&pid.to_string(), "")?;
    Ok(Path::new("/sys/fs/cgroup").join(cgroup.trim_start_matches('/')))
}

fn read(path: &Path) -> Result<String> {
    fs::read_to_string(path)
        .map(|s| s.trim().to_string())
        .with_context(|| format!("failed to read {}", path.display()))
}

fn keyed(path: &Path, key: &str) -> Result<u64> {
    let text = read(path)?;
    text.lines()
        .find_map(|l| {
            let (k, v) = l.split_once(' ')?;
            (k == key).then(|| v.trim().parse().ok())?
        })
        .with_context(|| format!("no {key} in {}: {text}", path.display()))
}

#[test]
fn memory_max_oom_kills_and_events_report_it() -> Result<()> {
    if !pure_v2() {
        return Ok(());
    }
    let mut bundle = Bundle::new()?;
    let shared = bundle.share()?;
    bundle
        .set(
            "/linux/resources/memory",
            json!({"limit": 16 << 20, "swap": 16 << 20}),
        )
        .sh("head -c 64m /dev/zero | tail; echo $? > /shared/rc; sleep 60");
    let rt = Runtime::new()?;
    let id = unique_id("v2mem");
    rt.create(&bundle, &id)?.ok()?;
    let dir = cg_dir(rt.pid(&id)?)?;
    assert_eq!(read(&dir.join("memory.max"))?, (16u64 << 20).to_string());
    assert_eq!(
        read(&dir.join("memory.swap.max"))?,
        "0",
        "v1 memsw = limit → no swap"
    );
    rt.start(&id)?.ok()?;
    wait_for("the OOM kill", Duration::from_secs(60), || {
        Ok(keyed(&dir.join("memory.events"), "oom_kill")? > 0)
    })?;
    wait_for("the pipeline to end", Duration::from_secs(30), || {
        Ok(shared.join("rc").exists())
    })?;
    let out = rt.rcrun(&["events", "--stats", &id])?.ok()?;
    let stats: Value = serde_json::from_str(&out.stdout)?;
    assert_eq!(
        stats["data"]["memory"]["usage"]["limit"],
        16u64 << 20,
        "{stats}"
    );
    rt.delete_force(&id)?.ok()?;
    assert!(!dir.exists(), "{} left after delete", dir.display());
    assert_nothing_left(&rt, &bundle, &id)
}

#[test]
fn pids_cpu_cpuset_and_unified_are_written_converted() -> Result<()> {
    if !pure_v2() {
        return Ok(());
    }
    let mut bundle = Bundle::new()?;
    bundle
        .set(
            "/linux/resources",
            json!({
                "pids": {"limit": 16},
                "cpu": {"shares": 1024, "quota": 5000, "period": 100000, "cpus": "0"},
                "unified": {"memory.high": "50331648"},
                "devices": [{"allow": false, "access": "rwm"}]
            }),
        )
        .sh("grep Cpus_allowed_list /proc/self/status > /dev/null; \
             i=0; while [ $i -lt 64 ]; do sleep 60 & i=$((i+1)); done; while :; do :; done");
    let rt = Runtime::new()?;
    let id = unique_id("v2res");
    rt.create(&bundle, &id)?.ok()?;
    let dir = cg_dir(rt.pid(&id)?)?;
    assert_eq!(read(&dir.join("pids.max"))?, "16");
    assert_eq!(
        read(&dir.join("cpu.weight"))?,
        "39",
        "shares 1024 → weight 39"
    );
    assert_eq!(read(&dir.join("cpu.max"))?, "5000 100000");
    assert_eq!(read(&dir.join("cpuset.cpus"))?, "0");
    assert_eq!(read(&dir.join("memory.high"))?, "50331648");
    rt.start(&id)?.ok()?;
    wait_for("a refused fork", Duration::from_secs(60), || {
        Ok(keyed(&dir.join("pids.events"), "max")? > 0)
    })?;
    let current: u64 = read(&dir.join("pids.current"))?.parse()?;
    assert!(current <= 16, "pids.current {current}");
    rt.delete_force(&id)?.ok()?;
    assert_nothing_left(&rt, &bundle, &id)
}

#[test]
fn cpu_max_throttles() -> Result<()> {
    if !pure_v2() {
        return Ok(());
    }
    let mut bundle = Bundle::new()?;
    bundle
        .set(
            "/linux/resources/cpu",
            json!({"quota": 5000, "period": 100000}),
        )
        .sh("while :; do :; done");
    let rt = Runtime::new()?;
    let id = unique_id("v2cpu");
    rt.start_detached(&bundle, &id)?;
    let dir = cg_dir(rt.pid(&id)?)?;
    wait_for("throttling", Duration::from_secs(60), || {
        Ok(keyed(&dir.join("cpu.stat"), "nr_throttled")? > 0)
    })?;
    rt.delete_force(&id)?.ok()?;
    assert_nothing_left(&rt, &bundle, &id)
}

#[test]
fn freeze_update_and_kill() -> Result<()> {
    if !pure_v2() {
        return Ok(());
    }
    let mut bundle = Bundle::new()?;
    let shared = bundle.share()?;
    bundle
        .set("/linux/resources/memory", json!({"limit": 64 << 20}))
        .sh("i=0; while :; do i=$((i+1)); echo $i > /shared/n; done");
    let rt = Runtime::new()?;
    let id = unique_id("v2freeze");
    rt.start_detached(&bundle, &id)?;
    let pid = rt.pid(&id)?;
    let dir = cg_dir(pid)?;
    let counter = || -> u64 {
        fs::read_to_string(shared.join("n"))
            .ok()
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or(0)
    };
    wait_for("the counter", Duration::from_secs(30), || Ok(counter() > 5))?;
    rt.rcrun(&["pause", &id])?.ok()?;
    assert_eq!(rt.status(&id)?, "paused");
    assert_eq!(keyed(&dir.join("cgroup.events"), "frozen")?, 1);
    let frozen_at = counter();
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(counter(), frozen_at, "counter moved while frozen");
    rt.rcrun(&["resume", &id])?.ok()?;
    wait_for("the counter to move", Duration::from_secs(30), || {
        Ok(counter() > frozen_at)
    })?;

    rt.rcrun(&[
        "update",
        "--memory",
        "32m",
        "--pids-limit",
        "50",
        "--cpu-quota",
        "20000",
        "--cpu-period",
        "100000",
        &id,
    ])?
    .ok()?;
    assert_eq!(read(&dir.join("memory.max"))?, (32u64 << 20).to_string());
    assert_eq!(read(&dir.join("pids.max"))?, "50");
    assert_eq!(read(&dir.join("cpu.max"))?, "20000 100000");

    rt.rcrun(&["kill", "--all", &id, "KILL"])?.ok()?;
    rt.wait_stopped(&id)?;
    rt.delete(&id)?.ok()?;
    assert!(!dir.exists());
    assert_nothing_left(&rt, &bundle, &id)
}

#[test]
fn device_filter_denies_and_allows() -> Result<()> {
    if !pure_v2() {
        return Ok(());
    }
    let mut bundle = Bundle::new()?;
    bundle
        .set(
            "/linux/devices",
            json!([
                {"path": "/dev/fuse", "type": "c", "major": 10, "minor": 229, "fileMode": 0o666},
                {"path": "/dev/e2e-zero", "type": "c", "major": 1, "minor": 5, "fileMode": 0o666},
            ]),
        )
        .set(
            "/linux/resources/devices",
            json!([
                {"allow": false, "access": "rwm"},
                {"allow": true, "type": "c", "major": 1, "minor": 5, "access": "rwm"},
                {"allow": false, "type": "c", "major": 10, "minor": 229, "access": "rwm"},
            ]),
        )
        .sh(
            "head -c 2 /dev/e2e-zero | od -An -tx1; head -c0 /dev/null && echo NULL-OK; \
             (exec 3</dev/fuse) 2>/dev/null && echo FUSE-OPENED; echo end",
        );
    let rt = Runtime::new()?;
    let id = unique_id("v2dev");
    let out = rt.run(&bundle, &id)?.ok()?;
    assert!(
        out.stdout.contains("00 00"),
        "allowed device unreadable: {out}"
    );
    assert!(out.stdout.contains("NULL-OK"), "{out}");
    assert!(!out.stdout.contains("FUSE-OPENED"), "{out}");
    assert_nothing_left(&rt, &bundle, &id)
}

#[test]
fn bad_input_is_refused_and_leaves_nothing() -> Result<()> {
    if !pure_v2() {
        return Ok(());
    }
    for (what, resources, expect) in [
        (
            "unknown unified key",
            json!({"unified": {"memory.bogus": "1"}}),
            "unknown linux.resources.unified key",
        ),
        ("zero period", json!({"cpu": {"period": 0}}), "cpu.period"),
        (
            "nonexistent device",
            json!({"blockIO": {"throttleReadBpsDevice": [{"major": 259, "minor": 4095, "rate": 1000}]}}),
            "no such device",
        ),
        (
            "v1-only network class",
            json!({"network": {"classID": 1}}),
            "net_cls",
        ),
    ] {
        let mut bundle = Bundle::new()?;
        bundle.set("/linux/resources", resources).args(&["true"]);
        let rt = Runtime::new()?;
        let id = unique_id("v2bad");
        let out = rt.create(&bundle, &id)?;
        assert!(!out.success(), "{what} accepted: {out}");
        assert!(
            out.stderr.contains(expect),
            "{what}: no {expect:?} in: {out}"
        );
        assert_nothing_left(&rt, &bundle, &id)?;
    }
    Ok(())
}

/// With clone3's CLONE_INTO_CGROUP the container's first process is born in its own cgroup,
/// never charged to the caller's: rcrun run from a cgroup whose pids.max is 1 (rcrun itself)
/// still starts a container, which a fork into the caller's cgroup could not.
#[test]
fn the_init_is_born_in_its_cgroup() -> Result<()> {
    if !pure_v2() {
        return Ok(());
    }
    let mut bundle = Bundle::new()?;
    bundle
        .set(
            "/linux/cgroupsPath",
            json!(format!("/{}", unique_id("v2born"))),
        )
        .sh("cat /proc/self/cgroup");
    bundle.write()?;
    let rt = Runtime::new()?;
    let limit = Path::new("/sys/fs/cgroup").join(unique_id("v2caller"));
    fs::create_dir(&limit)?;
    fs::write(limit.join("pids.max"), "1")?;
    let script = format!(
        "echo $$ > {}/cgroup.procs && exec {} --root {} run --bundle {} born",
        limit.display(),
        rt.bin().display(),
        rt.root().display(),
        bundle.path().display()
    );
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(&script)
        .output()?;
    let _ = fs::remove_dir(&limit);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("0::/"),
        "status {:?}\nstdout {stdout}\nstderr {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}
