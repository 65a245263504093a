//! `pause`: freeze every process of the container.
use std::path::Path;

pub fn run(root: &Path, id: &str) -> anyhow::Result<()> {
    crate::container::pause(root, id)?;
    Ok(())
}
