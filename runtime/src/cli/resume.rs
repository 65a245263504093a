//! `resume`: thaw a paused container.
use std::path::Path;

pub fn run(root: &Path, id: &str) -> anyhow::Result<()> {
    crate::container::resume(root, id)?;
    Ok(())
}
