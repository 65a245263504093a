//! A containerd of the test's own, for the tests that drive rcrun through containerd (`ctr` in
//! tests/containerd.rs, its CRI plugin in tests/containerd_cri.rs), and what podman's tests
//! share with them: the tool check that skips a test, the process that holds the private
//! namespaces, the test image packed as an OCI archive, the cleanup of a cgroup parent, and the
//! looks both take at a container from the host (its cgroup.procs, a counter in its /tmp).
//!
//! [`Containerd`] runs in a private mount namespace (`unshare -m`, a tmpfs over /run where the
//! shim's sockets, ctr's FIFOs and rcrun's state live) and in a network namespace that is either
//! its own (`unshare -n`) or one the test made, with its root, state, socket and config in a
//! temp dir. `ctr` runs inside that mount namespace (nsenter) so that its FIFOs land on the
//! tmpfs too.
//!
//! On drop (or [`Containerd::shutdown`]): the test's own drain runs while containerd is up
//! (tasks deleted through ctr, pods through the CRI), containerd is stopped by pid, shims and
//! container processes still alive (found by our socket path and our cgroup parent) are killed,
//! mounts that reached the host under the temp dir are detached, the cgroups are removed and the
//! temp dir deleted; the namespaces die with their last process.

use std::cell::RefCell;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tempfile::TempDir;

use crate::{
    collect_procs, hierarchies, host, image, mounts_under, on_path, pid_alive,
    processes_mentioning, rcrun_bin, remove_cgroup_tree, repo_root, run_command, wait_for, NetNs,
    Output, WAIT_TIMEOUT,
};

/// The image hack/mkimage.sh tags in its OCI layout.
pub const IMAGE: &str = "docker.io/library/busybox:latest";
/// How long one ctr command may take.
pub const CTR_TIMEOUT: Duration = Duration::from_secs(60);
/// The rcrun path contrib/containerd/config.toml names, replaced by the binary under test.
const CONTRIB_BINARY: &str = "/usr/local/bin/rcrun";
/// How long containerd may take to come up (stretched in the VM), and to exit after SIGTERM.
const START_TIMEOUT: Duration = Duration::from_secs(20);
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// Whether containerd, ctr and the runc v2 shim are installed; prints why the test skips when
/// not.
pub fn available(test: &str) -> bool {
    tools_installed(
        test,
        &["containerd", "ctr", "containerd-shim-runc-v2"],
        "Debian's containerd",
    )
}

/// Whether every tool is on PATH; prints why the test skips when not (`hack/setup.sh installs
/// <what>`).
pub fn tools_installed(test: &str, tools: &[&str], what: &str) -> bool {
    let missing: Vec<&str> = tools.iter().copied().filter(|p| !on_path(p)).collect();
    if missing.is_empty() {
        return true;
    }
    eprintln!(
        "SKIP {test}: {} not installed (hack/setup.sh installs {what})",
        missing.join(", ")
    );
    false
}

