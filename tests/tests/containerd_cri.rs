//! rcrun under containerd's CRI plugin: the path a kubelet takes. Debian's containerd (1.6) runs
//! pods with the runtime handler `rcrun` of `contrib/containerd/config.toml` (the runc v2 shim
//! with rcrun as its BinaryName), driven by `rcrictl` over containerd's socket as a kubelet or
//! crictl would drive it.
//!
//! containerd ([`e2e::containerd::Containerd`]) runs in a network namespace the test creates
//! (its CNI bridge and the pods' IPs exist only there) and in a private mount namespace with a
//! tmpfs over /run, where the shim's sockets, the pods' network namespaces and rcrun's state
//! (`--root /run/containerd/runc/k8s.io`) live. Its root, state, socket, CNI config and pod logs are in a temp dir. No image comes from
//! the network: the busybox image of hack/mkimage.sh and, as the pause (sandbox) image, that
//! script's `stopsignal` test image (a shell that sleeps forever) are imported with
//! `ctr -n k8s.io images import`. Pods get a cgroup parent of the test's own, which the guard
//! checks and removes.
//!
//! On drop: pods are removed through the CRI, containerd is stopped by pid, shims and container
//! processes still alive (found by our socket path and our cgroup parent) are killed, mounts
//! under the temp dir are detached, the cgroups removed, the network namespace deleted and the
//! temp dir removed; the mount namespace dies with its last process.
//!
//! Skips (with a message) only when containerd, ctr or the runc v2 shim are not installed
//! (hack/setup.sh installs them).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use e2e::containerd::{available, config_toml, Containerd, Setup, CTR_TIMEOUT, IMAGE};
use e2e::cri::{rcrictl_bin, CNI_BIN_DIR};
use e2e::*;

/// The sandbox ("pause") image: a test image of hack/mkimage.sh whose shell sleeps forever.
const PAUSE_IMAGE: &str = "docker.io/rcri-test/stopsignal:latest";
/// Its ref in hack/mkimage.sh's test-images layout.
const PAUSE_REF: &str = "stopsignal";
/// The runtime handler the contrib config registers.
const HANDLER: &str = "rcrun";
/// rcrun's state dir as the runc v2 shim passes it (`--root`) for the CRI's namespace, inside
/// containerd's mount namespace.
const RUNTIME_ROOT: &str = "/run/containerd/runc/k8s.io";
/// How long one rcrictl command may take: as long as one ctr command.
const CRICTL_TIMEOUT: Duration = CTR_TIMEOUT;
/// CAP_SYS_RESOURCE, needed to lower oom_score_adj (the CRI gives sandboxes -998).
const CAP_SYS_RESOURCE: u32 = 24;

/// Whether this process may lower oom_score_adj. Some sandboxes (e.g. a container running the
/// test suite) drop CAP_SYS_RESOURCE even for root: then no runtime, runc included, can give a
/// pod sandbox the CRI's -998.
fn has_cap_sys_resource() -> Result<bool> {
    let status = fs::read_to_string("/proc/self/status").context("read /proc/self/status")?;
    let hex = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .ok_or_else(|| anyhow!("no CapEff in /proc/self/status"))?;
    let caps = u64::from_str_radix(hex.trim(), 16).context("bad CapEff")?;
    Ok(caps & (1 << CAP_SYS_RESOURCE) != 0)
}

/// Starts a containerd with its CRI plugin, of the test's own (see the module doc), with the
/// container and pause images imported.
fn start() -> Result<Containerd> {
    let dir = temp_dir("containerd-cri")?;
    let netns = NetNs::new()?;
    let cgroup_parent = format!("/{}", unique_id("rcrun-e2e-cri"));
    write_cni_config(dir.path())?;
    fs::create_dir_all(dir.path().join("pod-logs"))?;
    let config = config_toml(dir.path(), &cri_plugin_toml(dir.path())?)?;
    let cd = Containerd::start(
        dir,
        &config,
        Setup {
            namespace: "k8s.io".to_string(),
            cgroup_parent,
            netns: Some(netns),
            ready: |cd| cd.crictl(&["version"]).is_ok_and(|o| o.success()),
            drain: remove_pods,
        },
    )?;
    import_images(&cd)?;
    Ok(cd)
}

