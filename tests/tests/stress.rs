//! Stress without leaks: many container lifecycles through rcrun, many pods through rcri, then
//! a check that nothing is left: state dirs, mounts, cgroups, processes, fds (ours and rcri's),
//! netns pins, monitors, and that rcri's memory returned near its start.
//!
//! The normal test run uses the full counts (about 15 s here); `hack/stress.sh` runs the
//! same tests on their own with timings, and the counts can be changed through the environment:
//! - `STRESS_LIFECYCLES` (default 200) create/start/kill/delete lifecycles, `STRESS_PARALLEL`
//!   (default 8) at a time;
//! - `STRESS_PODS` (default 50) pods with 2 containers each, `STRESS_POD_PARALLEL` (default 4)
//!   at a time.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use e2e::cri::{cni_available, container_config, pod_config, v1 as cri, Rcri};
use e2e::*;

/// The two tests measure this process's fds and children: they must not overlap.
static SERIAL: Mutex<()> = Mutex::new(());

fn env_count(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|&n| n > 0)
        .unwrap_or(default)
}

fn rcrun_ok(root: &Path, args: &[&str]) -> Result<Output> {
    run_command(
        Command::new(rcrun_bin()).arg("--root").arg(root).args(args),
        COMMAND_TIMEOUT,
    )?
    .ok()
}

fn status_of(root: &Path, id: &str) -> Result<String> {
    let out = rcrun_ok(root, &["state", id])?;
    let state: Value = serde_json::from_str(&out.stdout)
        .with_context(|| format!("state of {id} is not JSON: {out}"))?;
    Ok(state["status"].as_str().unwrap_or_default().to_string())
}

/// One create/start/kill/delete lifecycle of container `id` from `bundle`.
fn lifecycle(root: &Path, bundle: &Path, id: &str) -> Result<()> {
    let bundle = bundle.to_string_lossy();
    rcrun_ok(root, &["create", "--bundle", &bundle, id])?;
    rcrun_ok(root, &["start", id])?;
    anyhow::ensure!(status_of(root, id)? == "running", "{id} is not running");
    rcrun_ok(root, &["kill", id, "KILL"])?;
    wait_for(&format!("{id} to stop"), WAIT_TIMEOUT, || {
        Ok(status_of(root, id)? == "stopped")
    })?;
    rcrun_ok(root, &["delete", id])?;
    Ok(())
}

/// Everything found left behind, as readable lines (empty: nothing).
#[derive(Default)]
struct Leaks(Vec<String>);

impl Leaks {
    fn add(&mut self, what: &str, items: impl IntoIterator<Item = impl std::fmt::Debug>) {
        let items: Vec<String> = items.into_iter().map(|i| format!("{i:?}")).collect();
        if !items.is_empty() {
            self.0.push(format!("{what}: {}", items.join(", ")));
        }
    }

    fn check(self, report: &str) -> Result<()> {
        if self.0.is_empty() {
            eprintln!("stress: {report}: no leak");
            Ok(())
        } else {
            bail!("{report}: left behind:\n  {}", self.0.join("\n  "))
        }
    }
}

