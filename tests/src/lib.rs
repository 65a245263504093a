//! Harness for the end-to-end tests: drives the `rcrun` binary through its runc-compatible CLI,
//! with real containers made from the busybox image of `hack/mkimage.sh`. Runs as root.
//!
//! Every test owns its state: a [`Runtime`] with its own `--root` directory, [`Bundle`]s in their
//! own temp dirs and container ids from [`unique_id`], so tests run in parallel. Guards undo what a
//! test made when they drop, also when the test fails: containers are deleted with `--force`,
//! leftover processes killed, mounts under a bundle detached before its files are removed, cgroups
//! the tests' containers got removed (only those: `rmdir`, never a move or a write), network
//! namespaces deleted.
//!
//! Environment:
//! - `RCRUN_BIN`: the runtime binary to test (default `<target>/debug/rcrun`); any runc-compatible
//!   runtime works, e.g. `RCRUN_BIN=/usr/sbin/runc`.
//! - `RCRUN_TEST_IMAGE`: a directory made by `hack/mkimage.sh` (default: built once per test
//!   process into `<repo>/target/e2e-image`).

use std::cell::RefCell;
use std::ffi::OsStr;
use std::fmt;
use std::fs;
use std::io::{ErrorKind, IoSliceMut, Read, Seek};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::thread::sleep;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use nix::sys::signal::{kill, Signal};
use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};
use nix::unistd::Pid;
use tempfile::TempDir;

pub use serde_json::{json, Value};

pub mod containerd;
pub mod cri;

/// Timeouts stretched for where code runs slowly: inside hack/vmtest.sh's VM (software
/// emulation, about 12x slower than the host) they are 10x longer.
pub fn scaled(timeout: Duration) -> Duration {
    if std::env::var_os("RCRUN_VM").is_some() {
        timeout * 10
    } else {
        timeout
    }
}

/// How long one runtime command may take before the harness kills it and fails the test.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(20);
/// How long a test waits for a container to reach a state (e.g. to exit).
pub const WAIT_TIMEOUT: Duration = Duration::from_secs(10);

/// The workspace root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The runtime binary under test: `$RCRUN_BIN`, else `<target>/debug/rcrun` next to this test
/// executable (which lives in `<target>/debug/deps/`).
pub fn rcrun_bin() -> PathBuf {
    if let Some(bin) = std::env::var_os("RCRUN_BIN") {
        return PathBuf::from(bin);
    }
    let bin = std::env::current_exe()
        .ok()
        .and_then(|exe| Some(exe.parent()?.parent()?.join("rcrun")));
    match bin {
        Some(bin) if bin.is_file() => bin,
        other => panic!(
            "rcrun binary not found (looked at {other:?}): build it first: cargo build --workspace"
        ),
    }
}

/// Whether the runtime under test is rcrun (some expectations are rcrun's own, e.g. resource
/// limits being refused as not implemented yet).
pub fn testing_rcrun() -> bool {
    rcrun_bin()
        .file_name()
        .is_some_and(|name| name.to_string_lossy().starts_with("rcrun"))
}

/// The test image (a directory with `rootfs/` and `config.json`): `$RCRUN_TEST_IMAGE`, else built
/// once per test process by `hack/mkimage.sh` into `<repo>/target/e2e-image`.
pub fn image() -> Result<&'static Path> {
    static IMAGE: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let image = IMAGE.get_or_init(|| {
        if let Some(dir) = std::env::var_os("RCRUN_TEST_IMAGE") {
            return Ok(PathBuf::from(dir));
        }
        let root = repo_root();
        let out = root.join("target/e2e-image");
        let result = Command::new(root.join("hack/mkimage.sh"))
            .arg(&out)
            .output()
            .map_err(|e| format!("failed to run hack/mkimage.sh: {e}"))?;
        if !result.status.success() {
            return Err(format!(
                "hack/mkimage.sh failed ({}): {}",
                result.status,
                String::from_utf8_lossy(&result.stderr)
            ));
        }
        Ok(out)
    });
    match image {
        Ok(dir) => Ok(dir.as_path()),
        Err(e) => Err(anyhow!("{e}")),
    }
}

/// A container id unique to this test process and call: `<prefix>-<pid>-<n>`.
pub fn unique_id(prefix: &str) -> String {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// A temp dir under /tmp that everyone may traverse (containers with user namespaces run as
/// unprivileged host uids).
pub fn temp_dir(prefix: &str) -> Result<TempDir> {
    let dir = tempfile::Builder::new()
        .prefix(&format!("rcrun-e2e-{prefix}-"))
        .tempdir_in("/tmp")
        .context("failed to create a temp dir in /tmp")?;
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755))
        .with_context(|| format!("failed to chmod {}", dir.path().display()))?;
    Ok(dir)
}

// ---------------------------------------------------------------------------------------------
// Running commands
// ---------------------------------------------------------------------------------------------

