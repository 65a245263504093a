//! The exec fifo: `create` leaves the init blocked opening it for writing; `start` opens it
//! for reading, which lets the init write one byte and exec the user's process.
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::stat::Mode;
use nix::unistd::mkfifo;
use std::io::Read;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

#[derive(Debug, thiserror::Error)]
pub enum FifoError {
    #[error("failed to create exec fifo {path}")]
    Create {
        path: PathBuf,
        #[source]
        source: nix::Error,
    },
    #[error("failed to open exec fifo {path}")]
    Open {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("failed to wait on exec fifo {path}")]
    Wait {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the container's init exited before it could be started")]
    InitGone,
    #[error("timed out waiting for the container's init to take the start signal")]
    Timeout,
}

/// Makes the fifo and returns an O_PATH fd to it for the init (which cannot see the state
/// dir once inside its rootfs).
pub fn create(path: &Path) -> Result<OwnedFd, FifoError> {
    // 0622: the init may run as any uid (or in a user namespace) and must be able to open it.
    let old = nix::sys::stat::umask(Mode::empty());
    let made = mkfifo(path, Mode::from_bits_truncate(0o622));
    nix::sys::stat::umask(old);
    made.map_err(|source| FifoError::Create {
        path: path.to_path_buf(),
        source,
    })?;
    nix::fcntl::open(
        path,
        nix::fcntl::OFlag::O_PATH | nix::fcntl::OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|source| FifoError::Create {
        path: path.to_path_buf(),
        source,
    })
}

/// In the init: blocks until `start` opens the read side, then writes the byte that tells it
/// the container started. The returned write end must stay open until execve closes it
/// (O_CLOEXEC): `start` waits for that end-of-file to know the process really runs.
pub fn wait_for_start(fifo: &OwnedFd) -> std::io::Result<std::fs::File> {
    use std::io::Write;
    let path = format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(fifo));
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_CLOEXEC)
        .open(path)?;
    f.write_all(b"0")?;
    Ok(f)
}

/// In `start`: releases the init. `alive` says whether the init still exists, so a dead
/// init is an error rather than a hang.
pub fn release(path: &Path, alive: impl Fn() -> bool) -> Result<(), FifoError> {
    let wait_err = |source| FifoError::Wait {
        path: path.to_path_buf(),
        source,
    };
    // O_NONBLOCK: opening the read side must not block when the init is already gone.
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)
        .map_err(|source| FifoError::Open {
            path: path.to_path_buf(),
            source,
        })?;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut fds = [PollFd::new(f.as_fd(), PollFlags::POLLIN)];
        let ready = poll(&mut fds, PollTimeout::from(100u16))
            .map_err(|e| wait_err(std::io::Error::from(e)))?;
        if ready > 0 {
            let mut b = [0u8; 1];
            match f.read(&mut b) {
                Ok(1) => return wait_for_exec(&mut f, path, alive),
                // The writer opened and closed without the byte: it died.
                Ok(_) => return Err(FifoError::InitGone),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(wait_err(e)),
            }
        }
        if !alive() {
            return Err(FifoError::InitGone);
        }
        if Instant::now() > deadline {
            return Err(FifoError::Timeout);
        }
    }
}

/// After the byte: the init runs startContainer hooks and then execs, which closes its end.
/// Poststart hooks must wait for that (runtime-spec "Lifecycle" steps 8-9), as must a caller
/// that expects the process to run once `start` returns.
fn wait_for_exec(
    f: &mut std::fs::File,
    path: &Path,
    alive: impl Fn() -> bool,
) -> Result<(), FifoError> {
    let _ = std::fs::remove_file(path);
    loop {
        let mut fds = [PollFd::new(f.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, PollTimeout::from(100u16)) {
            Ok(_) | Err(nix::Error::EINTR) => {}
            Err(e) => {
                return Err(FifoError::Wait {
                    path: path.to_path_buf(),
                    source: e.into(),
                })
            }
        }
        let mut b = [0u8; 16];
        match f.read(&mut b) {
            Ok(0) => return Ok(()),
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                // A dead init closes its end too; this only guards against a stuck poll.
                if !alive() {
                    return Ok(());
                }
            }
            Err(source) => {
                return Err(FifoError::Wait {
                    path: path.to_path_buf(),
                    source,
                })
            }
        }
    }
}