/// `tar -h -cf TAR -C LAYOUT .`: an OCI layout as the archive `ctr images import` and
/// `podman load` read (following the blobs symlink of a layout a test assembles).
pub fn oci_archive(layout: &Path, tar: &Path) -> Result<()> {
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

/// A file's content without surrounding white space (cgroup files, counters).
pub fn read_trimmed(path: &Path) -> Result<String> {
    Ok(fs::read_to_string(path)
        .with_context(|| format!("failed to read {}", path.display()))?
        .trim()
        .to_string())
}

/// Whether the cgroup.procs file `procs` lists `pid`.
pub fn in_cgroup(procs: &Path, pid: i32) -> Result<bool> {
    Ok(read_trimmed(procs)?.lines().any(|l| l == pid.to_string()))
}

/// The counter a container's shell loop keeps in its /tmp/n (replaced by rename, never seen
/// half written), read from the host through its init's root: it stops while the container is
/// paused and goes on after.
pub struct Counter {
    path: PathBuf,
}

impl Counter {
    pub fn of(init: i32) -> Counter {
        Counter {
            path: PathBuf::from(format!("/proc/{init}/root/tmp/n")),
        }
    }

    pub fn read(&self) -> Result<u64> {
        read_trimmed(&self.path)?
            .parse()
            .with_context(|| format!("bad counter in {}", self.path.display()))
    }

    /// Waits until the loop has counted.
    pub fn wait_started(&self) -> Result<()> {
        wait_for("the counter", WAIT_TIMEOUT, || {
            Ok(self.read().is_ok_and(|n| n > 0))
        })
    }

    /// Waits until it is beyond `n`.
    pub fn wait_beyond(&self, n: u64) -> Result<()> {
        wait_for("the counter to move on", WAIT_TIMEOUT, || {
            Ok(self.read()? > n)
        })
    }
}

/// `parent` (`/<unique>`) in every cgroup hierarchy, where it exists.
pub fn cgroup_roots(parent: &str) -> Vec<PathBuf> {
    hierarchies()
        .unwrap_or_default()
        .iter()
        .map(|h| h.dir(parent))
        .filter(|d| d.is_dir())
        .collect()
}

/// Processes of a test that may outlive its daemon: those whose command line or root names
/// `mentioning` (a socket, a temp dir) and anything in the cgroup parent, sorted.
pub fn leftover_processes(mentioning: &str, cgroup_parent: &str) -> Vec<i32> {
    let mut pids = processes_mentioning(mentioning);
    for dir in cgroup_roots(cgroup_parent) {
        collect_procs(&dir, &mut pids);
    }
    pids.sort_unstable();
    pids.dedup();
    pids
}

/// SIGKILLs `pids` and waits (a while) for them to die.
pub fn kill_all(pids: &[i32]) {
    for &pid in pids {
        let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
    }
    let _ = wait_for("leftover processes to die", WAIT_TIMEOUT, || {
        Ok(pids.iter().all(|&p| !pid_alive(p)))
    });
}

/// Removes the cgroup parent's tree in every hierarchy; returns the dirs that stay (busy).
pub fn remove_cgroup_parent(parent: &str) -> Vec<PathBuf> {
    let mut left = Vec::new();
    for root in cgroup_roots(parent) {
        remove_cgroup_tree(&root);
        if root.exists() {
            left.push(root);
        }
    }
    left
}

/// The process whose namespaces a test's commands enter (`nsenter -t <pid>`): containerd, or
/// the `sleep` holding podman's. Started through unshare/nsenter without --fork and `sh -c
/// 'exec …'`, which all exec: the child's pid is the program's. Killed on drop if still there.
pub struct Holder {
    what: &'static str,
    /// None once it has exited or been stopped. A RefCell: waiting for it to come up checks
    /// for its exit while the probe runs commands that enter it.
    child: RefCell<Option<Child>>,
}

impl Holder {
    /// Spawns `cmd` with stdin from /dev/null and stdout and stderr to `log`.
    pub fn spawn(what: &'static str, cmd: &mut Command, log: &Path) -> Result<Holder> {
        let file =
            fs::File::create(log).with_context(|| format!("failed to create {}", log.display()))?;
        let child = cmd
            .stdin(Stdio::null())
            .stdout(file.try_clone().context("failed to dup the log fd")?)
            .stderr(file)
            .spawn()
            .with_context(|| format!("failed to run {:?} for {what}", cmd.get_program()))?;
        Ok(Holder {
            what,
            child: RefCell::new(Some(child)),
        })
    }

    pub fn pid(&self) -> i32 {
        self.child.borrow().as_ref().map_or(-1, |c| c.id() as i32)
    }

    /// Whether it runs (as far as the last look found).
    pub fn running(&self) -> bool {
        self.child.borrow().is_some()
    }

    /// Its exit status, once it has exited (then it is forgotten: nothing to stop).
    fn exited(&self) -> Result<Option<ExitStatus>> {
        let mut child = self.child.borrow_mut();
        let Some(running) = child.as_mut() else {
            bail!("{} is not running", self.what);
        };
        let status = running
            .try_wait()
            .with_context(|| format!("failed to wait for {}", self.what))?;
        if status.is_some() {
            *child = None;
        }
        Ok(status)
    }

    /// Waits until `up` holds; fails at once when the process exits, and after `timeout`. The
    /// errors carry `diagnostics`.
    pub fn wait_up(
        &self,
        timeout: Duration,
        mut up: impl FnMut() -> bool,
        diagnostics: impl Fn() -> String,
    ) -> Result<()> {
        let mut exit = None;
        let waited = wait_for(&format!("{} to come up", self.what), timeout, || {
            exit = self.exited()?;
            Ok(exit.is_some() || up())
        });
        if let Some(status) = exit {
            bail!("{} exited with {status}\n{}", self.what, diagnostics());
        }
        if let Err(e) = waited {
            bail!("{e:#}\n{}", diagnostics());
        }
        Ok(())
    }

    /// Sends `signal`, waits up to `grace` for the exit, then SIGKILLs.
    pub fn stop(&mut self, signal: Signal, grace: Duration) {
        let Some(mut child) = self.child.get_mut().take() else {
            return;
        };
        let _ = kill(Pid::from_raw(child.id() as i32), signal);
        let deadline = Instant::now() + grace;
        while child.try_wait().ok().flatten().is_none() {
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Holder {
    fn drop(&mut self) {
        self.stop(Signal::SIGKILL, STOP_TIMEOUT);
    }
}

/// containerd's config: the test's own paths, then `contrib/containerd/config.toml` with the
/// rcrun under test as BinaryName (the snippet users merge, so the tests prove it loads), then
/// `plugins`, the test's own plugin settings.
pub fn config_toml(dir: &Path, plugins: &str) -> Result<String> {
    let contrib_path = repo_root().join("contrib/containerd/config.toml");
    let contrib = fs::read_to_string(&contrib_path)
        .with_context(|| format!("failed to read {}", contrib_path.display()))?;
    if !contrib.contains(CONTRIB_BINARY) {
        bail!("{} does not name {CONTRIB_BINARY}", contrib_path.display());
    }
    let contrib = contrib.replace(CONTRIB_BINARY, &rcrun_bin().to_string_lossy());
    let d = dir.display();
    Ok(format!(
        r#"root = "{d}/root"
state = "{d}/state"
# Snapshotters and tracing these tests do not need.
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
{plugins}"#
    ))
}

/// What differs between the tests' containerds.
pub struct Setup {
    /// The containerd namespace ctr works in (`-n`), where the bundles are.
    pub namespace: String,
    /// `/<unique>`: the cgroup parent of every container, removed at the end.
    pub cgroup_parent: String,
    /// The network namespace containerd runs in; None: a new one of its own.
    pub netns: Option<NetNs>,
    /// Whether containerd serves what the test needs (tried once its socket exists).
    pub ready: fn(&Containerd) -> bool,
    /// Removes the test's containers while containerd still runs (errors ignored: the rest of
    /// the shutdown kills what stays).
    pub drain: fn(&Containerd),
}

/// A containerd of the test's own (see the module doc).
pub struct Containerd {
    dir: TempDir,
    netns: Option<NetNs>,
    socket: PathBuf,
    namespace: String,
    cgroup_parent: String,
    drain: fn(&Containerd),
    process: Holder,
}

impl Containerd {
    /// Starts containerd with `config` (from [`config_toml`]) in `dir` and waits until it is
    /// ready.
    pub fn start(dir: TempDir, config: &str, setup: Setup) -> Result<Containerd> {
        let socket = dir.path().join("containerd.sock");
        let config_path = dir.path().join("config.toml");
        fs::write(&config_path, config)
            .with_context(|| format!("failed to write {}", config_path.display()))?;
        let script = "set -e
            mount -t tmpfs -o mode=0755 tmpfs /run
            mkdir -p /run/containerd
            ip link set lo up
            exec containerd --config \"$1\" --log-level debug";
        let mut cmd = match &setup.netns {
            None => {
                let mut cmd = Command::new("unshare");
                cmd.args(["--mount", "--net"]);
                cmd
            }
            Some(netns) => {
                let mut cmd = Command::new("nsenter");
                cmd.arg(format!("--net={}", netns.path()))
                    .args(["--", "unshare", "--mount"]);
                cmd
            }
        };
        cmd.args(["--propagation", "private", "--"])
            .args(["sh", "-c", script, "sh"])
            .arg(&config_path);
        let process = Holder::spawn("containerd", &mut cmd, &dir.path().join("containerd.log"))?;
        let cd = Containerd {
            dir,
            netns: setup.netns,
            socket,
            namespace: setup.namespace,
            cgroup_parent: setup.cgroup_parent,
            drain: setup.drain,
            process,
        };
        cd.process.wait_up(
            START_TIMEOUT,
            || cd.socket.exists() && (setup.ready)(&cd),
            || cd.diagnostics(),
        )?;
        Ok(cd)
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    pub fn cgroup_parent(&self) -> &str {
        &self.cgroup_parent
    }

    /// containerd's pid: the process whose mount namespace the shims and rcrun run in.
    pub fn pid(&self) -> i32 {
        self.process.pid()
    }

    /// Imports an OCI layout (packed as `<dir>/<tar_name>`) into the namespace, named
    /// `<base_name>:<tag>` when given.
    pub fn import(&self, layout: &Path, tar_name: &str, base_name: Option<&str>) -> Result<()> {
        let tar = self.dir().join(tar_name);
        oci_archive(layout, &tar)?;
        let tar = tar.to_string_lossy();
        let mut args = vec!["images", "import"];
        if let Some(name) = base_name {
            args.extend(["--base-name", name]);
        }
        args.push(&tar);
        self.ctr_ok(&args)?;
        Ok(())
    }

    /// Imports [`IMAGE`] from hack/mkimage.sh's OCI layout.
    pub fn import_busybox(&self) -> Result<()> {
        self.import(
            &image()?.join("oci"),
            "busybox-oci.tar",
            Some("docker.io/library/busybox"),
        )
    }

    /// `ctr -a <socket> -n <namespace> ARGS`, run inside containerd's mount namespace.
    pub fn ctr_command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new("nsenter");
        cmd.args(["-t", &self.pid().to_string(), "-m", "--", "ctr", "-a"])
            .arg(&self.socket)
            .args(["-n", &self.namespace])
            .args(args);
        cmd
    }

    pub fn ctr(&self, args: &[&str]) -> Result<Output> {
        run_command(&mut self.ctr_command(args), CTR_TIMEOUT)
    }

    /// ctr that must succeed; the error carries containerd's log and rcrun's log.json files.
    pub fn ctr_ok(&self, args: &[&str]) -> Result<Output> {
        let out = self.ctr(args)?;
        if !out.success() {
            bail!("{out}\n{}", self.diagnostics());
        }
        Ok(out)
    }

    /// containerd's log (its last lines) and every rcrun log.json of a bundle still there.
    pub fn diagnostics(&self) -> String {
        let mut text = match &self.netns {
            Some(netns) => format!(
                "--- containerd (network namespace {}) log, last 60 lines ---\n",
                netns.name()
            ),
            None => String::from("--- containerd log, last 60 lines ---\n"),
        };
        let log = fs::read_to_string(self.dir().join("containerd.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        text.push_str(&lines[lines.len().saturating_sub(60)..].join("\n"));
        let bundles = self
            .dir()
            .join("state/io.containerd.runtime.v2.task")
            .join(&self.namespace);
        for entry in fs::read_dir(&bundles).into_iter().flatten().flatten() {
            let log = entry.path().join("log.json");
            if let Ok(content) = fs::read_to_string(&log) {
                text.push_str(&format!("\n--- {} ---\n{content}", log.display()));
            }
        }
        text
    }

    /// Stops everything (see the module doc); returns what could not be cleaned up.
    pub fn shutdown(&mut self) -> Result<()> {
        if self.process.running() {
            (self.drain)(self);
        }
        self.process.stop(Signal::SIGTERM, STOP_TIMEOUT);
        let left = leftover_processes(&self.socket.to_string_lossy(), &self.cgroup_parent);
        kill_all(&left);
        // The mounts live in containerd's private namespace, gone with its last process; any
        // that propagated here would hold the temp dir.
        let mounts = mounts_under(self.dir());
        for m in mounts.iter().rev() {
            let _ = nix::mount::umount2(m, nix::mount::MntFlags::MNT_DETACH);
        }
        let cgroups_left = remove_cgroup_parent(&self.cgroup_parent);
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

impl Drop for Containerd {
    fn drop(&mut self) {
        if let Err(e) = self.shutdown() {
            eprintln!("containerd test cleanup: {e:#}");
        }
    }
}
