//! Resource limits on cgroup v1 (this host), and the commands that act on a living container's
//! cgroup: pause/resume, update, ps, events, kill --all. Every assertion is on a counter or a
//! cgroup file, never on timing. Containers' cgroups nest under the test process's own cgroup.

use std::fs;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::mpsc;
use std::time::Duration;

use anyhow::{Context, Result};
use e2e::*;

fn v1_host() -> bool {
    let v1 = hierarchies().is_ok_and(|hs| hs.iter().any(|h| h.has("memory")));
    if !v1 {
        eprintln!("skipped: no cgroup v1 memory hierarchy on this host");
    }
    v1
}

/// A control file of the container with init `pid`, in the v1 hierarchy holding `controller`.
fn cg_file(pid: i32, controller: &str, file: &str) -> Result<PathBuf> {
    let h = hierarchies()?
        .into_iter()
        .find(|h| h.has(controller))
        .with_context(|| format!("no {controller} hierarchy"))?;
    let cgroup = cgroup_of(&pid.to_string(), controller)?;
    Ok(h.dir(&cgroup).join(file))
}

fn read(path: &PathBuf) -> Result<String> {
    fs::read_to_string(path)
        .map(|s| s.trim().to_string())
        .with_context(|| format!("failed to read {}", path.display()))
}

fn keyed(path: &PathBuf, key: &str) -> Result<u64> {
    let text = read(path)?;
    text.lines()
        .find_map(|l| l.strip_prefix(key)?.trim().parse().ok())
        .with_context(|| format!("no {key} in {}: {text}", path.display()))
}

/// `rcrun events` in the background; its lines arrive on the channel.
struct Events {
    child: std::process::Child,
    lines: mpsc::Receiver<String>,
}

impl Events {
    fn start(rt: &Runtime, id: &str, interval: &str) -> Result<Events> {
        let mut child = rt
            .command(&["events", "--interval", interval, id])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .context("failed to start rcrun events")?;
        let stdout = child.stdout.take().context("no stdout")?;
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Ok(Events { child, lines })
    }

    /// The first event of `kind` within the timeout.
    fn wait_for(&self, kind: &str, timeout: Duration) -> Result<Value> {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            let line = self
                .lines
                .recv_timeout(left)
                .with_context(|| format!("no {kind:?} event within {timeout:?}"))?;
            let event: Value = serde_json::from_str(&line)
                .with_context(|| format!("event is not JSON: {line}"))?;
            if event["type"] == kind {
                return Ok(event);
            }
        }
    }
}

impl Drop for Events {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn memory_limit_oom_kills_and_events_reports_it() -> Result<()> {
    if !v1_host() {
        return Ok(());
    }
    let mut bundle = Bundle::new()?;
    let shared = bundle.share()?;
    bundle
        .set("/linux/resources/memory", json!({"limit": 16 << 20}))
        // tail keeps a line-less input in memory: 64 MiB cannot fit under 16 MiB.
        .sh("sleep 1; head -c 64m /dev/zero | tail; echo $? > /shared/rc; sleep 60");
    let rt = Runtime::new()?;
    let id = unique_id("mem");
    rt.create(&bundle, &id)?.ok()?;
    let events = Events::start(&rt, &id, "1s")?;
    rt.start(&id)?.ok()?;
    let oom = events.wait_for("oom", Duration::from_secs(30))?;
    assert_eq!(oom["id"], id.as_str(), "{oom}");
    wait_for("the pipeline to end", WAIT_TIMEOUT, || {
        Ok(shared.join("rc").exists())
    })?;
    assert_ne!(read(&shared.join("rc"))?, "0", "tail was not killed");

    let pid = rt.pid(&id)?;
    let limit = cg_file(pid, "memory", "memory.limit_in_bytes")?;
    assert_eq!(read(&limit)?, (16u64 << 20).to_string());
    let kills = keyed(&cg_file(pid, "memory", "memory.oom_control")?, "oom_kill")?;
    assert!(kills >= 1, "memory.oom_control oom_kill = {kills}");

    let out = rt.rcrun(&["events", "--stats", &id])?.ok()?;
    let stats: Value = serde_json::from_str(&out.stdout).context("stats JSON")?;
    assert_eq!(stats["type"], "stats");
    assert_eq!(stats["data"]["memory"]["usage"]["limit"], 16u64 << 20);
    assert!(
        stats["data"]["memory"]["usage"]["failcnt"].as_u64() > Some(0),
        "{stats}"
    );

