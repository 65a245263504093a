use super::CreateArgs;
use crate::container::ContainerBuilder;
use std::path::Path;

pub fn builder(root: &Path, a: &CreateArgs) -> ContainerBuilder {
    ContainerBuilder::new(&a.id, root)
        .with_pid_file(a.pid_file.clone())
        .with_console_socket(a.console_socket.clone())
        .with_preserve_fds(a.preserve_fds)
        .with_no_pivot(a.no_pivot)
        .with_no_new_keyring(a.no_new_keyring)
}

pub fn run(root: &Path, a: &CreateArgs) -> anyhow::Result<()> {
    crate::process::exe_seal::ensure_sealed()?;
    builder(root, a).create(&a.bundle)?;
    Ok(())
}
