use std::path::Path;

pub fn run(bundle: &Path, rootless: bool) -> anyhow::Result<()> {
    crate::spec::write_default(bundle, rootless)?;
    Ok(())
}
