//! What `rcrictl run` keeps on disk about each pod, so that `get` and `delete` (other
//! processes) can see and stop it:
//!
//! ```text
//! <root-dir>/pods/<namespace>_<name>/
//!     pod.json          the defaulted manifest
//!     status.json       the v1 PodStatus, replaced atomically at every change
//!     runtime.json      what only this tool knows: sandbox id, deletion time and grace
//!     owner.lock        flock(LOCK_EX) held by the `rcrictl run` driving the pod
//!     delete-requested  written by `rcrictl delete` for the owner (contents: grace seconds)
//!     volumes/ logs/    the pod's volumes and sandbox log directory
//! ```
use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use super::manifest::Pod;
use super::status::PodStatus;

pub const POD_FILE: &str = "pod.json";
pub const STATUS_FILE: &str = "status.json";
pub const RUNTIME_FILE: &str = "runtime.json";
pub const LOCK_FILE: &str = "owner.lock";
pub const DELETE_FILE: &str = "delete-requested";

/// Facts about a pod's run that the v1 objects have no place for.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct RuntimeInfo {
    #[serde(skip_serializing_if = "String::is_empty")]
    pub sandbox_id: String,
    /// RFC 3339, set when graceful deletion starts (kubectl then prints Terminating).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deletion_timestamp: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deletion_grace_period_seconds: Option<i64>,
}

/// The `pods/` directory under `--root-dir`.
#[derive(Debug, Clone)]
pub struct Records {
    dir: PathBuf,
}

/// One pod's record as read from disk.
#[derive(Debug, Clone)]
pub struct Record {
    pub dir: PathBuf,
    pub pod: Pod,
    pub status: PodStatus,
    pub runtime: RuntimeInfo,
}

impl Records {
    pub fn new(root_dir: &Path) -> Records {
        Records {
            dir: root_dir.join("pods"),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn pod_dir(&self, namespace: &str, name: &str) -> PathBuf {
        self.dir.join(format!("{namespace}_{name}"))
    }

    /// Every readable record; a directory without a readable pod.json (half created, or not
    /// ours) is skipped.
    pub fn list(&self) -> Result<Vec<Record>> {
        let entries = match fs::read_dir(&self.dir) {
            Ok(e) => e,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e).with_context(|| format!("cannot read {}", self.dir.display())),
        };
        let mut out = Vec::new();
        for entry in entries {
            let entry = entry.with_context(|| format!("cannot read {}", self.dir.display()))?;
            // Dot names are records being removed (see `remove_dir`).
            if entry.file_name().as_encoded_bytes().starts_with(b".") {
                continue;
            }
            if let Ok(Some(r)) = read_record(&entry.path()) {
                out.push(r);
            }
        }
        out.sort_by(|a, b| {
            (&a.pod.metadata.namespace, &a.pod.metadata.name)
                .cmp(&(&b.pod.metadata.namespace, &b.pod.metadata.name))
        });
        Ok(out)
    }

    pub fn load(&self, namespace: &str, name: &str) -> Result<Option<Record>> {
        read_record(&self.pod_dir(namespace, name))
    }

    /// The records hold secret volumes (files of mode 0644 by default, as in Kubernetes): only
    /// root may enter them, like kubelet's pods directory. The runtime opens volume sources as
    /// root (also the id-mapped ones of user-namespaced pods), so containers are unaffected.
    fn make_private(&self) -> Result<()> {
        use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.dir)
            .with_context(|| format!("cannot create {}", self.dir.display()))?;
        // A directory made by an older rcrictl (or by hand) is tightened too.
        fs::set_permissions(&self.dir, fs::Permissions::from_mode(0o700))
            .with_context(|| format!("cannot make {} private (chmod 0700)", self.dir.display()))
    }

    /// Creates (or takes over) the record of `pod` and locks it. A record whose owner is alive
    /// is an error; a stale one (its owner gone) is returned in `previous` for the caller to
    /// clean up what it may have left in the runtime, then replaced.
    pub fn create(&self, pod: &Pod) -> Result<(OwnedRecord, Option<Record>)> {
        let ns = &pod.metadata.namespace;
        let name = &pod.metadata.name;
        let dir = self.pod_dir(ns, name);
        self.make_private()?;
        fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let lock = match OwnerLock::try_acquire(&dir)? {
            Some(l) => l,
            None => bail!(
                "pod {ns}/{name} is already run by another rcrictl (its record {} is locked)",
                dir.display()
            ),
        };
        let previous = read_record(&dir).ok().flatten();
        for stale in [STATUS_FILE, RUNTIME_FILE, DELETE_FILE] {
            remove_file_if_exists(&dir.join(stale))?;
        }
        let owned = OwnedRecord { dir, _lock: lock };
        owned.write_pod(pod)?;
        owned.write_status(&PodStatus::default())?;
        owned.write_runtime(&RuntimeInfo::default())?;
        Ok((owned, previous))
    }
}

