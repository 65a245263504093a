//! The console socket of a container with a terminal (`process.terminal`): the monitor listens
//! on `<bundle>/console.sock`, passes it to the runtime's `create` as `--console-socket`, and
//! receives the pty master that the container's init sends over SCM_RIGHTS (runc's contract).

use std::io::IoSliceMut;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};

use super::{io_err, sys_err, MonitorError};

/// sun_path holds 108 bytes including the terminating NUL.
const SUN_PATH_MAX: usize = 107;

pub struct ConsoleSocket {
    listener: UnixListener,
    path: PathBuf,
    /// What the runtime gets as `--console-socket`.
    arg: PathBuf,
    /// The bundle, open while `arg` may name the socket through it.
    _dir: OwnedFd,
}

impl ConsoleSocket {
    /// Listens on `<bundle>/console.sock`. Bundle paths can exceed what a socket address holds,
    /// so the socket is bound through `/proc/self/fd/<bundle fd>/`, and a runtime for which the
    /// absolute path would be too long gets `/proc/<our pid>/fd/<bundle fd>/console.sock`: short,
    /// absolute, and valid for the runtime's process too. (Not a relative name: rcrun re-execs
    /// itself through a setns into a mount namespace, which resets its working directory.)
    pub fn bind(bundle: &Path) -> Result<ConsoleSocket, MonitorError> {
        let path = bundle.join("console.sock");
        let _ = std::fs::remove_file(&path);
        let dir = open_dir(bundle)?;
        let listener = bind_in(&dir, bundle, "console.sock", |addr| {
            UnixListener::bind(addr).map_err(io_err(format!("listen on {}", path.display())))
        })?;
        let arg = if path.as_os_str().len() <= SUN_PATH_MAX {
            path.clone()
        } else {
            PathBuf::from(format!(
                "/proc/{}/fd/{}/console.sock",
                std::process::id(),
                dir.as_raw_fd()
            ))
        };
        Ok(ConsoleSocket {
            listener,
            path,
            arg,
            _dir: dir,
        })
    }

    pub fn runtime_arg(&self) -> &Path {
        &self.arg
    }

    /// The pty master, once `create` has returned: the init sent it before `create` reported
    /// success, so the connection is already queued; the wait only covers a runtime that
    /// hands the terminal over from a process of its own that outlives `create`.
    pub fn receive_master(self, wait: Duration) -> Result<OwnedFd, MonitorError> {
        let mut pfd = libc::pollfd {
            fd: self.listener.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd, exclusively borrowed for the call.
        let n = unsafe { libc::poll(&mut pfd, 1, wait.as_millis() as libc::c_int) };
        if n <= 0 {
            return Err(MonitorError::Create(format!(
                "the runtime did not send the container's terminal to {} within {wait:?}",
                self.path.display()
            )));
        }
        let (conn, _) = self
            .listener
            .accept()
            .map_err(io_err(format!("accept on {}", self.path.display())))?;
        conn.set_read_timeout(Some(wait))
            .map_err(io_err("set a timeout on the console connection"))?;
        let mut buf = [0u8; 256];
        let mut iov = [IoSliceMut::new(&mut buf)];
        let mut space = nix::cmsg_space!([std::os::fd::RawFd; 1]);
        let msg = recvmsg::<()>(
            conn.as_raw_fd(),
            &mut iov,
            Some(&mut space),
            MsgFlags::MSG_CMSG_CLOEXEC,
        )
        .map_err(sys_err("receive the pty master from the console socket"))?;
        let cmsgs = msg
            .cmsgs()
            .map_err(sys_err("read the console socket's control message"))?;
        for c in cmsgs {
            if let ControlMessageOwned::ScmRights(fds) = c {
                let mut fds = fds.into_iter();
                if let Some(fd) = fds.next() {
                    // SAFETY: SCM_RIGHTS just installed these fds in our table; we own them.
                    let master = unsafe { OwnedFd::from_raw_fd(fd) };
                    for extra in fds {
                        drop(unsafe { OwnedFd::from_raw_fd(extra) });
                    }
                    return Ok(master);
                }
            }
        }
        Err(MonitorError::Create(
            "the runtime's console socket message carried no file descriptor".into(),
        ))
    }
}

impl Drop for ConsoleSocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// An O_PATH fd of `dir`, to name things inside it by `/proc/.../fd/<fd>/<name>`.
pub fn open_dir(dir: &Path) -> Result<OwnedFd, MonitorError> {
    nix::fcntl::open(
        dir,
        nix::fcntl::OFlag::O_PATH | nix::fcntl::OFlag::O_DIRECTORY | nix::fcntl::OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .map_err(sys_err(format!("open {}", dir.display())))
}

/// Runs `bind` with a short address naming `name` inside `dir` (open as `dir_fd`), whatever the
/// length of `dir`'s path: `/proc/self/fd/<dir_fd>/<name>` (what conmon does for its attach
/// socket).
pub fn bind_in<T>(
    dir_fd: &OwnedFd,
    dir: &Path,
    name: &str,
    bind: impl FnOnce(&Path) -> Result<T, MonitorError>,
) -> Result<T, MonitorError> {
    let short = PathBuf::from(format!("/proc/self/fd/{}/{name}", dir_fd.as_raw_fd()));
    let bound = bind(&short)?;
    // Only root (the runtime, rcri) has business on these sockets.
    let full = dir.join(name);
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&full, std::fs::Permissions::from_mode(0o600))
        .map_err(io_err(format!("chmod {}", full.display())))?;
    Ok(bound)
}
