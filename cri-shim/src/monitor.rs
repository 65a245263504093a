//! The per-container monitor, `rcri monitor`: a small process, in its own session so that it
//! outlives a restart of rcri, that
//! - runs the OCI runtime's `create` with pipes as the container's stdout/stderr (the container
//!   init inherits them), and reports the init's pid or the runtime's error on a sync pipe;
//! - is a child subreaper, so the container init (whose parent, the runtime, exits right after
//!   `create`) is reparented to it and it can collect the exit status;
//! - copies both pipes to the CRI log file, one record per line:
//!   `<RFC3339Nano> <stdout|stderr> <P|F> <msg>`, P for a piece of a line longer than 16 KiB;
//! - with a terminal (`--tty`), passes `--console-socket` to `create`, receives the pty master
//!   and logs what it reads from it as stdout; with `--stdin`, holds the container's stdin (a
//!   pipe, or the pty master);
//! - serves attach sessions on `<bundle>/attach` ([`attach`], wire format in [`frame`]): the
//!   output as it comes, input to the container's stdin, terminal resizes;
//! - reopens the log file on SIGUSR1 (ReopenContainerLog, after kubelet rotated it);
//! - when the init exits, writes exit code, time and whether the cgroup saw an OOM kill to the
//!   exit file (atomically), then exits.
//!
//! The monitor's half runs without tokio: one thread, a poll loop over the pipes, the attach
//! sockets and a signalfd, one fixed 16 KiB buffer, so its RSS stays small. The other half, [`spawn`], is what
//! rcri calls.

use std::ffi::OsString;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};

use crate::runtime_client::{last_message, RuntimeClient};

mod attach;
mod console;
pub mod frame;

/// A line longer than this is logged in pieces tagged P (what kubelet's parser and containerd use).
pub const MAX_LOG_LINE: usize = 16 * 1024;
/// How long, after `create` returned, the runtime may take to hand over the terminal.
const CONSOLE_WAIT: Duration = Duration::from_secs(10);
/// After the init exited, how long to keep draining pipes that another process (e.g. a child in
/// a shared PID namespace) still holds open.
const DRAIN_AFTER_EXIT: Duration = Duration::from_secs(2);
/// How long rcri waits for the monitor to report the outcome of `create`.
const CREATE_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
pub enum MonitorError {
    #[error("failed to {action}")]
    Io {
        action: String,
        #[source]
        source: std::io::Error,
    },
    #[error("failed to {action}")]
    Sys {
        action: String,
        #[source]
        source: nix::Error,
    },
    #[error("the OCI runtime failed to create the container: {0}")]
    Create(String),
    /// What the monitor reported on its sync pipe (already a full message).
    #[error("{0}")]
    Reported(String),
    #[error("the monitor did not report within {0:?}")]
    Timeout(Duration),
    #[error("the monitor exited without reporting (see {0})")]
    NoReport(PathBuf),
}

fn io_err(action: impl Into<String>) -> impl FnOnce(std::io::Error) -> MonitorError {
    let action = action.into();
    move |source| MonitorError::Io { action, source }
}

fn sys_err(action: impl Into<String>) -> impl FnOnce(nix::Error) -> MonitorError {
    let action = action.into();
    move |source| MonitorError::Sys { action, source }
}

/// What the monitor needs; also its command line (see `rcri monitor --help`).
#[derive(Debug, Clone)]
pub struct MonitorArgs {
    pub id: String,
    pub bundle: PathBuf,
    /// The CRI log file; None discards the output (the sandbox's infra process).
    pub log_path: Option<PathBuf>,
    pub exit_file: PathBuf,
    pub runtime: PathBuf,
    pub runtime_root: PathBuf,
    /// The inherited fd on which the monitor reports `create`'s outcome.
    pub sync_fd: RawFd,
    pub stdio: StdioMode,
}

/// The CRI ContainerConfig's `tty`, `stdin` and `stdin_once`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StdioMode {
    /// A pty (process.terminal): its output is logged as stdout.
    pub tty: bool,
    /// The container's stdin is held by the monitor for attach sessions (else /dev/null).
    pub stdin: bool,
    /// The container's stdin is closed when the first attach session with stdin ends.
    pub stdin_once: bool,
}

