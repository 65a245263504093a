//! Attach: a remotecommand session on the stdio of a running container, through the attach
//! socket its monitor serves at `<bundle>/attach` (frames in [`crate::monitor::frame`]). The
//! socket's path follows from the bundle alone, so attach works the same after rcri restarted.
//!
//! The session's stdin goes to the container's stdin (the monitor ignores it when the
//! container was created without stdin); its output is the container's from the moment the
//! session connected. It ends
//! - when the container exits: the monitor writes the exit file, then closes the socket, and
//!   the outcome is the recorded exit code;
//! - when the client goes away (writing its output fails): Exited(0), the container runs on;
//! - when the client closes stdin, for a container with stdin, without stdin_once and without
//!   a terminal (CRI-O's rule): Exited(0). With stdin_once the container's stdin is closed by
//!   the monitor and the session waits for the container to finish.

use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::socket::UnixAddr;
use nix::sys::socket::{connect, recv, send, socket, AddressFamily, MsgFlags, SockFlag, SockType};
use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

use crate::monitor::{self, frame::Frame, frame::MAX_FRAME, frame::MAX_PAYLOAD};
use crate::store::ContainerRecord;
use crate::streaming::{CommandHandler, CommandOutcome, CommandStreams, StreamOptions, TermSize};

/// How long a connect retries while the monitor's accept backlog is full.
const CONNECT_PATIENCE: Duration = Duration::from_secs(2);
/// After the monitor closed the session, how long its exit file may take to appear.
const EXIT_FILE_WAIT: Duration = Duration::from_millis(500);

