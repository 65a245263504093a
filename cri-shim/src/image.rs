//! Images: a content store of blobs by digest, layers unpacked into snapshot dirs, container
//! rootfs = overlayfs of the snapshots + a per-container upper dir (owned by the
//! CNI/netns/image helper; registry pulls are the images issue).
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("image {0:?} not found")]
    NotFound(String),
    #[error("not implemented yet: {0}")]
    NotImplemented(&'static str),
}

/// The parts of an image's config that a container inherits.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct ImageConfig {
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    pub env: Vec<String>,
    pub working_dir: String,
    pub user: String,
}

/// One image known to the store.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct Image {
    /// sha256:<hex> of the image config.
    pub id: String,
    pub repo_tags: Vec<String>,
    pub repo_digests: Vec<String>,
    pub size: u64,
    pub config: ImageConfig,
}

pub struct ImageStore {
    pub root: PathBuf,
}

impl ImageStore {
    pub fn open(root: &Path) -> Result<Self, ImageError> {
        Ok(ImageStore {
            root: root.to_path_buf(),
        })
    }
    /// Imports every image of a local OCI image layout (index.json refs become tags).
    pub fn import_oci_layout(&self, _layout: &Path) -> Result<Vec<Image>, ImageError> {
        Err(ImageError::NotImplemented("image::import_oci_layout"))
    }
    /// Looks an image up by id, tag (normalized as kubelet does) or digest.
    pub fn get(&self, reference: &str) -> Result<Image, ImageError> {
        Err(ImageError::NotFound(reference.to_string()))
    }
    pub fn list(&self) -> Result<Vec<Image>, ImageError> {
        Ok(Vec::new())
    }
    pub fn remove(&self, reference: &str) -> Result<(), ImageError> {
        Err(ImageError::NotFound(reference.to_string()))
    }
    /// Mounts the container's rootfs (overlay of the image's layers + its own upper dir) at
    /// `target` and returns it.
    pub fn mount_rootfs(&self, _image_id: &str, _container_id: &str, _target: &Path) -> Result<(), ImageError> {
        Err(ImageError::NotImplemented("image::mount_rootfs"))
    }
    /// Unmounts and removes a container's rootfs and upper dir; idempotent.
    pub fn remove_rootfs(&self, _container_id: &str, _target: &Path) -> Result<(), ImageError> {
        Err(ImageError::NotImplemented("image::remove_rootfs"))
    }
}