/// What a command did: its exit status and output.
#[derive(Debug)]
pub struct Output {
    pub command: String,
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Output {
    pub fn success(&self) -> bool {
        self.status.success()
    }

    /// The exit code, or -1 when the command was killed by a signal.
    pub fn code(&self) -> i32 {
        self.status.code().unwrap_or(-1)
    }

    /// This output if the command succeeded, else an error showing it.
    pub fn ok(self) -> Result<Output> {
        if self.success() {
            Ok(self)
        } else {
            bail!("command failed: {self}")
        }
    }

    /// The last non-empty line of stderr (runtimes print their error there).
    pub fn error_line(&self) -> &str {
        self.stderr
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("")
    }
}

impl fmt::Display for Output {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "`{}` exited with {}\n--- stdout ---\n{}\n--- stderr ---\n{}\n---",
            self.command, self.status, self.stdout, self.stderr
        )
    }
}

fn describe(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for arg in cmd.get_args() {
        s.push(' ');
        s.push_str(&arg.to_string_lossy());
    }
    s
}

/// Runs `cmd` to completion, within `timeout` (killed and an error past it). stdout and stderr go
/// to anonymous files, not pipes: a container started by the command inherits them and may keep
/// them open long after the command returned.
pub fn run_command(cmd: &mut Command, timeout: Duration) -> Result<Output> {
    let timeout = scaled(timeout);
    let command = describe(cmd);
    let mut out = tempfile::tempfile().context("failed to create a temp file")?;
    let mut err = tempfile::tempfile().context("failed to create a temp file")?;
    cmd.stdin(Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(err.try_clone()?);
    let mut child = cmd
        .spawn()
        .with_context(|| format!("failed to run {command}"))?;
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!("`{command}` did not finish within {timeout:?}");
        }
        sleep(Duration::from_millis(5));
    };
    let mut stdout = String::new();
    let mut stderr = String::new();
    out.rewind()?;
    err.rewind()?;
    // The file may still be written by a container holding it: read what is there now.
    let mut buf = Vec::new();
    out.read_to_end(&mut buf)?;
    stdout.push_str(&String::from_utf8_lossy(&buf));
    buf.clear();
    err.read_to_end(&mut buf)?;
    stderr.push_str(&String::from_utf8_lossy(&buf));
    Ok(Output {
        command,
        status,
        stdout,
        stderr,
    })
}

/// Runs a host command (e.g. `ip`) and fails unless it succeeds.
pub fn host(program: &str, args: &[&str]) -> Result<Output> {
    run_command(Command::new(program).args(args), COMMAND_TIMEOUT)?.ok()
}

