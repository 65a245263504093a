//! Images: a content store of blobs by digest, layers unpacked into snapshot dirs, container
//! rootfs = overlayfs of the snapshots + a per-container upper dir. Images come from registries
//! (`pull`, over the OCI distribution API) or from local OCI image layouts.
//!
//! On disk, under the store root:
//! - `blobs/sha256/<hex>` — manifests, configs and layer blobs, each verified against its digest
//!   before it is renamed into place;
//! - `snapshots/<hex of the layer's DiffID>/` — each layer unpacked once (into a temp dir, then
//!   renamed), shared by every image that has the layer;
//! - `images/<hex of the image id>.json` — the image records (atomic writes);
//! - `containers/<container id>/{upper,work,image}` — a container's writable layer and the
//!   image it was made from (which keeps that image from being removed).
//!
//! Crash safety: anything named `.tmp-*` is unfinished work and is removed on open; a
//! snapshot or blob exists under its final name only when it is complete and on disk (fsync
//! of each blob, syncfs of each unpacked layer, before the rename). Blobs and snapshots that
//! no record references (a crash between a pull's renames and its record) are collected on
//! open.
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fs::{self, File};
use std::io::{self, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, RwLock};

use nix::errno::Errno;
use nix::mount::{mount, umount2, MntFlags, MsFlags};

mod idmap;
pub mod oci;
pub use idmap::PodUserns;
pub mod pull;
pub mod reference;
pub mod stop_signal;
pub mod unpack;

pub use pull::{Auth, Mirror, PullError, RegistryConfig};
pub use reference::{normalize, Reference, ReferenceError};
use unpack::{HashingReader, UnpackError};

#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("image {0:?} not found")]
    NotFound(String),
    #[error("not implemented yet: {0}")]
    NotImplemented(&'static str),
    #[error(transparent)]
    InvalidReference(#[from] ReferenceError),
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{what} {path}: {source}")]
    Sys {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: Errno,
    },
    #[error("{what} {expected}: content has digest {actual}")]
    DigestMismatch {
        what: &'static str,
        expected: String,
        actual: String,
    },
    #[error("{what} {digest}: descriptor says {expected} bytes, content has {actual}")]
    SizeMismatch {
        what: &'static str,
        digest: String,
        expected: i64,
        actual: u64,
    },
    #[error("unsupported digest {0:?} (only sha256 is verified)")]
    UnsupportedDigest(String),
    #[error("bad {what} {digest}: {reason}")]
    BadDocument {
        what: &'static str,
        digest: String,
        reason: String,
    },
    #[error("not an OCI image layout: {path}: {reason}")]
    BadLayout { path: PathBuf, reason: String },
    #[error("image {image:?} has no manifest for {platform}")]
    NoMatchingPlatform { image: String, platform: String },
    #[error("layer {layer}: {source}")]
    Unpack {
        layer: String,
        #[source]
        source: UnpackError,
    },
    #[error("image {image} is in use by container(s) {containers:?}")]
    InUse {
        image: String,
        containers: Vec<String>,
    },
    #[error("invalid container id {0:?}")]
    InvalidContainerId(String),
    #[error("overlay mount options for image {0} are too long (too many layers)")]
    TooManyLayers(String),
    #[error("store path {0} contains ',' or ':', which overlayfs options cannot hold")]
    UnmountablePath(PathBuf),
    /// A registry pull that failed; the message names the image and says why. (The cause is
    /// part of the message, not a `source`, so that error chains do not repeat it.)
    #[error("pulling image {image}: {cause}")]
    Pull {
        image: String,
        cause: Box<PullError>,
    },
}

impl ImageError {
    /// The gRPC status code a CRI handler should answer this error with.
    pub fn grpc_code(&self) -> tonic::Code {
        use tonic::Code;
        match self {
            ImageError::NotFound(_) => Code::NotFound,
            ImageError::InvalidReference(_) | ImageError::InvalidContainerId(_) => {
                Code::InvalidArgument
            }
            ImageError::InUse { .. } => Code::FailedPrecondition,
            ImageError::NoMatchingPlatform { .. } => Code::NotFound,
            // Content that is not what its digest promises, or not a readable layer.
            ImageError::DigestMismatch { .. }
            | ImageError::SizeMismatch { .. }
            | ImageError::Unpack { .. } => Code::DataLoss,
            ImageError::BadDocument { .. } | ImageError::UnsupportedDigest(_) => {
                Code::FailedPrecondition
            }
            ImageError::Pull { cause, .. } => match cause.as_ref() {
                PullError::NotFound { .. } => Code::NotFound,
                PullError::Unauthorized { .. } => Code::Unauthenticated,
                PullError::Unreachable { .. } => Code::Unavailable,
                PullError::Timeout { .. } => Code::DeadlineExceeded,
                PullError::Registry { .. } => Code::Unavailable,
                PullError::Truncated { .. } => Code::DataLoss,
                PullError::BadAuth(_) | PullError::BadConfig(_) => Code::InvalidArgument,
                PullError::Internal(_) => Code::Internal,
                PullError::Store(e) => e.grpc_code(),
            },
            _ => Code::Internal,
        }
    }
}

type Result<T, E = ImageError> = std::result::Result<T, E>;

/// The parts of an image's config that a container inherits.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ImageConfig {
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    pub env: Vec<String>,
    pub working_dir: String,
    pub user: String,
    #[serde(default)]
    pub stop_signal: String,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// "80/tcp" and the like.
    #[serde(default)]
    pub exposed_ports: Vec<String>,
    #[serde(default)]
    pub volumes: Vec<String>,
}