fn read_json<T: serde::de::DeserializeOwned + Default>(path: &Path) -> Result<T> {
    match fs::read(path) {
        Ok(b) => {
            serde_json::from_slice(&b).with_context(|| format!("cannot parse {}", path.display()))
        }
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(T::default()),
        Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
}

/// The record in `dir`, None when there is none (no pod.json).
pub fn read_record(dir: &Path) -> Result<Option<Record>> {
    let pod_path = dir.join(POD_FILE);
    let bytes = match fs::read(&pod_path) {
        Ok(b) => b,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", pod_path.display())),
    };
    let pod: Pod = serde_json::from_slice(&bytes)
        .with_context(|| format!("cannot parse {}", pod_path.display()))?;
    Ok(Some(Record {
        dir: dir.to_path_buf(),
        pod,
        status: read_json(&dir.join(STATUS_FILE))?,
        runtime: read_json(&dir.join(RUNTIME_FILE))?,
    }))
}

/// A record this process owns: the lock is held until drop.
#[derive(Debug)]
pub struct OwnedRecord {
    dir: PathBuf,
    _lock: OwnerLock,
}

impl OwnedRecord {
    pub fn dir(&self) -> &Path {
        &self.dir
    }
    pub fn volumes_parent(&self) -> &Path {
        &self.dir
    }
    pub fn log_dir(&self) -> PathBuf {
        self.dir.join("logs")
    }
    pub fn write_pod(&self, pod: &Pod) -> Result<()> {
        write_atomic(&self.dir.join(POD_FILE), &serde_json::to_vec_pretty(pod)?)
    }
    pub fn write_status(&self, status: &PodStatus) -> Result<()> {
        write_atomic(
            &self.dir.join(STATUS_FILE),
            &serde_json::to_vec_pretty(status)?,
        )
    }
    pub fn write_runtime(&self, info: &RuntimeInfo) -> Result<()> {
        write_atomic(
            &self.dir.join(RUNTIME_FILE),
            &serde_json::to_vec_pretty(info)?,
        )
    }
    /// The grace period `rcrictl delete` asked for (outer Some: a request is there).
    pub fn delete_requested(&self) -> Option<Option<i64>> {
        read_delete_request(&self.dir)
    }
    /// Removes the whole record; the lock goes with it.
    pub fn remove(self) -> Result<()> {
        remove_dir(&self.dir)
    }
}

/// Removes a record: first renamed to a dot name beside it, atomically, so that a concurrent
/// `rcrictl delete` or `get` sees the pod gone at once and nothing it writes (a delete request)
/// can land in a directory being emptied — which made the removal fail with "Directory not
/// empty" while `delete` polled.
pub fn remove_dir(dir: &Path) -> Result<()> {
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let grave = dir.with_file_name(format!(".{name}.removed-{}", std::process::id()));
    match fs::rename(dir, &grave) {
        Ok(()) => {}
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e).with_context(|| format!("cannot remove {}", dir.display())),
    }
    match fs::remove_dir_all(&grave) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).with_context(|| format!("cannot remove {}", grave.display())),
    }
}

fn remove_file_if_exists(path: &Path) -> Result<()> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).with_context(|| format!("cannot remove {}", path.display())),
    }
}

/// Asks the owner of the record in `dir` to delete its pod.
pub fn request_delete(dir: &Path, grace: Option<i64>) -> Result<()> {
    let text = grace.map(|g| g.to_string()).unwrap_or_default();
    write_atomic(&dir.join(DELETE_FILE), text.as_bytes())
}

pub fn read_delete_request(dir: &Path) -> Option<Option<i64>> {
    let text = fs::read_to_string(dir.join(DELETE_FILE)).ok()?;
    Some(text.trim().parse().ok())
}

/// Whether a `rcrictl run` holds the lock of the record in `dir`.
pub fn owner_alive(dir: &Path) -> Result<bool> {
    let path = dir.join(LOCK_FILE);
    // Opened, never created: a lock file made here while the owner removes the record would
    // be left behind in it. No lock file, no owner.
    let file = match File::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(e).with_context(|| format!("cannot open {}", path.display())),
    };
    // A shared lock only probes: it conflicts with the owner's exclusive one and is released
    // when `file` closes.
    // SAFETY: flock on a file descriptor we own.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_SH | libc::LOCK_NB) };
    if rc == 0 {
        return Ok(false);
    }
    let err = std::io::Error::last_os_error();
    if err.raw_os_error() == Some(libc::EWOULDBLOCK) {
        return Ok(true);
    }
    Err(err).with_context(|| format!("cannot lock {}", path.display()))
}

