//! Faults: what is left after a crash or a full disk, and that the runtime and rcri recover.
//! - `kill -9` of rcrun in the middle of create, then `delete --force`;
//! - `kill -9` of a container's monitor under rcri;
//! - `kill -9` of rcri while pods are being made, then a restart;
//! - a full disk under rcrun's --root, and under rcri's state dir.
//!
//! (A container that ignores SIGTERM, StopContainer escalating to SIGKILL with exit 137, is
//! tests/tests/cri_pod.rs `stop_container_escalates_to_sigkill_and_exec_sync_works`.)

use std::collections::HashSet;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use e2e::cri::{cni_available, container_config, pod_config, v1 as cri, Rcri};
use e2e::*;
use hyper_util::rt::TokioIo;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tonic::transport::{Channel, Endpoint, Uri};

/// The last lines of rcri's log that are not gRPC frame chatter.
fn tail(log: &str) -> String {
    let lines: Vec<&str> = log.lines().filter(|l| !l.contains("h2::")).collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

fn entries(dir: &Path) -> Vec<PathBuf> {
    fs::read_dir(dir)
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default()
}

fn names(dir: &Path) -> HashSet<String> {
    entries(dir)
        .iter()
        .filter_map(|p| Some(p.file_name()?.to_string_lossy().into_owned()))
        .collect()
}

/// Fails listing whatever of container `id` (cgroupsPath = its id) is left anywhere.
fn assert_container_gone(root: &Path, bundle: &Path, id: &str) -> Result<()> {
    let mut left = Vec::new();
    if root.join(id).exists() {
        left.push(format!("state dir {}", root.join(id).display()));
    }
    for cg in own_cgroups_named(id)? {
        left.push(format!("cgroup {}", cg.display()));
    }
    for pid in processes_in_cgroups_named(id) {
        left.push(format!("process {pid} in its cgroup"));
    }
    for pid in processes_mentioning(&bundle.to_string_lossy()) {
        left.push(format!("process {pid} in its bundle"));
    }
    for pid in processes_mentioning(id) {
        left.push(format!("process {pid} naming it"));
    }
    // The root itself may be a mount point (the full-disk test's tmpfs).
    for m in mounts_under(bundle)
        .into_iter()
        .chain(mounts_under(root).into_iter().filter(|m| m != root))
    {
        left.push(format!("mount {}", m.display()));
    }
    if left.is_empty() {
        Ok(())
    } else {
        bail!("left of {id}: {}", left.join(", "))
    }
}

/// Removes (rmdir: only if empty) the cgroups named `.0` under our own cgroup on drop: the
/// Runtime guard removes those of bundles it created itself, not of a create run by hand.
struct CgroupCleanup(String);

impl Drop for CgroupCleanup {
    fn drop(&mut self) {
        for dir in own_cgroups_named(&self.0).unwrap_or_default() {
            if dir.file_name().is_some_and(|n| *n == *self.0) {
                let _ = fs::remove_dir(&dir);
            }
        }
    }
}

#[test]
fn kill_9_of_rcrun_during_create_then_delete_force_cleans_everything() -> Result<()> {
    let rt = Runtime::new()?;
    let marks = temp_dir("faults")?;
    let hook_pid_file = marks.path().join("hook.pid");
    let mut bundle = Bundle::new()?;
    bundle.args(&["sleep", "1000"]).set(
        "/hooks/createRuntime",
        json!([{
            "path": "/bin/sh",
            "args": ["sh", "-c", format!("echo $$ > {}; exec sleep 30", hook_pid_file.display())],
        }]),
    );
    bundle.write()?;
    let id = unique_id("fault-create");
    rt.track(&id);
    let _cgroups = CgroupCleanup(id.clone());
    let mut create = rt
        .command(&["create", "--bundle"])
        .arg(bundle.path())
        .arg(&id)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("failed to run rcrun create")?;
    let mut hook_pid = 0;
    let waited = wait_for("the createRuntime hook to run", WAIT_TIMEOUT, || {
        hook_pid = fs::read_to_string(&hook_pid_file)
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0);
        Ok(hook_pid > 0)
    });
    kill(Pid::from_raw(create.id() as i32), Signal::SIGKILL)?;
    let status = create.wait()?;
    waited?;
    // What create had made when it died: the half-made container, for the record.
    let made_cgroups = own_cgroups_named(&id)?;
    let made_procs = processes_in_cgroups_named(&id);
    eprintln!(
        "faults: rcrun create {status} during the hook; left: state dir {}, cgroups {made_cgroups:?}, \
         processes {made_procs:?}",
        rt.root().join(&id).exists()
    );

    let out = rt.delete_force(&id)?;
    eprintln!("faults: {out}");
    // The hook is rcrun's child, not the container's: it outlives rcrun (runc's do too) and
    // ends by itself; it is not the container's to clean up.
    if pid_alive(hook_pid) {
        let _ = kill(Pid::from_raw(hook_pid), Signal::SIGKILL);
    }
    let gone = assert_container_gone(rt.root(), bundle.path(), &id);
    if !out.success() && gone.is_err() {
        bail!("delete --force failed and left things: {out}\n{gone:?}");
    }
    gone?;
    // The id is free again: a new container of that name runs.
    bundle.remove("/hooks");
    rt.start_detached(&bundle, &id)?;
    rt.delete_force(&id)?.ok()?;
    assert_container_gone(rt.root(), bundle.path(), &id)
}

