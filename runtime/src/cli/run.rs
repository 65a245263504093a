use super::{foreground, CreateArgs};
use std::path::Path;

pub fn run(root: &Path, a: &CreateArgs, detach: bool) -> anyhow::Result<i32> {
    crate::process::exe_seal::ensure_sealed()?;
    if detach {
        super::create::builder(root, a).create_and_start(&a.bundle)?;
        return Ok(0);
    }
    let set = foreground::prepare()?;
    let started = super::create::builder(root, a)
        .with_terminal_proxy(true)
        .create_and_start(&a.bundle)?;
    let code = foreground::wait_forwarding(started.pid, &set, started.pty_master);
    if let Err(e) = crate::container::cleanup_after_run(root, &a.id) {
        log::warn!(
            "cleaning up container {}: {}",
            a.id,
            crate::process::chain(&e)
        );
    }
    code
}
