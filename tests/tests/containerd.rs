//! rcrun as containerd's runtime: Debian's containerd (1.6) with its runc v2 shim
//! (`io.containerd.runc.v2`) running rcrun as the `runc` binary, driven through `ctr`.
//!
//! Every test starts a containerd of its own ([`e2e::containerd::Containerd`]), inside a private
//! mount namespace and a private network namespace (`unshare -m -n`), with its own root/state
//! dirs, socket and config (the `contrib/containerd/config.toml` of this repo, with the rcrun
//! under test as BinaryName, plus the test's paths), and a tmpfs over /run in that mount
//! namespace, where the shim's sockets, ctr's FIFOs and rcrun's state (`--root
//! /run/containerd/runc/<ns>`) live. Nothing outside the temp dir changes except the cgroups of
//! the containers (`/<ns>/<id>`, `<ns>` unique per test), which the tests check and remove. `ctr`
//! runs inside the mount namespace (nsenter) so that its FIFOs land on that tmpfs too.
//!
//! On drop: tasks are killed and deleted through ctr, containerd is stopped by pid, shims and
//! container processes still alive (found by our socket path and our cgroups) are killed, mounts
//! that reached the host under the temp dir are detached, the cgroups are removed and the temp
//! dir deleted; the namespaces die with their last process.
//!
//! Skips (with a message) only when containerd, ctr or the runc v2 shim are not installed
//! (hack/setup.sh installs them).

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use e2e::containerd::{
    available, config_toml, in_cgroup, read_trimmed, Containerd, Counter, Setup, CTR_TIMEOUT, IMAGE,
};
use e2e::*;

/// Quotes a word for sh.
fn sh_quote(word: &str) -> String {
    format!("'{}'", word.replace('\'', r"'\''"))
}

/// Starts a containerd of the test's own (see the module doc) with the test image imported.
fn start() -> Result<Containerd> {
    let dir = temp_dir("containerd")?;
    let namespace = unique_id("rcrun-e2e-ctrd");
    // The CRI plugin's CNI paths pointed into the temp dir (it creates its conf dir otherwise).
    let d = dir.path().display();
    let cni = format!(
        r#"[plugins."io.containerd.grpc.v1.cri".cni]
  bin_dir = "{d}/cni/bin"
  conf_dir = "{d}/cni/net.d"
"#
    );
    let config = config_toml(dir.path(), &cni)?;
    let cd = Containerd::start(
        dir,
        &config,
        Setup {
            cgroup_parent: format!("/{namespace}"),
            namespace,
            netns: None,
            ready: |cd| cd.ctr(&["version"]).is_ok_and(|o| o.success()),
            drain: delete_tasks,
        },
    )?;
    cd.import_busybox()?;
    let images = cd.ctr_ok(&["images", "ls", "-q"])?;
    if !images.stdout.lines().any(|l| l == IMAGE) {
        bail!("{IMAGE} not imported: {images}");
    }
    Ok(cd)
}

/// Kills and deletes every task and container through ctr, before containerd stops.
fn delete_tasks(cd: &Containerd) {
    if let Ok(out) = cd.ctr(&["task", "ls", "-q"]) {
        for id in out.stdout.split_whitespace() {
            let _ = cd.ctr(&["task", "kill", "-s", "SIGKILL", id]);
            let _ = cd.wait_task(id, "STOPPED");
            let _ = cd.ctr(&["task", "delete", "--force", id]);
        }
    }
    if let Ok(out) = cd.ctr(&["containers", "ls", "-q"]) {
        for id in out.stdout.split_whitespace() {
            let _ = cd.ctr(&["containers", "rm", id]);
        }
    }
}

