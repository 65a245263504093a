//! Harness for the rcri tests: an `rcri` server of the test's own, inside a network namespace the
//! test created (entered with setns before exec, so rcri shares the host's mount namespace and a
//! restarted rcri sees the mounts of the first), with its own root/state dirs, socket, CNI config
//! (bridge + host-local + loopback from Debian's containernetworking-plugins, the bridge and the
//! pod IPs living only in that namespace), and a gRPC client over the unix socket.
//!
//! On drop: every pod is stopped and removed through the CRI, rcri is killed by pid, leftover
//! runtime containers are deleted with --force, mounts under the temp dir are detached, the
//! network namespace is deleted and the temp dir removed.

use std::fs;
use std::future::Future;
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use hyper_util::rt::TokioIo;
use k8s_cri::v1 as cri;
use k8s_cri::v1::image_service_client::ImageServiceClient;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tempfile::TempDir;
use tonic::transport::{Channel, Endpoint, Uri};

use crate::{image, mounts_under, rcrun_bin, temp_dir, NetNs};

pub use k8s_cri::v1;

/// The CNI plugin dir Debian's containernetworking-plugins installs.
pub const CNI_BIN_DIR: &str = "/usr/lib/cni";

/// The test image as hack/mkimage.sh tags it in its OCI layout, imported by rcri at start.
pub const TEST_IMAGE: &str = "docker.io/library/busybox:latest";

/// `target/debug/rcri`, next to the rcrun under test.
pub fn rcri_bin() -> PathBuf {
    if let Some(bin) = std::env::var_os("RCRI_BIN") {
        return PathBuf::from(bin);
    }
    std::env::current_exe()
        .ok()
        .and_then(|exe| Some(exe.parent()?.parent()?.join("rcri")))
        .filter(|p| p.is_file())
        .unwrap_or_else(|| panic!("rcri binary not found: build it first: cargo build --workspace"))
}

/// Whether the CNI plugins the tests use are installed.
pub fn cni_available() -> bool {
    ["bridge", "host-local", "loopback"]
        .iter()
        .all(|p| Path::new(CNI_BIN_DIR).join(p).is_file())
}

/// A running rcri and a client for it.
pub struct Rcri {
    pub dir: TempDir,
    pub netns: NetNs,
    pub socket: PathBuf,
    pub subnet: String,
    child: Option<Child>,
    rt: tokio::runtime::Runtime,
    channel: Option<Channel>,
    /// More `rcri serve` arguments (e.g. `--config FILE`), added by the image-pull tests.
    extra_args: Vec<std::ffi::OsString>,
}

impl Rcri {
    /// Starts rcri in a new network namespace with a bridge network on a subnet of its own.
    pub fn start() -> Result<Rcri> {
        Self::start_with_args(&[])
    }

    /// [`Rcri::start`] with more `rcri serve` arguments (image-pull tests: `--config FILE`).
    pub fn start_with_args(extra_args: &[&std::ffi::OsStr]) -> Result<Rcri> {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let n = (std::process::id() + NEXT.fetch_add(1, Ordering::Relaxed) * 7) % 250 + 1;
        let dir = temp_dir("rcri")?;
        let netns = NetNs::new()?;
        crate::host(
            "ip",
            &[
                "netns",
                "exec",
                netns.name(),
                "ip",
                "link",
                "set",
                "lo",
                "up",
            ],
        )?;
        let subnet = format!("10.88.{n}.0/24");
        let cni_dir = dir.path().join("cni");
        fs::create_dir_all(&cni_dir)?;
        let conflist = serde_json::json!({
            "cniVersion": "0.4.0",
            "name": "rcri-test",
            "plugins": [
                {
                    "type": "bridge",
                    "bridge": "rcri0",
                    "isGateway": true,
                    "ipMasq": false,
                    "hairpinMode": true,
                    "ipam": {
                        "type": "host-local",
                        "ranges": [[{"subnet": subnet}]],
                        "routes": [{"dst": "0.0.0.0/0"}],
                        "dataDir": dir.path().join("cni-ipam"),
                    }
                }
            ]
        });
        fs::write(
            cni_dir.join("10-rcri.conflist"),
            serde_json::to_vec_pretty(&conflist)?,
        )?;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("failed to build a tokio runtime")?;
        let socket = dir.path().join("rcri.sock");
        let mut rcri = Rcri {
            dir,
            netns,
            socket,
            subnet,
            child: None,
            rt,
            channel: None,
            extra_args: extra_args.iter().map(|a| a.to_os_string()).collect(),
        };
        rcri.spawn()?;
        Ok(rcri)
    }