/// Removes every pod through the CRI, before containerd stops.
fn remove_pods(cd: &Containerd) {
    if let Ok(out) = cd.crictl(&["pods", "-q"]) {
        for id in out.stdout.split_whitespace() {
            let _ = cd.crictl(&["rmp", "-f", id]);
        }
    }
}

/// Imports the container image and the pause image into the CRI's namespace (k8s.io), from
/// hack/mkimage.sh's OCI layouts packed as tars.
fn import_images(cd: &Containerd) -> Result<()> {
    cd.import_busybox()?;

    // The test-images layout holds more refs (other architectures among them): a layout of our
    // own lists only the pause image, its blobs are the test-images ones.
    let test_images = image()?.join("test-images");
    let index_path = test_images.join("index.json");
    let index: Value = serde_json::from_slice(
        &fs::read(&index_path)
            .with_context(|| format!("failed to read {}", index_path.display()))?,
    )
    .with_context(|| format!("bad {}", index_path.display()))?;
    let manifest = index["manifests"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|m| m["annotations"]["org.opencontainers.image.ref.name"] == PAUSE_REF)
        .ok_or_else(|| anyhow!("no {PAUSE_REF} in {}", index_path.display()))?;
    let layout = cd.dir().join("pause-layout");
    fs::create_dir_all(&layout)?;
    fs::copy(test_images.join("oci-layout"), layout.join("oci-layout"))?;
    let mut pause_index = index.clone();
    pause_index["manifests"] = json!([manifest]);
    fs::write(layout.join("index.json"), serde_json::to_vec(&pause_index)?)?;
    std::os::unix::fs::symlink(test_images.join("blobs"), layout.join("blobs"))?;
    cd.import(&layout, "pause-oci.tar", None)?;

    let images = cd.crictl_ok(&["images"])?;
    for name in [IMAGE, PAUSE_IMAGE] {
        let (repo, _) = name.rsplit_once(':').unwrap_or((name, ""));
        if !images.stdout.lines().any(|l| l.starts_with(repo)) {
            bail!("the CRI does not list {name}: {images}");
        }
    }
    Ok(())
}

/// What these tests do through the CRI and rcrun.
trait Cri {
    fn crictl(&self, args: &[&str]) -> Result<Output>;
    fn crictl_ok(&self, args: &[&str]) -> Result<Output>;
    fn inspect(&self, what: &str, id: &str) -> Result<Value>;
    fn rcrun_list(&self) -> Result<Vec<Value>>;
    fn cgroup_dir(&self, id: &str) -> Result<PathBuf>;
    fn mounts_in_containerd(&self) -> Vec<String>;
}

impl Cri for Containerd {
    /// `rcrictl -r unix://<socket> ARGS`, from the host: the CRI calls need neither
    /// containerd's mount namespace nor its network namespace (no streaming here).
    fn crictl(&self, args: &[&str]) -> Result<Output> {
        let mut cmd = Command::new(rcrictl_bin());
        cmd.arg("-r")
            .arg(format!("unix://{}", self.socket().display()))
            .args(args);
        run_command(&mut cmd, CRICTL_TIMEOUT)
    }

    fn crictl_ok(&self, args: &[&str]) -> Result<Output> {
        let out = self.crictl(args)?;
        if !out.success() {
            bail!("{out}\n{}", self.diagnostics());
        }
        Ok(out)
    }

    /// `rcrictl inspect`/`inspectp` as JSON.
    fn inspect(&self, what: &str, id: &str) -> Result<Value> {
        let out = self.crictl_ok(&[what, id])?;
        serde_json::from_str(&out.stdout).with_context(|| format!("{what} is not JSON: {out}"))
    }

    /// `rcrun --root /run/containerd/runc/k8s.io list -f json`, run in containerd's mount
    /// namespace where that state dir is: the containers rcrun itself knows of.
    fn rcrun_list(&self) -> Result<Vec<Value>> {
        let mut cmd = Command::new("nsenter");
        cmd.args(["-t", &self.pid().to_string(), "-m", "--"])
            .arg(rcrun_bin())
            .args(["--root", RUNTIME_ROOT, "list", "-f", "json"]);
        let out = run_command(&mut cmd, CRICTL_TIMEOUT)?.ok()?;
        let list: Value = serde_json::from_str(out.stdout.trim())
            .with_context(|| format!("rcrun list is not JSON: {out}"))?;
        Ok(list.as_array().cloned().unwrap_or_default())
    }