/// What these tests do through ctr.
trait Tasks {
    fn run(&self, flags: &[&str], id: &str, args: &[&str]) -> Result<Output>;
    fn run_detached(&self, flags: &[&str], id: &str, args: &[&str]) -> Result<()>;
    fn run_tty(&self, id: &str, args: &[&str]) -> Result<Output>;
    fn task_status(&self, id: &str) -> Result<Option<String>>;
    fn wait_task(&self, id: &str, status: &str) -> Result<()>;
    fn task_pid(&self, id: &str) -> Result<i32>;
    fn task_pids(&self, id: &str) -> Result<Vec<i32>>;
    fn cgroup_dir(&self, controller: &str, id: &str) -> Result<PathBuf>;
    fn remove(&self, id: &str) -> Result<()>;
}

impl Tasks for Containerd {
    /// `ctr run` with rcrun as the runtime binary (ctr does not read the CRI plugin's runtime
    /// options: it passes `--runc-binary` as the container's runtime options).
    fn run(&self, flags: &[&str], id: &str, args: &[&str]) -> Result<Output> {
        let bin = rcrun_bin();
        let mut all = vec!["run", "--runc-binary", bin.to_str().unwrap_or_default()];
        all.extend_from_slice(flags);
        all.push(IMAGE);
        all.push(id);
        all.extend_from_slice(args);
        self.ctr(&all)
    }

    /// `ctr run -d` of a long-running container, waiting until its task runs.
    fn run_detached(&self, flags: &[&str], id: &str, args: &[&str]) -> Result<()> {
        let mut all = vec!["-d"];
        all.extend_from_slice(flags);
        let out = self.run(&all, id, args)?;
        if !out.success() {
            bail!("{out}\n{}", self.diagnostics());
        }
        self.wait_task(id, "RUNNING")
    }

    /// `ctr run -t` under `script`, which gives ctr the terminal it insists on. Returns the
    /// output (with the terminal's \r) and exit code.
    fn run_tty(&self, id: &str, args: &[&str]) -> Result<Output> {
        let bin = rcrun_bin();
        let mut cmd = self.ctr_command(&["run", "--rm", "-t", "--runc-binary"]);
        cmd.arg(&bin).arg(IMAGE).arg(id).args(args);
        let line: Vec<String> = std::iter::once(cmd.get_program())
            .chain(cmd.get_args())
            .map(|a| sh_quote(&a.to_string_lossy()))
            .collect();
        run_command(
            Command::new("script").args(["-qec", &line.join(" "), "/dev/null"]),
            CTR_TIMEOUT,
        )
    }

    /// The status column of `ctr task ls` for a task (RUNNING, PAUSED, STOPPED, …).
    fn task_status(&self, id: &str) -> Result<Option<String>> {
        let out = self.ctr_ok(&["task", "ls"])?;
        Ok(out.stdout.lines().skip(1).find_map(|line| {
            let cols: Vec<&str> = line.split_whitespace().collect();
            (cols.first() == Some(&id)).then(|| cols.last().unwrap_or(&"").to_string())
        }))
    }

    fn wait_task(&self, id: &str, status: &str) -> Result<()> {
        let mut last = None;
        let waited = wait_for(&format!("task {id} {status}"), WAIT_TIMEOUT, || {
            last = self.task_status(id)?;
            Ok(last.as_deref() == Some(status))
        });
        waited.with_context(|| format!("task {id} is {last:?}\n{}", self.diagnostics()))
    }

    /// The container's init pid on the host.
    fn task_pid(&self, id: &str) -> Result<i32> {
        let out = self.ctr_ok(&["task", "ls"])?;
        out.stdout
            .lines()
            .skip(1)
            .find_map(|line| {
                let cols: Vec<&str> = line.split_whitespace().collect();
                (cols.first() == Some(&id)).then(|| cols.get(1)?.parse().ok())?
            })
            .ok_or_else(|| anyhow!("no pid for task {id}: {out}"))
    }

    /// The pids `ctr task ps` lists (rcrun's `ps --format json`).
    fn task_pids(&self, id: &str) -> Result<Vec<i32>> {
        let out = self.ctr_ok(&["task", "ps", id])?;
        let mut pids: Vec<i32> = out
            .stdout
            .lines()
            .skip(1)
            .filter_map(|l| l.split_whitespace().next()?.parse().ok())
            .collect();
        pids.sort_unstable();
        Ok(pids)
    }