/// One layer of an image, bottom first in [`Image::layers`].
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Layer {
    /// Digest of the blob as stored (compressed or not).
    pub digest: String,
    /// Digest of the uncompressed tar: the snapshot's key.
    pub diff_id: String,
    pub media_type: String,
    pub size: u64,
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
    /// The manifest the image was imported from.
    #[serde(default)]
    pub manifest_digest: String,
    #[serde(default)]
    pub layers: Vec<Layer>,
}

impl Image {
    /// The user part of the config's `User` (before any `:group`).
    fn user_part(&self) -> &str {
        self.config.user.split(':').next().unwrap_or("")
    }

    /// CRI ImageStatus `uid`: the image's user when it is numeric.
    pub fn uid(&self) -> Option<i64> {
        self.user_part().parse().ok()
    }

    /// CRI ImageStatus `username`: the image's user when it is a name.
    pub fn username(&self) -> String {
        let u = self.user_part();
        if u.parse::<i64>().is_ok() {
            String::new()
        } else {
            u.to_string()
        }
    }
}

/// Bytes and inodes used, as CRI ImageFsInfo reports them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FsUsage {
    pub bytes: u64,
    pub inodes: u64,
}

pub struct ImageStore {
    pub root: PathBuf,
    images: Mutex<BTreeMap<String, Image>>,
    /// Imports hold it shared, garbage collection exclusively: a snapshot or blob that an
    /// import has just written but not yet recorded must not be collected.
    gc_lock: RwLock<()>,
    /// Blobs and snapshots (by hex) that running pulls use, with a count per pull: garbage
    /// collection leaves them alone. (Pulls are async and cannot hold `gc_lock`.)
    pins: Mutex<HashMap<String, usize>>,
    /// Pulls of one reference run one at a time, and so do downloads of one blob.
    pull_locks: pull::KeyedLocks,
    blob_locks: pull::KeyedLocks,
}

impl std::fmt::Debug for ImageStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ImageStore")
            .field("root", &self.root)
            .finish()
    }
}

fn io_err<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> ImageError + 'a {
    move |source| ImageError::Io {
        what,
        path: path.to_path_buf(),
        source,
    }
}

/// The hex part of a `sha256:` digest, refusing anything else (it becomes a file name).
pub fn digest_hex(digest: &str) -> Result<&str> {
    match digest.strip_prefix("sha256:") {
        Some(h) if reference::is_hex64(h) => Ok(h),
        _ => Err(ImageError::UnsupportedDigest(digest.to_string())),
    }
}

/// Writes a file atomically: a temp file in the same directory, fsync, rename, fsync dir.
pub fn atomic_write(path: &Path, data: &[u8]) -> io::Result<()> {
    let dir = path
        .parent()
        .ok_or_else(|| io::Error::from(io::ErrorKind::InvalidInput))?;
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::from(io::ErrorKind::InvalidInput))?;
    let tmp = dir.join(format!(
        ".tmp-{}-{}",
        name.to_string_lossy(),
        std::process::id()
    ));
    let res = (|| {
        let mut f = File::create(&tmp)?;
        f.write_all(data)?;
        f.sync_all()?;
        fs::rename(&tmp, path)?;
        File::open(dir)?.sync_all()
    })();
    if res.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    res
}

/// A unique temp name in `dir` (pid + counter: unique within and across processes).
fn temp_path(dir: &Path, tag: &str) -> PathBuf {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    dir.join(format!(".tmp-{tag}-{}-{n}", std::process::id()))
}

fn valid_container_id(id: &str) -> bool {
    !id.is_empty()
        && id != "."
        && id != ".."
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
}

impl ImageStore {
    pub fn open(root: &Path) -> Result<Self, ImageError> {
        let store = ImageStore {
            root: root.to_path_buf(),
            images: Mutex::new(BTreeMap::new()),
            gc_lock: RwLock::new(()),
            pins: Mutex::new(HashMap::new()),
            pull_locks: pull::KeyedLocks::default(),
            blob_locks: pull::KeyedLocks::default(),
        };
        for d in [
            store.blob_dir(),
            store.snapshot_dir(),
            store.image_dir(),
            store.container_dir(),
        ] {
            fs::create_dir_all(&d).map_err(io_err("create", &d))?;
            remove_temp_entries(&d);
        }
        let mut images = BTreeMap::new();
        let dir = store.image_dir();
        for e in fs::read_dir(&dir).map_err(io_err("read", &dir))? {
            let Ok(e) = e else { continue };
            let p = e.path();
            if p.extension().and_then(|x| x.to_str()) != Some("json") {
                continue;
            }
            match fs::read(&p)
                .ok()
                .and_then(|b| serde_json::from_slice::<Image>(&b).ok())
            {
                Some(img) => {
                    images.insert(img.id.clone(), img);
                }
                // Written atomically, so a bad record is not a torn write but foreign or
                // corrupted data: keep it aside for inspection rather than failing to start.
                None => {
                    tracing::warn!(path = %p.display(), "unreadable image record set aside");
                    let _ = fs::rename(&p, p.with_extension("bad"));
                }
            }
        }
        *store.lock() = images;
        // Content that no record references: left by a failed removal, or by a pull that a
        // crash stopped before it recorded its image.
        store.collect_garbage()?;
        Ok(store)
    }

