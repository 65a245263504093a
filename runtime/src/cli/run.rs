//! `run`: create and start in one go. In the foreground rcrun stays the container's parent
//! (as a child subreaper), forwards signals to it and exits with its status.
use super::CreateArgs;
use nix::sys::signal::{kill, SigSet, SigmaskHow, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use std::path::Path;

pub fn run(root: &Path, a: &CreateArgs, detach: bool) -> anyhow::Result<i32> {
    crate::process::exe_seal::ensure_sealed()?;
    if !detach {
        // The init is forked by an intermediate child that exits; as a subreaper we inherit
        // it and can wait for it.
        nix::sys::prctl::set_child_subreaper(true)?;
    }
    // Blocked before the fork so no SIGCHLD or forwarded signal is lost; the init clears its
    // own mask before exec.
    let mut forwarded = SigSet::all();
    forwarded.remove(Signal::SIGKILL);
    forwarded.remove(Signal::SIGSTOP);
    if !detach {
        nix::sys::signal::sigprocmask(SigmaskHow::SIG_BLOCK, Some(&forwarded), None)?;
    }
    let pid = super::create::builder(root, a).create_and_start(&a.bundle)?;
    if detach {
        return Ok(0);
    }
    let code = wait_forwarding(pid, &forwarded);
    if let Err(e) = crate::container::cleanup_after_run(root, &a.id) {
        log::warn!("cleaning up container {}: {}", a.id, crate::process::chain(&e));
    }
    code
}

fn wait_forwarding(init: Pid, set: &SigSet) -> anyhow::Result<i32> {
    loop {
        // Reap first: the init may have exited before we started waiting.
        loop {
            match waitpid(None::<Pid>, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(p, code)) if p == init => return Ok(code),
                Ok(WaitStatus::Signaled(p, sig, _)) if p == init => return Ok(128 + sig as i32),
                Ok(WaitStatus::StillAlive) | Err(nix::Error::ECHILD) => break,
                Ok(_) => continue,
                Err(nix::Error::EINTR) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        let sig = set.wait()?;
        if sig != Signal::SIGCHLD {
            match kill(init, sig) {
                Ok(()) | Err(nix::Error::ESRCH) => {}
                Err(e) => log::warn!("forwarding {sig} to the container: {e}"),
            }
        }
    }
}