#[test]
fn rcrun_lifecycles_in_parallel_leave_nothing() -> Result<()> {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let total = env_count("STRESS_LIFECYCLES", 200);
    let parallel = env_count("STRESS_PARALLEL", 8).min(total);
    // The Runtime owns the --root and deletes (--force) every id tracked below on drop, also
    // when the test fails half-way.
    let rt = Runtime::new()?;
    let prefix = unique_id("stress");
    let mut bundles = Vec::new();
    for _ in 0..parallel {
        let mut bundle = Bundle::new()?;
        bundle.args(&["sleep", "1000"]);
        bundle.write()?;
        bundles.push(bundle);
    }
    let ids: Vec<String> = (0..total).map(|n| format!("{prefix}-{n}")).collect();
    for id in &ids {
        rt.track(id);
    }
    let fds_before = open_fd_count("self")?;
    let children_before = children_of(std::process::id() as i32);

    let started = Instant::now();
    let next = AtomicUsize::new(0);
    let errors: Mutex<Vec<String>> = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for bundle in &bundles {
            let (next, errors, ids, root) = (&next, &errors, &ids, rt.root());
            s.spawn(move || loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                let Some(id) = ids.get(n) else { break };
                if let Err(e) = lifecycle(root, bundle.path(), id) {
                    errors
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push(format!("{id}: {e:#}"));
                }
            });
        }
    });
    let elapsed = started.elapsed();
    eprintln!(
        "stress: {total} rcrun lifecycles, {parallel} in parallel: {elapsed:.1?} ({:.0} ms each, \
         {:.1}/s)",
        elapsed.as_millis() as f64 * parallel as f64 / total as f64,
        total as f64 / elapsed.as_secs_f64()
    );
    let errors = errors.into_inner().unwrap_or_else(|e| e.into_inner());
    if !errors.is_empty() {
        bail!(
            "{} of {total} lifecycles failed:\n{}",
            errors.len(),
            errors.join("\n")
        );
    }

    let mut leaks = Leaks::default();
    leaks.add(
        "state dirs",
        fs::read_dir(rt.root())?.flatten().map(|e| e.path()),
    );
    leaks.add("mounts under --root", mounts_under(rt.root()));
    for bundle in &bundles {
        leaks.add("mounts under a bundle", mounts_under(bundle.path()));
        leaks.add(
            "processes in a bundle",
            processes_mentioning(&bundle.path().to_string_lossy()),
        );
    }
    leaks.add("cgroups", own_cgroups_named(&prefix)?);
    leaks.add(
        "processes in our cgroups",
        processes_in_cgroups_named(&prefix),
    );
    leaks.add("processes named by our ids", processes_mentioning(&prefix));
    let children: Vec<i32> = children_of(std::process::id() as i32)
        .into_iter()
        .filter(|c| !children_before.contains(c))
        .collect();
    leaks.add("children", children);
    let fds_after = open_fd_count("self")?;
    eprintln!("stress: test process fds: {fds_before} before, {fds_after} after");
    if fds_after > fds_before {
        leaks.add(
            "fds of the test process",
            [format!("{fds_before} before, {fds_after} after")],
        );
    }
    leaks.check(&format!("{total} rcrun lifecycles"))
}

/// What the rcri test checks for one pod: ids whose cgroups (`rcri-<id>`) must go.
struct PodRun {
    pod: String,
    containers: Vec<String>,
}

fn pod_lifecycle(rcri: &Rcri, name: &str, host_network: bool) -> Result<PodRun> {
    let config = pod_config(name, host_network, &rcri.log_dir());
    let pod = rcri
        .run_pod(&config)
        .map_err(|s| anyhow!("RunPodSandbox {name}: {s:?}"))?;
    let mut run = PodRun {
        pod: pod.clone(),
        containers: Vec::new(),
    };
    for c in ["a", "b"] {
        // `wait` returns at once on the trapped TERM, so stop is graceful and quick.
        let config = container_config(
            &format!("{name}-{c}"),
            &["sh", "-c", "trap 'exit 0' TERM; sleep 1000 & wait"],
        );
        let id = rcri
            .create_container(
                &pod,
                &config,
                &pod_config(name, host_network, &rcri.log_dir()),
            )
            .map_err(|s| anyhow!("CreateContainer {name}-{c}: {s:?}"))?;
        run.containers.push(id.clone());
        rcri.start_container(&id)
            .map_err(|s| anyhow!("StartContainer {name}-{c}: {s:?}"))?;
    }
    for id in &run.containers {
        let out = rcri
            .exec_sync(id, &["echo", "hello"], 10)
            .map_err(|s| anyhow!("ExecSync in {id}: {s:?}"))?;
        anyhow::ensure!(
            out.exit_code == 0 && out.stdout == b"hello\n",
            "ExecSync in {id}: {out:?}"
        );
    }
    for id in &run.containers {
        rcri.stop_container(id, 5)
            .map_err(|s| anyhow!("StopContainer {id}: {s:?}"))?;
        let status = rcri
            .container_status(id)
            .map_err(|s| anyhow!("ContainerStatus {id}: {s:?}"))?;
        anyhow::ensure!(
            status.state == cri::ContainerState::ContainerExited as i32,
            "{id} not exited after StopContainer: {status:?}"
        );
        rcri.remove_container(id)
            .map_err(|s| anyhow!("RemoveContainer {id}: {s:?}"))?;
    }
    rcri.stop_pod(&pod)
        .map_err(|s| anyhow!("StopPodSandbox {pod}: {s:?}"))?;
    rcri.remove_pod(&pod)
        .map_err(|s| anyhow!("RemovePodSandbox {pod}: {s:?}"))?;
    Ok(run)
}

/// Entries of a directory (none if it does not exist).
fn entries(dir: &Path) -> Vec<PathBuf> {
    fs::read_dir(dir)
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default()
}