    fn blob_dir(&self) -> PathBuf {
        self.root.join("blobs").join("sha256")
    }
    fn snapshot_dir(&self) -> PathBuf {
        self.root.join("snapshots")
    }
    fn image_dir(&self) -> PathBuf {
        self.root.join("images")
    }
    fn container_dir(&self) -> PathBuf {
        self.root.join("containers")
    }

    /// Where containers' writable layers (upper and work dirs) live.
    pub fn containers_root(&self) -> PathBuf {
        self.container_dir()
    }

    /// The path of a blob in the content store.
    pub fn blob_path(&self, digest: &str) -> Result<PathBuf> {
        Ok(self.blob_dir().join(digest_hex(digest)?))
    }

    /// The directory a layer is unpacked in, by its DiffID.
    pub fn snapshot_path(&self, diff_id: &str) -> Result<PathBuf> {
        Ok(self.snapshot_dir().join(digest_hex(diff_id)?))
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<String, Image>> {
        // A panic while holding the lock leaves the map as consistent as the disk records
        // (each update is one insert/remove), so poisoning is not a reason to stop serving.
        self.images.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Imports every image of a local OCI image layout (index.json refs become tags).
    pub fn import_oci_layout(&self, layout: &Path) -> Result<Vec<Image>, ImageError> {
        // The first name is the most specific one (containerd's full name when present,
        // else the OCI ref name); a ref name that is no valid reference leaves the image
        // untagged rather than failing the import.
        self.import_oci_layout_with(layout, &|names: &[String]| {
            names
                .first()
                .and_then(|n| normalize(n).ok())
                .and_then(|r| r.tagged())
                .into_iter()
                .collect()
        })
    }

    /// Imports every image of a layout, tagging each with what `tags_for` makes of its ref
    /// names (io.containerd.image.name and org.opencontainers.image.ref.name annotations,
    /// in that order; empty when it has none). Tags are taken as given (normalize them).
    pub fn import_oci_layout_with(
        &self,
        layout: &Path,
        tags_for: &dyn Fn(&[String]) -> Vec<String>,
    ) -> Result<Vec<Image>, ImageError> {
        let bad = |reason: String| ImageError::BadLayout {
            path: layout.to_path_buf(),
            reason,
        };
        let marker = layout.join("oci-layout");
        let m = fs::read(&marker).map_err(|e| bad(format!("oci-layout: {e}")))?;
        let m: serde_json::Value =
            serde_json::from_slice(&m).map_err(|e| bad(format!("oci-layout: {e}")))?;
        if m.get("imageLayoutVersion").and_then(|v| v.as_str()) != Some("1.0.0") {
            return Err(bad("imageLayoutVersion is not 1.0.0".into()));
        }
        let idx_path = layout.join("index.json");
        let idx = fs::read(&idx_path).map_err(|e| bad(format!("index.json: {e}")))?;
        let idx: oci::Index =
            serde_json::from_slice(&idx).map_err(|e| bad(format!("index.json: {e}")))?;

        let _gc = self.gc_lock.read().unwrap_or_else(|p| p.into_inner());
        let src = LayoutSource { root: layout };
        let mut out: Vec<Image> = Vec::new();
        for desc in &idx.manifests {
            let mut names = Vec::new();
            for key in [oci::ANNOTATION_CONTAINERD_NAME, oci::ANNOTATION_REF_NAME] {
                if let Some(n) = desc.annotations.get(key) {
                    names.push(n.clone());
                }
            }
            let tags = tags_for(&names);
            let label = names
                .first()
                .cloned()
                .unwrap_or_else(|| desc.digest.clone());
            let img = self.import_descriptor(&src, desc, &label, 0)?;
            let img = self.record(img, &tags)?;
            match out.iter_mut().find(|i| i.id == img.id) {
                Some(existing) => *existing = img,
                None => out.push(img),
            }
        }
        // Earlier entries may have lost tags to later ones of the same import.
        let map = self.lock();
        Ok(out
            .into_iter()
            .map(|i| map.get(&i.id).cloned().unwrap_or(i))
            .collect())
    }

    /// Imports the image a layout descriptor names: an index (platform selected) or a
    /// manifest. Returns the image, not yet recorded.
    fn import_descriptor(
        &self,
        src: &LayoutSource,
        desc: &oci::Descriptor,
        label: &str,
        depth: usize,
    ) -> Result<Image> {
        if depth > 4 {
            return Err(ImageError::BadDocument {
                what: "index",
                digest: desc.digest.clone(),
                reason: "indexes nested too deep".into(),
            });
        }
        let bytes = self.ingest_small(src, desc, "manifest")?;
        let doc: serde_json::Value =
            serde_json::from_slice(&bytes).map_err(|e| ImageError::BadDocument {
                what: "manifest",
                digest: desc.digest.clone(),
                reason: e.to_string(),
            })?;
        let media_type = if !desc.media_type.is_empty() {
            desc.media_type.clone()
        } else {
            doc.get("mediaType")
                .and_then(|v| v.as_str())
                .map(str::to_string)
                .unwrap_or_else(|| {
                    if doc.get("manifests").is_some() {
                        oci::OCI_INDEX.to_string()
                    } else {
                        oci::OCI_MANIFEST.to_string()
                    }
                })
        };
        if oci::is_index(&media_type) {
            let index: oci::Index =
                serde_json::from_value(doc).map_err(|e| ImageError::BadDocument {
                    what: "index",
                    digest: desc.digest.clone(),
                    reason: e.to_string(),
                })?;
            let want = oci::host_platform();
            let chosen = index
                .manifests
                .iter()
                .find(|m| {
                    m.platform
                        .as_ref()
                        .is_some_and(|p| oci::platform_matches(p, &want))
                })
                .ok_or_else(|| ImageError::NoMatchingPlatform {
                    image: label.to_string(),
                    platform: format!("{}/{}", want.os, want.architecture),
                })?;
            let img = self.import_descriptor(src, chosen, label, depth + 1)?;
            // The index is what a tag points at, so it is the repo digest (as after a pull).
            return Ok(Image {
                manifest_digest: desc.digest.clone(),
                ..img
            });
        }
        if !oci::is_manifest(&media_type) {
            return Err(ImageError::BadDocument {
                what: "manifest",
                digest: desc.digest.clone(),
                reason: format!("unsupported media type {media_type:?}"),
            });
        }
        let manifest: oci::Manifest =
            serde_json::from_value(doc).map_err(|e| ImageError::BadDocument {
                what: "manifest",
                digest: desc.digest.clone(),
                reason: e.to_string(),
            })?;
        let config_bytes = self.ingest_small(src, &manifest.config, "config")?;
        let config: oci::ImageConfigFile =
            serde_json::from_slice(&config_bytes).map_err(|e| ImageError::BadDocument {
                what: "config",
                digest: manifest.config.digest.clone(),
                reason: e.to_string(),
            })?;
        if config.rootfs.diff_ids.len() != manifest.layers.len() {
            return Err(ImageError::BadDocument {
                what: "config",
                digest: manifest.config.digest.clone(),
                reason: format!(
                    "{} diff_ids for {} layers",
                    config.rootfs.diff_ids.len(),
                    manifest.layers.len()
                ),
            });
        }
        let mut layers = Vec::new();
        for (l, diff_id) in manifest.layers.iter().zip(&config.rootfs.diff_ids) {
            self.ingest_blob(src, l, "layer")?;
            self.ensure_snapshot(&l.digest, diff_id)?;
            layers.push(Layer {
                digest: l.digest.clone(),
                diff_id: diff_id.clone(),
                media_type: l.media_type.clone(),
                size: u64::try_from(l.size).unwrap_or(0),
            });
        }
        let size = layers.iter().map(|l| l.size).sum::<u64>()
            + u64::try_from(manifest.config.size).unwrap_or(0)
            + u64::try_from(desc.size).unwrap_or(0);
        Ok(image_from_config(
            manifest.config.digest.clone(),
            config.config.unwrap_or_default(),
            desc.digest.clone(),
            layers,
            size,
        ))
    }

    /// Copies a small document (manifest, config) into the store and returns its bytes.
    fn ingest_small(
        &self,
        src: &LayoutSource,
        desc: &oci::Descriptor,
        what: &'static str,
    ) -> Result<Vec<u8>> {
        // Documents over a few MiB are not manifests or configs but a malformed image.
        const MAX: i64 = 16 << 20;
        if desc.size > MAX {
            return Err(ImageError::BadDocument {
                what,
                digest: desc.digest.clone(),
                reason: format!("{} bytes is too large", desc.size),
            });
        }
        let p = self.ingest_blob(src, desc, what)?;
        fs::read(&p).map_err(io_err("read", &p))
    }

    /// Copies a blob into the content store, verifying size and digest on the way. A blob
    /// already stored is not copied again.
    fn ingest_blob(
        &self,
        src: &LayoutSource,
        desc: &oci::Descriptor,
        what: &'static str,
    ) -> Result<PathBuf> {
        let hex = digest_hex(&desc.digest)?;
        let dst = self.blob_dir().join(hex);
        if dst.exists() {
            return Ok(dst);
        }
        let from = src.blob(&desc.digest)?;
        let f = File::open(&from).map_err(io_err("open", &from))?;
        let mut reader = HashingReader::new(f);
        let tmp = temp_path(&self.blob_dir(), hex);
        let res = (|| -> Result<()> {
            let mut out = File::create(&tmp).map_err(io_err("create", &tmp))?;
            io::copy(&mut reader, &mut out).map_err(io_err("copy into", &tmp))?;
            out.sync_all().map_err(io_err("sync", &tmp))?;
            Ok(())
        })();
        let (actual, n) = reader.finish();
        let res = res.and_then(|()| {
            if actual != desc.digest {
                return Err(ImageError::DigestMismatch {
                    what,
                    expected: desc.digest.clone(),
                    actual: actual.clone(),
                });
            }
            if u64::try_from(desc.size).ok() != Some(n) {
                return Err(ImageError::SizeMismatch {
                    what,
                    digest: desc.digest.clone(),
                    expected: desc.size,
                    actual: n,
                });
            }
            fs::rename(&tmp, &dst).map_err(io_err("rename into place", &dst))
        });
        if res.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        res.map(|()| dst)
    }

    /// Unpacks a layer blob into its snapshot unless that exists already; verifies the
    /// uncompressed content against the config's DiffID.
    fn ensure_snapshot(&self, blob_digest: &str, diff_id: &str) -> Result<PathBuf> {
        let dst = self.snapshot_path(diff_id)?;
        if dst.is_dir() {
            return Ok(dst);
        }
        let blob = self.blob_path(blob_digest)?;
        let f = File::open(&blob).map_err(io_err("open", &blob))?;
        let tmp = temp_path(&self.snapshot_dir(), digest_hex(diff_id)?);
        let res = (|| -> Result<()> {
            fs::create_dir(&tmp).map_err(io_err("create", &tmp))?;
            fs::set_permissions(&tmp, std::os::unix::fs::PermissionsExt::from_mode(0o755))
                .map_err(io_err("chmod", &tmp))?;
            let unpacked = unpack::unpack_layer(f, &tmp).map_err(|source| ImageError::Unpack {
                layer: blob_digest.to_string(),
                source,
            })?;
            if unpacked.diff_id != diff_id {
                return Err(ImageError::DigestMismatch {
                    what: "uncompressed layer (DiffID)",
                    expected: diff_id.to_string(),
                    actual: unpacked.diff_id,
                });
            }
            sync_tree(&tmp).map_err(io_err("syncfs", &tmp))?;
            match fs::rename(&tmp, &dst) {
                Ok(()) => Ok(()),
                // Unpacked meanwhile by a concurrent import: the same content, keep theirs.
                Err(_) if dst.is_dir() => {
                    let _ = fs::remove_dir_all(&tmp);
                    Ok(())
                }
                Err(e) => Err(io_err("rename into place", &dst)(e)),
            }
        })();
        if res.is_err() {
            let _ = fs::remove_dir_all(&tmp);
        }
        res.map(|()| dst)
    }

    /// Records an image with the given tags, moving each tag off any other image.
    fn record(&self, mut img: Image, tags: &[String]) -> Result<Image> {
        let mut map = self.lock();
        if let Some(old) = map.get(&img.id) {
            for t in &old.repo_tags {
                if !img.repo_tags.contains(t) {
                    img.repo_tags.push(t.clone());
                }
            }
            for d in &old.repo_digests {
                if !img.repo_digests.contains(d) {
                    img.repo_digests.push(d.clone());
                }
            }
        }
        for t in tags {
            if !img.repo_tags.contains(t) {
                img.repo_tags.push(t.clone());
            }
            if let Ok(r) = normalize(t) {
                let d = format!("{}@{}", r.name(), img.manifest_digest);
                if !img.manifest_digest.is_empty() && !img.repo_digests.contains(&d) {
                    img.repo_digests.push(d);
                }
            }
        }
        // A tag names one image: take it from the others.
        let others: Vec<String> = map
            .values()
            .filter(|o| o.id != img.id && o.repo_tags.iter().any(|t| tags.contains(t)))
            .map(|o| o.id.clone())
            .collect();
        for id in others {
            if let Some(o) = map.get(&id) {
                let mut o = o.clone();
                o.repo_tags.retain(|t| !tags.contains(t));
                self.write_record(&o)?;
                map.insert(id, o);
            }
        }
        self.write_record(&img)?;
        map.insert(img.id.clone(), img.clone());
        Ok(img)
    }

    fn write_record(&self, img: &Image) -> Result<()> {
        let p = self
            .image_dir()
            .join(format!("{}.json", digest_hex(&img.id)?));
        let data = serde_json::to_vec_pretty(img).map_err(|e| ImageError::Io {
            what: "encode",
            path: p.clone(),
            source: io::Error::other(e),
        })?;
        atomic_write(&p, &data).map_err(io_err("write", &p))
    }

    /// Looks an image up by id, tag (normalized as kubelet does) or digest.
    pub fn get(&self, reference: &str) -> Result<Image, ImageError> {
        let map = self.lock();
        find(&map, reference)
            .map(|id| map[&id].clone())
            .ok_or_else(|| ImageError::NotFound(reference.to_string()))
    }

    pub fn list(&self) -> Result<Vec<Image>, ImageError> {
        Ok(self.lock().values().cloned().collect())
    }

    /// Removes an image (with all its tags, as CRI RemoveImage does) and the blobs and
    /// snapshots nothing else uses. Refused while a container's rootfs uses it.
    pub fn remove(&self, reference: &str) -> Result<(), ImageError> {
        let _gc = self.gc_lock.write().unwrap_or_else(|p| p.into_inner());
        {
            let mut map = self.lock();
            let id =
                find(&map, reference).ok_or_else(|| ImageError::NotFound(reference.to_string()))?;
            let users = self.containers_using(&id);
            if !users.is_empty() {
                return Err(ImageError::InUse {
                    image: reference.to_string(),
                    containers: users,
                });
            }
            let p = self.image_dir().join(format!("{}.json", digest_hex(&id)?));
            match fs::remove_file(&p) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_err("remove", &p)(e)),
            }
            map.remove(&id);
        }
        self.collect_garbage_locked()
    }

