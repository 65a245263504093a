//! `rcrictl run`, the home-grown kubelet, end to end: the manifests of `examples/` run through a
//! real rcri (in a network namespace of the test's own) by an `rcrictl run` child process, and the
//! tests assert on what the containers see (ExecSync, HTTP to the pod IP) and on the v1 Pod that
//! `rcrictl get pod NAME -o json` prints: restarts, probes, env, volumes, deletion, static pods,
//! bad input and image pull back-off. Every test ends by checking that nothing is left: no
//! sandbox or container in rcri, no pod record, no mount under its directories.

use std::ffi::OsString;
use std::fs;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, ensure, Context, Result};
use e2e::cri::Rcri;
use e2e::{mounts_under, repo_root, run_command, scaled, temp_dir, Output, Value};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tempfile::TempDir;

/// Where the examples' hostPath volumes point; the tests substitute a directory of their own.
const EXAMPLES_HOST_DIR: &str = "/tmp/rcrictl-examples";
/// How long a pod may take to start (image import, sandbox with CNI, init containers, probes) on
/// a loaded 2-core machine.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// How long `run` may take to delete its pods after SIGINT (grace periods of a few seconds).
const STOP_TIMEOUT: Duration = Duration::from_secs(60);
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// One `rcrictl run` (the kubelet) against a test's rcri, with a root dir, copies of the
/// manifests and hostPath dirs in a temp dir of its own. Dropped before the [`Rcri`]: it
/// interrupts the child (graceful deletion), kills it if that hangs, and detaches what is still
/// mounted under its dir; the Rcri guard then removes whatever pods are left.
struct Kubelet {
    dir: TempDir,
    endpoint: String,
    child: Option<Child>,
}

impl Kubelet {
    fn new(rcri: &Rcri) -> Result<Kubelet> {
        let dir = temp_dir("kubelet")?;
        fs::create_dir_all(dir.path().join("hostpath"))?;
        Ok(Kubelet {
            dir,
            endpoint: rcri.endpoint(),
            child: None,
        })
    }

    fn root(&self) -> PathBuf {
        self.dir.path().join("root")
    }

    /// The examples' hostPath dir, redirected here.
    fn host_dir(&self) -> PathBuf {
        self.dir.path().join("hostpath")
    }

    fn record_dir(&self, namespace: &str, name: &str) -> PathBuf {
        self.root().join("pods").join(format!("{namespace}_{name}"))
    }

    /// The pod records present (`<root>/pods/*`).
    fn records(&self) -> Vec<String> {
        fs::read_dir(self.root().join("pods"))
            .map(|entries| {
                entries
                    .flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// `examples/<name>` copied here, its hostPath dir pointing at [`Kubelet::host_dir`].
    fn example(&self, name: &str) -> Result<PathBuf> {
        let source = repo_root().join("examples").join(name);
        let text = fs::read_to_string(&source)
            .with_context(|| format!("failed to read {}", source.display()))?;
        let text = text.replace(EXAMPLES_HOST_DIR, &self.host_dir().display().to_string());
        let path = self.dir.path().join(name);
        fs::write(&path, text)?;
        Ok(path)
    }

    /// A manifest of the test's own, written here.
    fn manifest(&self, name: &str, text: &str) -> Result<PathBuf> {
        let path = self.dir.path().join(name);
        fs::write(&path, text)?;
        Ok(path)
    }

    fn config_dir() -> PathBuf {
        repo_root().join("examples/config")
    }

    /// `rcrictl -r <rcri> ARGS...` in the host network namespace.
    fn ctl<S: AsRef<std::ffi::OsStr>>(&self, args: &[S]) -> Command {
        let mut cmd = Command::new(e2e::cri::rcrictl_bin());
        cmd.arg("-r").arg(&self.endpoint).args(args);
        cmd
    }

    /// `rcrictl ARGS... --root-dir <root>` run to completion.
    fn ctl_root(&self, args: &[&str]) -> Result<Output> {
        let mut cmd = self.ctl(args);
        cmd.arg("--root-dir").arg(self.root());
        run_command(&mut cmd, CALL_TIMEOUT)
    }

    /// `rcrictl run ARGS... --root-dir <root>` with short back-offs, as a child writing to
    /// run.out / run.err (files, so that a slow reader never blocks it).
    fn start(&mut self, args: &[OsString]) -> Result<()> {
        let out = fs::File::create(self.dir.path().join("run.out"))?;
        let err = fs::File::create(self.dir.path().join("run.err"))?;
        let mut cmd = self.ctl(&["run"]);
        cmd.args(args)
            .arg("--root-dir")
            .arg(self.root())
            .args([
                "--restart-backoff",
                "1s",
                "--max-backoff",
                "4s",
                "--file-check-frequency",
                "500ms",
            ])
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err);
        self.child = Some(cmd.spawn().context("failed to start rcrictl run")?);
        Ok(())
    }

    /// What `run` printed so far (stdout, then stderr).
    fn output(&self) -> String {
        let read = |f: &str| fs::read_to_string(self.dir.path().join(f)).unwrap_or_default();
        format!(
            "--- rcrictl run stdout ---\n{}--- rcrictl run stderr ---\n{}---",
            read("run.out"),
            read("run.err")
        )
    }

    /// Fails when `run` exited (it should be running the pods).
    fn check_running(&mut self) -> Result<()> {
        if let Some(child) = self.child.as_mut() {
            if let Some(status) = child.try_wait()? {
                bail!("rcrictl run exited early with {status}\n{}", self.output());
            }
        }
        Ok(())
    }

    /// Waits (bounded) for `run` to exit by itself.
    fn wait_exit(&mut self, timeout: Duration) -> Result<ExitStatus> {
        let child = self.child.as_mut().context("rcrictl run was not started")?;
        let deadline = Instant::now() + scaled(timeout);
        loop {
            if let Some(status) = child.try_wait()? {
                self.child = None;
                return Ok(status);
            }
            if Instant::now() > deadline {
                bail!(
                    "rcrictl run did not exit within {timeout:?}\n{}",
                    self.output()
                );
            }
            sleep(Duration::from_millis(50));
        }
    }

    /// Ctrl-C: SIGINT to `run` (when still running), then waits for it to exit.
    fn interrupt(&mut self) -> Result<ExitStatus> {
        let child = self.child.as_mut().context("rcrictl run was not started")?;
        if child.try_wait()?.is_none() {
            kill(Pid::from_raw(child.id() as i32), Signal::SIGINT)?;
        }
        self.wait_exit(STOP_TIMEOUT)
    }

    /// `rcrictl get pod NAME -o json`, parsed.
    fn get_json(&self, name: &str) -> Result<Value> {
        let out = self.ctl_root(&["get", "pod", name, "-o", "json"])?.ok()?;
        serde_json::from_str(&out.stdout)
            .with_context(|| format!("`get pod {name} -o json` printed no JSON:\n{out}"))
    }

    /// Polls `get pod NAME -o json` until `cond` holds; returns that pod. Fails early when `run`
    /// exits.
    fn wait_pod(
        &mut self,
        name: &str,
        what: &str,
        timeout: Duration,
        mut cond: impl FnMut(&Value) -> bool,
    ) -> Result<Value> {
        let deadline = Instant::now() + scaled(timeout);
        loop {
            let last = match self.get_json(name) {
                Ok(pod) if cond(&pod) => return Ok(pod),
                Ok(pod) => serde_json::to_string_pretty(&pod["status"])?,
                Err(e) => format!("{e:#}"),
            };
            self.check_running()?;
            if Instant::now() > deadline {
                bail!(
                    "timed out after {timeout:?} waiting for pod {name}: {what}\n\
                     last status: {last}\n{}",
                    self.output()
                );
            }
            sleep(Duration::from_millis(200));
        }
    }

    /// Nothing of the kubelet's is left: `run` exited, no sandbox or container in rcri, no pod
    /// record, nothing mounted under our dir (secret tmpfs, emptyDir of medium Memory).
    fn assert_nothing_left(&self, rcri: &Rcri) -> Result<()> {
        ensure!(self.child.is_none(), "rcrictl run is still running");
        let pods = rcri.list_pods(None)?;
        ensure!(pods.is_empty(), "sandboxes left in rcri: {pods:#?}");
        let containers = rcri.list_containers(None)?;
        ensure!(
            containers.is_empty(),
            "containers left in rcri: {containers:#?}"
        );
        let records = self.records();
        ensure!(records.is_empty(), "pod records left: {records:?}");
        let mounts = mounts_under(self.dir.path());
        ensure!(mounts.is_empty(), "mounts left: {mounts:?}");
        // rcri's side: no rootfs, shm or netns pin of a pod left (the netns dir itself stays a
        // mount point, like /run/netns of `ip netns`).
        let netns_dir = rcri.state().join("netns");
        let mounts: Vec<_> = mounts_under(rcri.dir.path())
            .into_iter()
            .filter(|m| *m != netns_dir)
            .collect();
        ensure!(mounts.is_empty(), "mounts left in rcri's dirs: {mounts:?}");
        Ok(())
    }
}

impl Drop for Kubelet {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGINT);
            let deadline = Instant::now() + scaled(STOP_TIMEOUT);
            while matches!(child.try_wait(), Ok(None)) && Instant::now() < deadline {
                sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        let mut mounts = mounts_under(self.dir.path());
        mounts.sort_by_key(|m| std::cmp::Reverse(m.as_os_str().len()));
        for m in mounts {
            let _ = nix::mount::umount2(&m, nix::mount::MntFlags::MNT_DETACH);
        }
    }
}

fn args(items: &[&dyn AsRef<std::ffi::OsStr>]) -> Vec<OsString> {
    items.iter().map(|a| a.as_ref().to_os_string()).collect()
}

// ---- the v1 Pod JSON ----

fn statuses<'a>(pod: &'a Value, key: &str) -> &'a [Value] {
    pod["status"][key]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or(&[])
}