impl MonitorArgs {
    pub fn to_argv(&self) -> Vec<OsString> {
        let mut argv: Vec<OsString> = vec![
            "monitor".into(),
            "--id".into(),
            self.id.clone().into(),
            "--bundle".into(),
            self.bundle.clone().into(),
            "--exit-file".into(),
            self.exit_file.clone().into(),
            "--runtime".into(),
            self.runtime.clone().into(),
            "--runtime-root".into(),
            self.runtime_root.clone().into(),
            "--sync-fd".into(),
            self.sync_fd.to_string().into(),
        ];
        if let Some(log) = &self.log_path {
            argv.push("--log-path".into());
            argv.push(log.clone().into());
        }
        for (on, flag) in [
            (self.stdio.tty, "--tty"),
            (self.stdio.stdin, "--stdin"),
            (self.stdio.stdin_once, "--stdin-once"),
        ] {
            if on {
                argv.push(flag.into());
            }
        }
        argv
    }
}

/// Files the monitor keeps in the bundle dir.
pub fn pid_file(bundle: &Path) -> PathBuf {
    bundle.join("init.pid")
}
pub fn monitor_pid_file(bundle: &Path) -> PathBuf {
    bundle.join("monitor.pid")
}
pub fn runtime_log(bundle: &Path) -> PathBuf {
    bundle.join("runtime.log")
}
pub fn default_exit_file(bundle: &Path) -> PathBuf {
    bundle.join("exit.json")
}
/// The attach socket (SOCK_SEQPACKET, frames in [`frame`]) while the monitor runs.
pub fn attach_socket(bundle: &Path) -> PathBuf {
    bundle.join("attach")
}

/// How a container ended, as the monitor recorded it.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct ExitRecord {
    /// The exit code, or 128 + the signal number when a signal killed the init.
    pub exit_code: i32,
    /// Unix time in nanoseconds.
    pub finished_at: i64,
    pub oom_killed: bool,
}

/// The exit file if the monitor wrote it (a missing or unreadable file means "not exited yet").
pub fn read_exit_file(path: &Path) -> Option<ExitRecord> {
    let bytes = std::fs::read(path).ok()?;
    serde_json::from_slice(&bytes).ok()
}

#[derive(Debug, Serialize, Deserialize)]
struct SyncMessage {
    #[serde(default)]
    pid: i32,
    #[serde(default)]
    error: Option<String>,
}

/// What [`spawn`] returns once the container exists in the runtime (state `created`).
#[derive(Debug, Clone, Copy)]
pub struct Spawned {
    pub monitor_pid: i32,
    pub container_pid: i32,
}

/// Starts `rcri monitor` for a container whose bundle is ready and waits until the runtime's
/// `create` finished. The monitor runs in its own session (not in rcri's process group, so a
/// signal to rcri's group or rcri's death does not reach it); rcri stays its parent while it
/// lives, and a task reaps it so it never lingers as a zombie.
pub async fn spawn(rcri_exe: &Path, args: &MonitorArgs) -> Result<Spawned, MonitorError> {
    let (read_end, write_end) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(sys_err("create a pipe"))?;
    let monitor_log = args.bundle.join("monitor.log");
    let stderr = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&monitor_log)
        .map_err(io_err(format!("open {}", monitor_log.display())))?;
    let mut argv = args.clone();
    argv.sync_fd = 3;
    // The stand-alone monitor binary when it is installed beside rcri: it is much smaller.
    let small = rcri_exe.with_file_name("rcri-monitor");
    let exe = if small.is_file() {
        small.as_path()
    } else {
        rcri_exe
    };
    let mut cmd = tokio::process::Command::new(exe);
    cmd.args(argv.to_argv())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(stderr));
    let raw_write = write_end.as_raw_fd();
    // SAFETY: only async-signal-safe calls (dup2, fcntl, setsid) between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            if raw_write != 3 && libc::dup2(raw_write, 3) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            // dup2 onto itself (raw_write == 3) keeps O_CLOEXEC, so clear it explicitly.
            if libc::fcntl(3, libc::F_SETFD, 0) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            if libc::setsid() < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd
        .spawn()
        .map_err(io_err(format!("run {} monitor", rcri_exe.display())))?;
    drop(write_end);
    let monitor_pid = child.id().map(|p| p as i32).unwrap_or(0);
    tokio::spawn(async move {
        // Reaps the monitor whenever it exits; its result lives in the exit file.
        let _ = child.wait().await;
    });

    let report = tokio::task::spawn_blocking(move || {
        let mut text = String::new();
        File::from(read_end).read_to_string(&mut text).map(|_| text)
    });
    let text = match tokio::time::timeout(CREATE_TIMEOUT, report).await {
        Err(_) => {
            // The monitor (or the runtime under it) is stuck: kill it so nothing lingers.
            if monitor_pid > 0 {
                let _ = nix::sys::signal::kill(Pid::from_raw(monitor_pid), Signal::SIGKILL);
            }
            return Err(MonitorError::Timeout(CREATE_TIMEOUT));
        }
        Ok(Err(join)) => {
            return Err(MonitorError::Io {
                action: "read the monitor's report".into(),
                source: std::io::Error::other(join.to_string()),
            })
        }
        Ok(Ok(read)) => read.map_err(io_err("read the monitor's report"))?,
    };
    let message: SyncMessage =
        serde_json::from_str(text.trim()).map_err(|_| MonitorError::NoReport(monitor_log))?;
    if let Some(error) = message.error {
        return Err(MonitorError::Reported(error));
    }
    Ok(Spawned {
        monitor_pid,
        container_pid: message.pid,
    })
}