#[derive(Debug, thiserror::Error)]
pub enum AttachError {
    #[error("container {0} is not running")]
    NotRunning(String),
    #[error("failed to connect to the attach socket {path} of container {id}")]
    Connect {
        id: String,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// What attach needs to know of a container.
#[derive(Debug, Clone)]
pub struct AttachTarget {
    pub container_id: String,
    pub bundle: PathBuf,
    pub tty: bool,
    pub stdin: bool,
    pub stdin_once: bool,
}

impl AttachTarget {
    pub fn of(record: &ContainerRecord) -> AttachTarget {
        AttachTarget {
            container_id: record.id.clone(),
            bundle: record.bundle.clone(),
            tty: record.config.tty,
            stdin: record.config.stdin,
            stdin_once: record.config.stdin_once,
        }
    }

    fn exit_file(&self) -> PathBuf {
        monitor::default_exit_file(&self.bundle)
    }
}

/// The handler for an attach session, or NotRunning when the container's monitor has recorded
/// an exit or serves no attach socket (a container never started, or started by an rcri
/// without attach). The socket is connected when the session starts.
pub fn attach(target: AttachTarget, opts: StreamOptions) -> Result<CommandHandler, AttachError> {
    if monitor::read_exit_file(&target.exit_file()).is_some()
        || !monitor::attach_socket(&target.bundle).exists()
    {
        return Err(AttachError::NotRunning(target.container_id));
    }
    Ok(Box::new(move |streams| {
        Box::pin(async move {
            match Session::connect(&target).await {
                Ok(session) => session.run(&target, opts, streams).await,
                Err(e) => CommandOutcome::Failed(crate::error_chain(&e)),
            }
        })
    }))
}

/// A connected SOCK_SEQPACKET socket on tokio's reactor (tokio has no seqpacket type).
struct Session {
    fd: AsyncFd<OwnedFd>,
}

impl Session {
    async fn connect(target: &AttachTarget) -> Result<Session, AttachError> {
        let path = monitor::attach_socket(&target.bundle);
        let fail = |source: std::io::Error| AttachError::Connect {
            id: target.container_id.clone(),
            path: path.clone(),
            source,
        };
        // The bundle's path may be longer than a socket address holds: go through an O_PATH fd.
        let dir = nix::fcntl::open(
            &target.bundle,
            nix::fcntl::OFlag::O_PATH
                | nix::fcntl::OFlag::O_DIRECTORY
                | nix::fcntl::OFlag::O_CLOEXEC,
            nix::sys::stat::Mode::empty(),
        )
        .map_err(|e| fail(e.into()))?;
        let addr = UnixAddr::new(format!("/proc/self/fd/{}/attach", dir.as_raw_fd()).as_str())
            .map_err(|e| fail(e.into()))?;
        let fd = socket(
            AddressFamily::Unix,
            SockType::SeqPacket,
            SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
            None,
        )
        .map_err(|e| fail(e.into()))?;
        let deadline = tokio::time::Instant::now() + CONNECT_PATIENCE;
        loop {
            match connect(fd.as_raw_fd(), &addr) {
                Ok(()) => break,
                // A unix connect never is in progress; EAGAIN means the backlog is full.
                Err(Errno::EAGAIN) if tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                // Refused: the monitor is gone, the socket file is a leftover.
                Err(Errno::ECONNREFUSED) | Err(Errno::ENOENT) => {
                    return Err(AttachError::NotRunning(target.container_id.clone()))
                }
                Err(e) => return Err(fail(e.into())),
            }
        }
        drop(dir);
        // SAFETY: an OwnedFd's fd stays open and the same for as long as the AsyncFd owns it.
        let fd = unsafe { AsyncFd::register(fd) }.map_err(|e| fail(e.into()))?;
        Ok(Session { fd })
    }

    async fn recv(&self, buf: &mut [u8]) -> std::io::Result<usize> {
        loop {
            let mut guard = self.fd.readable().await?;
            let got = guard.try_io(|fd| {
                recv(fd.get_ref().as_raw_fd(), buf, MsgFlags::MSG_DONTWAIT)
                    .map_err(std::io::Error::from)
            });
            if let Ok(result) = got {
                return result;
            }
        }
    }

    async fn send(&self, frame: &Frame<'_>, buf: &mut Vec<u8>) -> std::io::Result<()> {
        frame
            .encode(buf)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
        loop {
            let mut guard = self.fd.writable().await?;
            let sent = guard.try_io(|fd| {
                send(
                    fd.get_ref().as_raw_fd(),
                    buf,
                    MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL,
                )
                .map_err(std::io::Error::from)
            });
            if let Ok(result) = sent {
                return result.map(|_| ());
            }
        }
    }

    async fn run(
        self,
        target: &AttachTarget,
        opts: StreamOptions,
        streams: CommandStreams,
    ) -> CommandOutcome {
        let CommandStreams {
            mut stdin,
            mut stdout,
            mut stderr,
            mut resize,
        } = streams;
        if !opts.stdin {
            stdin = None;
        }
        let mut out_buf = vec![0u8; MAX_FRAME];
        let mut in_buf = vec![0u8; MAX_PAYLOAD];
        let mut frame = Vec::with_capacity(MAX_FRAME);
        if stdin.is_some() {
            // Announces the session's stdin, which matters for stdin_once even if the client
            // never types anything.
            if self.send(&Frame::Stdin(&[]), &mut frame).await.is_err() {
                return ended(target).await;
            }
        }
        let detach_on_stdin_eof = target.stdin && !target.stdin_once && !target.tty;
        loop {
            tokio::select! {
                got = self.recv(&mut out_buf) => {
                    let n = match got {
                        Ok(0) | Err(_) => return ended(target).await,
                        Ok(n) => n,
                    };
                    let (sink, data) = match Frame::decode(&out_buf[..n]) {
                        Ok(Frame::Stdout(data)) => (stdout.as_mut(), data),
                        Ok(Frame::Stderr(data)) => (stderr.as_mut(), data),
                        Ok(_) => continue,
                        Err(e) => {
                            return CommandOutcome::Failed(format!(
                                "the monitor of container {} sent a bad frame: {e}",
                                target.container_id
                            ))
                        }
                    };
                    if let Some(sink) = sink {
                        if sink.write_all(data).await.is_err() {
                            // The client is gone; the container runs on.
                            return CommandOutcome::Exited(0);
                        }
                    }
                }
                read = read_some(&mut stdin, &mut in_buf), if stdin.is_some() => {
                    let sent = match read {
                        Ok(n) if n > 0 => self.send(&Frame::Stdin(&in_buf[..n]), &mut frame).await,
                        _ => {
                            stdin = None;
                            let sent = self.send(&Frame::StdinClose, &mut frame).await;
                            if detach_on_stdin_eof {
                                return CommandOutcome::Exited(0);
                            }
                            sent
                        }
                    };
                    if sent.is_err() {
                        return ended(target).await;
                    }
                }
                size = next_size(&mut resize), if resize.is_some() => {
                    let Some(TermSize { width, height }) = size else {
                        resize = None;
                        continue;
                    };
                    if self.send(&Frame::Resize { width, height }, &mut frame).await.is_err() {
                        return ended(target).await;
                    }
                }
            }
        }
    }
}

async fn read_some(stdin: &mut Option<DuplexStream>, buf: &mut [u8]) -> std::io::Result<usize> {
    match stdin {
        Some(s) => s.read(buf).await,
        None => Ok(0),
    }
}

async fn next_size(resize: &mut Option<tokio::sync::mpsc::Receiver<TermSize>>) -> Option<TermSize> {
    match resize {
        Some(r) => r.recv().await,
        None => None,
    }
}

/// The monitor closed the session: the container exited (the exit file says how), or the
/// monitor dropped this session or died.
async fn ended(target: &AttachTarget) -> CommandOutcome {
    let deadline = tokio::time::Instant::now() + EXIT_FILE_WAIT;
    loop {
        if let Some(exit) = monitor::read_exit_file(&target.exit_file()) {
            return CommandOutcome::Exited(exit.exit_code);
        }
        if tokio::time::Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let why = if monitor_alive(&target.bundle) {
        "closed the attach session (the client fell a socket buffer behind the output, or too many sessions)"
    } else {
        "exited without recording the container's exit"
    };
    CommandOutcome::Failed(format!(
        "the monitor of container {} {why}",
        target.container_id
    ))
}

fn monitor_alive(bundle: &Path) -> bool {
    std::fs::read_to_string(monitor::monitor_pid_file(bundle))
        .ok()
        .and_then(|s| s.trim().parse::<i32>().ok())
        .is_some_and(|pid| {
            pid > 0 && nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_ok()
        })
}