fn container_is(status: &cri::ContainerStatus, state: cri::ContainerState) -> bool {
    status.state == state as i32
}

/// A gRPC call that must not hang: fails after `limit`.
fn within<T>(
    rcri: &Rcri,
    limit: Duration,
    what: &str,
    call: impl std::future::Future<Output = Result<T, tonic::Status>>,
) -> Result<T> {
    // The timer needs the runtime's context: made inside the future, not before.
    match rcri.block_on(async { tokio::time::timeout(limit, call).await }) {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(status)) => Err(anyhow!(
            "{what}: {status:?}\n--- rcri log ---\n{}",
            tail(&rcri.server_log())
        )),
        Err(_) => Err(anyhow!(
            "{what} hung for more than {limit:?}\n--- rcri log ---\n{}",
            tail(&rcri.server_log())
        )),
    }
}

/// RunPodSandbox's error, which it must return (`when` says in what circumstances).
fn run_pod_fails(rcri: &Rcri, pod: &cri::PodSandboxConfig, when: &str) -> Result<tonic::Status> {
    match rcri.run_pod(pod) {
        Ok(id) => bail!("RunPodSandbox succeeded {when}: {id}"),
        Err(status) => {
            eprintln!("faults: RunPodSandbox {when}: {status:?}");
            Ok(status)
        }
    }
}

/// After every pod was removed: nothing of any is left under rcri's dirs or anywhere else.
fn assert_rcri_empty(rcri: &Rcri, ids: &[String]) -> Result<()> {
    let state = rcri.state();
    let netns_dir = state.join("netns");
    let mut left = Vec::new();
    for (what, found) in [
        ("netns pins", entries(&netns_dir)),
        (
            "mounts",
            mounts_under(rcri.dir.path())
                .into_iter()
                // The state dir itself is a mount only where a test made it one (a small tmpfs).
                .filter(|m| *m != netns_dir && *m != state)
                .collect(),
        ),
        ("runtime state", entries(&rcri.runtime_root())),
        ("container dirs", entries(&state.join("containers"))),
        ("sandbox dirs", entries(&state.join("sandboxes"))),
        (
            "sandbox records",
            entries(&rcri.root().join("metadata/sandboxes")),
        ),
        (
            "container records",
            entries(&rcri.root().join("metadata/containers")),
        ),
    ] {
        if !found.is_empty() {
            left.push(format!("{what}: {found:?}"));
        }
    }
    let rcri_pid = rcri.pid().unwrap_or(0);
    let procs: Vec<i32> = processes_mentioning(&state.to_string_lossy())
        .into_iter()
        .filter(|&p| p != rcri_pid)
        .collect();
    if !procs.is_empty() {
        left.push(format!("processes of the state dir (monitors): {procs:?}"));
    }
    for id in ids {
        let cgroups = own_cgroups_named(&format!("rcri-{id}"))?;
        let procs = processes_in_cgroups_named(&format!("rcri-{id}"));
        if !cgroups.is_empty() || !procs.is_empty() {
            left.push(format!("of {id}: cgroups {cgroups:?}, processes {procs:?}"));
        }
    }
    if left.is_empty() {
        Ok(())
    } else {
        bail!("rcri left:\n  {}", left.join("\n  "))
    }
}

