//! A process in the foreground (`run`, `exec`): rcrun stays its parent (as a child
//! subreaper), forwards signals to it, relays its terminal when it has one, and exits with its
//! status (128+N when killed by signal N).
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{SigSet, SigmaskHow, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::termios::{self, SetArg, Termios};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};

/// Becomes a subreaper and blocks the signals we forward, before anything is forked: the
/// process is born of an intermediate child that exits, and no SIGCHLD or forwarded signal may
/// be lost in between. The process clears its own mask before exec.
pub fn prepare() -> anyhow::Result<SigSet> {
    nix::sys::prctl::set_child_subreaper(true)?;
    let mut set = SigSet::all();
    set.remove(Signal::SIGKILL);
    set.remove(Signal::SIGSTOP);
    nix::sys::signal::sigprocmask(SigmaskHow::SIG_BLOCK, Some(&set), None)?;
    Ok(set)
}

/// Puts our terminal in raw mode for the relay and restores it on drop.
struct RawMode(Option<Termios>);

impl RawMode {
    fn enter() -> Self {
        let stdin = std::io::stdin();
        let Ok(orig) = termios::tcgetattr(stdin.as_fd()) else {
            return RawMode(None);
        };
        let mut raw = orig.clone();
        termios::cfmakeraw(&mut raw);
        let _ = termios::tcsetattr(stdin.as_fd(), SetArg::TCSANOW, &raw);
        RawMode(Some(orig))
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        if let Some(t) = &self.0 {
            let _ = termios::tcsetattr(std::io::stdin().as_fd(), SetArg::TCSANOW, t);
        }
    }
}

fn copy_window_size(master: BorrowedFd) {
    let mut ws = std::mem::MaybeUninit::<libc::winsize>::zeroed();
    // SAFETY: TIOCGWINSZ fills one winsize; TIOCSWINSZ reads it back.
    unsafe {
        if libc::ioctl(libc::STDIN_FILENO, libc::TIOCGWINSZ, ws.as_mut_ptr()) == 0 {
            libc::ioctl(master.as_raw_fd(), libc::TIOCSWINSZ, ws.as_ptr());
        }
    }
}

/// Copies what is readable from `from` to `to`; false once `from` is closed.
fn pump(from: BorrowedFd, to: BorrowedFd) -> bool {
    let mut buf = [0u8; 8192];
    match nix::unistd::read(from, &mut buf) {
        Ok(0) | Err(_) => false,
        Ok(n) => {
            let mut off = 0;
            while off < n {
                match nix::unistd::write(to, &buf[off..n]) {
                    Ok(w) => off += w,
                    Err(nix::Error::EINTR) => {}
                    Err(_) => return false,
                }
            }
            true
        }
    }
}

fn reap(init: Pid) -> anyhow::Result<Option<i32>> {
    loop {
        match waitpid(None::<Pid>, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(p, code)) if p == init => return Ok(Some(code)),
            Ok(WaitStatus::Signaled(p, sig, _)) if p == init => return Ok(Some(128 + sig as i32)),
            Ok(WaitStatus::StillAlive) | Err(nix::Error::ECHILD) => return Ok(None),
            Ok(_) | Err(nix::Error::EINTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

pub fn wait_forwarding(init: Pid, set: &SigSet, master: Option<OwnedFd>) -> anyhow::Result<i32> {
    let sfd = SignalFd::with_flags(set, SfdFlags::SFD_CLOEXEC)?;
    let _raw = master.as_ref().map(|_| RawMode::enter());
    if let Some(m) = &master {
        copy_window_size(m.as_fd());
    }
    let stdin = std::io::stdin();
    let stdout = std::io::stdout();
    let mut stdin_open = master.is_some();
    let mut master_open = master.is_some();
    loop {
        // The init may have exited before we started waiting.
        if let Some(code) = reap(init)? {
            if let (Some(m), true) = (&master, master_open) {
                // Whatever the container wrote last is still in the pty.
                let _ = nix::fcntl::fcntl(
                    m,
                    nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
                );
                while pump(m.as_fd(), stdout.as_fd()) {}
            }
            return Ok(code);
        }
        let mut fds = vec![PollFd::new(sfd.as_fd(), PollFlags::POLLIN)];
        if let Some(m) = &master {
            if master_open {
                fds.push(PollFd::new(m.as_fd(), PollFlags::POLLIN));
            }
            if stdin_open {
                fds.push(PollFd::new(stdin.as_fd(), PollFlags::POLLIN));
            }
        }
        match poll(&mut fds, PollTimeout::NONE) {
            Ok(_) | Err(nix::Error::EINTR) => {}
            Err(e) => return Err(e.into()),
        }
        let ready: Vec<bool> = fds
            .iter()
            .map(|f| f.revents().is_some_and(|r| !r.is_empty()))
            .collect();
        drop(fds);
        if ready[0] {
            if let Some(info) = sfd.read_signal()? {
                let signo = info.ssi_signo as i32;
                match Signal::try_from(signo) {
                    Ok(Signal::SIGCHLD) => {}
                    Ok(Signal::SIGWINCH) => {
                        if let Some(m) = &master {
                            copy_window_size(m.as_fd());
                        }
                    }
                    // Real-time signals have no nix::Signal; they are forwarded all the same.
                    _ => {
                        // SAFETY: kill(2) with a pid and a signal number has no memory effects.
                        let r = unsafe { libc::kill(init.as_raw(), signo) };
                        let e = nix::Error::last();
                        if r != 0 && e != nix::Error::ESRCH {
                            log::warn!("forwarding signal {signo} to the container: {e}");
                        }
                    }
                }
            }
        }
        if let Some(m) = &master {
            let mut i = 1;
            if master_open {
                if ready[i] && !pump(m.as_fd(), stdout.as_fd()) {
                    master_open = false;
                }
                i += 1;
            }
            if stdin_open
                && ready.get(i).copied().unwrap_or(false)
                && !pump(stdin.as_fd(), m.as_fd())
            {
                stdin_open = false;
            }
        }
    }
}