/// Polls `cond` every 20 ms until it is true or `timeout` passed (then an error naming `what`).
pub fn wait_for(
    what: &str,
    timeout: Duration,
    mut cond: impl FnMut() -> Result<bool>,
) -> Result<()> {
    let deadline = Instant::now() + scaled(timeout);
    loop {
        if cond()? {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        sleep(Duration::from_millis(20));
    }
}

// ---------------------------------------------------------------------------------------------
// The runtime
// ---------------------------------------------------------------------------------------------

/// The runtime binary with a `--root` of its own. On drop, every container made through it is
/// deleted with `--force`, any of their processes still alive is killed, and the cgroups they
/// were given are removed if empty.
pub struct Runtime {
    bin: PathBuf,
    root: Option<TempDir>,
    containers: RefCell<Vec<String>>,
    pids: RefCell<Vec<i32>>,
    cgroups: RefCell<Vec<String>>,
}

impl Runtime {
    /// The runtime under test ([`rcrun_bin`]).
    pub fn new() -> Result<Runtime> {
        Runtime::with_bin(rcrun_bin())
    }

    /// Another binary speaking the same CLI (e.g. a copy of rcrun).
    pub fn with_bin(bin: impl Into<PathBuf>) -> Result<Runtime> {
        Ok(Runtime {
            bin: bin.into(),
            root: Some(temp_dir("root")?),
            containers: RefCell::default(),
            pids: RefCell::default(),
            cgroups: RefCell::default(),
        })
    }

    pub fn bin(&self) -> &Path {
        &self.bin
    }

    /// The `--root` directory (state dirs are `<root>/<id>`).
    pub fn root(&self) -> &Path {
        match &self.root {
            Some(dir) => dir.path(),
            None => Path::new("/nonexistent"),
        }
    }

    /// `rcrun --root <root> ARGS` as a command, for tests that need to set it up further.
    pub fn command<S: AsRef<OsStr>>(&self, args: &[S]) -> Command {
        let mut cmd = Command::new(&self.bin);
        cmd.arg("--root").arg(self.root()).args(args);
        cmd
    }

    /// Remembers `id` for deletion on drop (done by create/run; for commands built by hand).
    pub fn track(&self, id: &str) {
        if !self.containers.borrow().iter().any(|c| c == id) {
            self.containers.borrow_mut().push(id.to_string());
        }
    }

    fn track_bundle(&self, bundle: &Bundle, id: &str) {
        self.track(id);
        let path = bundle
            .get("/linux/cgroupsPath")
            .and_then(Value::as_str)
            .filter(|p| !p.is_empty())
            .unwrap_or(id)
            .to_string();
        self.cgroups.borrow_mut().push(path);
    }

    /// Runs `cmd` (from [`Runtime::command`]) with the default timeout.
    pub fn output(&self, cmd: &mut Command) -> Result<Output> {
        run_command(cmd, COMMAND_TIMEOUT)
    }

    /// `rcrun --root <root> ARGS`.
    pub fn rcrun<S: AsRef<OsStr>>(&self, args: &[S]) -> Result<Output> {
        self.output(&mut self.command(args))
    }

    /// `create --bundle <bundle> [EXTRA] ID` (writes the bundle's config.json first).
    pub fn create_with(&self, bundle: &Bundle, id: &str, extra: &[&str]) -> Result<Output> {
        bundle.write()?;
        self.track_bundle(bundle, id);
        let mut cmd = self.command(&["create", "--bundle"]);
        cmd.arg(bundle.path()).args(extra).arg(id);
        let out = self.output(&mut cmd)?;
        if out.success() {
            let _ = self.state(id);
        }
        Ok(out)
    }

    pub fn create(&self, bundle: &Bundle, id: &str) -> Result<Output> {
        self.create_with(bundle, id, &[])
    }

    pub fn start(&self, id: &str) -> Result<Output> {
        self.rcrun(&["start", id])
    }

    /// `state ID`, parsed; fails if the command fails or prints no JSON.
    pub fn state(&self, id: &str) -> Result<Value> {
        let out = self.rcrun(&["state", id])?.ok()?;
        let state: Value = serde_json::from_str(&out.stdout)
            .with_context(|| format!("state of {id} is not JSON: {out}"))?;
        if let Some(pid) = state["pid"].as_i64().filter(|p| *p > 0) {
            let pid = pid as i32;
            if !self.pids.borrow().contains(&pid) {
                self.pids.borrow_mut().push(pid);
            }
        }
        Ok(state)
    }

    /// The status field of `state ID`.
    pub fn status(&self, id: &str) -> Result<String> {
        let state = self.state(id)?;
        state["status"]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| anyhow!("state of {id} has no status: {state}"))
    }

    /// The init pid from `state ID`.
    pub fn pid(&self, id: &str) -> Result<i32> {
        let state = self.state(id)?;
        state["pid"]
            .as_i64()
            .filter(|p| *p > 0)
            .map(|p| p as i32)
            .ok_or_else(|| anyhow!("state of {id} has no pid: {state}"))
    }

    pub fn kill(&self, id: &str, signal: &str) -> Result<Output> {
        self.rcrun(&["kill", id, signal])
    }

    pub fn delete(&self, id: &str) -> Result<Output> {
        self.rcrun(&["delete", id])
    }

    pub fn delete_force(&self, id: &str) -> Result<Output> {
        self.rcrun(&["delete", "--force", id])
    }

    /// `run --bundle <bundle> [EXTRA] ID` in the foreground: waits for the container and returns
    /// its output (the container's stdio is the runtime's).
    pub fn run_with(&self, bundle: &Bundle, id: &str, extra: &[&str]) -> Result<Output> {
        bundle.write()?;
        self.track_bundle(bundle, id);
        let mut cmd = self.command(&["run", "--bundle"]);
        cmd.arg(bundle.path()).args(extra).arg(id);
        self.output(&mut cmd)
    }

    pub fn run(&self, bundle: &Bundle, id: &str) -> Result<Output> {
        self.run_with(bundle, id, &[])
    }

    /// create + start, failing unless both succeed.
    pub fn start_detached(&self, bundle: &Bundle, id: &str) -> Result<()> {
        self.create(bundle, id)?.ok()?;
        self.start(id)?.ok()?;
        Ok(())
    }

    /// Waits until `state ID` says `status`; returns that state.
    pub fn wait_status(&self, id: &str, status: &str, timeout: Duration) -> Result<Value> {
        // `state` may fail while the container is still being made: keep asking.
        let mut last = Err(anyhow!("no state yet"));
        let waited = wait_for(&format!("{id} to be {status}"), timeout, || {
            last = self.state(id);
            Ok(last.as_ref().is_ok_and(|s| s["status"] == status))
        });
        match (waited, last) {
            (Ok(()), Ok(state)) => Ok(state),
            (Err(e), Ok(state)) => Err(e.context(format!("last state: {state}"))),
            (Err(e), Err(last)) => Err(e.context(format!("last state: {last:#}"))),
            (Ok(()), Err(last)) => Err(last),
        }
    }

    /// Waits (up to [`WAIT_TIMEOUT`]) for the container to stop.
    pub fn wait_stopped(&self, id: &str) -> Result<Value> {
        self.wait_status(id, "stopped", WAIT_TIMEOUT)
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        for id in self.containers.borrow().iter().rev() {
            let _ = run_command(
                &mut self.command(&["delete", "--force", id.as_str()]),
                COMMAND_TIMEOUT,
            );
        }
        for &pid in self.pids.borrow().iter() {
            if pid_alive(pid) {
                let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            }
        }
        for path in self.cgroups.borrow().iter() {
            remove_test_cgroups(path);
        }
        // A state dir left behind may hold a mount (e.g. a bind-mounted fifo); never follow it
        // into the host.
        if let Some(root) = self.root.take() {
            remove_dir_safely(root);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Bundles
// ---------------------------------------------------------------------------------------------

/// An OCI bundle in a temp dir: a copy of the image's rootfs and its config.json as a JSON value
/// that tests change freely, then [`Bundle::write`] (create/run do it). On drop, mounts left under
/// the dir are detached before the files are removed (if some cannot be, the dir is kept rather
/// than deleting through them).
pub struct Bundle {
    dir: Option<TempDir>,
    pub config: Value,
}

impl Bundle {
    pub fn new() -> Result<Bundle> {
        let image = image()?;
        let dir = temp_dir("bundle")?;
        host(
            "cp",
            &[
                "-a",
                &image.join("rootfs").to_string_lossy(),
                &dir.path().join("rootfs").to_string_lossy(),
            ],
        )?;
        let text = fs::read_to_string(image.join("config.json"))
            .with_context(|| format!("failed to read {}/config.json", image.display()))?;
        let config = serde_json::from_str(&text).context("image config.json is not JSON")?;
        Ok(Bundle {
            dir: Some(dir),
            config,
        })
    }

    pub fn path(&self) -> &Path {
        match &self.dir {
            Some(dir) => dir.path(),
            None => Path::new("/nonexistent"),
        }
    }

    pub fn rootfs(&self) -> PathBuf {
        self.path().join("rootfs")
    }

    pub fn write(&self) -> Result<()> {
        let path = self.path().join("config.json");
        let text = serde_json::to_string_pretty(&self.config)?;
        fs::write(&path, text).with_context(|| format!("failed to write {}", path.display()))
    }

    /// The value at a JSON pointer (e.g. `/process/args`).
    pub fn get(&self, pointer: &str) -> Option<&Value> {
        self.config.pointer(pointer)
    }

    /// Sets the value at a JSON pointer, creating objects on the way.
    pub fn set(&mut self, pointer: &str, value: Value) -> &mut Self {
        let mut node = &mut self.config;
        for key in pointer.split('/').skip(1) {
            if !node.is_object() {
                *node = json!({});
            }
            node = node
                .as_object_mut()
                .map(|o| o.entry(key.to_string()).or_insert(Value::Null))
                .unwrap_or_else(|| unreachable!());
        }
        *node = value;
        self
    }

    /// Removes the value at a JSON pointer, if there.
    pub fn remove(&mut self, pointer: &str) -> &mut Self {
        if let Some((parent, key)) = pointer.rsplit_once('/') {
            let parent = if parent.is_empty() {
                Some(&mut self.config)
            } else {
                self.config.pointer_mut(parent)
            };
            if let Some(Value::Object(o)) = parent {
                o.remove(key);
            }
        }
        self
    }

    fn array(&mut self, pointer: &str) -> &mut Vec<Value> {
        if !self.get(pointer).is_some_and(Value::is_array) {
            self.set(pointer, json!([]));
        }
        match self.config.pointer_mut(pointer) {
            Some(Value::Array(a)) => a,
            _ => unreachable!(),
        }
    }

    pub fn args(&mut self, args: &[&str]) -> &mut Self {
        self.set("/process/args", json!(args))
    }

    /// args = `sh -c SCRIPT`.
    pub fn sh(&mut self, script: &str) -> &mut Self {
        self.args(&["sh", "-c", script])
    }

    /// Adds (or replaces) `KEY=VALUE` in process.env.
    pub fn env(&mut self, key: &str, value: &str) -> &mut Self {
        let prefix = format!("{key}=");
        let env = self.array("/process/env");
        env.retain(|e| !e.as_str().is_some_and(|e| e.starts_with(&prefix)));
        env.push(json!(format!("{key}={value}")));
        self
    }

    pub fn hostname(&mut self, name: &str) -> &mut Self {
        self.set("/hostname", json!(name))
    }

    pub fn cwd(&mut self, cwd: &str) -> &mut Self {
        self.set("/process/cwd", json!(cwd))
    }

    pub fn user(&mut self, uid: u32, gid: u32, additional_gids: &[u32]) -> &mut Self {
        self.set(
            "/process/user",
            json!({"uid": uid, "gid": gid, "additionalGids": additional_gids}),
        )
    }

    pub fn terminal(&mut self, terminal: bool) -> &mut Self {
        self.set("/process/terminal", json!(terminal))
    }

    pub fn readonly(&mut self, readonly: bool) -> &mut Self {
        self.set("/root/readonly", json!(readonly))
    }

    /// The same capabilities in all five sets.
    pub fn capabilities(&mut self, caps: &[&str]) -> &mut Self {
        for set in [
            "bounding",
            "effective",
            "permitted",
            "inheritable",
            "ambient",
        ] {
            self.set(&format!("/process/capabilities/{set}"), json!(caps));
        }
        self
    }

    /// Sets (replacing one of the same type) an rlimit.
    pub fn rlimit(&mut self, kind: &str, soft: u64, hard: u64) -> &mut Self {
        let rlimits = self.array("/process/rlimits");
        rlimits.retain(|r| r["type"] != kind);
        rlimits.push(json!({"type": kind, "soft": soft, "hard": hard}));
        self
    }

    pub fn add_mount(&mut self, mount: Value) -> &mut Self {
        self.array("/mounts").push(mount);
        self
    }

    /// Removes the mounts whose destination is `dest`.
    pub fn remove_mount(&mut self, dest: &str) -> &mut Self {
        self.array("/mounts").retain(|m| m["destination"] != dest);
        self
    }

    /// A bind mount of a host path; `options` beyond `rbind` (e.g. `ro`).
    pub fn bind(&mut self, source: &Path, dest: &str, options: &[&str]) -> &mut Self {
        let mut opts = vec!["rbind"];
        opts.extend_from_slice(options);
        self.add_mount(json!({
            "destination": dest,
            "type": "bind",
            "source": source,
            "options": opts,
        }))
    }

    /// A dir of the host, writable by anyone, bind-mounted read-write at /shared: how a container
    /// hands results to the test. Returns its host path.
    pub fn share(&mut self) -> Result<PathBuf> {
        let shared = self.path().join("shared");
        fs::create_dir_all(&shared)?;
        fs::set_permissions(&shared, fs::Permissions::from_mode(0o777))?;
        fs::create_dir_all(self.rootfs().join("shared"))?;
        self.bind(&shared, "/shared", &["rw"]);
        Ok(shared)
    }

    /// Adds a namespace (new, or joined at `path`), replacing one of the same type.
    pub fn namespace(&mut self, kind: &str, path: Option<&str>) -> &mut Self {
        let namespaces = self.array("/linux/namespaces");
        namespaces.retain(|n| n["type"] != kind);
        namespaces.push(match path {
            Some(path) => json!({"type": kind, "path": path}),
            None => json!({"type": kind}),
        });
        self
    }

    pub fn remove_namespace(&mut self, kind: &str) -> &mut Self {
        self.array("/linux/namespaces")
            .retain(|n| n["type"] != kind);
        self
    }
}

impl Drop for Bundle {
    fn drop(&mut self) {
        if let Some(dir) = self.dir.take() {
            remove_dir_safely(dir);
        }
    }
}

/// Removes a temp dir, after detaching any mount under it; keeps it if a mount stays.
fn remove_dir_safely(dir: TempDir) {
    let path = dir.path().to_path_buf();
    for mount in mounts_under(&path).into_iter().rev() {
        let _ = nix::mount::umount2(&mount, nix::mount::MntFlags::MNT_DETACH);
    }
    if mounts_under(&path).is_empty() {
        drop(dir);
    } else {
        eprintln!(
            "e2e: keeping {} because mounts remain under it",
            path.display()
        );
        let _ = dir.keep();
    }
}

// ---------------------------------------------------------------------------------------------
// Console socket
// ---------------------------------------------------------------------------------------------

/// A `--console-socket`: a listening unix socket at a temp path that receives the pty master.
pub struct ConsoleSocket {
    _dir: TempDir,
    path: PathBuf,
    listener: UnixListener,
}

impl ConsoleSocket {
    pub fn new() -> Result<ConsoleSocket> {
        let dir = temp_dir("console")?;
        let path = dir.path().join("console.sock");
        let listener = UnixListener::bind(&path)
            .with_context(|| format!("failed to bind {}", path.display()))?;
        listener.set_nonblocking(true)?;
        Ok(ConsoleSocket {
            _dir: dir,
            path,
            listener,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn path_str(&self) -> String {
        self.path.to_string_lossy().into_owned()
    }

    /// Accepts one connection and receives one fd (SCM_RIGHTS) on it: the pty master.
    pub fn receive(&self, timeout: Duration) -> Result<OwnedFd> {
        let deadline = Instant::now() + timeout;
        let stream = loop {
            match self.listener.accept() {
                Ok((stream, _)) => break stream,
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    if Instant::now() > deadline {
                        bail!("no connection on the console socket within {timeout:?}");
                    }
                    sleep(Duration::from_millis(10));
                }
                Err(e) => return Err(e).context("accept on the console socket"),
            }
        };
        stream.set_nonblocking(false)?;
        stream.set_read_timeout(Some(timeout))?;
        let mut buf = [0u8; 4096];
        let mut iov = [IoSliceMut::new(&mut buf)];
        let mut cmsg = nix::cmsg_space!([std::os::fd::RawFd; 1]);
        let msg = recvmsg::<()>(
            stream.as_raw_fd(),
            &mut iov,
            Some(&mut cmsg),
            MsgFlags::MSG_CMSG_CLOEXEC,
        )
        .context("recvmsg on the console socket")?;
        for c in msg.cmsgs().context("control messages")? {
            if let ControlMessageOwned::ScmRights(fds) = c {
                if let Some(&fd) = fds.first() {
                    // SAFETY: the kernel just installed this fd in our table; nobody else owns it.
                    return Ok(unsafe { OwnedFd::from_raw_fd(fd) });
                }
            }
        }
        bail!("the console socket message carried no fd")
    }
}

/// Reads from a pty master until `done(text so far)`, EOF (the slave side closed: EIO), or
/// `timeout` (an error showing what was read).
pub fn read_pty(fd: &OwnedFd, timeout: Duration, done: impl Fn(&str) -> bool) -> Result<String> {
    use nix::fcntl::{fcntl, FcntlArg, OFlag};
    let flags = OFlag::from_bits_truncate(fcntl(fd, FcntlArg::F_GETFL)?);
    fcntl(fd, FcntlArg::F_SETFL(flags | OFlag::O_NONBLOCK))?;
    let deadline = Instant::now() + timeout;
    let mut text = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match nix::unistd::read(fd, &mut buf) {
            Ok(0) | Err(nix::errno::Errno::EIO) => break,
            Ok(n) => {
                text.extend_from_slice(&buf[..n]);
                if done(&String::from_utf8_lossy(&text)) {
                    break;
                }
            }
            Err(nix::errno::Errno::EAGAIN) => {
                if Instant::now() > deadline {
                    bail!(
                        "pty read timed out after {timeout:?}; read so far: {:?}",
                        String::from_utf8_lossy(&text)
                    );
                }
                sleep(Duration::from_millis(10));
            }
            Err(e) => return Err(e).context("read from the pty master"),
        }
    }
    Ok(String::from_utf8_lossy(&text).into_owned())
}

// ---------------------------------------------------------------------------------------------
// Looking at the host
// ---------------------------------------------------------------------------------------------

/// Whether `pid` is a live process (not a zombie).
pub fn pid_alive(pid: i32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state is the first field after the command name, which is in parentheses.
        Ok(stat) => match stat.rsplit_once(')') {
            Some((_, rest)) => !matches!(rest.trim_start().chars().next(), Some('Z' | 'X')),
            None => false,
        },
        Err(_) => false,
    }
}

/// A field of /proc/PID/status (e.g. `Uid`, `CapEff`), trimmed.
pub fn proc_status(pid: i32, field: &str) -> Result<String> {
    let status = fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .map(|v| v.trim().to_string())
        .ok_or_else(|| anyhow!("no {field} in /proc/{pid}/status"))
}

/// The namespace link of a process, e.g. `net:[4026531992]`.
pub fn ns_of(pid: &str, kind: &str) -> Result<String> {
    let link = fs::read_link(format!("/proc/{pid}/ns/{kind}"))
        .with_context(|| format!("readlink /proc/{pid}/ns/{kind}"))?;
    Ok(link.to_string_lossy().into_owned())
}

/// A line of /proc/self/mountinfo, split.
#[derive(Debug, Clone)]
pub struct MountInfo {
    pub root: String,
    pub mount_point: String,
    pub options: String,
    pub fs_type: String,
    pub source: String,
    pub super_options: String,
    pub line: String,
}

/// Parses a mountinfo file (`/proc/<pid>/mountinfo`).
pub fn mountinfo_of(path: &str) -> Result<Vec<MountInfo>> {
    let text = fs::read_to_string(path).with_context(|| format!("failed to read {path}"))?;
    Ok(parse_mountinfo(&text))
}

/// Parses mountinfo text (also as printed by `cat /proc/self/mountinfo` in a container).
pub fn parse_mountinfo(text: &str) -> Vec<MountInfo> {
    text.lines()
        .filter_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            let l: Vec<&str> = left.split(' ').collect();
            let r: Vec<&str> = right.split(' ').collect();
            Some(MountInfo {
                root: unescape(l.get(3)?),
                mount_point: unescape(l.get(4)?),
                options: l.get(5)?.to_string(),
                fs_type: r.first()?.to_string(),
                source: r.get(1)?.to_string(),
                super_options: r.get(2).unwrap_or(&"").to_string(),
                line: line.to_string(),
            })
        })
        .collect()
}

fn unescape(s: &str) -> String {
    s.replace("\\040", " ")
        .replace("\\011", "\t")
        .replace("\\012", "\n")
        .replace("\\134", "\\")
}

/// Whether any line of our /proc/self/mountinfo mentions `text` (e.g. a bundle path).
pub fn mountinfo_contains(text: &str) -> bool {
    fs::read_to_string("/proc/self/mountinfo").is_ok_and(|m| m.contains(text))
}

/// Mount points at or under `dir` in our mount namespace, in mount order.
pub fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    mountinfo_of("/proc/self/mountinfo")
        .unwrap_or_default()
        .into_iter()
        .map(|m| PathBuf::from(m.mount_point))
        .filter(|m| m.starts_with(dir))
        .collect()
}