#[test]
fn kill_9_of_a_monitor_reports_the_container_exited_and_nothing_hangs() -> Result<()> {
    let rcri = Rcri::start()?;
    let pod = pod_config("orphan", true, &rcri.log_dir());
    let pod_id = rcri
        .run_pod(&pod)
        .map_err(|s| anyhow!("RunPodSandbox: {s:?}\n{}", rcri.server_log()))?;
    let id = rcri.run_container(
        &pod_id,
        &container_config("orphan", &["sleep", "1000"]),
        &pod,
    )?;
    let bundle = rcri.state().join("containers").join(&id);
    let monitor: i32 = fs::read_to_string(bundle.join("monitor.pid"))
        .context("read the monitor pid file")?
        .trim()
        .parse()?;
    let cmdline =
        String::from_utf8_lossy(&fs::read(format!("/proc/{monitor}/cmdline"))?).replace('\0', " ");
    assert!(
        cmdline.contains("monitor") && cmdline.contains(&*bundle.to_string_lossy()),
        "pid {monitor} is not the monitor of {id}: {cmdline}"
    );
    let state = run_command(
        Command::new(rcrun_bin())
            .arg("--root")
            .arg(rcri.runtime_root())
            .args(["state", &id]),
        COMMAND_TIMEOUT,
    )?
    .ok()?;
    let init: Value = serde_json::from_str(&state.stdout)?;
    let init = init["pid"]
        .as_i64()
        .ok_or_else(|| anyhow!("no pid in {}", state.stdout))? as i32;

    kill(Pid::from_raw(monitor), Signal::SIGKILL)?;
    let killed = Instant::now();
    let mut status = None;
    let reported = wait_for(
        "ContainerStatus to say EXITED",
        Duration::from_secs(15),
        || {
            let s = rcri
                .container_status(&id)
                .map_err(|s| anyhow!("ContainerStatus: {s:?}"))?;
            let exited = container_is(&s, cri::ContainerState::ContainerExited);
            status = Some(s);
            Ok(exited)
        },
    )
    .map(|()| killed.elapsed());
    // Whatever the status said, stop and remove must work and clean up: checked first, the
    // status verdict comes at the end.
    let mut rs = rcri.rs();
    eprintln!(
        "faults: container init {init} {} after its monitor was killed",
        if pid_alive(init) {
            "still runs"
        } else {
            "is gone"
        }
    );
    let started = Instant::now();
    let stopped = within(
        &rcri,
        Duration::from_secs(15),
        "StopContainer",
        rs.stop_container(cri::StopContainerRequest {
            container_id: id.clone(),
            timeout: 2,
        }),
    );
    eprintln!(
        "faults: StopContainer after the monitor died: {:.1?}: {}",
        started.elapsed(),
        if stopped.is_ok() { "ok" } else { "failed" }
    );
    let started = Instant::now();
    let removed = within(
        &rcri,
        Duration::from_secs(15),
        "RemoveContainer",
        rs.remove_container(cri::RemoveContainerRequest {
            container_id: id.clone(),
        }),
    );
    eprintln!(
        "faults: RemoveContainer after the monitor died: {:.1?}: {}",
        started.elapsed(),
        if removed.is_ok() { "ok" } else { "failed" }
    );
    stopped?;
    removed?;
    // The container's own processes went with it.
    wait_for("the container init to die", Duration::from_secs(5), || {
        Ok(!pid_alive(init))
    })?;
    within(
        &rcri,
        Duration::from_secs(15),
        "StopPodSandbox",
        rs.stop_pod_sandbox(cri::StopPodSandboxRequest {
            pod_sandbox_id: pod_id.clone(),
        }),
    )?;
    within(
        &rcri,
        Duration::from_secs(15),
        "RemovePodSandbox",
        rs.remove_pod_sandbox(cri::RemovePodSandboxRequest {
            pod_sandbox_id: pod_id.clone(),
        }),
    )?;
    assert_rcri_empty(&rcri, &[pod_id, id])?;
    let after = reported.with_context(|| format!("last status: {status:?}"))?;
    let status = status.ok_or_else(|| anyhow!("no status"))?;
    eprintln!(
        "faults: monitor killed; EXITED after {after:.1?}: exit code {}, reason {:?}, message {:?}",
        status.exit_code, status.reason, status.message
    );
    assert!(
        !status.reason.is_empty() || !status.message.is_empty(),
        "no reason or message: {status:?}"
    );
    Ok(())
}

