//! rcrun under containerd's CRI plugin: the path a kubelet takes. Debian's containerd (1.6) runs
//! pods with the runtime handler `rcrun` of `contrib/containerd/config.toml` (the runc v2 shim
//! with rcrun as its BinaryName), driven by `rcrictl` over containerd's socket as a kubelet or
//! crictl would drive it.
//!
//! containerd runs in a network namespace the test creates (its CNI bridge and the pods' IPs
//! exist only there) and in a private mount namespace with a tmpfs over /run, where the shim's
//! sockets, the pods' network namespaces and rcrun's state (`--root /run/containerd/runc/k8s.io`)
//! live. Its root, state, socket, CNI config and pod logs are in a temp dir. No image comes from
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
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use e2e::cri::{rcrictl_bin, CNI_BIN_DIR};
use e2e::*;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tempfile::TempDir;

/// The container image: hack/mkimage.sh's OCI layout.
const IMAGE: &str = "docker.io/library/busybox:latest";
/// The sandbox ("pause") image: a test image of hack/mkimage.sh whose shell sleeps forever.
const PAUSE_IMAGE: &str = "docker.io/rcri-test/stopsignal:latest";
/// Its ref in hack/mkimage.sh's test-images layout.
const PAUSE_REF: &str = "stopsignal";
/// The runtime handler the contrib config registers.
const HANDLER: &str = "rcrun";
/// The rcrun path the contrib config names, replaced by the binary under test.
const CONTRIB_BINARY: &str = "/usr/local/bin/rcrun";
/// rcrun's state dir as the runc v2 shim passes it (`--root`) for the CRI's namespace, inside
/// containerd's mount namespace.
const RUNTIME_ROOT: &str = "/run/containerd/runc/k8s.io";
/// How long one ctr or rcrictl command may take.
const CMD_TIMEOUT: Duration = Duration::from_secs(60);
/// CAP_SYS_RESOURCE, needed to lower oom_score_adj (the CRI gives sandboxes -998).
const CAP_SYS_RESOURCE: u32 = 24;

/// Whether containerd is installed; prints why the test skips when not.
fn available(test: &str) -> bool {
    let missing: Vec<&str> = ["containerd", "ctr", "containerd-shim-runc-v2"]
        .into_iter()
        .filter(|p| !on_path(p))
        .collect();
    if missing.is_empty() {
        return true;
    }
    eprintln!(
        "SKIP {test}: {} not installed (hack/setup.sh installs Debian's containerd)",
        missing.join(", ")
    );
    false
}

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

/// A containerd with its CRI plugin, of the test's own (see the module doc).
struct CriContainerd {
    dir: TempDir,
    netns: NetNs,
    /// The cgroup parent of every pod, `/<unique>`.
    cgroup_parent: String,
    socket: PathBuf,
    child: Option<Child>,
}

impl CriContainerd {
    fn start() -> Result<CriContainerd> {
        let dir = temp_dir("containerd-cri")?;
        let netns = NetNs::new()?;
        let socket = dir.path().join("containerd.sock");
        let cgroup_parent = format!("/{}", unique_id("rcrun-e2e-cri"));
        write_cni_config(dir.path())?;
        fs::create_dir_all(dir.path().join("pod-logs"))?;
        let config = dir.path().join("config.toml");
        fs::write(&config, config_toml(dir.path())?)
            .with_context(|| format!("failed to write {}", config.display()))?;
        let log = fs::File::create(dir.path().join("containerd.log"))
            .context("failed to create containerd.log")?;
        // nsenter and unshare without --fork exec, and so does sh: the child's pid is
        // containerd's, and its mount namespace is the one the shims and rcrun run in.
        let script = "set -e
            mount -t tmpfs -o mode=0755 tmpfs /run
            mkdir -p /run/containerd
            ip link set lo up
            exec containerd --config \"$1\" --log-level debug";
        let child = Command::new("nsenter")
            .arg(format!("--net={}", netns.path()))
            .args(["--", "unshare", "--mount", "--propagation", "private", "--"])
            .args(["sh", "-c", script, "sh"])
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(log.try_clone().context("failed to dup the log fd")?)
            .stderr(log)
            .spawn()
            .context("failed to run nsenter … unshare … containerd")?;
        let mut cd = CriContainerd {
            dir,
            netns,
            cgroup_parent,
            socket,
            child: Some(child),
        };
        cd.wait_ready()?;
        cd.import_images()?;
        Ok(cd)
    }

    fn pid(&self) -> i32 {
        self.child.as_ref().map_or(-1, |c| c.id() as i32)
    }