    /// Removes blobs and snapshots that no image references (and leftovers of interrupted
    /// work).
    pub fn collect_garbage(&self) -> Result<(), ImageError> {
        let _gc = self.gc_lock.write().unwrap_or_else(|p| p.into_inner());
        self.collect_garbage_locked()
    }

    fn collect_garbage_locked(&self) -> Result<()> {
        // Held until the end: a pull pins what it is about to use (and checks whether it
        // exists) only between collections, never during one.
        let pins = self.pins();
        let (blobs, snaps) = self.referenced();
        // Index blobs of multi-platform images are referenced as manifest_digest; the
        // platform manifest they point at is kept through its image's layers being kept,
        // but its own blob is not listed: keep blobs that are manifests of kept images'
        // indexes by not collecting small JSON documents referenced from kept indexes.
        let kept_manifests = self.manifests_referenced_by(&blobs);
        for (dir, keep) in [(self.blob_dir(), &blobs), (self.snapshot_dir(), &snaps)] {
            let Ok(rd) = fs::read_dir(&dir) else { continue };
            for e in rd.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                // `empty`: the lower dir of layerless images' mounts. `.tmp-*`: a download or
                // unpack of a pull in flight (stale ones are removed at open, not here).
                if name.starts_with(".tmp-")
                    || keep.contains(&name)
                    || kept_manifests.contains(&name)
                    || pins.contains_key(&name)
                    || name == "empty"
                {
                    continue;
                }
                let p = e.path();
                let r = if p.is_dir() {
                    fs::remove_dir_all(&p)
                } else {
                    fs::remove_file(&p)
                };
                if let Err(e) = r {
                    tracing::warn!(path = %p.display(), error = %e, "image GC could not remove");
                }
            }
        }
        Ok(())
    }

    /// Hexes of every blob and snapshot that a recorded image uses (blobs and snapshots in
    /// one set: a failed pull keeps whatever is in it).
    fn referenced_content(&self) -> HashSet<String> {
        let (blobs, snaps) = self.referenced();
        let kept = self.manifests_referenced_by(&blobs);
        blobs.into_iter().chain(snaps).chain(kept).collect()
    }

    /// (blob hexes, snapshot hexes) the recorded images reference directly.
    fn referenced(&self) -> (HashSet<String>, HashSet<String>) {
        {
            let map = self.lock();
            let mut blobs = HashSet::new();
            let mut snaps = HashSet::new();
            for img in map.values() {
                // One image (config) may have come through several manifests (an OCI and a
                // Docker one, an index): each repo digest names one that is kept.
                let repo = img.repo_digests.iter().filter_map(|d| d.rsplit_once('@'));
                for d in [&img.id, &img.manifest_digest]
                    .into_iter()
                    .map(String::as_str)
                    .chain(repo.map(|(_, d)| d))
                {
                    if let Ok(h) = digest_hex(d) {
                        blobs.insert(h.to_string());
                    }
                }
                for l in &img.layers {
                    if let Ok(h) = digest_hex(&l.digest) {
                        blobs.insert(h.to_string());
                    }
                    if let Ok(h) = digest_hex(&l.diff_id) {
                        snaps.insert(h.to_string());
                    }
                }
            }
            (blobs, snaps)
        }
    }

    /// Digests (hex) of the manifests listed in the kept blobs that are indexes.
    fn manifests_referenced_by(&self, blobs: &HashSet<String>) -> HashSet<String> {
        let mut out = HashSet::new();
        for h in blobs {
            let p = self.blob_dir().join(h);
            let Ok(meta) = fs::metadata(&p) else { continue };
            if meta.len() > (4 << 20) {
                continue;
            }
            let Ok(bytes) = fs::read(&p) else { continue };
            let Ok(idx) = serde_json::from_slice::<oci::Index>(&bytes) else {
                continue;
            };
            for m in idx.manifests {
                if let Ok(h) = digest_hex(&m.digest) {
                    out.insert(h.to_string());
                }
            }
        }
        out
    }

    fn containers_using(&self, image_id: &str) -> Vec<String> {
        let mut out = Vec::new();
        let Ok(rd) = fs::read_dir(self.container_dir()) else {
            return out;
        };
        for e in rd.flatten() {
            let p = e.path().join("image");
            if fs::read_to_string(&p).is_ok_and(|s| s.trim() == image_id) {
                out.push(e.file_name().to_string_lossy().into_owned());
            }
        }
        out.sort();
        out
    }

    /// Mounts the container's rootfs (overlay of the image's layers + its own upper dir) at
    /// `target` and returns it. Mounting again where it is already mounted is a no-op (rcri
    /// restarting mid-create).
    pub fn mount_rootfs(
        &self,
        image_id: &str,
        container_id: &str,
        target: &Path,
    ) -> Result<(), ImageError> {
        self.mount_rootfs_in_userns(image_id, container_id, target, None)
    }

    /// [`Self::mount_rootfs`] for a container in a user namespace: its layers are id-mapped
    /// with it (see idmap.rs).
    pub fn mount_rootfs_in_userns(
        &self,
        image_id: &str,
        container_id: &str,
        target: &Path,
        userns: Option<PodUserns<'_>>,
    ) -> Result<(), ImageError> {
        if !valid_container_id(container_id) {
            return Err(ImageError::InvalidContainerId(container_id.to_string()));
        }
        let img = self.get(image_id)?;
        let cdir = self.container_dir().join(container_id);
        let upper = cdir.join("upper");
        let work = cdir.join("work");
        for d in [&upper, &work] {
            fs::create_dir_all(d).map_err(io_err("create", d))?;
        }
        fs::set_permissions(&upper, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .map_err(io_err("chmod", &upper))?;
        // Recorded before mounting so that the image cannot be removed under a mount.
        atomic_write(&cdir.join("image"), img.id.as_bytes())
            .map_err(io_err("write", &cdir.join("image")))?;

        let mut lowers = Vec::new();
        for l in img.layers.iter().rev() {
            let p = self.snapshot_path(&l.diff_id)?;
            if !p.is_dir() {
                return Err(ImageError::NotFound(format!(
                    "snapshot of layer {} of image {}",
                    l.diff_id, img.id
                )));
            }
            lowers.push(p);
        }
        if lowers.is_empty() {
            // overlayfs needs a lower dir: an image without layers gets an empty one.
            let empty = self.snapshot_dir().join("empty");
            fs::create_dir_all(&empty).map_err(io_err("create", &empty))?;
            lowers.push(empty);
        }
        for p in lowers.iter().chain([&upper, &work]) {
            if p.to_string_lossy().contains([',', ':']) {
                return Err(ImageError::UnmountablePath(p.clone()));
            }
        }
        fs::create_dir_all(target).map_err(io_err("create", target))?;
        if is_mount_point(target) {
            return Ok(());
        }
        // Held until the overlay is mounted (or failed to), then detached.
        let idmapped = match userns {
            Some(ns) => Some(idmap::IdmappedLayers::attach(&cdir, &lowers, &upper, ns)?),
            None => None,
        };
        let lowers = match &idmapped {
            Some(l) => l.lowers.clone(),
            None => lowers,
        };
        let lowerdir = lowers
            .iter()
            .map(|p| p.to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join(":");
        let data = format!(
            "lowerdir={lowerdir},upperdir={},workdir={}",
            upper.display(),
            work.display()
        );
        // mount(2) copies at most a page of options.
        if data.len() >= 4096 {
            return Err(ImageError::TooManyLayers(img.id));
        }
        mount(
            Some("overlay"),
            target,
            Some("overlay"),
            MsFlags::empty(),
            Some(data.as_str()),
        )
        .map_err(|source| ImageError::Sys {
            what: "mount overlay on",
            path: target.to_path_buf(),
            source,
        })
    }

    /// Unmounts and removes a container's rootfs and upper dir; idempotent.
    pub fn remove_rootfs(&self, container_id: &str, target: &Path) -> Result<(), ImageError> {
        if !valid_container_id(container_id) {
            return Err(ImageError::InvalidContainerId(container_id.to_string()));
        }
        // Lazy: a process still holding a file open must not make removal fail; the overlay
        // goes away with its last user.
        loop {
            match umount2(target, MntFlags::MNT_DETACH) {
                Ok(()) => continue,
                Err(Errno::EINVAL) | Err(Errno::ENOENT) => break,
                Err(source) => {
                    return Err(ImageError::Sys {
                        what: "unmount",
                        path: target.to_path_buf(),
                        source,
                    })
                }
            }
        }
        let cdir = self.container_dir().join(container_id);
        idmap::detach_all(&cdir)?;
        match fs::remove_dir_all(&cdir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_err("remove", &cdir)(e)),
        }
    }

    /// Space used by images (blobs + snapshots) and by containers' writable layers.
    pub fn fs_usage(&self) -> Result<(FsUsage, FsUsage), ImageError> {
        let mut seen = HashSet::new();
        let mut images = FsUsage::default();
        for d in [
            self.root.join("blobs"),
            self.snapshot_dir(),
            self.image_dir(),
        ] {
            du(&d, &mut seen, &mut images);
        }
        let mut containers = FsUsage::default();
        du(&self.container_dir(), &mut seen, &mut containers);
        Ok((images, containers))
    }
}