/// Writes to a temporary file next to `path`, syncs and renames it over `path`: a reader sees
/// the old contents or the new, never a torn file.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(".{file_name}.{}.tmp", std::process::id()));
    let write = || -> std::io::Result<()> {
        let mut f = File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        fs::rename(&tmp, path)
    };
    write()
        .inspect_err(|_| {
            let _ = fs::remove_file(&tmp);
        })
        .with_context(|| format!("cannot write {}", path.display()))
}

/// An exclusive flock on `<record>/owner.lock`, released when the file is closed (on drop, or
/// by the kernel when the owner dies — which is what makes it a liveness test).
#[derive(Debug)]
pub struct OwnerLock {
    _file: File,
}

impl OwnerLock {
    /// The lock, or None when another process holds it.
    pub fn try_acquire(dir: &Path) -> Result<Option<OwnerLock>> {
        let path = dir.join(LOCK_FILE);
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .with_context(|| format!("cannot open {}", path.display()))?;
        // SAFETY: flock on a file descriptor we own.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc == 0 {
            return Ok(Some(OwnerLock { _file: file }));
        }
        let err = std::io::Error::last_os_error();
        if err.raw_os_error() == Some(libc::EWOULDBLOCK) {
            return Ok(None);
        }
        Err(err).with_context(|| format!("cannot lock {}", path.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kubelet::status::PodStatus;

    fn temp_root(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "rcri-records-{tag}-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = fs::remove_dir_all(&dir);
        dir
    }

    fn pod(ns: &str, name: &str) -> Pod {
        let mut p = Pod::default();
        p.metadata.namespace = ns.into();
        p.metadata.name = name.into();
        p.metadata.uid = "u-1".into();
        p
    }

    #[test]
    fn create_lock_list_remove() {
        let root = temp_root("basic");
        let records = Records::new(&root);
        assert!(records.list().unwrap().is_empty());
        let (owned, previous) = records.create(&pod("default", "web")).unwrap();
        assert!(previous.is_none());
        assert_eq!(owned.dir(), root.join("pods/default_web"));
        assert!(owner_alive(owned.dir()).unwrap());
        // A second owner is refused while the first holds the lock.
        let err = records.create(&pod("default", "web")).unwrap_err();
        assert!(err.to_string().contains("already run"), "{err}");

        let st = PodStatus {
            phase: "Running".into(),
            ..Default::default()
        };
        owned.write_status(&st).unwrap();
        let list = records.list().unwrap();
        assert_eq!(list.len(), 1);
        assert_eq!(list[0].pod.metadata.name, "web");
        assert_eq!(list[0].status.phase, "Running");

        assert_eq!(owned.delete_requested(), None);
        request_delete(owned.dir(), Some(3)).unwrap();
        assert_eq!(owned.delete_requested(), Some(Some(3)));
        request_delete(owned.dir(), None).unwrap();
        assert_eq!(owned.delete_requested(), Some(None));

        let dir = owned.dir().to_path_buf();
        owned.remove().unwrap();
        assert!(!dir.exists());
        assert!(records.load("default", "web").unwrap().is_none());
        fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn stale_record_is_taken_over_once_its_owner_is_gone() {
        let root = temp_root("stale");
        let records = Records::new(&root);
        let (owned, _) = records.create(&pod("ns1", "a")).unwrap();
        let info = RuntimeInfo {
            sandbox_id: "sb1".into(),
            ..Default::default()
        };
        owned.write_runtime(&info).unwrap();
        request_delete(owned.dir(), None).unwrap();
        drop(owned);
        assert!(!owner_alive(&records.pod_dir("ns1", "a")).unwrap());
        let (owned, previous) = records.create(&pod("ns1", "a")).unwrap();
        assert_eq!(previous.unwrap().runtime.sandbox_id, "sb1");
        // The old deletion request must not kill the new run.
        assert_eq!(owned.delete_requested(), None);
        drop(owned);
        fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn atomic_write_replaces_and_leaves_no_temp_file() {
        let root = temp_root("atomic");
        fs::create_dir_all(&root).unwrap();
        let p = root.join("f.json");
        write_atomic(&p, b"one").unwrap();
        write_atomic(&p, b"two").unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"two");
        assert_eq!(fs::read_dir(&root).unwrap().count(), 1);
        let err = write_atomic(&root.join("missing/f"), b"x").unwrap_err();
        assert!(format!("{err:#}").contains("missing/f"), "{err:#}");
        fs::remove_dir_all(&root).unwrap();
    }
}