/// A cgroup hierarchy as this process sees it.
#[derive(Debug, Clone)]
pub struct Hierarchy {
    /// The controllers field of /proc/self/cgroup (`memory`, `cpu,cpuacct`, `name=systemd`, or
    /// empty for the unified v2 hierarchy).
    pub controllers: String,
    /// Where the hierarchy is mounted here.
    pub mount_point: PathBuf,
    /// This process's cgroup in it (as in /proc/self/cgroup).
    pub own: String,
    /// The root of the mount within the hierarchy (usually `/`).
    mount_root: String,
}

impl Hierarchy {
    /// The directory of `cgroup` (a path as in /proc/PID/cgroup) in this hierarchy.
    pub fn dir(&self, cgroup: &str) -> PathBuf {
        let rel = cgroup
            .strip_prefix(self.mount_root.trim_end_matches('/'))
            .unwrap_or(cgroup);
        self.mount_point.join(rel.trim_start_matches('/'))
    }

    pub fn is_v2(&self) -> bool {
        self.controllers.is_empty()
    }

    pub fn has(&self, controller: &str) -> bool {
        self.controllers.split(',').any(|c| c == controller)
    }
}

/// The cgroup hierarchies this process is in and that are mounted here.
pub fn hierarchies() -> Result<Vec<Hierarchy>> {
    let own = fs::read_to_string("/proc/self/cgroup")?;
    let mounts = mountinfo_of("/proc/self/mountinfo")?;
    let mut found = Vec::new();
    for line in own.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(_), Some(ctrls), Some(path)) = (parts.next(), parts.next(), parts.next()) else {
            continue;
        };
        let mount = mounts.iter().find(|m| {
            if ctrls.is_empty() {
                m.fs_type == "cgroup2"
            } else {
                m.fs_type == "cgroup"
                    && ctrls
                        .split(',')
                        .all(|c| m.super_options.split(',').any(|o| o == c))
            }
        });
        if let Some(m) = mount {
            found.push(Hierarchy {
                controllers: ctrls.to_string(),
                mount_point: PathBuf::from(&m.mount_point),
                own: path.to_string(),
                mount_root: m.root.clone(),
            });
        }
    }
    Ok(found)
}

