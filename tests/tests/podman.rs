//! rcrun as podman's OCI runtime (`podman --runtime <rcrun>`), with Debian's podman and conmon.
//!
//! Every test gets a podman of its own: storage (`--root`, `--runroot`), libpod's tmp dir, network
//! config dir and volume path in a temp dir, `--cgroup-manager cgroupfs`, `--events-backend file`,
//! and every podman command run inside a private mount and network namespace held by a `sleep`
//! the test starts (`unshare -m -n`), where /run, /dev/shm and /var/tmp are tmpfs (podman's lock
//! shm, rcrun's default state dir /run/rcrun, conmon's sockets) and /var/lib is an overlay whose
//! upper dir is in the temp dir (podman writes its blob info cache to /var/lib/containers).
//! Containers run with `--network none` and `--cgroup-parent /<unique>`.
//!
//! On drop: every container is removed with podman, then conmon and anything still in the
//! test's cgroups is killed by pid, the holder is killed (the namespaces and their mounts die
//! with it), the cgroups are removed and the temp dir deleted.
//!
//! Skips (with a message) only when podman or conmon are not installed (hack/setup.sh
//! installs them).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use e2e::containerd::{
    in_cgroup, kill_all, leftover_processes, oci_archive, read_trimmed, remove_cgroup_parent,
    tools_installed, Counter, Holder, IMAGE,
};
use e2e::*;
use nix::sys::signal::Signal;
use tempfile::TempDir;

/// How long one podman command may take.
const PODMAN_TIMEOUT: Duration = Duration::from_secs(60);

/// Whether the tools exist; prints why the test skips when not.
fn available(test: &str) -> bool {
    tools_installed(test, &["podman", "conmon"], "Debian's podman")
}

struct Podman {
    dir: TempDir,
    /// The `sleep` holding the private namespaces.
    holder: Holder,
    /// The cgroup parent of the test's containers (absolute, unique).
    parent: String,
}

impl Podman {
    fn start() -> Result<Podman> {
        let dir = temp_dir("podman")?;
        for sub in ["varlib/upper", "varlib/work"] {
            fs::create_dir_all(dir.path().join(sub))
                .with_context(|| format!("failed to create {sub}"))?;
        }
        let script = "set -e
            mount -t tmpfs -o mode=0755 tmpfs /run
            mount -t tmpfs -o mode=1777 tmpfs /dev/shm
            mount -t tmpfs -o mode=1777 tmpfs /var/tmp
            mount -t overlay overlay \
                -o lowerdir=/var/lib,upperdir=\"$1/varlib/upper\",workdir=\"$1/varlib/work\" /var/lib
            ip link set lo up
            exec sleep infinity";
        let log = dir.path().join("holder.log");
        let holder = Holder::spawn(
            "the namespace holder",
            Command::new("unshare")
                .args(["--mount", "--net", "--propagation", "private", "--"])
                .args(["sh", "-c", script, "sh"])
                .arg(dir.path()),
            &log,
        )?;
        // Until the holder's shell has made its mounts and become `sleep`.
        holder.wait_up(
            Duration::from_secs(10),
            || {
                fs::read_to_string(format!("/proc/{}/comm", holder.pid()))
                    .is_ok_and(|comm| comm.trim() == "sleep")
            },
            || fs::read_to_string(&log).unwrap_or_default(),
        )?;
        let pm = Podman {
            parent: format!("/{}", unique_id("rcrun-e2e-podman")),
            dir,
            holder,
        };
        pm.load_image()?;
        Ok(pm)
    }

    fn pid(&self) -> i32 {
        self.holder.pid()
    }

    fn load_image(&self) -> Result<()> {
        let tar = self.dir.path().join("busybox-oci.tar");
        oci_archive(&image()?.join("oci"), &tar)?;
        self.podman_ok(&["load", "-i", &tar.to_string_lossy()])?;
        let images = self.podman_ok(&["images", "--format", "{{.Repository}}:{{.Tag}}"])?;
        if !images.stdout.lines().any(|l| l == IMAGE) {
            bail!("{IMAGE} not loaded: {images}");
        }
        Ok(())
    }