/// An image record (untagged) from its config's run settings.
fn image_from_config(
    id: String,
    rc: oci::RunConfig,
    manifest_digest: String,
    layers: Vec<Layer>,
    size: u64,
) -> Image {
    Image {
        id,
        repo_tags: Vec::new(),
        repo_digests: Vec::new(),
        size,
        config: ImageConfig {
            entrypoint: rc.entrypoint.unwrap_or_default(),
            cmd: rc.cmd.unwrap_or_default(),
            env: rc.env.unwrap_or_default(),
            working_dir: rc.working_dir.unwrap_or_default(),
            user: rc.user.unwrap_or_default(),
            stop_signal: rc.stop_signal.unwrap_or_default(),
            labels: rc.labels.unwrap_or_default(),
            exposed_ports: rc.exposed_ports.unwrap_or_default().into_keys().collect(),
            volumes: rc.volumes.unwrap_or_default().into_keys().collect(),
        },
        manifest_digest,
        layers,
    }
}

/// Finds an image id by: full id (with or without `sha256:`), tag or digest reference
/// (normalized), manifest digest, then a unique id prefix (what `crictl rmi 3f57` does).
fn find(map: &BTreeMap<String, Image>, reference: &str) -> Option<String> {
    if reference.is_empty() {
        return None;
    }
    let as_id = if reference::is_hex64(reference) {
        format!("sha256:{reference}")
    } else {
        reference.to_string()
    };
    if map.contains_key(&as_id) {
        return Some(as_id);
    }
    if reference.starts_with("sha256:") {
        if let Some(i) = map.values().find(|i| i.manifest_digest == reference) {
            return Some(i.id.clone());
        }
    }
    if let Ok(r) = normalize(reference) {
        if let Some(d) = r.digested() {
            if let Some(i) = map.values().find(|i| i.repo_digests.contains(&d)) {
                return Some(i.id.clone());
            }
            // name@digest where the digest is the manifest's under another name.
            if let Some(i) = map
                .values()
                .find(|i| Some(&i.manifest_digest) == r.digest.as_ref())
            {
                return Some(i.id.clone());
            }
        } else if let Some(t) = r.tagged() {
            if let Some(i) = map.values().find(|i| i.repo_tags.contains(&t)) {
                return Some(i.id.clone());
            }
        }
    }
    let prefix = reference.strip_prefix("sha256:").unwrap_or(reference);
    if prefix.len() >= 4 && prefix.chars().all(|c| c.is_ascii_hexdigit()) {
        let hits: BTreeSet<&String> = map
            .keys()
            .filter(|id| {
                id.strip_prefix("sha256:")
                    .is_some_and(|h| h.starts_with(prefix))
            })
            .collect();
        if hits.len() == 1 {
            return hits.into_iter().next().cloned();
        }
    }
    None
}