/// This process's cgroup in the hierarchy holding `controller` (`""` = the unified hierarchy).
pub fn own_cgroup(controller: &str) -> Result<String> {
    cgroup_of("self", controller)
}

/// The cgroup of a process (`pid` or `self`) in the hierarchy holding `controller`.
pub fn cgroup_of(pid: &str, controller: &str) -> Result<String> {
    let text = fs::read_to_string(format!("/proc/{pid}/cgroup"))
        .with_context(|| format!("failed to read /proc/{pid}/cgroup"))?;
    text.lines()
        .find_map(|line| {
            let mut parts = line.splitn(3, ':');
            let (_, ctrls, path) = (parts.next()?, parts.next()?, parts.next()?);
            let hit = if controller.is_empty() {
                ctrls.is_empty()
            } else {
                ctrls.split(',').any(|c| c == controller)
            };
            hit.then(|| path.to_string())
        })
        .ok_or_else(|| anyhow!("no {controller:?} hierarchy in /proc/{pid}/cgroup"))
}

/// Where a cgroups path of a config lands, as in /proc/PID/cgroup of `hierarchy`: absolute paths
/// as they are, relative ones (and empty → the id) under this process's own cgroup.
pub fn expected_cgroup(hierarchy: &Hierarchy, cgroups_path: &str) -> String {
    if cgroups_path.starts_with('/') {
        cgroups_path.to_string()
    } else {
        format!("{}/{}", hierarchy.own.trim_end_matches('/'), cgroups_path)
    }
}