    /// The dir of `/<cgroup parent>/<id>` in the pids hierarchy (or the v2 one).
    fn cgroup_dir(&self, id: &str) -> Result<PathBuf> {
        let h = hierarchies()?
            .into_iter()
            .find(|h| h.has("pids") || h.is_v2())
            .ok_or_else(|| anyhow!("no pids cgroup hierarchy"))?;
        Ok(h.dir(&format!("{}/{id}", self.cgroup_parent())))
    }

    /// Mount points under the temp dir in containerd's mount namespace (rootfs, shm, …).
    fn mounts_in_containerd(&self) -> Vec<String> {
        mountinfo_of(&format!("/proc/{}/mountinfo", self.pid()))
            .unwrap_or_default()
            .into_iter()
            .map(|m| m.mount_point)
            .filter(|m| Path::new(m).starts_with(self.dir()))
            .collect()
    }
}

/// A bridge network (Debian's CNI plugins) on a subnet of its own, living in the test's network
/// namespace where containerd runs the plugins.
fn write_cni_config(dir: &Path) -> Result<()> {
    let n = std::process::id() % 250 + 1;
    let conflist = json!({
        "cniVersion": "0.4.0",
        "name": "rcrun-cri-test",
        "plugins": [{
            "type": "bridge",
            "bridge": "rcrun0",
            "isGateway": true,
            "ipMasq": false,
            "hairpinMode": true,
            "ipam": {
                "type": "host-local",
                "ranges": [[{"subnet": format!("10.89.{n}.0/24")}]],
                "routes": [{"dst": "0.0.0.0/0"}],
                "dataDir": dir.join("cni-ipam"),
            }
        }]
    });
    let conf_dir = dir.join("cni");
    fs::create_dir_all(&conf_dir)?;
    fs::write(
        conf_dir.join("10-rcrun-cri.conflist"),
        serde_json::to_vec_pretty(&conflist)?,
    )
    .context("failed to write the CNI config")
}

/// The CRI settings a test machine needs, after the shared part of the config (the test's own
/// paths and `contrib/containerd/config.toml`, the snippet users merge).
fn cri_plugin_toml(dir: &Path) -> Result<String> {
    let restrict_oom = !has_cap_sys_resource()?;
    let d = dir.display();
    Ok(format!(
        r#"[plugins."io.containerd.grpc.v1.cri"]
  # Imported by the test: nothing is pulled.
  sandbox_image = "{PAUSE_IMAGE}"
  # Loading containerd's AppArmor profile would change the host's kernel policy.
  disable_apparmor = true
  # Without CAP_SYS_RESOURCE no runtime can lower a sandbox's oom_score_adj.
  restrict_oom_score_adj = {restrict_oom}
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
[plugins."io.containerd.grpc.v1.cri".cni]
  bin_dir = "{CNI_BIN_DIR}"
  conf_dir = "{d}/cni"
"#
    ))
}

fn write_json(path: &Path, value: &Value) -> Result<String> {
    fs::write(path, serde_json::to_vec_pretty(value)?)
        .with_context(|| format!("failed to write {}", path.display()))?;
    Ok(path.to_string_lossy().into_owned())
}

/// The entry of `rcrun list` for `id`.
fn listed<'a>(list: &'a [Value], id: &str) -> Option<&'a Value> {
    list.iter().find(|c| c["id"] == id)
}

