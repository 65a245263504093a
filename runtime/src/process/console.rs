//! `process.terminal`: the init opens a pty inside the container and sends the master to the
//! caller's `--console-socket` over SCM_RIGHTS, as runc does.
use nix::mount::{mount, MsFlags};
use nix::pty::{grantpt, posix_openpt, ptsname_r, unlockpt};
use nix::sys::socket::{recvmsg, sendmsg, ControlMessage, ControlMessageOwned, MsgFlags};
use nix::unistd::dup2_stdin;
use std::io::IoSlice;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum ConsoleError {
    #[error("failed to connect to console socket {path}")]
    Connect {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("failed to {0}")]
    Pty(&'static str, #[source] nix::Error),
    #[error("failed to send the pty master to the console socket")]
    Send(#[source] nix::Error),
    #[error("a terminal was asked for (process.terminal) but no --console-socket was given")]
    NoSocket,
    #[error("failed to receive the pty master")]
    Recv(#[source] nix::Error),
    #[error("failed to create /dev/console")]
    CreateConsole(#[source] std::io::Error),
}

/// Connects to the console socket before anything is created, so a bad path leaves nothing.
pub fn connect(path: &Path) -> Result<OwnedFd, ConsoleError> {
    UnixStream::connect(path)
        .map(OwnedFd::from)
        .map_err(|source| ConsoleError::Connect {
            path: path.to_path_buf(),
            source,
        })
}

/// `process.consoleSize` as (rows, columns) for TIOCSWINSZ.
pub fn size(process: &oci_spec::runtime::Process) -> Option<(u16, u16)> {
    let clamp = |v: u64| u16::try_from(v).unwrap_or(u16::MAX);
    process
        .console_size()
        .map(|b| (clamp(b.height()), clamp(b.width())))
}

/// The console socket the init gets for `process.terminal`, and our own end of it when rcrun
/// holds the terminal itself (`proxy`: a foreground run or exec without --console-socket).
pub fn for_terminal(
    terminal: bool,
    socket: Option<&Path>,
    proxy: bool,
) -> Result<(Option<OwnedFd>, Option<OwnedFd>), ConsoleError> {
    match (terminal, socket) {
        (false, _) => Ok((None, None)),
        (true, Some(p)) => Ok((Some(connect(p)?), None)),
        (true, None) if proxy => {
            let (ours, theirs) = pair()?;
            Ok((Some(theirs), Some(ours)))
        }
        (true, None) => Err(ConsoleError::NoSocket),
    }
}

/// A connected pair standing in for a console socket when rcrun holds the terminal itself.
pub fn pair() -> Result<(OwnedFd, OwnedFd), ConsoleError> {
    UnixStream::pair()
        .map(|(a, b)| (OwnedFd::from(a), OwnedFd::from(b)))
        .map_err(|source| ConsoleError::Connect {
            path: PathBuf::from("(socketpair)"),
            source,
        })
}

/// Receives the pty master that the init sent over `sock`.
pub fn recv_master(sock: &OwnedFd) -> Result<OwnedFd, ConsoleError> {
    let mut buf = [0u8; 256];
    let mut iov = [std::io::IoSliceMut::new(&mut buf)];
    let mut space = nix::cmsg_space!([std::os::fd::RawFd; 1]);
    let msg = recvmsg::<()>(
        sock.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        MsgFlags::MSG_CMSG_CLOEXEC,
    )
    .map_err(ConsoleError::Recv)?;
    for c in msg.cmsgs().map_err(ConsoleError::Recv)? {
        if let ControlMessageOwned::ScmRights(fds) = c {
            if let Some(fd) = fds.first() {
                // SAFETY: SCM_RIGHTS just installed this fd in our table; we own it now.
                return Ok(unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(*fd) });
            }
        }
    }
    Err(ConsoleError::Recv(nix::Error::EBADMSG))
}

/// In the init, after the switch of root: makes the pty, sends its master, binds the slave
/// onto /dev/console and makes it the controlling terminal and stdio.
pub fn setup(
    socket: &OwnedFd,
    size: Option<(u16, u16)>,
    bind_console: bool,
) -> Result<(), ConsoleError> {
    let master = posix_openpt(
        nix::fcntl::OFlag::O_RDWR | nix::fcntl::OFlag::O_NOCTTY | nix::fcntl::OFlag::O_CLOEXEC,
    )
    .map_err(|e| ConsoleError::Pty("open /dev/ptmx", e))?;
    grantpt(&master).map_err(|e| ConsoleError::Pty("grantpt", e))?;
    unlockpt(&master).map_err(|e| ConsoleError::Pty("unlockpt", e))?;
    let slave_path = ptsname_r(&master).map_err(|e| ConsoleError::Pty("get the pty name", e))?;
    if let Some((rows, cols)) = size {
        let ws = libc::winsize {
            ws_row: rows,
            ws_col: cols,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: TIOCSWINSZ reads one winsize from the pointer, which outlives the call.
        let r = unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCSWINSZ, &ws) };
        nix::errno::Errno::result(r).map_err(|e| ConsoleError::Pty("set the console size", e))?;
    }
    let slave = nix::fcntl::open(
        Path::new(&slave_path),
        nix::fcntl::OFlag::O_RDWR | nix::fcntl::OFlag::O_NOCTTY | nix::fcntl::OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .map_err(|e| ConsoleError::Pty("open the pty slave", e))?;
    if bind_console {
        bind_dev_console(&slave_path)?;
    }
    let fds = [master.as_raw_fd()];
    let cmsg = [ControlMessage::ScmRights(&fds)];
    let name = b"/dev/ptmx";
    sendmsg::<()>(
        socket.as_raw_fd(),
        &[IoSlice::new(name)],
        &cmsg,
        MsgFlags::MSG_NOSIGNAL,
        None,
    )
    .map_err(ConsoleError::Send)?;
    drop(master);
    // SAFETY: TIOCSCTTY takes an int argument; we are a session leader without a terminal.
    let r = unsafe { libc::ioctl(slave.as_raw_fd(), libc::TIOCSCTTY, 0) };
    nix::errno::Errno::result(r).map_err(|e| ConsoleError::Pty("make the pty our terminal", e))?;
    dup2_stdin(&slave).map_err(|e| ConsoleError::Pty("dup the pty to stdin", e))?;
    nix::unistd::dup2_stdout(&slave).map_err(|e| ConsoleError::Pty("dup the pty to stdout", e))?;
    nix::unistd::dup2_stderr(&slave).map_err(|e| ConsoleError::Pty("dup the pty to stderr", e))?;
    Ok(())
}

/// Binds the pty over /dev/console. Whatever the image put there is replaced, never followed:
/// a symlink to, say, a /proc file would otherwise get the pty mounted over that file
/// (CVE-2025-52565). The mount goes through an O_NOFOLLOW fd of the file we made.
fn bind_dev_console(slave: &str) -> Result<(), ConsoleError> {
    let console = Path::new("/dev/console");
    match std::fs::symlink_metadata(console) {
        Ok(m) if m.file_type().is_file() => {}
        Ok(m) if m.is_dir() => {
            return Err(ConsoleError::CreateConsole(
                std::io::Error::from_raw_os_error(libc::EISDIR),
            ))
        }
        Ok(_) => std::fs::remove_file(console).map_err(ConsoleError::CreateConsole)?,
        Err(_) => {}
    }
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(console)
        .map_err(ConsoleError::CreateConsole)?;
    let fd = nix::fcntl::open(
        console,
        nix::fcntl::OFlag::O_PATH | nix::fcntl::OFlag::O_NOFOLLOW | nix::fcntl::OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .map_err(|e| ConsoleError::Pty("open /dev/console", e))?;
    let target = format!("/proc/self/fd/{}", fd.as_raw_fd());
    mount(
        Some(slave),
        target.as_str(),
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .map_err(|e| ConsoleError::Pty("bind the pty onto /dev/console", e))
}