    /// `podman <isolated globals> ARGS` inside the private namespaces.
    fn podman(&self, args: &[&str]) -> Result<Output> {
        let d = self.dir.path();
        let mut cmd = Command::new("nsenter");
        cmd.args(["-t", &self.pid().to_string(), "-m", "-n", "--", "podman"])
            .arg("--root")
            .arg(d.join("root"))
            .arg("--runroot")
            .arg(d.join("runroot"))
            .arg("--tmpdir")
            .arg(d.join("tmp"))
            .arg("--network-config-dir")
            .arg(d.join("net"))
            .arg("--volumepath")
            .arg(d.join("volumes"))
            .args(["--storage-driver", "overlay"])
            .args(["--cgroup-manager", "cgroupfs", "--events-backend", "file"])
            .arg("--runtime")
            .arg(rcrun_bin())
            .args(args);
        run_command(&mut cmd, PODMAN_TIMEOUT)
    }

    fn podman_ok(&self, args: &[&str]) -> Result<Output> {
        let out = self.podman(args)?;
        if !out.success() {
            bail!("{out}");
        }
        Ok(out)
    }

    /// `podman run` with the flags every test container gets.
    fn run(&self, flags: &[&str], args: &[&str]) -> Result<Output> {
        let mut all = vec![
            "run",
            "--network",
            "none",
            "--cgroup-parent",
            &self.parent,
            // podman raises RLIMIT_NOFILE and RLIMIT_NPROC to 1048576 by default, which needs
            // CAP_SYS_RESOURCE; where that is missing (some CI sandboxes) runc and crun fail
            // exactly as rcrun does. Limits we may set anyway keep the test about the runtime.
            "--ulimit",
            "nofile=1024:1024",
            "--ulimit",
            "nproc=4096:4096",
        ];
        all.extend_from_slice(flags);
        all.push(IMAGE);
        all.extend_from_slice(args);
        self.podman(&all)
    }

    fn inspect(&self, name: &str, format: &str) -> Result<String> {
        Ok(self
            .podman_ok(&["inspect", "--format", format, name])?
            .stdout
            .trim()
            .to_string())
    }

    /// The container's cgroup dir on the host in the hierarchy holding `controller`.
    fn cgroup_dir(&self, controller: &str, full_id: &str) -> Result<PathBuf> {
        let h = hierarchies()?
            .into_iter()
            .find(|h| h.has(controller))
            .ok_or_else(|| anyhow!("no {controller} cgroup hierarchy"))?;
        Ok(h.dir(&format!("{}/libpod-{full_id}", self.parent)))
    }

    /// Whether rcrun still has a state dir for the container (`/run/rcrun/<id>` in the
    /// namespace: podman runs the runtime without --root).
    fn runtime_state_exists(&self, full_id: &str) -> bool {
        Path::new(&format!("/proc/{}/root/run/rcrun/{full_id}", self.pid())).exists()
    }

    fn shutdown(&mut self) -> Result<()> {
        if self.holder.running() {
            let _ = self.podman(&["rm", "--all", "--force", "--time", "0"]);
        }
        // conmon and podman's cleanup processes name the temp dir; containers are in our
        // cgroups.
        let left = leftover_processes(&self.dir.path().to_string_lossy(), &self.parent);
        kill_all(&left);
        self.holder.stop(Signal::SIGKILL, Duration::from_secs(10));
        let cgroups_left = remove_cgroup_parent(&self.parent);
        if !left.is_empty() || !cgroups_left.is_empty() {
            bail!("left behind: processes {left:?} (killed), cgroups {cgroups_left:?}");
        }
        Ok(())
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        if let Err(e) = self.shutdown() {
            eprintln!("podman test cleanup: {e:#}");
        }
    }
}

/// `podman run --rm`: output, exit code and cgroup of the container, with and without a
/// terminal; a command that cannot start fails the run.
#[test]
fn run_rm() -> Result<()> {
    if !available("run_rm") {
        return Ok(());
    }
    let mut pm = Podman::start()?;

    let out = pm.run(
        &["--rm"],
        &[
            "sh",
            "-c",
            "echo hello as pid $$; grep ':pids:' /proc/self/cgroup; exit 3",
        ],
    )?;
    assert_eq!(out.code(), 3, "{out}");
    assert!(out.stdout.contains("hello as pid 1"), "{out}");
    assert!(
        out.stdout.contains(&format!(":pids:{}/libpod-", pm.parent)),
        "not in the cgroup parent {}: {out}",
        pm.parent
    );

    let out = pm.run(&["--rm", "-t"], &["sh", "-c", "tty; exit 0"])?;
    assert!(out.success(), "{out}");
    assert!(out.stdout.contains("/dev/pts/0"), "{out}");

    // podman's exit code for a command that cannot be run is 126 or 127, as with runc.
    let out = pm.run(&["--rm"], &["/no/such/binary"])?;
    assert!(
        out.code() == 127 || out.code() == 126,
        "expected 126/127: {out}"
    );
    assert!(out.stderr.contains("/no/such/binary"), "{out}");

    let all = pm.podman_ok(&["ps", "--all", "--quiet"])?;
    assert_eq!(all.stdout.trim(), "", "containers left after run --rm");
    pm.shutdown()
}