fn container_status<'a>(pod: &'a Value, name: &str) -> Option<&'a Value> {
    statuses(pod, "containerStatuses")
        .iter()
        .find(|c| c["name"] == name)
}

fn init_status<'a>(pod: &'a Value, name: &str) -> Option<&'a Value> {
    statuses(pod, "initContainerStatuses")
        .iter()
        .find(|c| c["name"] == name)
}

fn restart_count(pod: &Value, name: &str) -> i64 {
    container_status(pod, name)
        .and_then(|c| c["restartCount"].as_i64())
        .unwrap_or(0)
}

fn is_running(pod: &Value, name: &str) -> bool {
    container_status(pod, name).is_some_and(|c| c["state"]["running"].is_object())
}

fn waiting_reason<'a>(pod: &'a Value, name: &str) -> Option<&'a str> {
    container_status(pod, name).and_then(|c| c["state"]["waiting"]["reason"].as_str())
}

fn condition<'a>(pod: &'a Value, kind: &str) -> Option<&'a str> {
    pod["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == kind)
        .and_then(|c| c["status"].as_str())
}

/// The CRI id of a container from its `containerID` ("<runtime>://<id>", the runtime being rcri).
fn container_id(pod: &Value, name: &str) -> Result<String> {
    let status = container_status(pod, name)
        .with_context(|| format!("no status of container {name}: {pod:#}"))?;
    let full = status["containerID"]
        .as_str()
        .with_context(|| format!("container {name} has no containerID: {status:#}"))?;
    let (runtime, id) = full
        .split_once("://")
        .with_context(|| format!("containerID {full:?} is not <runtime>://<id>"))?;
    ensure!(
        runtime == "rcri",
        "containerID {full:?}: runtime is not rcri"
    );
    Ok(id.to_string())
}

/// `rcrictl get pods` (the table) lines.
fn table(kubelet: &Kubelet) -> Result<String> {
    Ok(kubelet.ctl_root(&["get", "pods"])?.ok()?.stdout)
}

fn table_row(table: &str, name: &str) -> Option<Vec<String>> {
    table
        .lines()
        .map(|l| l.split_whitespace().map(str::to_string).collect::<Vec<_>>())
        .find(|cols| cols.first().map(String::as_str) == Some(name))
}

// ---- inside the pod ----

/// ExecSync in a container: (exit code, stdout, stderr).
fn exec(rcri: &Rcri, id: &str, cmd: &[&str]) -> Result<(i32, String, String)> {
    let r = rcri
        .exec_sync(id, cmd, 10)
        .map_err(|s| anyhow!("ExecSync {cmd:?} in {id}: {s:?}"))?;
    Ok((
        r.exit_code,
        String::from_utf8_lossy(&r.stdout).into_owned(),
        String::from_utf8_lossy(&r.stderr).into_owned(),
    ))
}

fn exec_ok(rcri: &Rcri, id: &str, cmd: &[&str]) -> Result<String> {
    let (code, out, err) = exec(rcri, id, cmd)?;
    ensure!(code == 0, "{cmd:?} exited with {code}: {out}{err}");
    Ok(out)
}

/// An HTTP/1.0 GET from inside the test's network namespace (where pod IPs are reachable).
fn http_get(rcri: &Rcri, ip: &str, port: u16, path: &str) -> Result<String> {
    let addr: SocketAddr = format!("{ip}:{port}")
        .parse()
        .with_context(|| format!("bad pod IP {ip:?}"))?;
    let host = ip.to_string();
    let path = path.to_string();
    rcri.in_netns_thread(move || -> Result<String> {
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
            .with_context(|| format!("connect to {addr}"))?;
        s.set_read_timeout(Some(Duration::from_secs(5)))?;
        write!(s, "GET {path} HTTP/1.0\r\nHost: {host}\r\n\r\n")?;
        let mut response = String::new();
        s.read_to_string(&mut response)?;
        Ok(response)
    })?
}

fn wait_file_contains(path: &Path, text: &str, timeout: Duration) -> Result<String> {
    let deadline = Instant::now() + scaled(timeout);
    loop {
        let content = fs::read_to_string(path).unwrap_or_default();
        if content.contains(text) {
            return Ok(content);
        }
        if Instant::now() > deadline {
            bail!(
                "{} does not contain {text:?} after {timeout:?}: {content:?}",
                path.display()
            );
        }
        sleep(Duration::from_millis(100));
    }
}

// ---- tests ----

