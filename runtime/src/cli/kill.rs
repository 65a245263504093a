use std::path::Path;

pub fn run(root: &Path, id: &str, signal: &str, all: bool) -> anyhow::Result<()> {
    let sig = crate::signal::parse(signal)?;
    crate::container::kill_container(root, id, sig, all)?;
    Ok(())
}