/// run -d, exec (exit code, user, cwd, terminal), pause/unpause, stop (SIGTERM handled; SIGKILL
/// after the timeout), rm; checked inside the container and on the host.
#[test]
fn exec_pause_stop_rm() -> Result<()> {
    if !available("exec_pause_stop_rm") {
        return Ok(());
    }
    let mut pm = Podman::start()?;
    let out = pm.run(
        &["-d", "--name", "c1"],
        &[
            "sh",
            "-c",
            "trap 'exit 42' TERM; i=0; while :; do i=$((i+1)); echo $i > /tmp/m; mv /tmp/m /tmp/n; sleep 0.02; done",
        ],
    )?;
    assert!(out.success(), "{out}");
    let full_id = out.stdout.trim().to_string();
    assert_eq!(pm.inspect("c1", "{{.State.Status}}")?, "running");
    let pid: i32 = pm.inspect("c1", "{{.State.Pid}}")?.parse()?;
    let procs = pm.cgroup_dir("pids", &full_id)?.join("cgroup.procs");
    assert!(
        in_cgroup(&procs, pid)?,
        "init {pid} not in {}",
        procs.display()
    );

    let out = pm.podman(&[
        "exec",
        "c1",
        "sh",
        "-c",
        "echo exec as $(id -u) in $(readlink /proc/1/exe); exit 4",
    ])?;
    assert_eq!(out.code(), 4, "{out}");
    assert!(out.stdout.contains("exec as 0 in /bin/busybox"), "{out}");
    let out = pm.podman_ok(&[
        "exec", "-u", "1000", "-w", "/tmp", "c1", "sh", "-c", "id; pwd",
    ])?;
    assert!(
        out.stdout.contains("uid=1000(user) gid=1000(user)"),
        "{out}"
    );
    assert!(out.stdout.contains("/tmp"), "{out}");
    let out = pm.podman_ok(&["exec", "-t", "c1", "tty"])?;
    assert!(out.stdout.contains("/dev/pts/"), "{out}");

    // pause/unpause: the freezer on the host, and the counter inside stops and goes on.
    let counter = Counter::of(pid);
    counter.wait_started()?;
    pm.podman_ok(&["pause", "c1"])?;
    assert_eq!(pm.inspect("c1", "{{.State.Status}}")?, "paused");
    let freezer = pm.cgroup_dir("freezer", &full_id)?.join("freezer.state");
    assert_eq!(read_trimmed(&freezer)?, "FROZEN");
    let frozen = counter.read()?;
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(counter.read()?, frozen, "the counter moved while paused");
    pm.podman_ok(&["unpause", "c1"])?;
    assert_eq!(pm.inspect("c1", "{{.State.Status}}")?, "running");
    assert_eq!(read_trimmed(&freezer)?, "THAWED");
    counter.wait_beyond(frozen)?;

    // stop: SIGTERM reaches init's trap, well within the timeout.
    let started = Instant::now();
    pm.podman_ok(&["stop", "--time", "20", "c1"])?;
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "stop waited for the timeout: SIGTERM did not arrive"
    );
    assert_eq!(pm.inspect("c1", "{{.State.Status}}")?, "exited");
    assert_eq!(pm.inspect("c1", "{{.State.ExitCode}}")?, "42");
    assert!(!pid_alive(pid), "init {pid} alive after stop");

    pm.podman_ok(&["rm", "c1"])?;
    let all = pm.podman_ok(&["ps", "--all", "--quiet"])?;
    assert_eq!(all.stdout.trim(), "", "c1 left after rm");
    assert!(
        !pm.runtime_state_exists(&full_id),
        "rcrun's state dir left after rm"
    );
    let dir = pm.cgroup_dir("pids", &full_id)?;
    assert!(!dir.exists(), "cgroup {} left after rm", dir.display());

    // An init that ignores SIGTERM (pid 1 without a handler) is killed after --time.
    let out = pm.run(&["-d", "--name", "c2"], &["sleep", "1000"])?;
    assert!(out.success(), "{out}");
    pm.podman_ok(&["stop", "--time", "1", "c2"])?;
    assert_eq!(pm.inspect("c2", "{{.State.ExitCode}}")?, "137");
    pm.podman_ok(&["rm", "c2"])?;

    pm.shutdown()
}