/// Whether a cgroups path (or id) names a cgroup below a hierarchy root or our own cgroup: not
/// empty, not a root, no `.` or `..` component.
fn plain_cgroup_path(path: &str) -> bool {
    let mut components = path.split('/').filter(|c| !c.is_empty()).peekable();
    components.peek().is_some() && components.all(|c| c != "." && c != "..")
}

/// Removes (rmdir, leaf first, only if empty) the cgroup dirs that a container with this
/// cgroupsPath (or id) was given, in every v1 and v2 hierarchy. Never touches a cgroup that does
/// not exist only because of it: the prefixes removed are the test's own unique names.
fn remove_test_cgroups(cgroups_path: &str) {
    if !plain_cgroup_path(cgroups_path) {
        return;
    }
    let Ok(hierarchies) = hierarchies() else {
        return;
    };
    for h in &hierarchies {
        let full = expected_cgroup(h, cgroups_path);
        let base = if cgroups_path.starts_with('/') {
            String::new()
        } else {
            h.own.trim_end_matches('/').to_string()
        };
        let mut dir = h.dir(&full);
        let stop = h.dir(if base.is_empty() { "/" } else { &base });
        while dir.starts_with(&stop) && dir != stop {
            if dir.exists() && fs::remove_dir(&dir).is_err() {
                break;
            }
            match dir.parent() {
                Some(parent) => dir = parent.to_path_buf(),
                None => break,
            }
        }
    }
}