/// A client of its own (runtime and channel) for a thread, so that the test's `Rcri` stays free
/// for kill9 and spawn.
fn own_client(socket: &Path) -> Result<(tokio::runtime::Runtime, RuntimeServiceClient<Channel>)> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let path = socket.to_path_buf();
    let channel = rt.block_on(async move {
        Endpoint::try_from("http://[::]:50051")?
            .connect_with_connector(tower::service_fn(move |_: Uri| {
                let path = path.clone();
                async move {
                    Ok::<_, std::io::Error>(TokioIo::new(
                        tokio::net::UnixStream::connect(path).await?,
                    ))
                }
            }))
            .await
    })?;
    Ok((rt, RuntimeServiceClient::new(channel)))
}

#[test]
fn kill_9_of_rcri_under_load_loses_no_pod_and_leaks_nothing() -> Result<()> {
    let mut rcri = Rcri::start()?;
    let host_network = !cni_available();
    let created: Arc<Mutex<Vec<String>>> = Arc::default();
    let mut threads = Vec::new();
    for t in 0..3 {
        let (socket, log_dir, created) = (rcri.socket.clone(), rcri.log_dir(), created.clone());
        threads.push(std::thread::spawn(move || -> Result<String> {
            let (rt, mut rs) = own_client(&socket)?;
            for i in 0..6 {
                let config = pod_config(&format!("load{t}x{i}"), host_network, &log_dir);
                let req = cri::RunPodSandboxRequest {
                    config: Some(config),
                    runtime_handler: String::new(),
                };
                match rt.block_on(rs.run_pod_sandbox(req)) {
                    Ok(r) => created
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push(r.into_inner().pod_sandbox_id),
                    Err(s) => return Ok(format!("thread {t} stopped at pod {i}: {s:?}")),
                }
            }
            Ok(format!("thread {t} made all its pods before the kill"))
        }));
    }
    // Kill once some pods are made and others are on their way.
    let _ = wait_for("a few pods", Duration::from_secs(20), || {
        Ok(created.lock().unwrap_or_else(|e| e.into_inner()).len() >= 4)
    });
    rcri.kill9()?;
    for t in threads {
        let said = t
            .join()
            .map_err(|_| anyhow!("a client thread panicked"))??;
        eprintln!("faults: {said}");
    }
    let created = created.lock().unwrap_or_else(|e| e.into_inner()).clone();
    eprintln!(
        "faults: rcri killed after {} pods were reported made",
        created.len()
    );
    rcri.spawn()?;

    let pods = rcri
        .list_pods(None)
        .map_err(|s| anyhow!("ListPodSandbox: {s:?}"))?;
    let listed: HashSet<String> = pods.iter().map(|p| p.id.clone()).collect();
    eprintln!(
        "faults: after the restart {} pods listed, {} ready",
        pods.len(),
        pods.iter()
            .filter(|p| p.state == cri::PodSandboxState::SandboxReady as i32)
            .count()
    );
    for id in &created {
        let pod = pods
            .iter()
            .find(|p| p.id == *id)
            .ok_or_else(|| anyhow!("pod {id} was reported made and is lost after the restart"))?;
        assert_eq!(
            pod.state,
            cri::PodSandboxState::SandboxReady as i32,
            "pod {id} made before the kill is not Ready: {pod:?}"
        );
    }
    // Nothing half-made of the pods in flight: every pin, dir, record and runtime container
    // belongs to a listed pod.
    let state = rcri.state();
    let netns_dir = state.join("netns");
    let stray = |found: HashSet<String>| -> Vec<String> {
        found
            .into_iter()
            .filter(|n| !listed.contains(n.trim_end_matches(".json")))
            .collect()
    };
    let mut left = Vec::new();
    for (what, found) in [
        ("netns pins", names(&netns_dir)),
        ("sandbox dirs", names(&state.join("sandboxes"))),
        ("runtime state", names(&rcri.runtime_root())),
        (
            "sandbox records",
            names(&rcri.root().join("metadata/sandboxes")),
        ),
    ] {
        let stray = stray(found);
        if !stray.is_empty() {
            left.push(format!("{what} of no listed pod: {stray:?}"));
        }
    }
    let stray_mounts: Vec<PathBuf> = mounts_under(rcri.dir.path())
        .into_iter()
        .filter(|m| {
            // A listed pod's own: its netns pin, and mounts in its sandbox dir (/dev/shm).
            let of_listed = |dir: &Path| {
                m.strip_prefix(dir).ok().is_some_and(|rel| {
                    rel.components()
                        .next()
                        .is_some_and(|c| listed.contains(&*c.as_os_str().to_string_lossy()))
                })
            };
            *m != netns_dir && !of_listed(&netns_dir) && !of_listed(&state.join("sandboxes"))
        })
        .collect();
    if !stray_mounts.is_empty() {
        left.push(format!("mounts of no listed pod: {stray_mounts:?}"));
    }
    if !left.is_empty() {
        bail!(
            "half-made pods leaked after the restart:\n  {}",
            left.join("\n  ")
        );
    }

    // A re-adopted pod is fully usable.
    if let Some(pod_id) = created.first() {
        let config = pod_config("load0x0", host_network, &rcri.log_dir());
        let c = rcri.run_container(
            pod_id,
            &container_config("after", &["sleep", "1000"]),
            &config,
        )?;
        let out = rcri.exec_sync(&c, &["echo", "adopted"], 10)?;
        assert_eq!(String::from_utf8_lossy(&out.stdout), "adopted\n");
        rcri.stop_container(&c, 0)?;
        rcri.remove_container(&c)?;
    }
    for id in &listed {
        rcri.stop_pod(id)
            .map_err(|s| anyhow!("StopPodSandbox {id}: {s:?}"))?;
        rcri.remove_pod(id)
            .map_err(|s| anyhow!("RemovePodSandbox {id}: {s:?}"))?;
    }
    let all: Vec<String> = listed.iter().chain(&created).cloned().collect();
    assert_rcri_empty(&rcri, &all)
}

