//! Exec: runs a command in a container through the OCI runtime's `exec`, in the foreground,
//! so that the runtime's exit status is the command's.
//!
//! Without a tty the runtime gets pipes. With a tty it gets the slave of a pty we open, as its
//! stdin/stdout/stderr and controlling terminal: runc, crun and rcrun, when exec is not
//! detached and no `--console-socket` is given, make the container's terminal themselves and
//! relay it to their own, copying its size on SIGWINCH. (runc refuses `--console-socket`
//! unless it detaches, and a detached exec leaves nobody to wait for the process but a
//! subreaper; the relay works the same on all three runtimes.) A resize is TIOCSWINSZ on our
//! master, which makes the kernel send SIGWINCH to the runtime.
//!
//! When the session ends early — the client went away, the future was dropped — the exec'd
//! process is SIGKILLed by the pid the runtime wrote to `--pid-file` (so the runtime, still its
//! parent, reaps it and nothing is left in the container), then the runtime's process group.

use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::process::Child;
use tokio::task::JoinSet;

use crate::runtime_client::RuntimeClient;
use crate::store::ContainerRecord;
use crate::streaming::{CommandHandler, CommandOutcome, CommandStreams, StreamOptions, TermSize};

/// How long output may keep flowing after the runtime exited (a background process holding
/// the pipe must not hold the session open forever).
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the runtime gets to reap a killed process before its whole group is killed.
const KILL_GRACE: Duration = Duration::from_secs(2);