/// Processes (other than us) whose root dir or command line mentions `text`.
pub fn processes_mentioning(text: &str) -> Vec<i32> {
    let me = std::process::id() as i32;
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&pid| pid != me && pid_alive(pid))
        .filter(|&pid| {
            let root = fs::read_link(format!("/proc/{pid}/root"))
                .map(|r| r.to_string_lossy().contains(text))
                .unwrap_or(false);
            let cmdline = fs::read(format!("/proc/{pid}/cmdline"))
                .map(|c| String::from_utf8_lossy(&c).contains(text))
                .unwrap_or(false);
            root || cmdline
        })
        .collect()
}

/// Fails if anything of container `id` with `bundle` remains: a state dir under the runtime's
/// root, a cgroup dir, a mount mentioning the bundle, a live process in the bundle or named by id.
pub fn assert_nothing_left(rt: &Runtime, bundle: &Bundle, id: &str) -> Result<()> {
    let mut left = Vec::new();
    if !id.is_empty() && !id.contains('/') && id != "." && id != ".." {
        let state_dir = rt.root().join(id);
        if state_dir.exists() {
            left.push(format!("state dir {}", state_dir.display()));
        }
    }
    let bundle_path = bundle.path().to_string_lossy().into_owned();
    if mountinfo_contains(&bundle_path) {
        left.push(format!("a mount under {bundle_path}"));
    }
    let cgroups_path = bundle
        .get("/linux/cgroupsPath")
        .and_then(Value::as_str)
        .filter(|p| !p.is_empty())
        .unwrap_or(id)
        .to_string();
    if plain_cgroup_path(&cgroups_path) {
        for h in hierarchies()? {
            let dir = h.dir(&expected_cgroup(&h, &cgroups_path));
            if dir != h.dir(&h.own) && dir.exists() {
                left.push(format!("cgroup dir {}", dir.display()));
            }
        }
    }
    let mut procs = processes_mentioning(&bundle_path);
    if id.len() > 3 {
        procs.extend(processes_mentioning(id));
    }
    if !procs.is_empty() {
        left.push(format!("processes {procs:?}"));
    }
    if left.is_empty() {
        Ok(())
    } else {
        bail!("left behind by {id:?}: {}", left.join(", "))
    }
}