/// A 2 MB tmpfs as rcrun's --root, unmounted (after deleting the containers in it) on drop.
struct SmallRoot {
    dir: tempfile::TempDir,
    ids: Vec<String>,
}

impl SmallRoot {
    fn new() -> Result<SmallRoot> {
        let dir = temp_dir("fulldisk")?;
        fs::create_dir(dir.path().join("root"))?;
        nix::mount::mount(
            Some("tmpfs"),
            &dir.path().join("root"),
            Some("tmpfs"),
            nix::mount::MsFlags::empty(),
            Some("size=2m,mode=0700"),
        )
        .context("mount a tmpfs")?;
        Ok(SmallRoot {
            dir,
            ids: Vec::new(),
        })
    }

    fn root(&self) -> PathBuf {
        self.dir.path().join("root")
    }

    fn rcrun(&mut self, args: &[&str]) -> Result<Output> {
        if let Some(id) = args.last().filter(|_| args.first() == Some(&"create")) {
            self.ids.push(id.to_string());
        }
        run_command(
            Command::new(rcrun_bin())
                .arg("--root")
                .arg(self.root())
                .args(args),
            COMMAND_TIMEOUT,
        )
    }

    /// Fills the tmpfs with one file; returns its size.
    fn fill(&self) -> Result<u64> {
        let path = self.root().join("filler");
        let mut file = fs::File::create(&path)?;
        let chunk = vec![0u8; 16 * 1024];
        let mut written = 0u64;
        loop {
            match file.write(&chunk) {
                Ok(n) => written += n as u64,
                Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => return Ok(written),
                Err(e) => return Err(e).context("fill the tmpfs"),
            }
        }
    }
}

