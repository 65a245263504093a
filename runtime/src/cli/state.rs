use std::path::Path;

pub fn run(root: &Path, id: &str) -> anyhow::Result<()> {
    let state = crate::container::oci_state(root, id)?;
    println!("{}", serde_json::to_string_pretty(&state)?);
    Ok(())
}