    pub fn root(&self) -> PathBuf {
        self.dir.path().join("root")
    }
    pub fn state(&self) -> PathBuf {
        self.dir.path().join("state")
    }
    pub fn runtime_root(&self) -> PathBuf {
        self.dir.path().join("state/runtime")
    }
    pub fn log_dir(&self) -> PathBuf {
        self.dir.path().join("pod-logs")
    }
    pub fn server_log(&self) -> String {
        fs::read_to_string(self.dir.path().join("rcri.log")).unwrap_or_default()
    }

    /// Starts (or restarts) the rcri process and waits until it answers Version.
    pub fn spawn(&mut self) -> Result<()> {
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("rcri.log"))?;
        let netns = fs::File::open(self.netns.path())
            .with_context(|| format!("failed to open {}", self.netns.path()))?;
        let netns_fd = netns.as_raw_fd();
        let image = image()?;
        let mut cmd = Command::new(rcri_bin());
        cmd.arg("--listen")
            .arg(&self.socket)
            .arg("--root")
            .arg(self.root())
            .arg("--state")
            .arg(self.state())
            .arg("--runtime")
            .arg(rcrun_bin())
            .arg("--runtime-root")
            .arg(self.runtime_root())
            .arg("--cni-conf-dir")
            .arg(self.dir.path().join("cni"))
            .arg("--cni-bin-dir")
            .arg(CNI_BIN_DIR)
            .arg("--import-layout")
            .arg(image.join("oci"))
            .arg("--log-level")
            .arg("debug")
            .args(&self.extra_args)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        // SAFETY: setns is async-signal-safe; netns_fd stays open in the parent until spawn returns.
        unsafe {
            cmd.pre_exec(move || {
                if libc::setns(netns_fd, libc::CLONE_NEWNET) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd.spawn().context("failed to start rcri")?;
        drop(netns);
        self.child = Some(child);
        self.channel = None;
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(child) = self.child.as_mut() {
                if let Some(status) = child.try_wait()? {
                    bail!("rcri exited with {status}:\n{}", self.server_log());
                }
            }
            if self.socket.exists() && self.connect().is_ok() {
                let mut rs = self.rs();
                if self
                    .block_on(rs.version(cri::VersionRequest::default()))
                    .is_ok()
                {
                    return Ok(());
                }
            }
            if Instant::now() > deadline {
                bail!("rcri did not come up:\n{}", self.server_log());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn connect(&mut self) -> Result<()> {
        let path = self.socket.clone();
        let channel = self.rt.block_on(async move {
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
        self.channel = Some(channel);
        Ok(())
    }

    pub fn pid(&self) -> Option<i32> {
        self.child.as_ref().map(|c| c.id() as i32)
    }

    /// kill -9 rcri (its monitors and containers keep running).
    pub fn kill9(&mut self) -> Result<()> {
        if let Some(mut child) = self.child.take() {
            kill(Pid::from_raw(child.id() as i32), Signal::SIGKILL)?;
            child.wait()?;
        }
        self.channel = None;
        Ok(())
    }

    /// SIGTERM and wait (up to 10 s, then SIGKILL).
    pub fn terminate(&mut self) -> Result<()> {
        // Our idle connection would otherwise hold rcri's graceful shutdown.
        self.channel = None;
        if let Some(mut child) = self.child.take() {
            let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM);
            let deadline = Instant::now() + Duration::from_secs(10);
            while child.try_wait()?.is_none() {
                if Instant::now() > deadline {
                    let _ = child.kill();
                    child.wait()?;
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        self.channel = None;
        Ok(())
    }

    pub fn block_on<F: Future>(&self, f: F) -> F::Output {
        self.rt.block_on(f)
    }

    pub fn rs(&self) -> RuntimeServiceClient<Channel> {
        // Channels spawn their worker on the current runtime.
        let _enter = self.rt.enter();
        let channel = self.channel.clone().unwrap_or_else(|| {
            // A lazy channel that fails each call: the server is not up.
            Endpoint::from_static("http://[::]:1").connect_lazy()
        });
        RuntimeServiceClient::new(channel)
    }

    pub fn is(&self) -> ImageServiceClient<Channel> {
        let _enter = self.rt.enter();
        let channel = self
            .channel
            .clone()
            .unwrap_or_else(|| Endpoint::from_static("http://[::]:1").connect_lazy());
        ImageServiceClient::new(channel)
    }

    // -- convenience calls, returning the gRPC status on failure -------------------------------

    pub fn run_pod(&self, config: &cri::PodSandboxConfig) -> Result<String, tonic::Status> {
        let mut rs = self.rs();
        let req = cri::RunPodSandboxRequest {
            config: Some(config.clone()),
            runtime_handler: String::new(),
        };
        self.block_on(rs.run_pod_sandbox(req))
            .map(|r| r.into_inner().pod_sandbox_id)
    }

    pub fn stop_pod(&self, id: &str) -> Result<(), tonic::Status> {
        let mut rs = self.rs();
        self.block_on(rs.stop_pod_sandbox(cri::StopPodSandboxRequest {
            pod_sandbox_id: id.into(),
        }))
        .map(|_| ())
    }

    pub fn remove_pod(&self, id: &str) -> Result<(), tonic::Status> {
        let mut rs = self.rs();
        self.block_on(rs.remove_pod_sandbox(cri::RemovePodSandboxRequest {
            pod_sandbox_id: id.into(),
        }))
        .map(|_| ())
    }

    pub fn pod_status(&self, id: &str) -> Result<cri::PodSandboxStatusResponse, tonic::Status> {
        let mut rs = self.rs();
        self.block_on(rs.pod_sandbox_status(cri::PodSandboxStatusRequest {
            pod_sandbox_id: id.into(),
            verbose: true,
        }))
        .map(|r| r.into_inner())
    }

    pub fn list_pods(
        &self,
        filter: Option<cri::PodSandboxFilter>,
    ) -> Result<Vec<cri::PodSandbox>, tonic::Status> {
        let mut rs = self.rs();
        self.block_on(rs.list_pod_sandbox(cri::ListPodSandboxRequest { filter }))
            .map(|r| r.into_inner().items)
    }

    pub fn create_container(
        &self,
        pod_id: &str,
        config: &cri::ContainerConfig,
        pod_config: &cri::PodSandboxConfig,
    ) -> Result<String, tonic::Status> {
        let mut rs = self.rs();
        self.block_on(rs.create_container(cri::CreateContainerRequest {
            pod_sandbox_id: pod_id.into(),
            config: Some(config.clone()),
            sandbox_config: Some(pod_config.clone()),
        }))
        .map(|r| r.into_inner().container_id)
    }

    pub fn start_container(&self, id: &str) -> Result<(), tonic::Status> {
        let mut rs = self.rs();
        self.block_on(rs.start_container(cri::StartContainerRequest {
            container_id: id.into(),
        }))
        .map(|_| ())
    }

    /// Create + start.
    pub fn run_container(
        &self,
        pod_id: &str,
        config: &cri::ContainerConfig,
        pod_config: &cri::PodSandboxConfig,
    ) -> Result<String> {
        let id = self
            .create_container(pod_id, config, pod_config)
            .map_err(|s| anyhow!("CreateContainer: {s:?}\n{}", self.server_log()))?;
        self.start_container(&id)
            .map_err(|s| anyhow!("StartContainer: {s:?}\n{}", self.server_log()))?;
        Ok(id)
    }

    pub fn stop_container(&self, id: &str, timeout: i64) -> Result<(), tonic::Status> {
        let mut rs = self.rs();
        self.block_on(rs.stop_container(cri::StopContainerRequest {
            container_id: id.into(),
            timeout,
        }))
        .map(|_| ())
    }

    pub fn remove_container(&self, id: &str) -> Result<(), tonic::Status> {
        let mut rs = self.rs();
        self.block_on(rs.remove_container(cri::RemoveContainerRequest {
            container_id: id.into(),
        }))
        .map(|_| ())
    }

    pub fn container_status(&self, id: &str) -> Result<cri::ContainerStatus, tonic::Status> {
        let mut rs = self.rs();
        self.block_on(rs.container_status(cri::ContainerStatusRequest {
            container_id: id.into(),
            verbose: false,
        }))
        .and_then(|r| {
            r.into_inner()
                .status
                .ok_or_else(|| tonic::Status::internal("no status"))
        })
    }

    pub fn list_containers(
        &self,
        filter: Option<cri::ContainerFilter>,
    ) -> Result<Vec<cri::Container>, tonic::Status> {
        let mut rs = self.rs();
        self.block_on(rs.list_containers(cri::ListContainersRequest { filter }))
            .map(|r| r.into_inner().containers)
    }

    pub fn exec_sync(
        &self,
        id: &str,
        cmd: &[&str],
        timeout: i64,
    ) -> Result<cri::ExecSyncResponse, tonic::Status> {
        let mut rs = self.rs();
        self.block_on(rs.exec_sync(cri::ExecSyncRequest {
            container_id: id.into(),
            cmd: cmd.iter().map(|s| s.to_string()).collect(),
            timeout,
        }))
        .map(|r| r.into_inner())
    }

    /// Waits until the container is EXITED; returns its status.
    pub fn wait_exited(&self, id: &str, timeout: Duration) -> Result<cri::ContainerStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            let status = self
                .container_status(id)
                .map_err(|s| anyhow!("ContainerStatus: {s:?}"))?;
            if status.state == cri::ContainerState::ContainerExited as i32 {
                return Ok(status);
            }
            if Instant::now() > deadline {
                bail!("container {id} did not exit within {timeout:?}: {status:?}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The pod's IPs as the CNI gave them.
    pub fn pod_ip(&self, id: &str) -> Result<String> {
        let status = self
            .pod_status(id)
            .map_err(|s| anyhow!("PodSandboxStatus: {s:?}"))?;
        status
            .status
            .and_then(|s| s.network)
            .map(|n| n.ip)
            .filter(|ip| !ip.is_empty())
            .ok_or_else(|| anyhow!("pod {id} has no IP"))
    }

    /// Runs a command in the test's network namespace (where the pod network lives).
    pub fn in_netns(&self, args: &[&str]) -> Result<crate::Output> {
        let mut full = vec!["netns", "exec", self.netns.name()];
        full.extend_from_slice(args);
        crate::run_command(Command::new("ip").args(&full), crate::COMMAND_TIMEOUT)
    }

    fn clean_up(&mut self) {
        if self.child.is_some() {
            if let Ok(pods) = self.list_pods(None) {
                for pod in pods {
                    let _ = self.stop_pod(&pod.id);
                    let _ = self.remove_pod(&pod.id);
                }
            }
        }
        let _ = self.terminate();
        // Whatever a failed test left in the runtime: containers, and their monitors with them.
        let runtime_root = self.runtime_root();
        if let Ok(entries) = fs::read_dir(&runtime_root) {
            for entry in entries.flatten() {
                let id = entry.file_name().to_string_lossy().into_owned();
                let _ = crate::run_command(
                    Command::new(rcrun_bin())
                        .arg("--root")
                        .arg(&runtime_root)
                        .args(["delete", "--force", &id]),
                    crate::COMMAND_TIMEOUT,
                );
            }
        }
        for pidfile in find_files(&self.state(), "monitor.pid") {
            if let Some(pid) = fs::read_to_string(&pidfile)
                .ok()
                .and_then(|s| s.trim().parse::<i32>().ok())
            {
                if is_our_monitor(pid, &self.state()) {
                    let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
                }
            }
        }
        let mut mounts = mounts_under(self.dir.path());
        mounts.sort_by_key(|m| std::cmp::Reverse(m.as_os_str().len()));
        for m in mounts {
            let _ = nix::mount::umount2(&m, nix::mount::MntFlags::MNT_DETACH);
        }
    }
}

/// Whether `pid` is a monitor of this test's rcri (its command line names our state dir), so
/// that cleanup never signals a process it did not start.
fn is_our_monitor(pid: i32, state: &Path) -> bool {
    fs::read(format!("/proc/{pid}/cmdline"))
        .map(|c| {
            let text = String::from_utf8_lossy(&c);
            text.contains("monitor") && text.contains(&*state.to_string_lossy())
        })
        .unwrap_or(false)
}

fn find_files(dir: &Path, name: &str) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let Ok(entries) = fs::read_dir(dir) else {
        return found;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        match entry.file_type() {
            Ok(t) if t.is_dir() => found.extend(find_files(&path, name)),
            Ok(_) if entry.file_name() == name => found.push(path),
            _ => {}
        }
    }
    found
}

impl Drop for Rcri {
    fn drop(&mut self) {
        self.clean_up();
    }
}

/// A pod config with full metadata; `host_network` selects NODE network mode.
pub fn pod_config(name: &str, host_network: bool, log_dir: &Path) -> cri::PodSandboxConfig {
    let mode = if host_network {
        cri::NamespaceMode::Node
    } else {
        cri::NamespaceMode::Pod
    };
    cri::PodSandboxConfig {
        metadata: Some(cri::PodSandboxMetadata {
            name: name.into(),
            uid: format!("uid-{name}-{}", std::process::id()),
            namespace: "default".into(),
            attempt: 0,
        }),
        hostname: name.into(),
        log_directory: log_dir.display().to_string(),
        labels: [("app".to_string(), name.to_string())]
            .into_iter()
            .collect(),
        linux: Some(cri::LinuxPodSandboxConfig {
            security_context: Some(cri::LinuxSandboxSecurityContext {
                namespace_options: Some(cri::NamespaceOption {
                    network: mode as i32,
                    pid: cri::NamespaceMode::Container as i32,
                    ipc: cri::NamespaceMode::Pod as i32,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// A container config running `args` from the test image, logging to `<name>.log`.
pub fn container_config(name: &str, args: &[&str]) -> cri::ContainerConfig {
    cri::ContainerConfig {
        metadata: Some(cri::ContainerMetadata {
            name: name.into(),
            attempt: 0,
        }),
        image: Some(cri::ImageSpec {
            image: TEST_IMAGE.into(),
            ..Default::default()
        }),
        command: args.iter().map(|s| s.to_string()).collect(),
        log_path: format!("{name}.log"),
        labels: [("name".to_string(), name.to_string())]
            .into_iter()
            .collect(),
        ..Default::default()
    }
}

// ---- streaming (exec -i/-t, attach, port-forward) helpers ----

/// `target/debug/rcrictl`, next to rcri.
pub fn rcrictl_bin() -> PathBuf {
    rcri_bin().with_file_name("rcrictl")
}

impl Rcri {
    /// Our socket as an rcrictl `-r` endpoint: `unix://<path>`.
    pub fn endpoint(&self) -> String {
        format!("unix://{}", self.socket.display())
    }

    /// An `rcrictl -r <our socket> ARGS...` command run inside the test's network namespace,
    /// where rcri's streaming server listens on loopback. Not spawned: the caller sets stdio.
    pub fn rcrictl(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", self.netns.name()])
            .arg(rcrictl_bin())
            .arg("-r")
            .arg(format!("unix://{}", self.socket.display()))
            .args(args);
        cmd
    }

    /// Runs `f` on a thread inside the test's network namespace (for TCP clients of the
    /// streaming server or of a forwarded port); the thread ends with `f`.
    pub fn in_netns_thread<T: Send>(&self, f: impl FnOnce() -> T + Send) -> Result<T> {
        let ns = fs::File::open(self.netns.path())
            .with_context(|| format!("failed to open {}", self.netns.path()))?;
        std::thread::scope(|s| {
            s.spawn(|| -> Result<T> {
                nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET)
                    .context("setns into the test netns")?;
                Ok(f())
            })
            .join()
            .map_err(|_| anyhow!("netns thread panicked"))?
        })
    }
}