impl Drop for SmallRoot {
    fn drop(&mut self) {
        let _ = fs::remove_file(self.root().join("filler"));
        for id in &self.ids {
            let _ = run_command(
                Command::new(rcrun_bin())
                    .arg("--root")
                    .arg(self.root())
                    .args(["delete", "--force", id]),
                COMMAND_TIMEOUT,
            );
        }
        let _ = nix::mount::umount2(&self.root(), nix::mount::MntFlags::MNT_DETACH);
    }
}

#[test]
fn a_full_disk_under_the_root_fails_create_clearly_and_corrupts_nothing() -> Result<()> {
    let mut disk = SmallRoot::new()?;
    let root = disk.root();
    let mut bundle = Bundle::new()?;
    bundle.args(&["sleep", "1000"]);
    bundle.write()?;
    let path = bundle.path().to_string_lossy().into_owned();
    // One container made while there is space: it must survive the disk filling up.
    let before = unique_id("fault-disk");
    disk.rcrun(&["create", "--bundle", &path, &before])?.ok()?;
    disk.rcrun(&["start", &before])?.ok()?;
    let filled = disk.fill()?;
    eprintln!("faults: filled the --root tmpfs with {filled} bytes");

    let id = unique_id("fault-disk");
    let out = disk.rcrun(&["create", "--bundle", &path, &id])?;
    eprintln!("faults: create on a full disk: {out}");
    assert!(!out.success(), "create succeeded on a full disk: {out}");
    assert!(
        out.stderr.contains("No space left on device"),
        "the error does not say the disk is full: {out}"
    );
    assert!(!root.join(&id).exists(), "state dir of the failed create");
    let cgroups = own_cgroups_named(&id)?;
    assert!(
        cgroups.is_empty(),
        "cgroups of the failed create: {cgroups:?}"
    );
    let procs = processes_in_cgroups_named(&id);
    assert!(
        procs.is_empty(),
        "processes of the failed create: {procs:?}"
    );
    assert!(processes_mentioning(&id).is_empty());
    // The earlier container is intact and listed.
    let list = disk.rcrun(&["list", "--format", "json"])?.ok()?;
    let list: Value = serde_json::from_str(&list.stdout)
        .with_context(|| format!("list is not JSON: {}", list.stdout))?;
    let ids: Vec<&str> = list
        .as_array()
        .map(|a| a.iter().filter_map(|c| c["id"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(ids, [before.as_str()], "{list}");
    let state = disk.rcrun(&["state", &before])?.ok()?;
    assert!(state.stdout.contains("\"running\""), "{state}");

    // Space returns: create works again, with the same id.
    fs::remove_file(root.join("filler"))?;
    disk.rcrun(&["create", "--bundle", &path, &id])?.ok()?;
    disk.rcrun(&["start", &id])?.ok()?;
    let state = disk.rcrun(&["state", &id])?.ok()?;
    assert!(state.stdout.contains("\"running\""), "{state}");
    for c in [&id, &before] {
        disk.rcrun(&["kill", c, "KILL"])?.ok()?;
        wait_for(&format!("{c} to stop"), WAIT_TIMEOUT, || {
            Ok(disk.rcrun(&["state", c])?.stdout.contains("\"stopped\""))
        })?;
        disk.rcrun(&["delete", c])?.ok()?;
        assert_container_gone(&root, bundle.path(), c)?;
    }
    assert!(entries(&root).is_empty(), "{:?}", entries(&root));
    Ok(())
}

/// A full disk under rcri's state dir (bundles, pod files, the runtime's state): RunPodSandbox
/// fails saying so, undoes what it made, and works again once there is space.
#[test]
fn a_full_disk_under_rcris_state_fails_run_pod_clearly_and_recovers() -> Result<()> {
    let mut rcri = Rcri::start()?;
    rcri.terminate()?;
    let state = rcri.state();
    fs::create_dir_all(&state)?;
    nix::mount::mount(
        Some("tmpfs"),
        &state,
        Some("tmpfs"),
        nix::mount::MsFlags::empty(),
        Some("size=4m"),
    )
    .context("mount a small tmpfs on rcri's state dir")?;
    // The harness detaches every mount under its temp dir when `rcri` is dropped.
    rcri.spawn()?;
    let filler = state.join("filler");
    let mut file = fs::File::create(&filler)?;
    let chunk = vec![0u8; 64 * 1024];
    let filled = loop {
        match file.write_all(&chunk) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => break file.metadata()?.len(),
            Err(e) => return Err(e.into()),
        }
    };
    drop(file);
    eprintln!("faults: filled rcri's state tmpfs with {filled} bytes");

    let pod = pod_config("fulldisk", true, &rcri.log_dir());
    let err = run_pod_fails(&rcri, &pod, "on a full disk")?;
    assert!(
        err.message().contains("No space left on device"),
        "the error does not say the disk is full: {err:?}"
    );
    assert!(rcri.list_pods(None)?.is_empty(), "a pod is listed");
    assert_rcri_empty(&rcri, &[])?;

    fs::remove_file(&filler)?;
    let id = rcri.run_pod(&pod).map_err(|s| {
        anyhow!(
            "RunPodSandbox after freeing space: {s:?}\n{}",
            tail(&rcri.server_log())
        )
    })?;
    let c = rcri.run_container(&id, &container_config("after", &["sleep", "300"]), &pod)?;
    let out = rcri.exec_sync(&c, &["echo", "ok"], 10)?;
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "ok");
    rcri.stop_pod(&id)?;
    rcri.remove_container(&c)?;
    rcri.remove_pod(&id)?;
    assert_rcri_empty(&rcri, &[id, c])?;
    Ok(())
}

/// RunPodSandbox makes the pod's network (CNI ADD) and its infra container side by side. When
/// the network fails, the infra made meanwhile goes too: no runtime state, monitor, cgroup,
/// netns pin or record is left; and the next pod, with a working network, comes up.
#[test]
fn a_failing_cni_add_undoes_the_infra_made_beside_it() -> Result<()> {
    if !cni_available() {
        eprintln!("faults: CNI plugins not installed, skipping");
        return Ok(());
    }
    let rcri = Rcri::start()?;
    let conflist = rcri.dir.path().join("cni/10-rcri.conflist");
    let good = fs::read_to_string(&conflist)?;
    // host-local refuses a range that is not a subnet, after the bridge plugin made its veth.
    let bad = good.replace(&rcri.subnet, "10.88.300.0/24");
    assert_ne!(good, bad, "the conflist names the subnet {}", rcri.subnet);
    fs::write(&conflist, &bad)?;

    let pod = pod_config("cnifail", false, &rcri.log_dir());
    let err = run_pod_fails(&rcri, &pod, "with a failing CNI ADD")?;
    assert!(
        err.message().contains("CNI") || err.message().contains("cni"),
        "the error does not name the network setup: {err:?}"
    );
    let log = rcri.server_log();
    let id = log
        .lines()
        .filter(|l| l.contains("RunPodSandbox failed, undoing"))
        .find_map(|l| l.split("sandbox=").nth(1))
        .and_then(|rest| rest.split_whitespace().next())
        .map(|s| s.trim_matches('"').to_string())
        .ok_or_else(|| anyhow!("no undo logged:\n{}", tail(&log)))?;
    assert!(rcri.list_pods(None)?.is_empty(), "a pod is listed");
    assert_rcri_empty(&rcri, std::slice::from_ref(&id))?;

    fs::write(&conflist, &good)?;
    // The bridge plugin leaves its half-configured bridge on the node after the failed ADD,
    // and chokes on it later ("could not set bridge's mac"): gone, as an operator would do.
    host("ip", &["-n", rcri.netns.name(), "link", "del", "rcri0"])?;
    let id = rcri.run_pod(&pod).map_err(|s| {
        anyhow!(
            "RunPodSandbox with the network fixed: {s:?}\n{}",
            tail(&rcri.server_log())
        )
    })?;
    let status = rcri
        .pod_status(&id)?
        .status
        .ok_or_else(|| anyhow!("no status for pod {id}"))?;
    let ip = status
        .network
        .as_ref()
        .map(|n| n.ip.clone())
        .unwrap_or_default();
    assert!(!ip.is_empty(), "the pod got no IP: {status:?}");
    rcri.stop_pod(&id)?;
    rcri.remove_pod(&id)?;
    assert_rcri_empty(&rcri, &[id])?;
    Ok(())
}