#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    #[error("failed to read the container's spec {path}")]
    ReadSpec {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the container's spec {path} is not valid JSON")]
    ParseSpec {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("failed to write the exec process file {path}")]
    WriteProcess {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("failed to make an id for the exec")]
    Id(#[source] std::io::Error),
    #[error("failed to open a pty for the exec")]
    Pty(#[source] std::io::Error),
    #[error("failed to run {binary}")]
    Spawn {
        binary: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("failed to wait for the runtime's exec in container {id}")]
    Wait {
        id: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the client went away")]
    ClientGone,
}

/// The handler for an exec of `cmd` in the (running) container of `record`.
pub fn handler(
    runtime: RuntimeClient,
    record: &ContainerRecord,
    cmd: Vec<String>,
    opts: StreamOptions,
) -> CommandHandler {
    let id = record.id.clone();
    let bundle = record.bundle.clone();
    Box::new(move |streams| {
        Box::pin(async move {
            match run(&runtime, &id, &bundle, cmd, opts.tty, streams).await {
                Ok(code) => CommandOutcome::Exited(code),
                Err(e) => {
                    let text = crate::error_chain(&e);
                    tracing::info!(container = %id, error = %text, "exec session ended");
                    CommandOutcome::Failed(format!("error executing command in container: {text}"))
                }
            }
        })
    })
}

/// The exec'd process: the container's own process with our command line.
fn process_json(bundle: &Path, cmd: Vec<String>, tty: bool) -> Result<Value, ExecError> {
    let path = bundle.join("config.json");
    let bytes = std::fs::read(&path).map_err(|source| ExecError::ReadSpec {
        path: path.clone(),
        source,
    })?;
    let spec: Value =
        serde_json::from_slice(&bytes).map_err(|source| ExecError::ParseSpec { path, source })?;
    let mut process = spec.get("process").cloned().unwrap_or_else(|| json!({}));
    process["args"] = json!(cmd);
    process["terminal"] = json!(tty);
    if let Some(obj) = process.as_object_mut() {
        // Not the container's init: oomScoreAdj is inherited, and the terminal's size comes
        // from the client's resizes.
        obj.remove("oomScoreAdj");
        obj.remove("consoleSize");
    }
    Ok(process)
}

/// The runtime's exec while it runs. Dropped before it was waited for, it kills the exec'd
/// process and the runtime; either way it removes its files.
struct Running {
    child: Option<Child>,
    group: Option<i32>,
    process_file: PathBuf,
    pid_file: PathBuf,
}

impl Running {
    fn exec_pid(&self) -> Option<nix::unistd::Pid> {
        std::fs::read_to_string(&self.pid_file)
            .ok()
            .and_then(|s| s.trim().parse::<i32>().ok())
            .filter(|p| *p > 0)
            .map(nix::unistd::Pid::from_raw)
    }

    /// After the runtime exited: a process it left running (its own failure) must not outlive
    /// the session.
    fn kill_leftover(&self) {
        if let Some(pid) = self.exec_pid() {
            if nix::sys::signal::kill(pid, None).is_ok() {
                let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
            }
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let files = [self.process_file.clone(), self.pid_file.clone()];
        let Some(mut child) = self.child.take() else {
            for f in &files {
                let _ = std::fs::remove_file(f);
            }
            return;
        };
        if let Some(pid) = self.exec_pid() {
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
        }
        let group = self.group;
        let kill_group = move || {
            if let Some(pgid) = group {
                let _ = nix::sys::signal::killpg(
                    nix::unistd::Pid::from_raw(pgid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        };
        let finish = async move {
            if tokio::time::timeout(KILL_GRACE, child.wait())
                .await
                .is_err()
            {
                kill_group();
                let _ = child.wait().await;
            }
            for f in &files {
                let _ = std::fs::remove_file(f);
            }
        };
        match tokio::runtime::Handle::try_current() {
            Ok(h) => {
                h.spawn(finish);
            }
            Err(_) => {
                // No runtime to wait on (shutdown): kill_on_drop takes the runtime down.
                if let Some(pgid) = group {
                    let _ = nix::sys::signal::killpg(
                        nix::unistd::Pid::from_raw(pgid),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                }
            }
        }
    }
}

async fn run(
    runtime: &RuntimeClient,
    id: &str,
    bundle: &Path,
    cmd: Vec<String>,
    tty: bool,
    mut streams: CommandStreams,
) -> Result<i32, ExecError> {
    let process = process_json(bundle, cmd, tty)?;
    let tag = crate::new_id().map_err(ExecError::Id)?;
    let process_file = bundle.join(format!("exec-{}.json", &tag[..16]));
    let pid_file = bundle.join(format!("exec-{}.pid", &tag[..16]));
    let mut running = Running {
        child: None,
        group: None,
        process_file: process_file.clone(),
        pid_file: pid_file.clone(),
    };
    std::fs::write(&process_file, process.to_string()).map_err(|source| {
        ExecError::WriteProcess {
            path: process_file.clone(),
            source,
        }
    })?;
    let mut command = runtime.exec_command(id, &process_file, &pid_file);
    command.kill_on_drop(true);
    let spawn_err = |source| ExecError::Spawn {
        binary: runtime.binary.clone(),
        source,
    };
    let status = if tty {
        let pty = nix::pty::openpty(None, None).map_err(|e| ExecError::Pty(e.into()))?;
        for fd in [&pty.master, &pty.slave] {
            set_cloexec(fd).map_err(ExecError::Pty)?;
        }
        // A size the client sent already is there before the runtime copies it at start.
        if let Some(size) = streams.resize.as_mut().and_then(|r| r.try_recv().ok()) {
            set_size(&pty.master, size).map_err(ExecError::Pty)?;
        }
        let slave = |fd: &OwnedFd| fd.try_clone().map(Stdio::from).map_err(ExecError::Pty);
        command
            .stdin(slave(&pty.slave)?)
            .stdout(slave(&pty.slave)?)
            .stderr(slave(&pty.slave)?);
        // SAFETY: setsid and ioctl are async-signal-safe and touch no memory of the parent.
        unsafe {
            command.pre_exec(|| {
                // The runtime leads a session whose controlling terminal is our pty, so a
                // resize on the master signals it; its pid is the session's process group.
                if libc::setsid() < 0 || libc::ioctl(0, libc::TIOCSCTTY, 0) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = command.spawn().map_err(spawn_err)?;
        drop(pty.slave);
        running.group = child.id().map(|p| p as i32);
        running.child = Some(child);
        let master = Pty::new(pty.master).map_err(ExecError::Pty)?;
        run_tty(id, &mut running, master, streams).await?
    } else {
        command
            .stdin(piped_if(streams.stdin.is_some()))
            .stdout(piped_if(streams.stdout.is_some()))
            .stderr(piped_if(streams.stderr.is_some()))
            .process_group(0);
        let child = command.spawn().map_err(spawn_err)?;
        running.group = child.id().map(|p| p as i32);
        running.child = Some(child);
        run_pipes(id, &mut running, streams).await?
    };
    running.kill_leftover();
    use std::os::unix::process::ExitStatusExt;
    Ok(status
        .code()
        .or_else(|| status.signal().map(|s| 128 + s))
        .unwrap_or(255))
}

fn piped_if(yes: bool) -> Stdio {
    if yes {
        Stdio::piped()
    } else {
        Stdio::null()
    }
}

fn set_cloexec(fd: &OwnedFd) -> std::io::Result<()> {
    use nix::fcntl::{fcntl, FcntlArg, FdFlag};
    fcntl(fd, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC))
        .map(|_| ())
        .map_err(std::io::Error::from)
}

/// Copies `from` to `to` until EOF: false when `to` failed (the client is gone).
async fn pump<R, W>(mut from: R, mut to: W) -> bool
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return true,
            Ok(n) => n,
        };
        if to.write_all(&buf[..n]).await.is_err() {
            return false;
        }
    }
}

/// Waits for the runtime while output flows; a failed write to the client ends the session
/// (dropping `running` kills the process).
async fn wait_with_output(
    id: &str,
    running: &mut Running,
    mut outputs: JoinSet<bool>,
) -> Result<std::process::ExitStatus, ExecError> {
    let Some(child) = running.child.as_mut() else {
        return Err(ExecError::Wait {
            id: id.to_string(),
            source: std::io::Error::other("no child"),
        });
    };
    let status = loop {
        tokio::select! {
            status = child.wait() => break status,
            Some(done) = outputs.join_next() => {
                if matches!(done, Ok(false)) {
                    return Err(ExecError::ClientGone);
                }
            }
        }
    }
    .map_err(|source| ExecError::Wait {
        id: id.to_string(),
        source,
    })?;
    running.child = None;
    let drained = tokio::time::timeout(DRAIN_TIMEOUT, async {
        while let Some(done) = outputs.join_next().await {
            if matches!(done, Ok(false)) {
                return;
            }
        }
    })
    .await;
    if drained.is_err() {
        tracing::debug!(container = %id, "exec output still open after the runtime exited; dropped");
    }
    outputs.abort_all();
    Ok(status)
}

async fn run_pipes(
    id: &str,
    running: &mut Running,
    streams: CommandStreams,
) -> Result<std::process::ExitStatus, ExecError> {
    let Some(child) = running.child.as_mut() else {
        return Err(ExecError::ClientGone);
    };
    let mut outputs = JoinSet::new();
    if let (Some(from), Some(to)) = (child.stdout.take(), streams.stdout) {
        outputs.spawn(pump(from, to));
    }
    if let (Some(from), Some(to)) = (child.stderr.take(), streams.stderr) {
        outputs.spawn(pump(from, to));
    }
    // Client's stdin to the process; its end closes the process's stdin.
    let input = match (streams.stdin, child.stdin.take()) {
        (Some(from), Some(to)) => Some(tokio::spawn(pump(from, to))),
        _ => None,
    };
    let result = wait_with_output(id, running, outputs).await;
    if let Some(i) = input {
        i.abort();
    }
    result
}

async fn run_tty(
    id: &str,
    running: &mut Running,
    master: Pty,
    streams: CommandStreams,
) -> Result<std::process::ExitStatus, ExecError> {
    let master = std::sync::Arc::new(master);
    let mut outputs = JoinSet::new();
    if let Some(mut to) = streams.stdout {
        let m = master.clone();
        outputs.spawn(async move {
            let mut buf = vec![0u8; 32 * 1024];
            loop {
                let n = match m.read(&mut buf).await {
                    Ok(0) | Err(_) => return true,
                    Ok(n) => n,
                };
                if to.write_all(&buf[..n]).await.is_err() {
                    return false;
                }
            }
        });
    }
    let mut helpers = Vec::new();
    if let Some(mut from) = streams.stdin {
        let m = master.clone();
        helpers.push(tokio::spawn(async move {
            let mut buf = vec![0u8; 32 * 1024];
            loop {
                match from.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => {
                        if m.write_all(&buf[..n]).await.is_err() {
                            return;
                        }
                    }
                }
            }
        }));
    }
    if let Some(mut sizes) = streams.resize {
        let m = master.clone();
        helpers.push(tokio::spawn(async move {
            while let Some(size) = sizes.recv().await {
                if let Err(e) = m.resize(size) {
                    tracing::debug!(error = %e, "exec: resize failed");
                }
            }
        }));
    }
    let result = wait_with_output(id, running, outputs).await;
    for h in helpers {
        h.abort();
    }
    result
}

/// Our side of the exec's pty, non-blocking.
struct Pty(AsyncFd<OwnedFd>);

impl Pty {
    fn new(master: OwnedFd) -> std::io::Result<Pty> {
        use nix::fcntl::{fcntl, FcntlArg, OFlag};
        let flags = fcntl(&master, FcntlArg::F_GETFL).map_err(std::io::Error::from)?;
        fcntl(
            &master,
            FcntlArg::F_SETFL(OFlag::from_bits_truncate(flags) | OFlag::O_NONBLOCK),
        )
        .map_err(std::io::Error::from)?;
        // SAFETY: an OwnedFd's fd stays open and the same for as long as the AsyncFd owns it.
        Ok(Pty(unsafe { AsyncFd::register(master) }?))
    }

    /// Reads output; 0 once every slave is closed (the master then reports EIO).
    async fn read(&self, buf: &mut [u8]) -> std::io::Result<usize> {
        loop {
            let mut ready = self.0.readable().await?;
            match ready.try_io(|fd| {
                nix::unistd::read(fd.get_ref().as_fd(), buf).map_err(std::io::Error::from)
            }) {
                Ok(Err(e)) if e.raw_os_error() == Some(libc::EIO) => return Ok(0),
                Ok(result) => return result,
                Err(_would_block) => continue,
            }
        }
    }

    async fn write_all(&self, mut data: &[u8]) -> std::io::Result<()> {
        while !data.is_empty() {
            let mut ready = self.0.writable().await?;
            match ready
                .try_io(|fd| nix::unistd::write(fd.get_ref(), data).map_err(std::io::Error::from))
            {
                Ok(Ok(n)) => data = &data[n..],
                Ok(Err(e)) => return Err(e),
                Err(_would_block) => continue,
            }
        }
        Ok(())
    }

    fn resize(&self, size: TermSize) -> std::io::Result<()> {
        set_size(self.0.get_ref(), size)
    }
}

/// TIOCSWINSZ on the master: the kernel signals SIGWINCH to the terminal's foreground group.
fn set_size(master: &OwnedFd, size: TermSize) -> std::io::Result<()> {
    let ws = libc::winsize {
        ws_row: size.height,
        ws_col: size.width,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads one winsize from a valid pointer.
    let r = unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCSWINSZ, &ws) };
    if r < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn process_json_takes_the_containers_process_with_our_command() {
        let dir = std::env::temp_dir().join(format!("rcri-exec-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("config.json"),
            r#"{"process":{"args":["sleep"],"env":["A=1"],"cwd":"/w","oomScoreAdj":5,"consoleSize":{"height":1,"width":2}}}"#,
        )
        .unwrap();
        let p = process_json(&dir, vec!["sh".into(), "-c".into(), "x".into()], true).unwrap();
        assert_eq!(p["args"], json!(["sh", "-c", "x"]));
        assert_eq!(p["env"], json!(["A=1"]));
        assert_eq!(p["cwd"], "/w");
        assert_eq!(p["terminal"], true);
        assert!(p.get("oomScoreAdj").is_none() && p.get("consoleSize").is_none());
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(matches!(
            process_json(&dir, vec!["x".into()], false),
            Err(ExecError::ReadSpec { .. })
        ));
    }
}
