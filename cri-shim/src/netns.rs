//! Pinned network namespaces under /run/rcri/netns (owned by the CNI/netns/image helper).
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    #[error("not implemented yet: {0}")]
    NotImplemented(&'static str),
}

/// Creates a new network namespace pinned by a bind mount at `<dir>/<name>`; returns the path.
pub fn create(_dir: &Path, _name: &str) -> Result<PathBuf, NetnsError> {
    Err(NetnsError::NotImplemented("netns::create"))
}

/// Unmounts and removes a pinned namespace; a missing one is not an error.
pub fn remove(_path: &Path) -> Result<(), NetnsError> {
    Err(NetnsError::NotImplemented("netns::remove"))
}