/// examples/pod-web.yaml: init container + emptyDir, readiness and HTTP on the pod IP, env from
/// the downward API and a ConfigMap, ConfigMap and Secret files (read-only, mode), resources,
/// the sidecar, then `rcrictl delete pod web`: preStop ran, everything gone.
#[test]
fn web_pod_serves_sees_its_config_and_is_deleted_with_its_prestop_hook() -> Result<()> {
    let rcri = Rcri::start()?;
    let mut kubelet = Kubelet::new(&rcri)?;
    let manifest = kubelet.example("pod-web.yaml")?;
    kubelet.start(&args(&[&manifest, &"--config-dir", &Kubelet::config_dir()]))?;

    let pod = kubelet.wait_pod("web", "Ready", START_TIMEOUT, |p| {
        condition(p, "Ready") == Some("True")
    })?;
    assert_eq!(pod["apiVersion"], "v1");
    assert_eq!(pod["kind"], "Pod");
    assert_eq!(pod["metadata"]["namespace"], "default");
    assert_eq!(pod["status"]["phase"], "Running", "{pod:#}");
    assert_eq!(condition(&pod, "Initialized"), Some("True"), "{pod:#}");
    assert_eq!(condition(&pod, "ContainersReady"), Some("True"), "{pod:#}");
    for name in ["web", "sidecar"] {
        let status = container_status(&pod, name).context(name)?;
        assert_eq!(status["ready"], true, "{status:#}");
        assert!(status["state"]["running"].is_object(), "{status:#}");
        assert_eq!(status["restartCount"], 0, "{status:#}");
    }
    let init = init_status(&pod, "init-page").context("no init-page status")?;
    assert_eq!(init["state"]["terminated"]["exitCode"], 0, "{init:#}");
    assert_eq!(
        init["state"]["terminated"]["reason"], "Completed",
        "{init:#}"
    );
    let row = table_row(&table(&kubelet)?, "web").context("no row for web")?;
    assert_eq!(
        row.get(1..3),
        Some(&["2/2".to_string(), "Running".to_string()][..]),
        "{row:?}"
    );

    // The pod IP answers HTTP with the page the init container wrote into the emptyDir.
    let ip = pod["status"]["podIP"]
        .as_str()
        .filter(|ip| !ip.is_empty())
        .with_context(|| format!("no podIP: {pod:#}"))?
        .to_string();
    assert_eq!(pod["status"]["podIPs"][0]["ip"], ip.as_str(), "{pod:#}");
    let response = http_get(&rcri, &ip, 8080, "/")?;
    assert!(
        response.starts_with("HTTP/1.0 200") || response.starts_with("HTTP/1.1 200"),
        "{response}"
    );
    assert!(
        response.contains("<h1>hello from pod web</h1>"),
        "{response}"
    );

    let web = container_id(&pod, "web")?;
    let env = exec_ok(&rcri, &web, &["env"])?;
    let env: Vec<&str> = env.lines().collect();
    for expected in [
        "POD_NAME=web".to_string(),
        "POD_NAMESPACE=default".to_string(),
        format!("POD_IP={ip}"),
        "GREETING=hello from a ConfigMap".to_string(),
        "MODE=demo".to_string(),
    ] {
        assert!(
            env.contains(&expected.as_str()),
            "{expected} not in {env:?}"
        );
    }
    // The emptyDir is the one the init container wrote to.
    assert_eq!(
        exec_ok(&rcri, &web, &["cat", "/www/init-marker"])?,
        "written by init-page\n"
    );
    // ConfigMap keys as files, read-only.
    assert_eq!(
        exec_ok(&rcri, &web, &["cat", "/etc/web/greeting"])?,
        "hello from a ConfigMap"
    );
    assert!(exec_ok(&rcri, &web, &["cat", "/etc/web/httpd.conf"])?.contains(".html:text/html"));
    let (code, _, _) = exec(&rcri, &web, &["touch", "/etc/web/new"])?;
    assert_ne!(code, 0, "the configMap volume is writable");
    // The secret's key files with mode 0400, read-only.
    assert_eq!(
        exec_ok(&rcri, &web, &["cat", "/etc/secret/password"])?,
        "s3cr3t-passw0rd"
    );
    assert_eq!(
        exec_ok(&rcri, &web, &["cat", "/etc/secret/username"])?,
        "admin"
    );
    assert_eq!(
        exec_ok(
            &rcri,
            &web,
            &["stat", "-L", "-c", "%a", "/etc/secret/password"]
        )?
        .trim(),
        "400"
    );
    let (code, _, _) = exec(
        &rcri,
        &web,
        &["sh", "-c", "echo stolen > /etc/secret/password"],
    )?;
    assert_ne!(code, 0, "the secret file could be overwritten");
    let (code, _, _) = exec(&rcri, &web, &["touch", "/etc/secret/new"])?;
    assert_ne!(code, 0, "the secret volume is writable");
    // The secret never touches the node's disk: a tmpfs under the pod's record, as kubelet does.
    let record = kubelet.record_dir("default", "web");
    assert!(
        mounts_under(&record).iter().any(|m| m.ends_with("secret")),
        "no tmpfs for the secret volume under {}: {:?}",
        record.display(),
        mounts_under(&record)
    );
    // ... and only root may reach it on the node: the records' directory is private.
    let pods_dir = record.parent().context("record without a parent")?;
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&fs::metadata(pods_dir)?.permissions()) & 0o7777;
    assert_eq!(mode, 0o700, "{} has mode {mode:o}", pods_dir.display());

    // Requests and limits as kubelet computes them: shares 100m*1024/1000, quota 500m of 100 ms.
    let resources = rcri
        .container_status(&web)?
        .resources
        .and_then(|r| r.linux)
        .context("no linux resources in the web container's status")?;
    assert_eq!(resources.memory_limit_in_bytes, 64 << 20, "{resources:?}");
    assert_eq!(resources.cpu_shares, 102, "{resources:?}");
    assert_eq!(resources.cpu_period, 100_000, "{resources:?}");
    assert_eq!(resources.cpu_quota, 50_000, "{resources:?}");
    // Burstable: 1000 - 1000 * memory request / MemTotal, within [2, 999].
    let meminfo = fs::read_to_string("/proc/meminfo")?;
    let mem_total: i64 = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .context("no MemTotal in /proc/meminfo")?;
    let expected = (1000 - 1000 * (32i64 << 20) / (mem_total * 1024)).clamp(2, 999);
    assert_eq!(resources.oom_score_adj, expected, "{resources:?}");

    // The sidecar reaches the server on the pod's shared loopback; its log is in the record.
    wait_file_contains(
        &record.join("logs/sidecar/0.log"),
        "sidecar got: <h1>hello from pod web</h1>",
        Duration::from_secs(20),
    )?;
    let out = kubelet.output();
    assert!(out.contains("default/web: pod ready"), "{out}");
    assert!(!out.contains('\x1b'), "escape sequences on a pipe: {out}");

    // Readiness is probed all along: without its page the server answers 404 and the pod is
    // not ready (before the liveness probe, 3 x 2 s, would kill it); with it back, ready again.
    exec_ok(&rcri, &web, &["mv", "/www/index.html", "/www/index.bak"])?;
    let unready = kubelet.wait_pod("web", "not ready", Duration::from_secs(10), |p| {
        condition(p, "Ready") == Some("False")
    });
    exec_ok(&rcri, &web, &["mv", "/www/index.bak", "/www/index.html"])?;
    let unready = unready?;
    let status = container_status(&unready, "web").context("no web status")?;
    assert_eq!(status["ready"], false, "{status:#}");
    assert_eq!(condition(&unready, "ContainersReady"), Some("False"));
    kubelet.wait_pod("web", "ready again", Duration::from_secs(10), |p| {
        condition(p, "Ready") == Some("True")
    })?;

    // Graceful deletion through the running owner: preStop first, then everything goes.
    let delete = kubelet.ctl_root(&["delete", "pod", "web"])?;
    assert!(delete.success(), "{delete}\n{}", kubelet.output());
    // The owner did it, alone: the delete command only asked and waited.
    assert_eq!(
        delete.stdout,
        "pod \"web\" deleted\n",
        "{delete}\n{}",
        kubelet.output()
    );
    // The owner prints its last line just after removing the record, which ends the wait of
    // `delete`: polled.
    e2e::wait_for(
        "the owner's `pod deleted` line",
        Duration::from_secs(5),
        || Ok(kubelet.output().contains("default/web: pod deleted")),
    )
    .with_context(|| kubelet.output())?;
    let out = kubelet.output();
    assert!(!out.contains("cannot remove"), "{out}");
    let prestop = fs::read_to_string(kubelet.host_dir().join("web/prestop.log"))
        .context("the preStop hook did not write its file")?;
    assert_eq!(prestop, "preStop of web\n");
    assert!(!record.exists(), "the record dir is still there");
    e2e::wait_for("the sandbox to be removed", Duration::from_secs(5), || {
        Ok(rcri.list_pods(None)?.is_empty())
    })?;
    let get = kubelet.ctl_root(&["get", "pod", "web"])?;
    assert_eq!(get.code(), 1, "{get}");
    assert!(get.stderr.contains(r#"pods "web" not found"#), "{get}");

    let status = kubelet.interrupt()?;
    assert!(status.success(), "{status}\n{}", kubelet.output());
    kubelet.assert_nothing_left(&rcri)
}

/// examples/pod-crash.yaml: restarts with back-off, CrashLoopBackOff while waiting, the last exit
/// code, old containers collected.
#[test]
fn crashing_container_is_restarted_with_back_off() -> Result<()> {
    let rcri = Rcri::start()?;
    let mut kubelet = Kubelet::new(&rcri)?;
    let manifest = kubelet.example("pod-crash.yaml")?;
    kubelet.start(&args(&[&manifest]))?;

    let mut reasons = Vec::new();
    let mut table_statuses = Vec::new();
    let pod = kubelet.wait_pod(
        "crash",
        "3 restarts with CrashLoopBackOff seen",
        Duration::from_secs(90),
        |p| {
            if let Some(c) = container_status(p, "crash") {
                let reason = c["state"]["waiting"]["reason"].as_str().unwrap_or("");
                if reason == "CrashLoopBackOff" {
                    let message = c["state"]["waiting"]["message"].as_str().unwrap_or("");
                    reasons.push(format!("{reason}: {message}"));
                }
            }
            restart_count(p, "crash") >= 3 && !reasons.is_empty()
        },
    )?;
    // The table shows it too (while in back-off; sample until seen).
    e2e::wait_for(
        "CrashLoopBackOff in `get pods`",
        Duration::from_secs(30),
        || {
            let t = table(&kubelet)?;
            if let Some(row) = table_row(&t, "crash") {
                table_statuses.push(row.get(2).cloned().unwrap_or_default());
            }
            Ok(table_statuses.iter().any(|s| s == "CrashLoopBackOff"))
        },
    )
    .with_context(|| format!("statuses seen: {table_statuses:?}"))?;

    let status = container_status(&pod, "crash").context("no crash status")?;
    let last = &status["lastState"]["terminated"];
    assert_eq!(last["exitCode"], 1, "{status:#}");
    assert_eq!(last["reason"], "Error", "{status:#}");
    assert!(
        reasons
            .iter()
            .any(|r| r.contains("back-off") && r.contains("restarting failed container=crash")),
        "{reasons:?}"
    );
    assert_eq!(pod["status"]["phase"], "Running", "{pod:#}");
    // The same status as YAML (kubectl's -o yaml): the whole v1 Pod.
    let yaml = kubelet
        .ctl_root(&["get", "pod", "crash", "-o", "yaml"])?
        .ok()?
        .stdout;
    let from_yaml: Value = serde_yaml_ng::from_str(&yaml).with_context(|| yaml.clone())?;
    assert_eq!(from_yaml["kind"], "Pod", "{yaml}");
    assert_eq!(from_yaml["metadata"]["name"], "crash", "{yaml}");
    let yaml_status = &from_yaml["status"]["containerStatuses"][0];
    assert_eq!(yaml_status["name"], "crash", "{yaml}");
    assert!(yaml_status["restartCount"].as_u64() >= Some(3), "{yaml}");
    assert_eq!(
        yaml_status["lastState"]["terminated"]["exitCode"], 1,
        "{yaml}"
    );
    // Each restart is a new CRI container with attempt+1; only the last dead one is kept (the
    // older ones may go a moment after the new one started: polled).
    let mut containers = Vec::new();
    e2e::wait_for(
        "at most 2 containers of the newest attempts",
        Duration::from_secs(10),
        || {
            containers = rcri.list_containers(None)?;
            let attempts: Vec<u32> = containers
                .iter()
                .filter_map(|c| c.metadata.as_ref().map(|m| m.attempt))
                .collect();
            Ok((1..=2).contains(&attempts.len()) && attempts.iter().all(|a| *a >= 2))
        },
    )
    .with_context(|| format!("containers kept: {containers:#?}"))?;
    let out = kubelet.output();
    assert!(
        out.contains("default/crash: container crash exited with 1"),
        "{out}"
    );
    assert!(out.contains("back-off"), "{out}");

    let status = kubelet.interrupt()?;
    assert!(status.success(), "{status}\n{}", kubelet.output());
    kubelet.assert_nothing_left(&rcri)
}

/// examples/pod-liveness.yaml: the probe starts failing after 5 s; the container is killed
/// (SIGKILL after the grace period: `sleep` ignores SIGTERM as PID 1) and started again.
#[test]
fn failing_liveness_probe_restarts_the_container() -> Result<()> {
    let rcri = Rcri::start()?;
    let mut kubelet = Kubelet::new(&rcri)?;
    let manifest = kubelet.example("pod-liveness.yaml")?;
    kubelet.start(&args(&[&manifest]))?;

    let first = kubelet.wait_pod("liveness", "running", START_TIMEOUT, |p| {
        is_running(p, "app")
    })?;
    let first_id = container_id(&first, "app")?;
    let pod = kubelet.wait_pod(
        "liveness",
        "a restart after the liveness probe failed",
        Duration::from_secs(60),
        |p| restart_count(p, "app") >= 1 && is_running(p, "app"),
    )?;
    let status = container_status(&pod, "app").context("no app status")?;
    assert_eq!(
        status["lastState"]["terminated"]["exitCode"], 137,
        "{status:#}"
    );
    assert_ne!(container_id(&pod, "app")?, first_id, "not a new container");
    let out = kubelet.output();
    assert!(
        out.contains("default/liveness: liveness probe of app failed"),
        "{out}"
    );
    assert!(
        out.contains("default/liveness: killing container app: liveness probe failed"),
        "{out}"
    );

    let status = kubelet.interrupt()?;
    assert!(status.success(), "{status}\n{}", kubelet.output());
    kubelet.assert_nothing_left(&rcri)
}

/// examples/pod-job.yaml: init container, a container that succeeds, `run` exits 0, the record
/// says Completed until `delete`.
#[test]
fn job_pod_completes_and_run_exits_zero() -> Result<()> {
    let rcri = Rcri::start()?;
    let mut kubelet = Kubelet::new(&rcri)?;
    let manifest = kubelet.example("pod-job.yaml")?;
    kubelet.start(&args(&[&manifest]))?;
    let status = kubelet.wait_exit(START_TIMEOUT)?;
    assert!(status.success(), "{status}\n{}", kubelet.output());

    let pod = kubelet.get_json("job")?;
    assert_eq!(pod["status"]["phase"], "Succeeded", "{pod:#}");
    let init = init_status(&pod, "prepare").context("no prepare status")?;
    assert_eq!(init["state"]["terminated"]["exitCode"], 0, "{init:#}");
    let compute = container_status(&pod, "compute").context("no compute status")?;
    assert_eq!(compute["state"]["terminated"]["exitCode"], 0, "{compute:#}");
    assert_eq!(
        compute["state"]["terminated"]["reason"], "Completed",
        "{compute:#}"
    );
    assert_eq!(compute["restartCount"], 0, "{compute:#}");
    let row = table_row(&table(&kubelet)?, "job").context("no row for job")?;
    assert_eq!(row.get(2).map(String::as_str), Some("Completed"), "{row:?}");
    // The input came through the emptyDir from the init container.
    let log = fs::read_to_string(
        kubelet
            .record_dir("default", "job")
            .join("logs/compute/0.log"),
    )
    .context("no log of compute")?;
    assert!(log.contains("answer: 42"), "{log}");
    // A finished pod keeps only its record: the sandbox is gone.
    assert!(rcri.list_pods(None)?.is_empty(), "the sandbox was kept");

    let delete = kubelet.ctl_root(&["delete", "pod", "job"])?;
    assert!(delete.success(), "{delete}");
    kubelet.assert_nothing_left(&rcri)
}

/// restartPolicy Never and OnFailure: a failed container is not restarted (the pod Failed, `run`
/// exits 1), one that fails under OnFailure is, until it succeeds (its emptyDir survives).
#[test]
fn never_and_on_failure_pods_end_failed_and_succeeded() -> Result<()> {
    let rcri = Rcri::start()?;
    let mut kubelet = Kubelet::new(&rcri)?;
    let manifest = kubelet.manifest(
        "policies.yaml",
        r#"apiVersion: v1
kind: Pod
metadata:
  name: fails
spec:
  restartPolicy: Never
  containers:
    - name: app
      image: busybox:latest
      imagePullPolicy: IfNotPresent
      command: ["sh", "-c", "echo failing; exit 3"]
---
apiVersion: v1
kind: Pod
metadata:
  name: retries
spec:
  restartPolicy: OnFailure
  containers:
    - name: app
      image: busybox:latest
      imagePullPolicy: IfNotPresent
      command:
        - sh
        - -c
        - "if [ -e /state/tried ]; then echo second try; exit 0; fi; touch /state/tried; exit 2"
      volumeMounts:
        - name: state
          mountPath: /state
  volumes:
    - name: state
      emptyDir: {}
"#,
    )?;
    kubelet.start(&args(&[&manifest]))?;
    let status = kubelet.wait_exit(START_TIMEOUT)?;
    assert_eq!(status.code(), Some(1), "{status}\n{}", kubelet.output());

    let fails = kubelet.get_json("fails")?;
    assert_eq!(fails["status"]["phase"], "Failed", "{fails:#}");
    let app = container_status(&fails, "app").context("no app status")?;
    assert_eq!(app["state"]["terminated"]["exitCode"], 3, "{app:#}");
    assert_eq!(app["state"]["terminated"]["reason"], "Error", "{app:#}");
    assert_eq!(app["restartCount"], 0, "{app:#}");

    let retries = kubelet.get_json("retries")?;
    assert_eq!(retries["status"]["phase"], "Succeeded", "{retries:#}");
    let app = container_status(&retries, "app").context("no app status")?;
    assert_eq!(app["restartCount"], 1, "{app:#}");
    assert_eq!(app["lastState"]["terminated"]["exitCode"], 2, "{app:#}");
    assert_eq!(app["state"]["terminated"]["exitCode"], 0, "{app:#}");
    assert_eq!(app["state"]["terminated"]["reason"], "Completed", "{app:#}");

    let t = table(&kubelet)?;
    let status_of = |name: &str| table_row(&t, name).and_then(|r| r.get(2).cloned());
    assert_eq!(status_of("fails").as_deref(), Some("Error"), "{t}");
    assert_eq!(status_of("retries").as_deref(), Some("Completed"), "{t}");
    assert!(
        rcri.list_pods(None)?.is_empty(),
        "a finished pod kept its sandbox"
    );

    for name in ["fails", "retries"] {
        let delete = kubelet.ctl_root(&["delete", "pod", name])?;
        assert!(delete.success(), "{delete}");
    }
    kubelet.assert_nothing_left(&rcri)
}

/// The owner killed (-9): its pod keeps running; `rcrictl delete` then does the graceful deletion
/// itself through the CRI (preStop from the container's annotation, the secret's tmpfs
/// unmounted, the record removed).
#[test]
fn delete_without_a_live_owner_does_it_itself() -> Result<()> {
    let rcri = Rcri::start()?;
    let mut kubelet = Kubelet::new(&rcri)?;
    let manifest = kubelet.example("pod-web.yaml")?;
    kubelet.start(&args(&[&manifest, &"--config-dir", &Kubelet::config_dir()]))?;
    kubelet.wait_pod("web", "Ready", START_TIMEOUT, |p| {
        condition(p, "Ready") == Some("True")
    })?;
    let mut child = kubelet.child.take().context("no run child")?;
    child.kill()?;
    child.wait()?;
    assert_eq!(
        rcri.list_pods(None)?.len(),
        1,
        "the pod went with its owner"
    );
    let pod = kubelet.get_json("web")?;
    assert_eq!(pod["metadata"]["name"], "web", "{pod:#}");

    let delete = kubelet.ctl_root(&["delete", "pod", "web"])?;
    assert!(delete.success(), "{delete}");
    let prestop = fs::read_to_string(kubelet.host_dir().join("web/prestop.log"))
        .context("the preStop hook did not run")?;
    assert_eq!(prestop, "preStop of web\n");
    kubelet.assert_nothing_left(&rcri)
}

/// Ctrl-C (SIGINT) deletes every pod of the run gracefully: preStop hooks included.
#[test]
fn ctrl_c_deletes_every_pod() -> Result<()> {
    let rcri = Rcri::start()?;
    let mut kubelet = Kubelet::new(&rcri)?;
    let web = kubelet.example("pod-web.yaml")?;
    let crash = kubelet.example("pod-crash.yaml")?;
    kubelet.start(&args(&[
        &web,
        &crash,
        &"--config-dir",
        &Kubelet::config_dir(),
    ]))?;
    kubelet.wait_pod("web", "Ready", START_TIMEOUT, |p| {
        condition(p, "Ready") == Some("True")
    })?;
    kubelet.wait_pod("crash", "a restart", START_TIMEOUT, |p| {
        restart_count(p, "crash") >= 1
    })?;
    assert_eq!(rcri.list_pods(None)?.len(), 2);
    let mut records = kubelet.records();
    records.sort();
    assert_eq!(records, ["default_crash", "default_web"]);

    let status = kubelet.interrupt()?;
    assert!(status.success(), "{status}\n{}", kubelet.output());
    let prestop = fs::read_to_string(kubelet.host_dir().join("web/prestop.log"))
        .context("the preStop hook did not run on Ctrl-C")?;
    assert_eq!(prestop, "preStop of web\n");
    kubelet.assert_nothing_left(&rcri)
}

/// terminationGracePeriodSeconds is honoured: a container ignoring SIGTERM is killed after it,
/// not before and not much later. Also: an unknown field is a warning, not an error.
#[test]
fn delete_honours_the_grace_period() -> Result<()> {
    let rcri = Rcri::start()?;
    let mut kubelet = Kubelet::new(&rcri)?;
    let manifest = kubelet.manifest(
        "stubborn.yaml",
        r#"apiVersion: v1
kind: Pod
metadata:
  name: stubborn
spec:
  terminationGracePeriodSeconds: 4
  containers:
    - name: app
      image: busybox:latest
      imagePullPolicy: IfNotPresent
      fancyNewField: true
      command: ["sh", "-c", "trap '' TERM; while true; do sleep 1; done"]
"#,
    )?;
    kubelet.start(&args(&[&manifest]))?;
    let pod = kubelet.wait_pod("stubborn", "running", START_TIMEOUT, |p| {
        is_running(p, "app")
    })?;
    assert_eq!(pod["spec"]["terminationGracePeriodSeconds"], 4, "{pod:#}");
    let out = kubelet.output();
    assert!(
        out.contains("spec.containers[0].fancyNewField"),
        "no warning about the unknown field: {out}"
    );

    let t = Instant::now();
    let delete = kubelet.ctl_root(&["delete", "pod", "stubborn"])?;
    let took = t.elapsed();
    assert!(delete.success(), "{delete}\n{}", kubelet.output());
    assert!(
        took >= Duration::from_millis(3500) && took < Duration::from_secs(20),
        "deletion took {took:?} with a grace period of 4 s"
    );
    let status = kubelet.interrupt()?;
    assert!(status.success(), "{status}\n{}", kubelet.output());
    kubelet.assert_nothing_left(&rcri)
}

const SLEEPER: &str = r#"apiVersion: v1
kind: Pod
metadata:
  name: sleeper
  labels:
    version: "VERSION"
spec:
  terminationGracePeriodSeconds: 2
  containers:
    - name: app
      image: busybox:latest
      imagePullPolicy: IfNotPresent
      command: ["sh", "-c", "trap 'exit 0' TERM; echo version VERSION; while true; do sleep 1; done"]
"#;

/// Writes a file atomically (rename), as editors and config management do.
fn write_atomic(path: &Path, text: &str) -> Result<()> {
    let dir = path.parent().context("no parent")?;
    let tmp = dir.join(format!(
        ".{}.tmp",
        path.file_name().context("no name")?.to_string_lossy()
    ));
    fs::write(&tmp, text)?;
    fs::rename(&tmp, path)?;
    Ok(())
}

/// --pod-manifest-dir: a file appearing starts its pod, a change recreates it (new uid, new
/// sandbox), a broken file is skipped without touching the others, a removed file deletes it.
#[test]
fn static_pod_dir_follows_its_files() -> Result<()> {
    let rcri = Rcri::start()?;
    let mut kubelet = Kubelet::new(&rcri)?;
    let dir = kubelet.dir.path().join("manifests");
    fs::create_dir(&dir)?;
    kubelet.start(&args(&[&"--pod-manifest-dir", &dir]))?;

    let file = dir.join("sleeper.yaml");
    write_atomic(&file, &SLEEPER.replace("VERSION", "1"))?;
    let first = kubelet.wait_pod("sleeper", "running", START_TIMEOUT, |p| {
        is_running(p, "app")
    })?;
    let uid1 = first["metadata"]["uid"].as_str().unwrap_or("").to_string();
    assert!(!uid1.is_empty(), "{first:#}");
    assert_eq!(first["metadata"]["labels"]["version"], "1");
    let sandboxes = rcri.list_pods(None)?;
    assert_eq!(sandboxes.len(), 1, "{sandboxes:#?}");
    let sandbox1 = sandboxes[0].id.clone();

    write_atomic(&file, &SLEEPER.replace("VERSION", "2"))?;
    let second = kubelet.wait_pod(
        "sleeper",
        "recreated from the changed file",
        START_TIMEOUT,
        |p| p["metadata"]["labels"]["version"] == "2" && is_running(p, "app"),
    )?;
    let uid2 = second["metadata"]["uid"].as_str().unwrap_or("");
    assert!(
        !uid2.is_empty() && uid2 != uid1,
        "uid {uid1} kept: {second:#}"
    );
    e2e::wait_for(
        "the old sandbox to be removed",
        Duration::from_secs(10),
        || {
            let pods = rcri.list_pods(None)?;
            Ok(pods.len() == 1 && pods[0].id != sandbox1)
        },
    )?;

    // A broken file: an error naming it, the running pod untouched; a dot file: ignored.
    fs::write(
        dir.join("broken.yaml"),
        "apiVersion: v1\nkind: Pod\nmetadata: [\n",
    )?;
    fs::write(
        dir.join(".hidden.yaml"),
        SLEEPER.replace("sleeper", "hidden"),
    )?;
    e2e::wait_for(
        "an error about broken.yaml",
        Duration::from_secs(15),
        || Ok(kubelet.output().contains("broken.yaml")),
    )
    .with_context(|| kubelet.output())?;
    let pod = kubelet.get_json("sleeper")?;
    assert_eq!(pod["metadata"]["uid"], uid2, "{pod:#}");
    assert!(is_running(&pod, "app"), "{pod:#}");
    assert_eq!(restart_count(&pod, "app"), 0, "{pod:#}");
    assert_eq!(kubelet.records(), ["default_sleeper"]);

    fs::remove_file(&file)?;
    e2e::wait_for(
        "the pod to be deleted with its file",
        Duration::from_secs(30),
        || Ok(kubelet.records().is_empty() && rcri.list_pods(None)?.is_empty()),
    )
    .with_context(|| kubelet.output())?;
    let get = kubelet.ctl_root(&["get", "pod", "sleeper"])?;
    assert_eq!(get.code(), 1, "{get}");

    let status = kubelet.interrupt()?;
    assert!(status.success(), "{status}\n{}", kubelet.output());
    kubelet.assert_nothing_left(&rcri)
}

/// Bad input: exit 1, a message naming the file and what is wrong, and nothing created — also
/// not the valid pod of the same file.
#[test]
fn bad_manifests_are_refused_and_leave_nothing() -> Result<()> {
    let rcri = Rcri::start()?;
    let kubelet = Kubelet::new(&rcri)?;
    let good = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: good\nspec:\n  containers:\n    \
                - name: app\n      image: busybox:latest\n      imagePullPolicy: IfNotPresent\n      \
                command: [\"sleep\", \"3600\"]\n";
    let cases: [(&str, String, &[&str]); 4] = [
        (
            "invalid.yaml",
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: bad\nspec:\n  containers:\n    \
             - name: app\n      image: busybox:latest\n     command: [\"true\"]\n"
                .to_string(),
            &["invalid.yaml", "line"],
        ),
        (
            "pvc.yaml",
            format!(
                "{good}---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: claims\nspec:\n  \
                 containers:\n    - name: app\n      image: busybox:latest\n  volumes:\n    \
                 - name: data\n      persistentVolumeClaim:\n        claimName: data\n"
            ),
            &["pvc.yaml", "spec.volumes[0]", "persistentVolumeClaim"],
        ),
        (
            "deployment.yaml",
            format!(
                "{good}---\napiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\n\
                 spec:\n  replicas: 2\n"
            ),
            &["deployment.yaml", "Deployment"],
        ),
        (
            "noimage.yaml",
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: noimage\nspec:\n  containers:\n    \
             - name: app\n"
                .to_string(),
            &["noimage.yaml", "spec.containers[0].image"],
        ),
    ];
    for (name, text, expected) in cases {
        let path = kubelet.manifest(name, &text)?;
        let out = kubelet.ctl_root(&["run", &path.display().to_string()])?;
        assert_eq!(out.code(), 1, "{name}: {out}");
        for e in expected {
            assert!(
                out.stderr.contains(e),
                "{name}: {e:?} not in the error: {out}"
            );
        }
        assert!(
            out.stderr.lines().count() <= 10,
            "{name}: not a short error: {out}"
        );
        assert!(kubelet.records().is_empty(), "{name}: a record was created");
        assert!(
            rcri.list_pods(None)?.is_empty(),
            "{name}: a sandbox was created"
        );
    }
    let missing = kubelet.ctl_root(&["run", "/nonexistent/pod.yaml"])?;
    assert_eq!(missing.code(), 1, "{missing}");
    assert!(
        missing.stderr.contains("/nonexistent/pod.yaml"),
        "{missing}"
    );

    for verb in [&["get", "pod", "nope"][..], &["delete", "pod", "nope"]] {
        let out = kubelet.ctl_root(verb)?;
        assert_eq!(out.code(), 1, "{out}");
        assert!(out.stderr.contains(r#"pods "nope" not found"#), "{out}");
    }
    kubelet.assert_nothing_left(&rcri)
}

/// An image that cannot be pulled: ErrImagePull, then ImagePullBackOff, retried; the pod stays
/// Pending, and Ctrl-C still cleans up.
#[test]
fn unpullable_image_backs_off() -> Result<()> {
    let rcri = Rcri::start()?;
    let mut kubelet = Kubelet::new(&rcri)?;
    let manifest = kubelet.manifest(
        "nopull.yaml",
        r#"apiVersion: v1
kind: Pod
metadata:
  name: nopull
spec:
  containers:
    - name: app
      image: 127.0.0.1:1/nope:latest
      imagePullPolicy: Always
"#,
    )?;
    kubelet.start(&args(&[&manifest]))?;
    let mut seen: Vec<String> = Vec::new();
    let pod = kubelet.wait_pod(
        "nopull",
        "ErrImagePull then ImagePullBackOff",
        START_TIMEOUT,
        |p| {
            if let Some(reason) = waiting_reason(p, "app") {
                if seen.last().map(String::as_str) != Some(reason) {
                    seen.push(reason.to_string());
                }
            }
            let err = seen.iter().position(|r| r == "ErrImagePull");
            let backoff = seen.iter().rposition(|r| r == "ImagePullBackOff");
            matches!((err, backoff), (Some(e), Some(b)) if b > e)
        },
    )?;
    assert_eq!(pod["status"]["phase"], "Pending", "{pod:#}");
    let status = container_status(&pod, "app").context("no app status")?;
    assert_eq!(status["ready"], false, "{status:#}");
    assert!(
        status["state"]["waiting"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("127.0.0.1:1/nope:latest")),
        "{status:#}"
    );
    // Retried: ErrImagePull comes back after the back-off.
    let mut again = false;
    kubelet.wait_pod(
        "nopull",
        "a second ErrImagePull",
        Duration::from_secs(30),
        |p| {
            if waiting_reason(p, "app") == Some("ErrImagePull") {
                again = true;
            }
            again
        },
    )?;
    let row = table_row(&table(&kubelet)?, "nopull").context("no row for nopull")?;
    assert!(
        matches!(
            row.get(2).map(String::as_str),
            Some("ErrImagePull" | "ImagePullBackOff")
        ),
        "{row:?}"
    );

    let status = kubelet.interrupt()?;
    assert!(status.success(), "{status}\n{}", kubelet.output());
    kubelet.assert_nothing_left(&rcri)
}

/// The examples as the library reads them: every file parses without an unknown-field warning,
/// holds Pods that validate, and pod-web's ConfigMap and Secret are found in examples/config.
/// (No rcri needed: a quick check that fails on a typo before the slow tests do.)
#[test]
fn examples_parse_validate_and_find_their_config() -> Result<()> {
    use rcri::kubelet::{convert, manifest, sources::ConfigSources};
    let dir = repo_root().join("examples");
    let mut names = Vec::new();
    for file in [
        "pod-web.yaml",
        "pod-crash.yaml",
        "pod-liveness.yaml",
        "pod-job.yaml",
        "pod-probes.yaml",
        "pod-volumes.yaml",
        "pod-hostnet.yaml",
    ] {
        let (objects, warnings) = manifest::load_file(&dir.join(file))?;
        assert!(warnings.is_empty(), "{file}: {warnings:?}");
        assert_eq!(objects.len(), 1, "{file}");
        for object in objects {
            let manifest::Object::Pod(mut pod) = object else {
                bail!("{file}: not a Pod");
            };
            convert::apply_defaults(&mut pod);
            convert::validate(&pod).with_context(|| file.to_string())?;
            for c in pod.spec.init_containers.iter().chain(&pod.spec.containers) {
                assert_eq!(c.image, "busybox:latest", "{file}");
                assert_eq!(
                    c.image_pull_policy,
                    Some(manifest::PullPolicy::IfNotPresent),
                    "{file}"
                );
            }
            names.push(pod.metadata.name.clone());
        }
    }
    assert_eq!(
        names,
        ["web", "crash", "liveness", "job", "probes", "volumes", "hostnet"]
    );

    let (config, warnings) = manifest::load_file(&dir.join("config/web-config.yaml"))?;
    assert!(warnings.is_empty(), "{warnings:?}");
    assert_eq!(config.len(), 1);
    let sources = ConfigSources::load(Some(&dir.join("config")), &[])?;
    let cm = sources
        .config_map("default", "web-config")
        .context("web-config not found")?;
    assert_eq!(
        cm.get("greeting").map(Vec::as_slice),
        Some(&b"hello from a ConfigMap"[..])
    );
    let secret = sources
        .secret("default", "web-secret")
        .context("web-secret not found")?;
    assert_eq!(
        secret.get("password").map(Vec::as_slice),
        Some(&b"s3cr3t-passw0rd"[..])
    );
    assert_eq!(
        secret.get("username").map(Vec::as_slice),
        Some(&b"admin"[..])
    );
    Ok(())
}

fn bool_field(pod: &Value, name: &str, field: &str) -> Option<bool> {
    container_status(pod, name).and_then(|c| c[field].as_bool())
}

/// examples/pod-probes.yaml: the startup probe holds back liveness and readiness (the container
/// is neither started nor ready while httpd already answers and the liveness port is closed),
/// then `started` flips; the httpGet readiness probe on a named port makes it ready; killing the
/// tcpSocket liveness listener restarts it after periodSeconds x failureThreshold, not before;
/// initialDelaySeconds keeps `slow` from a liveness kill and from being ready too soon.
#[test]
fn probes_startup_gates_liveness_and_readiness_and_timing_is_honoured() -> Result<()> {
    let rcri = Rcri::start()?;
    let mut kubelet = Kubelet::new(&rcri)?;
    let manifest = kubelet.example("pod-probes.yaml")?;
    kubelet.start(&args(&[&manifest]))?;

    let early = kubelet.wait_pod("probes", "both containers running", START_TIMEOUT, |p| {
        is_running(p, "app") && is_running(p, "slow")
    })?;
    let running_at = Instant::now();
    let ip = early["status"]["podIP"]
        .as_str()
        .filter(|ip| !ip.is_empty())
        .with_context(|| format!("no podIP: {early:#}"))?
        .to_string();
    // httpd answers: readiness would pass, but the startup probe has not succeeded yet.
    e2e::wait_for("httpd to answer", Duration::from_secs(5), || {
        Ok(http_get(&rcri, &ip, 8080, "/index.html").is_ok_and(|r| r.contains(" 200 ")))
    })?;
    let pod = kubelet.get_json("probes")?;
    let app = container_status(&pod, "app").context("no app status")?;
    assert_eq!(app["started"], false, "{app:#}");
    assert_eq!(app["ready"], false, "{app:#}");
    assert_eq!(condition(&pod, "Ready"), Some("False"), "{pod:#}");

    let mut slow_ready_after = None;
    let mut app_started_after = None;
    let ready = kubelet.wait_pod("probes", "Ready", START_TIMEOUT, |p| {
        if app_started_after.is_none() && bool_field(p, "app", "started") == Some(true) {
            app_started_after = Some(running_at.elapsed());
        }
        if slow_ready_after.is_none() && bool_field(p, "slow", "ready") == Some(true) {
            slow_ready_after = Some(running_at.elapsed());
        }
        condition(p, "Ready") == Some("True")
    })?;
    // `app` starts after ~6 s (its `sleep 6`), `slow` is ready no sooner than its 6 s delay
    // (less the time it took to see them running).
    let app_started_after = app_started_after.context("app never seen started")?;
    let slow_ready_after = slow_ready_after.context("slow never seen ready")?;
    assert!(
        app_started_after >= Duration::from_secs(4),
        "app started {app_started_after:?} after running"
    );
    assert!(
        slow_ready_after >= Duration::from_secs(4),
        "slow ready {slow_ready_after:?} after running: initialDelaySeconds 6 ignored"
    );
    for name in ["app", "slow"] {
        let c = container_status(&ready, name).context(name)?;
        assert_eq!(c["started"], true, "{c:#}");
        assert_eq!(c["ready"], true, "{c:#}");
        assert_eq!(c["restartCount"], 0, "{c:#}\n{}", kubelet.output());
    }
    let out = kubelet.output();
    assert!(out.contains("startup probe of app failed"), "{out}");
    assert!(
        !out.contains("liveness probe of app failed"),
        "liveness ran before the startup probe succeeded: {out}"
    );

    // The liveness listener killed: 3 failures 2 s apart, then the restart.
    let first_id = container_id(&ready, "app")?;
    exec_ok(
        &rcri,
        &first_id,
        &["sh", "-c", "kill $(cat /tmp/liveness.pid)"],
    )?;
    let killed_at = Instant::now();
    let restarted = kubelet.wait_pod(
        "probes",
        "app restarted, not started yet",
        Duration::from_secs(60),
        |p| {
            restart_count(p, "app") >= 1
                && is_running(p, "app")
                && bool_field(p, "app", "started") == Some(false)
        },
    )?;
    let took = killed_at.elapsed();
    assert!(
        took >= Duration::from_millis(3500),
        "restarted {took:?} after the listener died: periodSeconds 2 x failureThreshold 3 ignored"
    );
    assert_ne!(container_id(&restarted, "app")?, first_id);
    let app = container_status(&restarted, "app").context("no app status")?;
    assert_eq!(app["ready"], false, "{app:#}");
    assert!(app["lastState"]["terminated"].is_object(), "{app:#}");
    assert_eq!(
        condition(&restarted, "Ready"),
        Some("False"),
        "{restarted:#}"
    );
    let out = kubelet.output();
    assert!(out.contains("liveness probe of app failed"), "{out}");
    assert!(
        out.contains("default/probes: killing container app: liveness probe failed"),
        "{out}"
    );
    let again = kubelet.wait_pod("probes", "Ready again", START_TIMEOUT, |p| {
        condition(p, "Ready") == Some("True")
    })?;
    assert_eq!(
        bool_field(&again, "app", "started"),
        Some(true),
        "{again:#}"
    );
    // `slow` has run past its 8 s delay by now without a liveness failure.
    assert_eq!(
        restart_count(&again, "slow"),
        0,
        "{again:#}\n{}",
        kubelet.output()
    );
    let out = kubelet.output();
    assert!(!out.contains("liveness probe of slow failed"), "{out}");

    let status = kubelet.interrupt()?;
    assert!(status.success(), "{status}\n{}", kubelet.output());
    kubelet.assert_nothing_left(&rcri)
}

/// The interface names of a /proc/net/dev text.
fn interfaces(dev: &str) -> Vec<String> {
    let mut names: Vec<String> = dev
        .lines()
        .skip(2)
        .filter_map(|l| l.split_once(':').map(|(n, _)| n.trim().to_string()))
        .collect();
    names.sort();
    names
}

/// The /proc/mounts line of `path` inside a container: (fstype, options).
fn mount_of(mounts: &str, path: &str) -> Option<(String, String)> {
    mounts.lines().rev().find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        (f.get(1) == Some(&path)).then(|| (f[2].to_string(), f[3].to_string()))
    })
}

/// examples/pod-volumes.yaml and examples/pod-hostnet.yaml: what the containers see of every
/// volume type (tmpfs emptyDir with its size, projected and downwardAPI files with modes,
/// read-only, hostPath created on the host, a subPath file), workingDir, hostname, kubelet's
/// /etc/hosts (pod IP with the FQDN, hostAliases; the node's file for the hostNetwork pod), a
/// shared process namespace with pause as PID 1; a hostNetwork pod sees rcri's interfaces.
#[test]
fn volumes_and_pod_settings_as_the_containers_see_them() -> Result<()> {
    let rcri = Rcri::start()?;
    let mut kubelet = Kubelet::new(&rcri)?;
    let volumes = kubelet.example("pod-volumes.yaml")?;
    let hostnet = kubelet.example("pod-hostnet.yaml")?;
    kubelet.start(&args(&[
        &volumes,
        &hostnet,
        &"--config-dir",
        &Kubelet::config_dir(),
    ]))?;
    let pod = kubelet.wait_pod("volumes", "running", START_TIMEOUT, |p| {
        is_running(p, "main") && is_running(p, "helper")
    })?;
    let main = container_id(&pod, "main")?;

    // workingDir: the command's `pwd > workdir` wrote /cache/workdir.
    let mut workdir = String::new();
    e2e::wait_for(
        "main to write /cache/workdir",
        Duration::from_secs(10),
        || {
            workdir = exec(&rcri, &main, &["cat", "/cache/workdir"])?.1;
            Ok(!workdir.is_empty())
        },
    )?;
    assert_eq!(workdir, "/cache\n");

    let mounts = exec_ok(&rcri, &main, &["cat", "/proc/mounts"])?;
    // emptyDir medium Memory: a tmpfs of sizeLimit 16Mi, writable.
    let (fstype, options) = mount_of(&mounts, "/cache").context("no /cache mount")?;
    assert_eq!(fstype, "tmpfs", "{mounts}");
    assert!(options.split(',').any(|o| o == "size=16384k"), "{options}");
    assert!(options.split(',').any(|o| o == "rw"), "{options}");
    exec_ok(&rcri, &main, &["touch", "/cache/new"])?;

    // projected: a ConfigMap key, a Secret key and downward API fields, with their modes.
    for (file, content, mode) in [
        ("config/greeting", "hello from a ConfigMap", "440"),
        ("secret/password", "s3cr3t-passw0rd", "400"),
        ("pod/name", "volumes", "644"),
        ("pod/namespace", "default", "644"),
    ] {
        let path = format!("/etc/bundle/{file}");
        assert_eq!(exec_ok(&rcri, &main, &["cat", &path])?, content, "{path}");
        let stat = exec_ok(&rcri, &main, &["stat", "-L", "-c", "%a", &path])?;
        assert_eq!(stat.trim(), mode, "mode of {path}");
        let (code, _, _) = exec(&rcri, &main, &["sh", "-c", &format!("echo x > {path}")])?;
        assert_ne!(code, 0, "{path} could be overwritten");
    }
    let (code, _, _) = exec(&rcri, &main, &["touch", "/etc/bundle/new"])?;
    assert_ne!(code, 0, "the projected volume is writable");
    let (_, options) = mount_of(&mounts, "/etc/bundle").context("no /etc/bundle mount")?;
    assert!(options.split(',').any(|o| o == "ro"), "{options}");
    // Only the listed items are there (the ConfigMap's other key is not).
    let ls = exec_ok(&rcri, &main, &["ls", "/etc/bundle/config"])?;
    assert_eq!(ls, "greeting\n");

    // downwardAPI: labels and annotations as kubelet writes them, read-only.
    let labels = exec_ok(&rcri, &main, &["cat", "/etc/podinfo/labels"])?;
    let labels: Vec<&str> = labels.lines().collect();
    assert!(labels.contains(&r#"app="volumes""#), "{labels:?}");
    assert!(labels.contains(&r#"tier="demo""#), "{labels:?}");
    let annotations = exec_ok(&rcri, &main, &["cat", "/etc/podinfo/annotations"])?;
    assert!(
        annotations
            .lines()
            .any(|l| l == r#"example.com/owner="rcrictl""#),
        "{annotations}"
    );
    let (code, _, _) = exec(&rcri, &main, &["touch", "/etc/podinfo/new"])?;
    assert_ne!(code, 0, "the downwardAPI volume is writable");

    // hostPath DirectoryOrCreate and FileOrCreate: created on the host, written from inside.
    let host = kubelet.host_dir().join("volumes");
    assert!(host.is_dir(), "{} not created", host.display());
    assert!(host.join("main.log").is_file(), "main.log not created");
    // The modes kubelet creates them with.
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(fs::metadata(&host)?.permissions().mode() & 0o7777, 0o755);
    assert_eq!(
        fs::metadata(host.join("main.log"))?.permissions().mode() & 0o7777,
        0o644
    );
    wait_file_contains(
        &host.join("main.log"),
        "main of vol-host started in /cache",
        Duration::from_secs(10),
    )?;
    wait_file_contains(
        &host.join("hello"),
        "hello from main",
        Duration::from_secs(10),
    )?;

    // subPath: one key of the ConfigMap volume as a single file.
    assert_eq!(
        exec_ok(&rcri, &main, &["cat", "/etc/greeting.txt"])?,
        "hello from a ConfigMap"
    );
    exec_ok(&rcri, &main, &["test", "-f", "/etc/greeting.txt"])?;
    assert!(mount_of(&mounts, "/etc/greeting.txt").is_some(), "{mounts}");

    assert_eq!(exec_ok(&rcri, &main, &["hostname"])?, "vol-host\n");

    // /etc/hosts as kubelet writes it: the pod IP with the FQDN (spec.subdomain, default cluster
    // domain), then the hostAliases; one read-write file of the pod record in every container.
    let pod_ip = pod["status"]["podIP"]
        .as_str()
        .with_context(|| format!("no podIP: {pod:#}"))?;
    let hosts = exec_ok(&rcri, &main, &["cat", "/etc/hosts"])?;
    assert!(
        hosts.starts_with("# Kubernetes-managed hosts file.\n127.0.0.1\tlocalhost\n"),
        "{hosts}"
    );
    let fqdn_line = format!("{pod_ip}\tvol-host.examples.default.svc.cluster.local\tvol-host");
    assert!(hosts.lines().any(|l| l == fqdn_line), "{hosts}");
    assert!(
        hosts.ends_with(
            "\n\n# Entries added by HostAliases.\n\
             10.1.2.3\tdb.internal\tcache.internal\n\
             fd00::53\tdns6.internal\n"
        ),
        "{hosts}"
    );
    let record_hosts = kubelet.root().join("pods/default_volumes/etc-hosts");
    assert_eq!(fs::read_to_string(&record_hosts)?, hosts);
    let (_, options) = mount_of(&mounts, "/etc/hosts").context("no /etc/hosts mount")?;
    assert!(options.split(',').any(|o| o == "rw"), "{options}");
    let helper = container_id(&pod, "helper")?;
    exec_ok(
        &rcri,
        &main,
        &["sh", "-c", "echo '10.9.9.9\tadded' >> /etc/hosts"],
    )?;
    let helper_hosts = exec_ok(&rcri, &helper, &["cat", "/etc/hosts"])?;
    assert_eq!(helper_hosts, format!("{hosts}10.9.9.9\tadded\n"));

    // helper's securityContext, as the process sees it: uid/gid 1000, no capabilities at all,
    // no_new_privs, and a root filesystem it cannot write.
    let status = exec_ok(&rcri, &helper, &["cat", "/proc/self/status"])?;
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .map(|v| v.split_whitespace().collect::<Vec<_>>())
            .unwrap_or_default()
    };
    assert_eq!(field("Uid:"), ["1000"; 4], "{status}");
    assert_eq!(field("Gid:"), ["1000"; 4], "{status}");
    for caps in ["CapEff:", "CapPrm:", "CapBnd:"] {
        assert_eq!(field(caps), ["0000000000000000"], "{caps} {status}");
    }
    assert_eq!(field("NoNewPrivs:"), ["1"], "{status}");
    let (code, _, _) = exec(&rcri, &helper, &["touch", "/rootfs-write"])?;
    assert_ne!(
        code, 0,
        "helper could write to its read-only root filesystem"
    );

    // shareProcessNamespace: helper's `sleep 3600` is visible; PID 1 is the pause process.
    let ps = exec_ok(&rcri, &main, &["ps", "-o", "pid,args"])?;
    let pid1 = ps
        .lines()
        .find(|l| l.split_whitespace().next() == Some("1"))
        .with_context(|| format!("no PID 1 in {ps}"))?;
    assert!(pid1.contains("pause"), "PID 1 is not pause: {ps}");
    let sleeper = ps
        .lines()
        .find(|l| l.contains("sleep 3600"))
        .with_context(|| format!("helper's process not visible: {ps}"))?;
    assert_ne!(sleeper.split_whitespace().next(), Some("1"), "{ps}");

    // The pod network has an eth0; the hostNetwork pod sees exactly rcri's interfaces.
    let pod_dev = interfaces(&exec_ok(&rcri, &main, &["cat", "/proc/net/dev"])?);
    assert!(pod_dev.iter().any(|i| i == "eth0"), "{pod_dev:?}");
    let hn = kubelet.wait_pod("hostnet", "running", START_TIMEOUT, |p| {
        is_running(p, "app")
    })?;
    assert_eq!(hn["spec"]["hostNetwork"], true, "{hn:#}");
    // As kubelet reports it: the pod IP of a host-network pod is the node's.
    assert!(hn["status"]["hostIP"].is_string(), "{hn:#}");
    assert_eq!(hn["status"]["podIP"], hn["status"]["hostIP"], "{hn:#}");
    let hn_id = container_id(&hn, "app")?;
    let hn_dev = interfaces(&exec_ok(&rcri, &hn_id, &["cat", "/proc/net/dev"])?);
    let rcri_dev =
        interfaces(&rcri.in_netns_thread(|| fs::read_to_string("/proc/thread-self/net/dev"))??);
    assert_eq!(hn_dev, rcri_dev, "the hostNetwork pod's interfaces");
    assert_ne!(hn_dev, pod_dev);
    let node_hostname = fs::read_to_string("/proc/sys/kernel/hostname")?;
    assert_eq!(exec_ok(&rcri, &hn_id, &["hostname"])?, node_hostname);
    // The node's /etc/hosts, behind kubelet's host-network header.
    assert_eq!(
        exec_ok(&rcri, &hn_id, &["cat", "/etc/hosts"])?,
        format!(
            "# Kubernetes-managed hosts file (host network).\n{}",
            fs::read_to_string("/etc/hosts")?
        )
    );

    let status = kubelet.interrupt()?;
    assert!(status.success(), "{status}\n{}", kubelet.output());
    // hostPath content stays on the node.
    assert!(host.join("hello").is_file());
    kubelet.assert_nothing_left(&rcri)
}

/// Progress output: under a pseudo-terminal (`script`) the pod start shows the spinner line
/// (erase-line escapes and a braille frame); on a pipe the same run prints plain lines only.
#[test]
fn progress_spins_on_a_terminal_and_is_plain_on_a_pipe() -> Result<()> {
    let rcri = Rcri::start()?;
    let kubelet = Kubelet::new(&rcri)?;
    let manifest = kubelet.example("pod-job.yaml")?;
    let quote = |s: &dyn AsRef<std::ffi::OsStr>| {
        format!("'{}'", s.as_ref().to_string_lossy().replace('\'', r"'\''"))
    };
    let line = [
        quote(&e2e::cri::rcrictl_bin()),
        quote(&"-r"),
        quote(&kubelet.endpoint),
        quote(&"run"),
        quote(&manifest),
        quote(&"--root-dir"),
        quote(&kubelet.root()),
    ]
    .join(" ");
    let mut script = Command::new("script");
    script.args(["-qfec", &line, "/dev/null"]);
    let tty = run_command(&mut script, START_TIMEOUT)?;
    assert!(tty.success(), "{tty}");
    assert!(tty.stdout.contains("default/job: "), "{tty}");
    assert!(
        tty.stdout.contains("\r\x1b[2K"),
        "no erase-line on a terminal: {tty}"
    );
    assert!(
        tty.stdout.contains("default/job: starting pod sandbox"),
        "no spinner line for the sandbox start: {tty}"
    );
    assert!(
        ['⠋', '⠙', '⠹', '⠸', '⠼', '⠴', '⠦', '⠧', '⠇', '⠏']
            .iter()
            .any(|c| tty.stdout.contains(*c)),
        "no spinner frame: {tty}"
    );
    let delete = kubelet.ctl_root(&["delete", "pod", "job"])?;
    assert!(delete.success(), "{delete}");

    let mut pipe = kubelet.ctl(&["run"]);
    pipe.arg(&manifest).arg("--root-dir").arg(kubelet.root());
    let pipe = run_command(&mut pipe, START_TIMEOUT)?;
    assert!(pipe.success(), "{pipe}");
    assert!(pipe.stdout.contains("default/job: "), "{pipe}");
    assert!(
        !pipe.stdout.contains('\x1b') && !pipe.stdout.contains('\r'),
        "escape sequences on a pipe: {pipe}"
    );
    let delete = kubelet.ctl_root(&["delete", "pod", "job"])?;
    assert!(delete.success(), "{delete}");
    kubelet.assert_nothing_left(&rcri)
}