    /// The container's cgroup dir on the host in the hierarchy holding `controller`.
    fn cgroup_dir(&self, controller: &str, id: &str) -> Result<PathBuf> {
        let h = hierarchies()?
            .into_iter()
            .find(|h| h.has(controller) || (controller.is_empty() && h.is_v2()))
            .ok_or_else(|| anyhow!("no {controller} cgroup hierarchy"))?;
        Ok(h.dir(&format!("{}/{id}", self.cgroup_parent())))
    }

    /// Kills and deletes a task and its container, as a user would.
    fn remove(&self, id: &str) -> Result<()> {
        if self.task_status(id)?.is_some() {
            // Refused when the task has already stopped, which is fine.
            let _ = self.ctr(&["task", "kill", "-s", "SIGKILL", id])?;
            self.wait_task(id, "STOPPED")?;
            self.ctr_ok(&["task", "delete", id])?;
        }
        self.ctr_ok(&["containers", "rm", id])?;
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// containerd's Tasks.Update over gRPC: ctr 1.6 has no `task update`, and that is the call that
// makes the shim run `rcrun update --resources - <id>`.
// ---------------------------------------------------------------------------------------------

mod tasks_api {
    use anyhow::{Context, Result};
    use hyper_util::rt::TokioIo;
    use std::path::Path;
    use tonic::codegen::http::uri::PathAndQuery;
    use tonic::transport::{Endpoint, Uri};

    /// containerd.services.tasks.v1.UpdateTaskRequest.
    #[derive(Clone, PartialEq, prost::Message)]
    struct UpdateTaskRequest {
        #[prost(string, tag = "1")]
        container_id: String,
        #[prost(message, optional, tag = "2")]
        resources: Option<Any>,
    }

    /// google.protobuf.Any.
    #[derive(Clone, PartialEq, prost::Message)]
    struct Any {
        #[prost(string, tag = "1")]
        type_url: String,
        #[prost(bytes = "vec", tag = "2")]
        value: Vec<u8>,
    }

    /// Tasks.Update with an OCI LinuxResources (JSON, as containerd's typeurl encodes Go types
    /// that are not protobuf messages).
    pub fn update(socket: &Path, ns: &str, id: &str, resources: &serde_json::Value) -> Result<()> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("failed to build a tokio runtime")?;
        let socket = socket.to_path_buf();
        let request = UpdateTaskRequest {
            container_id: id.to_string(),
            resources: Some(Any {
                type_url: "types.containerd.io/opencontainers/runtime-spec/1/LinuxResources"
                    .to_string(),
                value: serde_json::to_vec(resources)?,
            }),
        };
        let ns = ns
            .parse()
            .context("namespace is not a valid header value")?;
        rt.block_on(async move {
            let channel = Endpoint::try_from("http://[::]:50051")?
                .connect_with_connector(tower::service_fn(move |_: Uri| {
                    let socket = socket.clone();
                    async move {
                        Ok::<_, std::io::Error>(TokioIo::new(
                            tokio::net::UnixStream::connect(socket).await?,
                        ))
                    }
                }))
                .await
                .context("failed to connect to containerd")?;
            let mut grpc = tonic::client::Grpc::new(channel);
            grpc.ready()
                .await
                .context("containerd's channel is not ready")?;
            let mut req = tonic::Request::new(request);
            req.metadata_mut().insert("containerd-namespace", ns);
            let codec = tonic_prost::ProstCodec::<UpdateTaskRequest, ()>::default();
            let path = PathAndQuery::from_static("/containerd.services.tasks.v1.Tasks/Update");
            grpc.unary(req, path, codec)
                .await
                .context("Tasks.Update failed")?;
            Ok(())
        })
    }
}

// ---------------------------------------------------------------------------------------------
// The tests
// ---------------------------------------------------------------------------------------------

/// `ctr run --rm`: output and exit code of the container, its cgroup, the CRI plugin loaded
/// with the contrib config; with and without a terminal (`--console-socket`).
#[test]
fn run_reports_output_and_exit_code() -> Result<()> {
    if !available("run_reports_output_and_exit_code") {
        return Ok(());
    }
    let mut cd = start()?;

    let plugins = cd.ctr_ok(&["plugins", "ls"])?;
    let cri = plugins
        .stdout
        .lines()
        .find(|l| l.contains("io.containerd.grpc.v1") && l.contains(" cri "))
        .ok_or_else(|| anyhow!("no CRI plugin: {plugins}"))?;
    assert!(
        cri.trim_end().ends_with("ok"),
        "the CRI plugin did not load with contrib/containerd/config.toml: {cri}\n{}",
        cd.diagnostics()
    );

    // The merged config names rcrun as the CRI plugin's default runtime, with its binary.
    let config = cd.dir().join("config.toml");
    let dump = run_command(
        Command::new("containerd")
            .arg("--config")
            .arg(&config)
            .args(["config", "dump"]),
        CTR_TIMEOUT,
    )?
    .ok()?;
    let bin = rcrun_bin();
    for want in [
        "default_runtime_name = \"rcrun\"".to_string(),
        "[plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.rcrun.options]".to_string(),
        format!("BinaryName = \"{}\"", bin.display()),
    ] {
        assert!(dump.stdout.contains(&want), "no {want:?} in: {dump}");
    }

    let id = unique_id("run");
    let out = cd.run(
        &["--rm"],
        &id,
        &[
            "sh",
            "-c",
            "echo hello as pid $$; grep -E ':(memory|pids):' /proc/self/cgroup; exit 7",
        ],
    )?;
    assert_eq!(out.code(), 7, "{out}\n{}", cd.diagnostics());
    assert!(out.stdout.contains("hello as pid 1"), "{out}");
    assert!(
        out.stdout
            .contains(&format!(":pids:/{}/{id}", cd.namespace())),
        "container not in its cgroup /{}/{id}: {out}",
        cd.namespace()
    );
    assert_eq!(cd.task_status(&id)?, None, "task left after run --rm");
    let dir = cd.cgroup_dir("pids", &id)?;
    assert!(
        !dir.exists(),
        "cgroup {} left after run --rm",
        dir.display()
    );

    // A command that cannot start fails the run, as with runc (and ctr says why).
    let id = unique_id("run-missing");
    let out = cd.run(&["--rm"], &id, &["/no/such/binary"])?;
    assert!(!out.success(), "{out}");
    assert!(
        out.stderr.contains("/no/such/binary"),
        "the error does not name the binary: {out}"
    );
    let _ = cd.ctr(&["containers", "rm", &id]);

    // A terminal: rcrun gets --console-socket and sends the pty master to the shim.
    let id = unique_id("run-tty");
    let out = cd.run_tty(&id, &["sh", "-c", "tty; exit 3"])?;
    assert_eq!(out.code(), 3, "{out}\n{}", cd.diagnostics());
    assert!(out.stdout.contains("/dev/pts/0"), "{out}");

    cd.shutdown()
}

/// exec (exit code, output, user, a terminal, detached), ps, kill (one signal, --all) and
/// delete, checked inside the container and on the host.
#[test]
fn exec_ps_kill_delete() -> Result<()> {
    if !available("exec_ps_kill_delete") {
        return Ok(());
    }
    let mut cd = start()?;
    let id = unique_id("exec");
    cd.run_detached(
        &[],
        &id,
        &[
            "sh",
            "-c",
            "trap 'exit 42' TERM; while :; do sleep 0.1; done",
        ],
    )?;
    let init = cd.task_pid(&id)?;
    let procs = cd.cgroup_dir("pids", &id)?.join("cgroup.procs");
    assert!(
        in_cgroup(&procs, init)?,
        "init {init} not in {}",
        procs.display()
    );

    let out = cd.ctr(&[
        "task",
        "exec",
        "--exec-id",
        "e1",
        &id,
        "sh",
        "-c",
        "echo exec as $(id -u) in $(readlink /proc/1/exe); exit 5",
    ])?;
    assert_eq!(out.code(), 5, "{out}\n{}", cd.diagnostics());
    assert!(out.stdout.contains("exec as 0 in /bin/busybox"), "{out}");

    let out = cd.ctr_ok(&[
        "task",
        "exec",
        "--exec-id",
        "e2",
        "--user",
        "1000",
        "--cwd",
        "/tmp",
        &id,
        "sh",
        "-c",
        "id; pwd",
    ])?;
    assert!(
        out.stdout.contains("uid=1000(user) gid=1000(user)"),
        "{out}"
    );
    assert!(out.stdout.contains("/tmp"), "{out}");

    // A detached exec stays, in the container's cgroup, and ps lists it.
    cd.ctr_ok(&[
        "task",
        "exec",
        "-d",
        "--exec-id",
        "e3",
        &id,
        "sleep",
        "1000",
    ])?;
    // ps and cgroup.procs are two reads at two moments; a process that is just exiting (the
    // previous exec) may be in one and not the other, so they must agree eventually.
    let mut pids = Vec::new();
    let mut in_cgroup = String::new();
    let agree = wait_for(
        "ps to list the exec, as the cgroup does",
        WAIT_TIMEOUT,
        || {
            pids = cd.task_pids(&id)?;
            in_cgroup = read_trimmed(&procs)?;
            Ok(pids.len() >= 2
                && pids
                    .iter()
                    .all(|p| in_cgroup.lines().any(|l| l == p.to_string())))
        },
    );
    assert!(
        agree.is_ok(),
        "ps lists {pids:?}, {} holds: {in_cgroup}",
        procs.display()
    );
    assert!(pids.contains(&init), "ps {pids:?} lacks init {init}");

    // SIGTERM reaches init's handler: exit code 42.
    cd.ctr_ok(&["task", "kill", &id])?;
    cd.wait_task(&id, "STOPPED")?;
    let out = cd.ctr_ok(&["task", "delete", &id])?;
    assert!(out.stderr.contains("exit code 42"), "{out}");
    assert!(!pid_alive(init), "init {init} still alive");
    for pid in &pids {
        assert!(!pid_alive(*pid), "{pid} survived the container's end");
    }
    let dir = cd.cgroup_dir("pids", &id)?;
    assert!(!dir.exists(), "cgroup {} left after delete", dir.display());
    cd.ctr_ok(&["containers", "rm", &id])?;

    // kill --all: every process gets the signal.
    let id = unique_id("killall");
    cd.run_detached(&[], &id, &["sh", "-c", "sleep 1000 & sleep 1001"])?;
    wait_for("both sleeps", WAIT_TIMEOUT, || {
        Ok(cd.task_pids(&id)?.len() >= 2)
    })?;
    let pids = cd.task_pids(&id)?;
    cd.ctr_ok(&["task", "kill", "--all", "-s", "SIGKILL", &id])?;
    cd.wait_task(&id, "STOPPED")?;
    wait_for("all processes gone", WAIT_TIMEOUT, || {
        Ok(pids.iter().all(|&p| !pid_alive(p)))
    })?;
    cd.remove(&id)?;

    cd.shutdown()
}

/// pause/resume: the task's status, the freezer on the host, and a counter inside that stops
/// and goes on.
#[test]
fn pause_resume() -> Result<()> {
    if !available("pause_resume") {
        return Ok(());
    }
    let mut cd = start()?;
    let id = unique_id("pause");
    cd.run_detached(
        &[],
        &id,
        &[
            "sh",
            "-c",
            "i=0; while :; do i=$((i+1)); echo $i > /tmp/m; mv /tmp/m /tmp/n; sleep 0.02; done",
        ],
    )?;
    let init = cd.task_pid(&id)?;
    let counter = Counter::of(init);
    counter.wait_started()?;

    cd.ctr_ok(&["task", "pause", &id])?;
    cd.wait_task(&id, "PAUSED")?;
    let freezer = cd.cgroup_dir("freezer", &id)?.join("freezer.state");
    if freezer.exists() {
        assert_eq!(read_trimmed(&freezer)?, "FROZEN");
    } else {
        let v2 = cd.cgroup_dir("", &id)?.join("cgroup.freeze");
        assert_eq!(read_trimmed(&v2)?, "1");
    }
    let frozen = counter.read()?;
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(counter.read()?, frozen, "the counter moved while paused");

    cd.ctr_ok(&["task", "resume", &id])?;
    cd.wait_task(&id, "RUNNING")?;
    if freezer.exists() {
        assert_eq!(read_trimmed(&freezer)?, "THAWED");
    }
    counter.wait_beyond(frozen)?;

    cd.remove(&id)?;
    cd.shutdown()
}

/// Limits at `ctr run`, `update` (Tasks.Update → `rcrun update --resources -`) on the host and
/// as the container feels them, and metrics.
#[test]
fn update_and_metrics() -> Result<()> {
    if !available("update_and_metrics") {
        return Ok(());
    }
    let mut cd = start()?;
    let id = unique_id("update");
    let mib = 1024 * 1024;
    cd.run_detached(
        &["--memory-limit", &(64 * mib).to_string()],
        &id,
        &["sleep", "1000"],
    )?;
    let memory = cd.cgroup_dir("memory", &id)?;
    let pids_dir = cd.cgroup_dir("pids", &id)?;
    let cpu = cd.cgroup_dir("cpu", &id)?;
    assert_eq!(
        read_trimmed(&memory.join("memory.limit_in_bytes"))?,
        (64 * mib).to_string()
    );

    let metrics = cd.ctr_ok(&["task", "metrics", "--format", "json", &id])?;
    let m: Value = serde_json::from_str(&metrics.stdout).with_context(|| metrics.to_string())?;
    assert_eq!(m["memory"]["usage"]["limit"], json!(64 * mib), "{m:#}");
    assert_eq!(m["pids"]["current"], json!(1), "{m:#}");

    tasks_api::update(
        cd.socket(),
        cd.namespace(),
        &id,
        &json!({
            "memory": {"limit": 128 * mib},
            "cpu": {"shares": 512},
            "pids": {"limit": 8}
        }),
    )
    .with_context(|| cd.diagnostics())?;
    assert_eq!(
        read_trimmed(&memory.join("memory.limit_in_bytes"))?,
        (128 * mib).to_string()
    );
    assert_eq!(read_trimmed(&cpu.join("cpu.shares"))?, "512");
    assert_eq!(read_trimmed(&pids_dir.join("pids.max"))?, "8");

    // Inside: the pids limit holds (init + this sh + its children ≤ 8: fork fails).
    let out = cd.ctr(&[
        "task",
        "exec",
        "--exec-id",
        "fork",
        &id,
        "sh",
        "-c",
        "for i in 1 2 3 4 5 6 7 8 9 10; do sleep 100 & done; echo all started",
    ])?;
    assert!(
        !out.success() && out.stderr.contains("can't fork") && !out.stdout.contains("all started"),
        "10 forks under pids.max 8: {out}"
    );

    let metrics = cd.ctr_ok(&["task", "metrics", "--format", "json", &id])?;
    let m: Value = serde_json::from_str(&metrics.stdout).with_context(|| metrics.to_string())?;
    assert_eq!(m["memory"]["usage"]["limit"], json!(128 * mib), "{m:#}");
    assert_eq!(m["pids"]["limit"], json!(8), "{m:#}");

    cd.remove(&id)?;
    cd.shutdown()
}