/// A source of blobs: an OCI image layout on disk.
struct LayoutSource<'a> {
    root: &'a Path,
}

impl LayoutSource<'_> {
    fn blob(&self, digest: &str) -> Result<PathBuf> {
        Ok(self
            .root
            .join("blobs")
            .join("sha256")
            .join(digest_hex(digest)?))
    }
}

fn remove_temp_entries(dir: &Path) {
    let Ok(rd) = fs::read_dir(dir) else { return };
    for e in rd.flatten() {
        if e.file_name().to_string_lossy().starts_with(".tmp-") {
            let p = e.path();
            let _ = if p.is_dir() {
                fs::remove_dir_all(&p)
            } else {
                fs::remove_file(&p)
            };
        }
    }
}

/// Flushes what was written under `dir` (and the rest of its file system: syncfs(2) covers the
/// whole file system in one call, cheaper than an fsync per unpacked file).
fn sync_tree(dir: &Path) -> io::Result<()> {
    let f = File::open(dir)?;
    nix::unistd::syncfs(&f).map_err(io::Error::from)
}

fn is_mount_point(p: &Path) -> bool {
    // A mount point has another device than its parent, or is the same inode as the
    // parent's root (bind of a dir onto itself): compare with the parent via mountinfo.
    let Ok(canon) = fs::canonicalize(p) else {
        return false;
    };
    let Ok(info) = fs::read_to_string("/proc/self/mountinfo") else {
        return false;
    };
    let want = canon.to_string_lossy().replace(' ', "\\040");
    info.lines()
        .any(|l| l.split(' ').nth(4).is_some_and(|m| m == want))
}

fn du(dir: &Path, seen: &mut HashSet<(u64, u64)>, acc: &mut FsUsage) {
    let Ok(rd) = fs::read_dir(dir) else { return };
    for e in rd.flatten() {
        let Ok(m) = e.metadata() else { continue };
        if seen.insert((m.dev(), m.ino())) {
            acc.inodes += 1;
            acc.bytes += m.blocks() * 512;
        }
        if m.is_dir() {
            du(&e.path(), seen, acc);
        }
    }
}

#[cfg(test)]
mod tests;