    let dir = limit.parent().context("cgroup dir")?.to_path_buf();
    // Its command line names the container, which assert_nothing_left looks for.
    drop(events);
    rt.delete_force(&id)?.ok()?;
    assert!(!dir.exists(), "{} left after delete", dir.display());
    assert_nothing_left(&rt, &bundle, &id)
}

#[test]
fn pids_limit_stops_a_fork_bomb() -> Result<()> {
    if !v1_host() {
        return Ok(());
    }
    let mut bundle = Bundle::new()?;
    // Bounded: at most 64 forks, each a sleeper that stays, against a limit of 16. The shell
    // may give up (and the container end) at the first refused fork.
    bundle
        .set("/linux/resources/pids", json!({"limit": 16}))
        .sh("i=0; while [ $i -lt 64 ]; do sleep 60 & i=$((i+1)); done; sleep 60");
    let rt = Runtime::new()?;
    let id = unique_id("pids");
    rt.create(&bundle, &id)?.ok()?;
    let pid = rt.pid(&id)?;
    assert_eq!(read(&cg_file(pid, "pids", "pids.max")?)?, "16");
    let events = cg_file(pid, "pids", "pids.events")?;
    let current = cg_file(pid, "pids", "pids.current")?;
    rt.start(&id)?.ok()?;
    let mut peak = 0u64;
    wait_for("a refused fork (pids.events max)", WAIT_TIMEOUT, || {
        peak = peak.max(read(&current)?.parse()?);
        Ok(keyed(&events, "max")? > 0)
    })?;
    assert!(peak <= 16, "pids.current reached {peak}");
    rt.delete_force(&id)?.ok()?;
    assert_nothing_left(&rt, &bundle, &id)
}

#[test]
fn cpu_quota_throttles() -> Result<()> {
    if !v1_host() {
        return Ok(());
    }
    let mut bundle = Bundle::new()?;
    bundle
        .set(
            "/linux/resources/cpu",
            json!({"quota": 5000, "period": 100000, "shares": 256}),
        )
        .sh("while :; do :; done");
    let rt = Runtime::new()?;
    let id = unique_id("cpu");
    rt.start_detached(&bundle, &id)?;
    let pid = rt.pid(&id)?;
    assert_eq!(read(&cg_file(pid, "cpu", "cpu.cfs_quota_us")?)?, "5000");
    assert_eq!(read(&cg_file(pid, "cpu", "cpu.cfs_period_us")?)?, "100000");
    assert_eq!(read(&cg_file(pid, "cpu", "cpu.shares")?)?, "256");
    let stat = cg_file(pid, "cpu", "cpu.stat")?;
    wait_for("throttling", Duration::from_secs(20), || {
        Ok(keyed(&stat, "nr_throttled")? > 0)
    })?;
    let out = rt.rcrun(&["events", "--stats", &id])?.ok()?;
    let stats: Value = serde_json::from_str(&out.stdout)?;
    assert!(
        stats["data"]["cpu"]["throttling"]["throttledPeriods"].as_u64() > Some(0),
        "{stats}"
    );
    rt.delete_force(&id)?.ok()?;
    assert_nothing_left(&rt, &bundle, &id)
}

#[test]
fn cpuset_pins_the_container() -> Result<()> {
    if !v1_host() {
        return Ok(());
    }
    let online = fs::read_to_string("/sys/devices/system/cpu/online")?;
    let last = online
        .trim()
        .rsplit(['-', ','])
        .next()
        .unwrap_or("0")
        .to_string();
    for cpus in ["0", last.as_str()] {
        let mut bundle = Bundle::new()?;
        bundle
            .set("/linux/resources/cpu", json!({"cpus": cpus, "mems": "0"}))
            .sh("grep Cpus_allowed_list /proc/self/status");
        let rt = Runtime::new()?;
        let id = unique_id("cpuset");
        let out = rt.run(&bundle, &id)?.ok()?;
        assert!(
            out.stdout
                .contains(&format!("Cpus_allowed_list:\t{cpus}\n")),
            "cpus {cpus}: {out}"
        );
        assert_nothing_left(&rt, &bundle, &id)?;
    }
    Ok(())
}

#[test]
fn pause_stops_progress_and_resume_restarts_it() -> Result<()> {
    if !v1_host() {
        return Ok(());
    }
    let mut bundle = Bundle::new()?;
    let shared = bundle.share()?;
    bundle.sh("i=0; while :; do i=$((i+1)); echo $i > /shared/n; done");
    let rt = Runtime::new()?;
    let id = unique_id("pause");
    rt.start_detached(&bundle, &id)?;
    let counter = || -> Result<u64> {
        Ok(fs::read_to_string(shared.join("n"))?
            .trim()
            .parse()
            .unwrap_or(0))
    };
    wait_for("the counter", WAIT_TIMEOUT, || {
        Ok(counter().unwrap_or(0) > 10)
    })?;

    rt.rcrun(&["pause", &id])?.ok()?;
    assert_eq!(rt.status(&id)?, "paused");
    let pid = rt.pid(&id)?;
    assert_eq!(read(&cg_file(pid, "freezer", "freezer.state")?)?, "FROZEN");
    let frozen_at = counter()?;
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(counter()?, frozen_at, "counter moved while paused");
    let again = rt.rcrun(&["pause", &id])?;
    assert!(!again.success(), "pausing a paused container: {again}");

    rt.rcrun(&["resume", &id])?.ok()?;
    assert_eq!(rt.status(&id)?, "running");
    wait_for("the counter to move again", WAIT_TIMEOUT, || {
        Ok(counter()? > frozen_at)
    })?;

    // delete --force of a paused container: the kill must reach frozen tasks.
    rt.rcrun(&["pause", &id])?.ok()?;
    rt.delete_force(&id)?.ok()?;
    assert!(!pid_alive(pid));
    assert_nothing_left(&rt, &bundle, &id)
}

#[test]
fn update_changes_a_running_containers_limits() -> Result<()> {
    if !v1_host() {
        return Ok(());
    }
    let mut bundle = Bundle::new()?;
    let shared = bundle.share()?;
    bundle
        .set(
            "/linux/resources",
            json!({"memory": {"limit": 64 << 20}, "pids": {"limit": 100},
                   "devices": [{"allow": false, "access": "rwm"}]}),
        )
        // 20 MiB in tmpfs: charged to the container, and not reclaimable without swap.
        .sh("head -c 20m /dev/zero > /dev/shm/fill; touch /shared/ready; sleep 60");
    let rt = Runtime::new()?;
    let id = unique_id("update");
    rt.start_detached(&bundle, &id)?;
    wait_for("the fill", WAIT_TIMEOUT, || {
        Ok(shared.join("ready").exists())
    })?;
    let pid = rt.pid(&id)?;
    let limit = cg_file(pid, "memory", "memory.limit_in_bytes")?;

    rt.rcrun(&[
        "update",
        "--memory",
        "48m",
        "--pids-limit",
        "7",
        "--cpu-share",
        "512",
        &id,
    ])?
    .ok()?;
    assert_eq!(read(&limit)?, (48u64 << 20).to_string());
    assert_eq!(read(&cg_file(pid, "pids", "pids.max")?)?, "7");
    assert_eq!(read(&cg_file(pid, "cpu", "cpu.shares")?)?, "512");

    let file = bundle.path().join("resources.json");
    fs::write(
        &file,
        r#"{"memory": {"limit": 41943040}, "cpu": {"quota": 20000, "period": 50000}}"#,
    )?;
    rt.rcrun(&["update", "--resources", &file.to_string_lossy(), &id])?
        .ok()?;
    assert_eq!(read(&limit)?, "41943040");
    assert_eq!(read(&cg_file(pid, "cpu", "cpu.cfs_quota_us")?)?, "20000");
    assert_eq!(
        read(&cg_file(pid, "pids", "pids.max")?)?,
        "7",
        "earlier update kept"
    );

    // Below the 20 MiB in use: refused with the usage named, the limit unchanged.
    let out = rt.rcrun(&["update", "--memory", "4m", &id])?;
    assert!(!out.success(), "{out}");
    assert!(out.stderr.contains("already uses"), "{out}");
    assert_eq!(read(&limit)?, "41943040");
    let out = rt.rcrun(&["update", "--cpu-period", "0", &id])?;
    assert!(out.stderr.contains("cpu.period"), "{out}");
    assert_eq!(rt.status(&id)?, "running");

    rt.delete_force(&id)?.ok()?;
    assert_nothing_left(&rt, &bundle, &id)
}

#[test]
fn ps_table_shows_only_the_containers_processes() -> Result<()> {
    if !v1_host() {
        return Ok(());
    }
    let mut bundle = Bundle::new()?;
    bundle.sh("sleep 1001 & sleep 1002 & wait");
    let rt = Runtime::new()?;
    let id = unique_id("ps");
    rt.start_detached(&bundle, &id)?;
    wait_for("both sleepers", WAIT_TIMEOUT, || {
        let out = rt.rcrun(&["ps", &id])?.ok()?;
        Ok(out.stdout.contains("sleep 1001") && out.stdout.contains("sleep 1002"))
    })?;
    let out = rt.rcrun(&["ps", &id, "-o", "pid,args"])?.ok()?;
    let mut lines = out.stdout.lines();
    assert!(lines.next().is_some_and(|h| h.contains("PID")), "{out}");
    assert_eq!(lines.count(), 3, "sh and two sleeps: {out}");

    let json = rt.rcrun(&["ps", "--format", "json", &id])?.ok()?;
    let pids: Vec<i32> = serde_json::from_str(&json.stdout).context("ps json")?;
    assert_eq!(pids.len(), 3, "{json}");
    rt.rcrun(&["kill", "--all", &id, "KILL"])?.ok()?;
    wait_for("every process to die", WAIT_TIMEOUT, || {
        Ok(pids.iter().all(|p| !pid_alive(*p)))
    })?;
    rt.delete_force(&id)?.ok()?;
    assert_nothing_left(&rt, &bundle, &id)
}

#[test]
fn blkio_weight_when_the_kernel_has_it() -> Result<()> {
    if !v1_host() {
        return Ok(());
    }
    let mut bundle = Bundle::new()?;
    bundle
        .set("/linux/resources/blockIO", json!({"weight": 300}))
        .args(&["sleep", "60"]);
    let rt = Runtime::new()?;
    let id = unique_id("blkio");
    let out = rt.create(&bundle, &id)?;
    if out.success() {
        let pid = rt.pid(&id)?;
        let weight = ["blkio.weight", "blkio.bfq.weight"]
            .iter()
            .map(|f| cg_file(pid, "blkio", f))
            .collect::<Result<Vec<_>>>()?
            .into_iter()
            .find(|f| f.exists())
            .context("create succeeded but the cgroup has no weight file")?;
        assert!(read(&weight)?.contains("300"), "{}", weight.display());
        rt.delete_force(&id)?.ok()?;
    } else {
        // The kernel lacks both weight files: refused by name, never silently ignored.
        eprintln!("skipped the weight check: this kernel has no blkio.weight or blkio.bfq.weight");
        assert!(out.stderr.contains("blkio.weight"), "{out}");
    }
    assert_nothing_left(&rt, &bundle, &id)
}

#[test]
fn bad_resources_are_refused_and_leave_nothing() -> Result<()> {
    if !v1_host() {
        return Ok(());
    }
    for (what, resources, expect) in [
        (
            "zero period",
            json!({"cpu": {"period": 0, "quota": 1000}}),
            "cpu.period",
        ),
        (
            "negative period",
            json!({"cpu": {"period": -100000}}),
            "period",
        ),
        ("negative quota", json!({"cpu": {"quota": -5}}), "cpu.quota"),
        (
            "unified key on v1",
            json!({"unified": {"memory.high": "1M"}}),
            "unified",
        ),
        (
            "nonexistent device",
            json!({"blockIO": {"throttleReadBpsDevice": [{"major": 259, "minor": 4095, "rate": 1000}]}}),
            "no such device",
        ),
        (
            "swap below limit",
            json!({"memory": {"limit": 33554432, "swap": 1048576}}),
            "memory.swap",
        ),
        ("bad cpu list", json!({"cpu": {"cpus": "0-x"}}), "cpu.cpus"),
    ] {
        let mut bundle = Bundle::new()?;
        bundle.set("/linux/resources", resources).args(&["true"]);
        let rt = Runtime::new()?;
        let id = unique_id("bad");
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