    fn wait_ready(&mut self) -> Result<()> {
        let deadline = Instant::now() + scaled(Duration::from_secs(20));
        loop {
            if let Some(child) = self.child.as_mut() {
                if let Some(status) = child.try_wait()? {
                    self.child = None;
                    bail!("containerd exited with {status}\n{}", self.diagnostics());
                }
            }
            if self.socket.exists() && self.crictl(&["version"]).is_ok_and(|o| o.success()) {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("containerd did not come up in 20 s\n{}", self.diagnostics());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Imports the container image and the pause image into the CRI's namespace (k8s.io),
    /// from hack/mkimage.sh's OCI layouts packed as tars.
    fn import_images(&self) -> Result<()> {
        let image = image()?;
        let d = self.dir.path();
        let busybox = d.join("busybox-oci.tar");
        tar_layout(&image.join("oci"), &busybox)?;
        self.ctr_ok(&[
            "images",
            "import",
            "--base-name",
            "docker.io/library/busybox",
            &busybox.to_string_lossy(),
        ])?;

        // The test-images layout holds more refs (other architectures among them): a layout
        // of our own lists only the pause image, its blobs are the test-images ones.
        let test_images = image.join("test-images");
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
        let layout = d.join("pause-layout");
        fs::create_dir_all(&layout)?;
        fs::copy(test_images.join("oci-layout"), layout.join("oci-layout"))?;
        let mut pause_index = index.clone();
        pause_index["manifests"] = json!([manifest]);
        fs::write(layout.join("index.json"), serde_json::to_vec(&pause_index)?)?;
        std::os::unix::fs::symlink(test_images.join("blobs"), layout.join("blobs"))?;
        let pause = d.join("pause-oci.tar");
        tar_layout(&layout, &pause)?;
        self.ctr_ok(&["images", "import", &pause.to_string_lossy()])?;

        let images = self.crictl_ok(&["images"])?;
        for name in [IMAGE, PAUSE_IMAGE] {
            let (repo, _) = name.rsplit_once(':').unwrap_or((name, ""));
            if !images.stdout.lines().any(|l| l.starts_with(repo)) {
                bail!("the CRI does not list {name}: {images}");
            }
        }
        Ok(())
    }

    /// `ctr -a <socket> -n k8s.io ARGS`, run inside containerd's mount namespace.
    fn ctr(&self, args: &[&str]) -> Result<Output> {
        let mut cmd = Command::new("nsenter");
        cmd.args(["-t", &self.pid().to_string(), "-m", "--", "ctr", "-a"])
            .arg(&self.socket)
            .args(["-n", "k8s.io"])
            .args(args);
        run_command(&mut cmd, CMD_TIMEOUT)
    }

    fn ctr_ok(&self, args: &[&str]) -> Result<Output> {
        let out = self.ctr(args)?;
        if !out.success() {
            bail!("{out}\n{}", self.diagnostics());
        }
        Ok(out)
    }

    /// `rcrictl -r unix://<socket> ARGS`, from the host: the CRI calls need neither
    /// containerd's mount namespace nor its network namespace (no streaming here).
    fn crictl(&self, args: &[&str]) -> Result<Output> {
        let mut cmd = Command::new(rcrictl_bin());
        cmd.arg("-r")
            .arg(format!("unix://{}", self.socket.display()))
            .args(args);
        run_command(&mut cmd, CMD_TIMEOUT)
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
        let out = run_command(&mut cmd, CMD_TIMEOUT)?.ok()?;
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
        Ok(h.dir(&format!("{}/{id}", self.cgroup_parent)))
    }

    /// Mount points under the temp dir in containerd's mount namespace (rootfs, shm, …).
    fn mounts_in_containerd(&self) -> Vec<String> {
        mountinfo_of(&format!("/proc/{}/mountinfo", self.pid()))
            .unwrap_or_default()
            .into_iter()
            .map(|m| m.mount_point)
            .filter(|m| Path::new(m).starts_with(self.dir.path()))
            .collect()
    }

    /// containerd's log (its last lines) and every rcrun log.json of a bundle still there.
    fn diagnostics(&self) -> String {
        let mut text = format!(
            "--- containerd (network namespace {}) log, last 60 lines ---\n",
            self.netns.name()
        );
        let log = fs::read_to_string(self.dir.path().join("containerd.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        text.push_str(&lines[lines.len().saturating_sub(60)..].join("\n"));
        let bundles = self
            .dir
            .path()
            .join("state/io.containerd.runtime.v2.task/k8s.io");
        for entry in fs::read_dir(&bundles).into_iter().flatten().flatten() {
            let log = entry.path().join("log.json");
            if let Ok(content) = fs::read_to_string(&log) {
                text.push_str(&format!("\n--- {} ---\n{content}", log.display()));
            }
        }
        text
    }

    /// Processes of ours that may outlive containerd: shims (their command line names our
    /// socket) and anything in our cgroup parent.
    fn leftover_processes(&self) -> Vec<i32> {
        let mut pids = processes_mentioning(&self.socket.to_string_lossy());
        for dir in self.cgroup_roots() {
            collect_procs(&dir, &mut pids);
        }
        pids.sort_unstable();
        pids.dedup();
        pids
    }

    /// The cgroup parent in every hierarchy, where it exists.
    fn cgroup_roots(&self) -> Vec<PathBuf> {
        hierarchies()
            .unwrap_or_default()
            .iter()
            .map(|h| h.dir(&self.cgroup_parent))
            .filter(|d| d.is_dir())
            .collect()
    }

    /// Stops everything (see the module doc); returns what could not be cleaned up.
    fn shutdown(&mut self) -> Result<()> {
        if self.child.is_some() {
            if let Ok(out) = self.crictl(&["pods", "-q"]) {
                for id in out.stdout.split_whitespace() {
                    let _ = self.crictl(&["rmp", "-f", id]);
                }
            }
        }
        if let Some(mut child) = self.child.take() {
            let pid = Pid::from_raw(child.id() as i32);
            let _ = kill(pid, Signal::SIGTERM);
            let deadline = Instant::now() + Duration::from_secs(10);
            while child.try_wait().ok().flatten().is_none() {
                if Instant::now() > deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        let left = self.leftover_processes();
        for &pid in &left {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
        let _ = wait_for("leftover processes to die", WAIT_TIMEOUT, || {
            Ok(left.iter().all(|&p| !pid_alive(p)))
        });
        // The mounts live in containerd's private namespace, gone with its last process; any
        // that propagated here would hold the temp dir.
        let mounts = mounts_under(self.dir.path());
        for m in mounts.iter().rev() {
            let _ = nix::mount::umount2(m, nix::mount::MntFlags::MNT_DETACH);
        }
        let mut cgroups_left = Vec::new();
        for root in self.cgroup_roots() {
            remove_cgroup_tree(&root);
            if root.exists() {
                cgroups_left.push(root);
            }
        }
        if !left.is_empty() || !cgroups_left.is_empty() || !mounts.is_empty() {
            bail!(
                "left behind: processes {left:?} (killed), cgroups {cgroups_left:?}, host mounts \
                 {mounts:?} (detached)\n{}",
                self.diagnostics()
            );
        }
        Ok(())
    }
}

impl Drop for CriContainerd {
    fn drop(&mut self) {
        if let Err(e) = self.shutdown() {
            eprintln!("containerd CRI test cleanup: {e:#}");
        }
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

/// The config: the test's own paths, `contrib/containerd/config.toml` with the rcrun under test
/// as BinaryName (the snippet users merge), then the CRI settings a test machine needs.
fn config_toml(dir: &Path) -> Result<String> {
    let contrib_path = repo_root().join("contrib/containerd/config.toml");
    let contrib = fs::read_to_string(&contrib_path)
        .with_context(|| format!("failed to read {}", contrib_path.display()))?;
    if !contrib.contains(CONTRIB_BINARY) {
        bail!("{} does not name {CONTRIB_BINARY}", contrib_path.display());
    }
    let contrib = contrib.replace(CONTRIB_BINARY, &rcrun_bin().to_string_lossy());
    let restrict_oom = !has_cap_sys_resource()?;
    let d = dir.display();
    Ok(format!(
        r#"root = "{d}/root"
state = "{d}/state"
# Snapshotters and tracing this test does not need.
disabled_plugins = ["io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs",
  "io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing"]

{contrib}

[grpc]
  address = "{d}/containerd.sock"
[ttrpc]
  address = "{d}/containerd.sock.ttrpc"
[debug]
  address = ""
[plugins."io.containerd.internal.v1.opt"]
  path = "{d}/opt"
[plugins."io.containerd.grpc.v1.cri"]
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

/// `tar -h -cf TAR -C LAYOUT .` (following the blobs symlink of a layout of ours).
fn tar_layout(layout: &Path, tar: &Path) -> Result<()> {
    host(
        "tar",
        &[
            "-h",
            "-C",
            &layout.to_string_lossy(),
            "-cf",
            &tar.to_string_lossy(),
            ".",
        ],
    )?;
    Ok(())
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
    let mut cd = CriContainerd::start()?;
    let d = cd.dir.path().to_path_buf();

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
            "linux": {"cgroup_parent": cd.cgroup_parent},
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