#[test]
fn rcri_pods_in_parallel_leave_nothing() -> Result<()> {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let total = env_count("STRESS_PODS", 50);
    let parallel = env_count("STRESS_POD_PARALLEL", 4).min(total);
    let host_network = !cni_available();
    let rcri = Rcri::start()?;
    let pid = rcri.pid().ok_or_else(|| anyhow!("rcri has no pid"))?;
    let fds_before = open_fd_count(&pid.to_string())?;
    let rss_before = vm_rss_kb(pid)?;

    let started = Instant::now();
    let next = AtomicUsize::new(0);
    let errors: Mutex<Vec<String>> = Mutex::new(Vec::new());
    let runs: Mutex<Vec<PodRun>> = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for _ in 0..parallel {
            let (next, errors, runs, rcri) = (&next, &errors, &runs, &rcri);
            s.spawn(move || loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= total {
                    break;
                }
                match pod_lifecycle(rcri, &format!("stress{n}"), host_network) {
                    Ok(run) => runs.lock().unwrap_or_else(|e| e.into_inner()).push(run),
                    Err(e) => errors
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push(format!("{e:#}")),
                }
            });
        }
    });
    let elapsed = started.elapsed();
    eprintln!(
        "stress: {total} pods x 2 containers through rcri ({}), {parallel} in parallel: \
         {elapsed:.1?} ({:.0} ms per pod)",
        if host_network {
            "host network"
        } else {
            "CNI bridge"
        },
        elapsed.as_millis() as f64 * parallel as f64 / total as f64,
    );
    let errors = errors.into_inner().unwrap_or_else(|e| e.into_inner());
    if !errors.is_empty() {
        bail!(
            "{} of {total} pods failed:\n{}\n--- rcri log (tail) ---\n{}",
            errors.len(),
            errors.join("\n"),
            tail(&rcri.server_log(), 40)
        );
    }
    let runs = runs.into_inner().unwrap_or_else(|e| e.into_inner());

    // Monitors are reaped asynchronously after the container exits: let them finish.
    let state = rcri.state();
    let state_text = state.to_string_lossy().into_owned();
    let others = |pid: i32| move |p: &i32| *p != pid;
    let _ = wait_for("monitors to exit", Duration::from_secs(10), || {
        Ok(processes_mentioning(&state_text)
            .into_iter()
            .all(|p| p == pid))
    });
    let mut leaks = Leaks::default();
    let fds_after = open_fd_count(&pid.to_string())?;
    let rss_after = vm_rss_kb(pid)?;
    eprintln!(
        "stress: rcri fds: {fds_before} at start, {fds_after} after; VmRSS: {rss_before} kB at \
         start, {rss_after} kB after ({:+} kB)",
        rss_after as i64 - rss_before as i64
    );
    // A few fds may be opened once and kept (e.g. the streaming server's listener, lazily made).
    if fds_after > fds_before + 8 {
        leaks.add(
            "rcri fds",
            [format!(
                "{fds_before} at start, {fds_after} after: {:?}",
                entries(Path::new(&format!("/proc/{pid}/fd")))
                    .iter()
                    .filter_map(|f| fs::read_link(f).ok())
                    .collect::<Vec<_>>()
            )],
        );
    }
    if rss_after > rss_before + 20 * 1024 {
        leaks.add(
            "rcri memory",
            [format!(
                "VmRSS {rss_before} kB at start, {rss_after} kB after"
            )],
        );
    }
    // The netns dir itself stays a (shared) mount point, like /run/netns of `ip netns`.
    let netns_dir = state.join("netns");
    leaks.add("netns pins", entries(&netns_dir));
    leaks.add(
        "mounts",
        mounts_under(rcri.dir.path())
            .into_iter()
            .filter(|m| *m != netns_dir),
    );
    leaks.add(
        "monitors or other processes of our state dir",
        processes_mentioning(&state_text)
            .into_iter()
            .filter(others(pid)),
    );
    leaks.add("runtime state dirs", entries(&rcri.runtime_root()));
    leaks.add("container dirs", entries(&state.join("containers")));
    leaks.add("sandbox dirs", entries(&state.join("sandboxes")));
    leaks.add(
        "metadata",
        ["containers", "sandboxes"]
            .iter()
            .flat_map(|kind| entries(&rcri.root().join("metadata").join(kind))),
    );
    let mut cgroups = Vec::new();
    let mut procs = Vec::new();
    for run in &runs {
        for id in std::iter::once(&run.pod).chain(&run.containers) {
            cgroups.extend(own_cgroups_named(&format!("rcri-{id}"))?);
            procs.extend(processes_in_cgroups_named(&format!("rcri-{id}")));
        }
    }
    leaks.add("cgroups", cgroups);
    leaks.add("processes in the pods' cgroups", procs);
    leaks.add("children of rcri", children_of(pid));
    leaks.check(&format!("{total} pods through rcri"))
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
