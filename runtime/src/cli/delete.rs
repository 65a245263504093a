use std::path::Path;

pub fn run(root: &Path, id: &str, force: bool) -> anyhow::Result<()> {
    crate::container::delete(root, id, force)?;
    Ok(())
}