// ---------------------------------------------------------------------------------------------
// The monitor process
// ---------------------------------------------------------------------------------------------

/// The monitor's main; returns the process exit code. Never panics on I/O: a monitor that dies
/// loses the container's exit status.
pub fn run(args: &MonitorArgs) -> i32 {
    // SAFETY: rcri put the sync pipe at this fd for us (see `spawn`); we are its only owner.
    let sync = if unsafe { libc::fcntl(args.sync_fd, libc::F_GETFD) } >= 0 {
        Some(unsafe { File::from_raw_fd(args.sync_fd) })
    } else {
        None
    };
    let mut sync = sync;
    match run_inner(args, &mut sync) {
        Ok(()) => 0,
        Err(e) => {
            let message = crate::error_chain(&e);
            eprintln!("rcri monitor {}: {message}", args.id);
            if let Some(mut s) = sync.take() {
                let report = SyncMessage {
                    pid: 0,
                    error: Some(message),
                };
                let _ = s.write_all(
                    serde_json::to_string(&report)
                        .unwrap_or_default()
                        .as_bytes(),
                );
            }
            1
        }
    }
}

fn run_inner(args: &MonitorArgs, sync: &mut Option<File>) -> Result<(), MonitorError> {
    // The container init's parent is the runtime's process, which exits after `create`; as a
    // subreaper we inherit the init (and anything else orphaned below us) and can wait for it.
    nix::sys::prctl::set_child_subreaper(true).map_err(sys_err("become a child subreaper"))?;
    let _ = std::fs::write(
        monitor_pid_file(&args.bundle),
        std::process::id().to_string(),
    );

    // SIGCHLD and SIGUSR1 arrive through a signalfd polled with the pipes; blocking them first
    // means none is lost between the runtime's exit and the first poll. Children get an empty
    // mask back (std's spawn resets it), so the container does not inherit the block.
    let mut mask = SigSet::empty();
    mask.add(Signal::SIGCHLD);
    mask.add(Signal::SIGUSR1);
    mask.thread_block().map_err(sys_err("block signals"))?;
    let signals = SignalFd::with_flags(&mask, SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK)
        .map_err(sys_err("create a signalfd"))?;

    let (out_r, out_w) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(sys_err("create a pipe"))?;
    let (err_r, err_w) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(sys_err("create a pipe"))?;
    // Listening before the container exists: a session can connect as soon as StartContainer
    // returns. The socket goes away with the monitor (or with a failed create).
    let mut attach = attach::Attach::listen(&args.bundle)?;
    let console = match args.stdio.tty {
        true => Some(console::ConsoleSocket::bind(&args.bundle)?),
        false => None,
    };
    // With a terminal the init's stdin is the pty; without stdin it is /dev/null.
    let (stdin_r, stdin_w) = if args.stdio.stdin && !args.stdio.tty {
        let (r, w) =
            nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(sys_err("create a pipe"))?;
        (Some(r), Some(w))
    } else {
        (None, None)
    };

    let client = RuntimeClient::new(args.runtime.clone(), args.runtime_root.clone());
    let pid_path = pid_file(&args.bundle);
    let log = runtime_log(&args.bundle);
    let _ = std::fs::remove_file(&pid_path);
    let mut cmd = std::process::Command::new(&args.runtime);
    cmd.args(client.create_args(
        &args.id,
        &args.bundle,
        &pid_path,
        &log,
        console.as_ref().map(|c| c.runtime_arg()),
    ))
    .stdin(stdin_r.map(Stdio::from).unwrap_or_else(Stdio::null))
    .stdout(Stdio::from(out_w))
    .stderr(Stdio::from(err_w));
    let status = cmd
        .status()
        .map_err(io_err(format!("run {}", args.runtime.display())))?;
    // The Command holds our copies of the pipes' ends: drop it, or EOF never comes.
    drop(cmd);
    if !status.success() {
        let runtime_said = std::fs::read(&log).unwrap_or_default();
        return Err(MonitorError::Create(last_message(&runtime_said)));
    }
    let pid: i32 = std::fs::read_to_string(&pid_path)
        .map_err(io_err(format!("read {}", pid_path.display())))?
        .trim()
        .parse()
        .map_err(|_| MonitorError::Create(format!("bad pid in {}", pid_path.display())))?;
    let mut streams = vec![
        Stream::new(out_r, "stdout", frame::TAG_STDOUT),
        Stream::new(err_r, "stderr", frame::TAG_STDERR),
    ];
    if let Some(console) = console {
        let master = console.receive_master(CONSOLE_WAIT)?;
        let copy = || {
            master
                .try_clone()
                .map_err(io_err("duplicate the pty master"))
        };
        attach.set_terminal(copy()?);
        if args.stdio.stdin {
            attach.set_stdin(copy()?, true, args.stdio.stdin_once);
        }
        streams.push(Stream::new(master, "stdout", frame::TAG_STDOUT));
    }
    if let Some(w) = stdin_w {
        attach.set_stdin(w, false, args.stdio.stdin_once);
    }
    let oom = OomWatch::for_pid(pid);

    if let Some(mut s) = sync.take() {
        let report = SyncMessage { pid, error: None };
        let text = serde_json::to_string(&report).unwrap_or_default();
        // rcri may have given up waiting; the container still needs monitoring.
        let _ = s.write_all(text.as_bytes());
    }

    let mut logger = Logger::open(args.log_path.clone());
    let mut exited: Option<(i32, Instant)> = None;
    // One buffer for everything: an output frame is read in place after its tag byte, and an
    // input frame is received into it.
    let mut chunk = vec![0u8; frame::MAX_FRAME];
    let mut fds: Vec<libc::pollfd> = Vec::with_capacity(8);
    let mut open = [0usize; 3];
    loop {
        let mut n_open = 0;
        for (i, s) in streams.iter().enumerate() {
            if s.fd.is_some() {
                open[n_open] = i;
                n_open += 1;
            }
        }
        let open = &open[..n_open];
        if let Some((_, at)) = exited {
            if open.is_empty() || at.elapsed() >= DRAIN_AFTER_EXIT {
                break;
            }
        }
        fds.clear();
        fds.extend(
            open.iter()
                .filter_map(|&i| streams[i].fd.as_ref())
                .map(|f| libc::pollfd {
                    fd: f.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                }),
        );
        fds.push(libc::pollfd {
            fd: signals.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        });
        let slots = attach.poll_fds(&mut fds);
        let timeout_ms = match exited {
            Some((_, at)) => DRAIN_AFTER_EXIT
                .saturating_sub(at.elapsed())
                .as_millis()
                .max(1) as libc::c_int,
            None => -1,
        };
        // SAFETY: fds is a valid, exclusively borrowed array of pollfd for the call's duration.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout_ms) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(MonitorError::Io {
                action: "poll".into(),
                source: e,
            });
        }
        for (slot, &i) in open.iter().enumerate() {
            if fds[slot].revents & (libc::POLLIN | libc::POLLHUP | libc::POLLERR) != 0 {
                if let Some(n) = streams[i].pump(&mut chunk[1..], &mut logger) {
                    chunk[0] = streams[i].tag;
                    attach.broadcast(&chunk[..=n]);
                }
            }
        }
        attach.handle(&fds, slots, &mut chunk);
        if fds[open.len()].revents & libc::POLLIN != 0 {
            while let Ok(Some(info)) = signals.read_signal() {
                if info.ssi_signo == Signal::SIGUSR1 as u32 {
                    logger.reopen();
                }
            }
            // SIGCHLDs coalesce, so reap everything that is ready, not one per signal.
            loop {
                match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                    Ok(WaitStatus::Exited(p, code)) if p.as_raw() == pid => {
                        exited = Some((code, Instant::now()));
                    }
                    Ok(WaitStatus::Signaled(p, sig, _)) if p.as_raw() == pid => {
                        exited = Some((128 + sig as i32, Instant::now()));
                    }
                    Ok(WaitStatus::StillAlive) | Err(_) => break,
                    Ok(_) => {}
                }
            }
        }
    }
    for stream in &mut streams {
        stream.flush(&mut logger);
    }
    let exit_code = exited.map(|(code, _)| code).unwrap_or(255);
    let record = ExitRecord {
        exit_code,
        finished_at: now_nanos(),
        oom_killed: oom.killed(),
    };
    let bytes = serde_json::to_vec(&record).unwrap_or_default();
    crate::store::write_atomic(&args.exit_file, &bytes).map_err(|e| MonitorError::Io {
        action: format!("write {}", args.exit_file.display()),
        source: std::io::Error::other(crate::error_chain(&e)),
    })?;
    // Only now do the sessions see end-of-stream: the exit file they then read is there.
    drop(attach);
    Ok(())
}