/// A pod with the runtime handler `rcrun`, a busybox container in it, exec, logs, inspect,
/// rcrun's own view of both, then stop and removal of the container and the pod, leaving
/// nothing behind.
#[test]
fn pod_with_rcrun_handler() -> Result<()> {
    if !available("pod_with_rcrun_handler") {
        return Ok(());
    }
    let started = Instant::now();
    let mut cd = start()?;
    let d = cd.dir().to_path_buf();

    let version = cd.crictl_ok(&["version"])?;
    assert!(
        version.stdout.contains("RuntimeName:  containerd"),
        "{version}"
    );

    // The pod: its sandbox is the pause image run by rcrun.
    let name = unique_id("pod");
    let pod_json = write_json(
        &d.join("pod.json"),
        &json!({
            "metadata": {"name": name, "namespace": "default", "uid": format!("uid-{name}")},
            "hostname": name,
            "log_directory": d.join("pod-logs"),
            "labels": {"app": "rcrun-e2e"},
            "linux": {"cgroup_parent": cd.cgroup_parent()},
        }),
    )?;
    let pod = cd
        .crictl_ok(&["runp", "--runtime", HANDLER, &pod_json])?
        .stdout
        .trim()
        .to_string();
    let inspectp = cd.inspect("inspectp", &pod)?;
    assert_eq!(inspectp["status"]["state"], "SANDBOX_READY", "{inspectp:#}");
    assert_eq!(inspectp["info"]["runtimeHandler"], HANDLER, "{inspectp:#}");
    assert_eq!(
        inspectp["info"]["runtimeOptions"]["binary_name"],
        rcrun_bin().to_string_lossy().as_ref(),
        "{inspectp:#}"
    );
    let ip = inspectp["status"]["network"]["ip"]
        .as_str()
        .unwrap_or_default();
    assert!(ip.starts_with("10.89."), "pod IP {ip:?}: {inspectp:#}");
    let sandbox_pid = inspectp["info"]["pid"].as_i64().unwrap_or(0) as i32;
    assert!(sandbox_pid > 0, "{inspectp:#}");

    // A container that prints and sleeps, with a child of its shell (which survives the shell
    // in the pod's shared pid namespace unless the runtime kills the whole container).
    let ctr_json = write_json(
        &d.join("container.json"),
        &json!({
            "metadata": {"name": "hello"},
            "image": {"image": IMAGE},
            "command": ["sh", "-c", "echo hello from $(hostname); sleep 1000 & wait"],
            "log_path": "hello.log",
        }),
    )?;
    let cid = cd
        .crictl_ok(&["create", &pod, &ctr_json, &pod_json])?
        .stdout
        .trim()
        .to_string();
    cd.crictl_ok(&["start", &cid])?;
    let inspect = cd.inspect("inspect", &cid)?;
    assert_eq!(
        inspect["status"]["state"], "CONTAINER_RUNNING",
        "{inspect:#}"
    );
    assert_eq!(
        inspect["info"]["runtimeOptions"]["binary_name"],
        rcrun_bin().to_string_lossy().as_ref(),
        "{inspect:#}"
    );
    let init = inspect["info"]["pid"].as_i64().unwrap_or(0) as i32;
    assert!(init > 0, "{inspect:#}");

    // The container's processes, in its cgroup under the pod's parent.
    let procs_file = cd.cgroup_dir(&cid)?.join("cgroup.procs");
    let mut procs: Vec<i32> = Vec::new();
    wait_for(
        "the shell and its sleep in the cgroup",
        WAIT_TIMEOUT,
        || {
            procs = fs::read_to_string(&procs_file)
                .unwrap_or_default()
                .lines()
                .filter_map(|l| l.trim().parse().ok())
                .collect();
            Ok(procs.len() >= 2)
        },
    )
    .with_context(|| format!("{} holds {procs:?}", procs_file.display()))?;
    assert!(procs.contains(&init), "init {init} not in {procs:?}");

    // Its output, through the CRI log file containerd writes.
    let mut logs = None;
    wait_for("the container's log line", WAIT_TIMEOUT, || {
        let out = cd.crictl(&["logs", &cid])?;
        let seen = out.stdout.contains(&format!("hello from {name}"));
        logs = Some(out);
        Ok(seen)
    })
    .with_context(|| format!("{logs:?}\n{}", cd.diagnostics()))?;

    // ExecSync: the shim runs `rcrun exec --process … --detach`; output and exit code come back.
    let exec = cd.crictl(&[
        "exec",
        "-s",
        &cid,
        "sh",
        "-c",
        "echo exec in $(hostname) as $(id -u); cat /proc/1/cmdline; exit 3",
    ])?;
    assert_eq!(exec.code(), 3, "{exec}\n{}", cd.diagnostics());
    assert!(
        exec.stdout.contains(&format!("exec in {name} as 0")),
        "{exec}"
    );
    // The pod shares one pid namespace: pid 1 is the sandbox's shell.
    assert!(exec.stdout.contains("while :"), "{exec}");

    // rcrun itself knows both, running, with the pids containerd reports: it is what ran them.
    let list = cd.rcrun_list()?;
    for (id, pid) in [(&pod, sandbox_pid), (&cid, init)] {
        let entry = listed(&list, id)
            .ok_or_else(|| anyhow!("rcrun list under {RUNTIME_ROOT} lacks {id}: {list:?}"))?;
        assert_eq!(entry["status"], "running", "{entry}");
        assert_eq!(entry["pid"], json!(pid), "{entry}");
    }
    let bundle = d
        .join("state/io.containerd.runtime.v2.task/k8s.io")
        .join(&cid);
    assert_eq!(
        fs::read_to_string(bundle.join("runtime"))?.trim(),
        rcrun_bin().to_string_lossy(),
        "the shim's runtime file"
    );

    // Stop: SIGTERM ends the shell; containerd then kills what is left of the container (its
    // sleep) through the runtime and reports the exit.
    let stop = cd.crictl(&["stop", "-t", "10", &cid])?;
    assert!(stop.success(), "{stop}\n{}", cd.diagnostics());
    let inspect = cd.inspect("inspect", &cid)?;
    assert_eq!(
        inspect["status"]["state"], "CONTAINER_EXITED",
        "{inspect:#}"
    );
    assert_eq!(inspect["status"]["exitCode"], 143, "{inspect:#}");
    wait_for("the container's processes to die", WAIT_TIMEOUT, || {
        Ok(procs.iter().all(|&p| !pid_alive(p)))
    })
    .with_context(|| format!("processes of {procs:?} alive"))?;
    cd.crictl_ok(&["rm", &cid])?;

    // A container that ends by itself, in a pid namespace of its own: containerd reaps its task
    // (the shim kills what is left with `rcrun kill --all`, then deletes) and reports the exit.
    let exits_json = write_json(
        &d.join("exits.json"),
        &json!({
            "metadata": {"name": "exits"},
            "image": {"image": IMAGE},
            "command": ["sh", "-c", "echo bye from pid $$; exit 7"],
            "log_path": "exits.log",
            "linux": {"security_context": {"namespace_options": {"pid": 1}}},
        }),
    )?;
    let exits = cd
        .crictl_ok(&["create", &pod, &exits_json, &pod_json])?
        .stdout
        .trim()
        .to_string();
    cd.crictl_ok(&["start", &exits])?;
    let mut state = Value::Null;
    wait_for("the container to be reported exited", WAIT_TIMEOUT, || {
        state = cd.inspect("inspect", &exits)?["status"].clone();
        Ok(state["state"] == "CONTAINER_EXITED")
    })
    .with_context(|| format!("{state:#}\n{}", cd.diagnostics()))?;
    assert_eq!(state["exitCode"], 7, "{state:#}");
    let logs = cd.crictl_ok(&["logs", &exits])?;
    assert!(logs.stdout.contains("bye from pid 1"), "{logs}");
    cd.crictl_ok(&["rm", &exits])?;
    let ps = cd.crictl_ok(&["ps", "-a", "-q"])?;
    assert!(ps.stdout.trim().is_empty(), "{ps}");

    cd.crictl_ok(&["stopp", &pod])?;
    cd.crictl_ok(&["rmp", &pod])?;
    let pods = cd.crictl_ok(&["pods", "-q"])?;
    assert!(pods.stdout.trim().is_empty(), "{pods}");

    // Nothing left: no task in containerd, nothing in rcrun's state, no mount in containerd's
    // namespace under our dirs, no pod network namespace, no process or leaf cgroup.
    let tasks = cd.ctr_ok(&["tasks", "ls", "-q"])?;
    assert!(tasks.stdout.trim().is_empty(), "{tasks}");
    let containers = cd.ctr_ok(&["containers", "ls", "-q"])?;
    assert!(containers.stdout.trim().is_empty(), "{containers}");
    let list = cd.rcrun_list()?;
    assert!(list.is_empty(), "rcrun still lists {list:?}");
    let mounts = cd.mounts_in_containerd();
    assert!(
        mounts.is_empty(),
        "mounts left in containerd's namespace: {mounts:?}"
    );
    let netns_dir = PathBuf::from(format!("/proc/{}/root/run/netns", cd.pid()));
    let netns_left: Vec<_> = fs::read_dir(&netns_dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert!(netns_left.is_empty(), "pod netns left: {netns_left:?}");
    for id in [&pod, &cid, &exits] {
        let dir = cd.cgroup_dir(id)?;
        assert!(!dir.exists(), "cgroup {} left", dir.display());
    }
    assert!(!pid_alive(sandbox_pid), "sandbox {sandbox_pid} alive");

    cd.shutdown()?;
    eprintln!(
        "pod_with_rcrun_handler: containerd CRI + rcrun pod lifecycle in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