/// sha256 of a file (hex), by `sha256sum`.
pub fn sha256(path: &Path) -> Result<String> {
    let out = host("sha256sum", &[&path.to_string_lossy()])?;
    out.stdout
        .split_whitespace()
        .next()
        .map(str::to_string)
        .ok_or_else(|| anyhow!("no output from sha256sum"))
}

/// A named network namespace (`ip netns add`), deleted on drop.
pub struct NetNs {
    name: String,
}

impl NetNs {
    pub fn new() -> Result<NetNs> {
        let name = unique_id("rcrun-e2e");
        host("ip", &["netns", "add", &name])?;
        Ok(NetNs { name })
    }

    pub fn path(&self) -> String {
        format!("/var/run/netns/{}", self.name)
    }

    pub fn name(&self) -> &str {
        &self.name
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        let _ = run_command(
            Command::new("ip").args(["netns", "del", &self.name]),
            COMMAND_TIMEOUT,
        );
    }
}

/// A file the test made on the host, removed on drop.
pub struct HostFile(pub PathBuf);

impl HostFile {
    pub fn create(path: impl Into<PathBuf>, contents: &str) -> Result<HostFile> {
        let path = path.into();
        fs::write(&path, contents)
            .with_context(|| format!("failed to write {}", path.display()))?;
        Ok(HostFile(path))
    }
}

impl Drop for HostFile {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.0);
    }
}

// ---------------------------------------------------------------------------------------------
// Leak checks (stress and fault tests)
// ---------------------------------------------------------------------------------------------

/// How many fds process `pid` (or `self`) has open.
pub fn open_fd_count(pid: &str) -> Result<usize> {
    let dir = format!("/proc/{pid}/fd");
    Ok(fs::read_dir(&dir)
        .with_context(|| format!("failed to read {dir}"))?
        .count())
}

/// The resident set size of `pid` in kB (VmRSS of /proc/PID/status).
pub fn vm_rss_kb(pid: i32) -> Result<u64> {
    let rss = proc_status(pid, "VmRSS")?;
    rss.trim_end_matches("kB")
        .trim()
        .parse()
        .with_context(|| format!("VmRSS of {pid} is not a number of kB: {rss:?}"))
}

/// The live processes whose parent is `pid`.
pub fn children_of(pid: i32) -> Vec<i32> {
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&p| pid_alive(p))
        .filter(|&p| {
            fs::read_to_string(format!("/proc/{p}/stat"))
                .ok()
                .and_then(|stat| {
                    let (_, rest) = stat.rsplit_once(')')?;
                    rest.split_whitespace().nth(1)?.parse::<i32>().ok()
                })
                == Some(pid)
        })
        .collect()
}

/// Live processes in a cgroup (any hierarchy) one of whose path components starts with
/// `prefix` (e.g. the unique id prefix of a test's containers).
pub fn processes_in_cgroups_named(prefix: &str) -> Vec<i32> {
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&p| pid_alive(p))
        .filter(|&p| {
            fs::read_to_string(format!("/proc/{p}/cgroup")).is_ok_and(|text| {
                text.lines().any(|line| {
                    line.splitn(3, ':')
                        .nth(2)
                        .is_some_and(|path| path.split('/').any(|c| c.starts_with(prefix)))
                })
            })
        })
        .collect()
}

/// Cgroup dirs directly under this process's own cgroup, in every hierarchy, whose name starts
/// with `prefix`: where relative cgroupsPaths of the tests' containers land.
pub fn own_cgroups_named(prefix: &str) -> Result<Vec<PathBuf>> {
    let mut found = Vec::new();
    for h in hierarchies()? {
        let own = h.dir(&h.own);
        let Ok(entries) = fs::read_dir(&own) else {
            continue;
        };
        for entry in entries.flatten() {
            if entry.file_name().to_string_lossy().starts_with(prefix)
                && entry.file_type().is_ok_and(|t| t.is_dir())
            {
                found.push(entry.path());
            }
        }
    }
    Ok(found)
}

/// Whether `program` is a file in a directory of PATH (for tests of optional host tools).
pub fn on_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join(program).is_file()))
}

/// Every pid in the cgroup tree under `dir` (one hierarchy), appended to `pids`.
pub fn collect_procs(dir: &Path, pids: &mut Vec<i32>) {
    if let Ok(text) = fs::read_to_string(dir.join("cgroup.procs")) {
        pids.extend(text.lines().filter_map(|l| l.trim().parse::<i32>().ok()));
    }
    for entry in fs::read_dir(dir).into_iter().flatten().flatten() {
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            collect_procs(&entry.path(), pids);
        }
    }
}

/// Removes the (empty) cgroup tree under `dir`, leaves first; what is busy stays.
pub fn remove_cgroup_tree(dir: &Path) {
    for entry in fs::read_dir(dir).into_iter().flatten().flatten() {
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            remove_cgroup_tree(&entry.path());
        }
    }
    let _ = fs::remove_dir(dir);
}