/// One of the container's outputs (a pipe, or the pty master) and its unfinished line.
pub struct Stream {
    fd: Option<File>,
    name: &'static str,
    /// The attach frame tag its output is sent with.
    tag: u8,
    pending: Vec<u8>,
}

impl Stream {
    pub fn new(fd: OwnedFd, name: &'static str, tag: u8) -> Stream {
        Stream {
            fd: Some(File::from(fd)),
            name,
            tag,
            pending: Vec::new(),
        }
    }

    /// Reads once into `chunk` and logs the complete lines; how many bytes came, if any.
    pub fn pump(&mut self, chunk: &mut [u8], logger: &mut Logger) -> Option<usize> {
        let file = self.fd.as_mut()?;
        match file.read(chunk) {
            Ok(0) => {
                self.fd = None;
                self.flush(logger);
                None
            }
            Ok(n) => {
                self.pending.extend_from_slice(&chunk[..n]);
                self.emit_lines(logger);
                Some(n)
            }
            // The pty master is non-blocking (it is also the stdin that attach writes).
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::Interrupted | std::io::ErrorKind::WouldBlock
                ) =>
            {
                None
            }
            // EIO on a pty master: the container's last holder of the terminal closed it.
            Err(_) => {
                self.fd = None;
                self.flush(logger);
                None
            }
        }
    }

    fn emit_lines(&mut self, logger: &mut Logger) {
        let mut start = 0;
        while let Some(pos) = self.pending[start..].iter().position(|&b| b == b'\n') {
            let end = start + pos;
            // A full line longer than the limit is cut into P pieces and an F tail.
            let mut piece_start = start;
            while end - piece_start > MAX_LOG_LINE {
                logger.write(
                    self.name,
                    'P',
                    &self.pending[piece_start..piece_start + MAX_LOG_LINE],
                );
                piece_start += MAX_LOG_LINE;
            }
            logger.write(self.name, 'F', &self.pending[piece_start..end]);
            start = end + 1;
        }
        while self.pending.len() - start >= MAX_LOG_LINE {
            logger.write(self.name, 'P', &self.pending[start..start + MAX_LOG_LINE]);
            start += MAX_LOG_LINE;
        }
        self.pending.drain(..start);
    }

    /// At EOF an unterminated last line is still a whole line (as containerd logs it).
    fn flush(&mut self, logger: &mut Logger) {
        if !self.pending.is_empty() {
            logger.write(self.name, 'F', &self.pending);
            self.pending.clear();
        }
    }
}

