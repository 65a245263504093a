use std::path::Path;

pub fn run(root: &Path, id: &str) -> anyhow::Result<()> {
    crate::container::start(root, id)?;
    Ok(())
}