pub struct Logger {
    path: Option<PathBuf>,
    file: Option<File>,
    line: Vec<u8>,
}

impl Logger {
    pub fn open(path: Option<PathBuf>) -> Logger {
        let mut logger = Logger {
            path,
            file: None,
            line: Vec::with_capacity(MAX_LOG_LINE + 64),
        };
        logger.reopen();
        logger
    }

    fn reopen(&mut self) {
        let Some(path) = &self.path else { return };
        if let Some(parent) = path.parent() {
            let _ = std::fs::create_dir_all(parent);
        }
        match OpenOptions::new().create(true).append(true).open(path) {
            Ok(f) => self.file = Some(f),
            Err(e) => eprintln!("failed to open log {}: {e}", path.display()),
        }
    }

    /// One record, written with one write(2) on an O_APPEND file so that readers never see a
    /// torn line.
    fn write(&mut self, stream: &str, tag: char, msg: &[u8]) {
        let Some(file) = self.file.as_mut() else {
            return;
        };
        self.line.clear();
        self.line
            .extend_from_slice(rfc3339_nano(SystemTime::now()).as_bytes());
        self.line.push(b' ');
        self.line.extend_from_slice(stream.as_bytes());
        self.line.push(b' ');
        self.line.push(tag as u8);
        self.line.push(b' ');
        self.line.extend_from_slice(msg);
        self.line.push(b'\n');
        if let Err(e) = file.write_all(&self.line) {
            eprintln!("failed to write the container log: {e}");
        }
    }
}

/// Whether the kernel OOM-killed something in the container's memory cgroup. Found from the
/// init's /proc/<pid>/cgroup while it runs, read after it exited (the cgroup outlives the init
/// until the runtime's delete).
struct OomWatch {
    /// cgroup v1 memory.oom_control (`oom_kill N`) or v2 memory.events (`oom_kill N`).
    file: Option<PathBuf>,
    before: u64,
}

impl OomWatch {
    fn for_pid(pid: i32) -> OomWatch {
        let file = std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
            .ok()
            .and_then(|text| oom_file(&text));
        let before = file.as_deref().map(read_oom_kills).unwrap_or(0);
        OomWatch { file, before }
    }

    fn killed(&self) -> bool {
        self.file
            .as_deref()
            .is_some_and(|f| read_oom_kills(f) > self.before)
    }
}

fn oom_file(proc_cgroup: &str) -> Option<PathBuf> {
    let mut v2 = None;
    for line in proc_cgroup.lines() {
        let mut parts = line.splitn(3, ':');
        let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
        let rel = path.trim_start_matches('/');
        if controllers.split(',').any(|c| c == "memory") {
            return Some(
                Path::new("/sys/fs/cgroup/memory")
                    .join(rel)
                    .join("memory.oom_control"),
            );
        }
        if controllers.is_empty() {
            v2 = Some(Path::new("/sys/fs/cgroup").join(rel).join("memory.events"));
        }
    }
    v2.filter(|p| p.exists())
}

fn read_oom_kills(file: &Path) -> u64 {
    std::fs::read_to_string(file)
        .ok()
        .and_then(|text| {
            text.lines().find_map(|l| {
                l.strip_prefix("oom_kill ")
                    .and_then(|n| n.trim().parse().ok())
            })
        })
        .unwrap_or(0)
}

pub fn now_nanos() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

/// `2016-10-06T00:17:09.669794202Z`: UTC, always nine fractional digits (kubelet parses it with
/// Go's RFC3339Nano, which accepts any number).
pub fn rfc3339_nano(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs() as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (y, m, day) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{day:02}T{:02}:{:02}:{:02}.{:09}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        d.subsec_nanos()
    )
}

/// Days since 1970-01-01 → (year, month, day), Howard Hinnant's algorithm.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_rfc3339_nano_utc() {
        let t = UNIX_EPOCH + Duration::new(1_475_713_029, 669_794_202);
        assert_eq!(rfc3339_nano(t), "2016-10-06T00:17:09.669794202Z");
        assert_eq!(rfc3339_nano(UNIX_EPOCH), "1970-01-01T00:00:00.000000000Z");
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400); // 2000-02-29
        assert_eq!(&rfc3339_nano(leap)[..10], "2000-02-29");
    }

    #[test]
    fn oom_file_per_cgroup_version() {
        let v1 = "4:memory:/a/b\n0::/\n";
        assert_eq!(
            oom_file(v1),
            Some(PathBuf::from(
                "/sys/fs/cgroup/memory/a/b/memory.oom_control"
            ))
        );
    }

    fn logged(input: &[&[u8]]) -> String {
        let dir =
            std::env::temp_dir().join(format!("rcri-mon-{}-{}", std::process::id(), now_nanos()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("log");
        let mut logger = Logger::open(Some(path.clone()));
        let (r, _w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap();
        let mut stream = Stream::new(r, "stdout", frame::TAG_STDOUT);
        for piece in input {
            stream.pending.extend_from_slice(piece);
            stream.emit_lines(&mut logger);
        }
        stream.flush(&mut logger);
        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        text.lines()
            .map(|l| l.split_once(' ').unwrap().1.to_string() + "\n")
            .collect()
    }

    #[test]
    fn lines_are_tagged_full_or_partial() {
        assert_eq!(
            logged(&[b"a\nb", b"c\n", b"tail"]),
            "stdout F a\nstdout F bc\nstdout F tail\n"
        );
        let long = vec![b'x'; MAX_LOG_LINE + 3];
        let mut input = long.clone();
        input.push(b'\n');
        let text = logged(&[&input]);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2);
        assert!(lines[0].starts_with("stdout P xxx"));
        assert_eq!(lines[0].len(), "stdout P ".len() + MAX_LOG_LINE);
        assert_eq!(lines[1], "stdout F xxx");
    }
}
