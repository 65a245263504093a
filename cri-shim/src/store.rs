//! The metadata store: one JSON file per sandbox and per container under
//! `<root>/{sandboxes,containers}/<id>.json`, each replaced atomically (write a temp file, fsync,
//! rename, fsync the directory), so a crash at any instant leaves either the old or the new record.
//! The files are read back into memory at start; afterwards memory is the truth for readers and
//! every change is written through before the caller sees it succeed.

use std::collections::HashMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use k8s_cri::v1::{ContainerConfig, PodSandboxConfig};
use serde::{de::DeserializeOwned, Deserialize, Serialize};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("failed to {action} {path}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("failed to encode record {id}")]
    Encode {
        id: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("name {name:?} is reserved for {id}")]
    NameInUse { name: String, id: String },
    #[error("{kind} id {prefix:?} is ambiguous")]
    Ambiguous { kind: &'static str, prefix: String },
}

/// Where a sandbox is in its life. `Creating` is persisted before any side effect of
/// RunPodSandbox, so a crash half-way is recognised at the next start and undone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SandboxState {
    Creating,
    Ready,
    NotReady,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SandboxRecord {
    pub id: String,
    /// The unique name kubelet's metadata makes: `<name>_<namespace>_<uid>_<attempt>`.
    pub name: String,
    pub config: PodSandboxConfig,
    pub runtime_handler: String,
    pub created_at: i64,
    pub state: SandboxState,
    /// The pinned network namespace; None for host-network pods.
    pub netns: Option<PathBuf>,
    /// Whether CNI ADD succeeded (so DEL is owed).
    pub cni_attached: bool,
    pub ips: Vec<String>,
    /// The infra (`rcri pause`) process, 0 when not running.
    pub infra_pid: i32,
    /// The sandbox's directory under the state dir: infra bundle, hostname/hosts/resolv.conf.
    pub dir: PathBuf,
}

/// A container's state as CRI knows it, plus `Creating` for crash recovery.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ContainerState {
    Creating,
    Created,
    Running,
    Exited,
    Unknown,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ContainerRecord {
    pub id: String,
    pub sandbox_id: String,
    /// `<name>_<pod name>_<pod namespace>_<pod uid>_<attempt>`.
    pub name: String,
    pub config: ContainerConfig,
    /// The image's id (sha256:...) or, for the fallback rootfs, the reference as given.
    pub image_id: String,
    /// The image reference as the user gave it.
    pub image_ref: String,
    /// Whether the rootfs came from the image store (else it is a plain copy in the bundle).
    pub image_rootfs: bool,
    /// The bundle dir (config.json, rootfs/, exit file, monitor files).
    pub bundle: PathBuf,
    /// Absolute CRI log path, None when the pod has no log directory.
    pub log_path: Option<PathBuf>,
    pub state: ContainerState,
    pub created_at: i64,
    pub started_at: i64,
    pub finished_at: i64,
    pub exit_code: i32,
    pub reason: String,
    pub message: String,
    pub pid: i32,
    pub monitor_pid: i32,
}

#[derive(Default)]
struct Inner {
    sandboxes: HashMap<String, SandboxRecord>,
    containers: HashMap<String, ContainerRecord>,
    sandbox_names: HashMap<String, String>,
    container_names: HashMap<String, String>,
}

pub struct Store {
    dir: PathBuf,
    inner: Mutex<Inner>,
}

const SANDBOXES: &str = "sandboxes";
const CONTAINERS: &str = "containers";

impl Store {
    /// Opens (creating if needed) the store under `dir` and loads every record. A record that
    /// cannot be parsed is moved aside as `<file>.corrupt` and logged rather than stopping the
    /// daemon: one bad file must not take down every other pod on the node.
    pub fn open(dir: &Path) -> Result<Store, StoreError> {
        let mut inner = Inner::default();
        for kind in [SANDBOXES, CONTAINERS] {
            let sub = dir.join(kind);
            fs::create_dir_all(&sub).map_err(|source| io("create", &sub, source))?;
        }
        for record in load_dir::<SandboxRecord>(&dir.join(SANDBOXES))? {
            inner
                .sandbox_names
                .insert(record.name.clone(), record.id.clone());
            inner.sandboxes.insert(record.id.clone(), record);
        }
        for record in load_dir::<ContainerRecord>(&dir.join(CONTAINERS))? {
            inner
                .container_names
                .insert(record.name.clone(), record.id.clone());
            inner.containers.insert(record.id.clone(), record);
        }
        Ok(Store {
            dir: dir.to_path_buf(),
            inner: Mutex::new(inner),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave the maps half-updated (each update is a
        // single insert/remove), so a poisoned lock is still consistent.
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Reserves the sandbox's name and persists its first record, atomically with respect to
    /// other callers: of two RunPodSandbox calls with the same metadata exactly one wins.
    pub fn insert_sandbox(&self, record: SandboxRecord) -> Result<(), StoreError> {
        let mut inner = self.lock();
        if let Some(id) = inner.sandbox_names.get(&record.name) {
            return Err(StoreError::NameInUse {
                name: record.name.clone(),
                id: id.clone(),
            });
        }
        write_record(&self.dir.join(SANDBOXES), &record.id, &record)?;
        inner
            .sandbox_names
            .insert(record.name.clone(), record.id.clone());
        inner.sandboxes.insert(record.id.clone(), record);
        Ok(())
    }

    /// Replaces an existing sandbox record (its name stays reserved).
    pub fn update_sandbox(&self, record: &SandboxRecord) -> Result<(), StoreError> {
        let mut inner = self.lock();
        write_record(&self.dir.join(SANDBOXES), &record.id, record)?;
        inner.sandboxes.insert(record.id.clone(), record.clone());
        Ok(())
    }

    pub fn remove_sandbox(&self, id: &str) -> Result<(), StoreError> {
        let mut inner = self.lock();
        remove_record(&self.dir.join(SANDBOXES), id)?;
        if let Some(record) = inner.sandboxes.remove(id) {
            inner.sandbox_names.remove(&record.name);
        }
        Ok(())
    }

    pub fn sandbox(&self, id: &str) -> Option<SandboxRecord> {
        self.lock().sandboxes.get(id).cloned()
    }

    pub fn sandboxes(&self) -> Vec<SandboxRecord> {
        self.lock().sandboxes.values().cloned().collect()
    }

    pub fn insert_container(&self, record: ContainerRecord) -> Result<(), StoreError> {
        let mut inner = self.lock();
        if let Some(id) = inner.container_names.get(&record.name) {
            return Err(StoreError::NameInUse {
                name: record.name.clone(),
                id: id.clone(),
            });
        }
        write_record(&self.dir.join(CONTAINERS), &record.id, &record)?;
        inner
            .container_names
            .insert(record.name.clone(), record.id.clone());
        inner.containers.insert(record.id.clone(), record);
        Ok(())
    }

    pub fn update_container(&self, record: &ContainerRecord) -> Result<(), StoreError> {
        let mut inner = self.lock();
        write_record(&self.dir.join(CONTAINERS), &record.id, record)?;
        inner.containers.insert(record.id.clone(), record.clone());
        Ok(())
    }

    pub fn remove_container(&self, id: &str) -> Result<(), StoreError> {
        let mut inner = self.lock();
        remove_record(&self.dir.join(CONTAINERS), id)?;
        if let Some(record) = inner.containers.remove(id) {
            inner.container_names.remove(&record.name);
        }
        Ok(())
    }

    pub fn container(&self, id: &str) -> Option<ContainerRecord> {
        self.lock().containers.get(id).cloned()
    }

    pub fn containers(&self) -> Vec<ContainerRecord> {
        self.lock().containers.values().cloned().collect()
    }

    pub fn containers_of(&self, sandbox_id: &str) -> Vec<ContainerRecord> {
        self.lock()
            .containers
            .values()
            .filter(|c| c.sandbox_id == sandbox_id)
            .cloned()
            .collect()
    }

    /// The full id of the sandbox whose id is `prefix` or starts with it (crictl and people pass
    /// truncated ids); None when nothing matches.
    pub fn resolve_sandbox(&self, prefix: &str) -> Result<Option<String>, StoreError> {
        let inner = self.lock();
        resolve(inner.sandboxes.keys(), prefix, "sandbox")
    }

    pub fn resolve_container(&self, prefix: &str) -> Result<Option<String>, StoreError> {
        let inner = self.lock();
        resolve(inner.containers.keys(), prefix, "container")
    }
}

fn resolve<'a>(
    ids: impl Iterator<Item = &'a String>,
    prefix: &str,
    kind: &'static str,
) -> Result<Option<String>, StoreError> {
    if prefix.is_empty() {
        return Ok(None);
    }
    let mut found: Option<&String> = None;
    for id in ids {
        if id == prefix {
            return Ok(Some(id.clone()));
        }
        if id.starts_with(prefix) {
            if found.is_some() {
                return Err(StoreError::Ambiguous {
                    kind,
                    prefix: prefix.to_string(),
                });
            }
            found = Some(id);
        }
    }
    Ok(found.cloned())
}

fn io(action: &'static str, path: &Path, source: std::io::Error) -> StoreError {
    StoreError::Io {
        action,
        path: path.to_path_buf(),
        source,
    }
}

fn load_dir<T: DeserializeOwned>(dir: &Path) -> Result<Vec<T>, StoreError> {
    let mut records = Vec::new();
    let entries = fs::read_dir(dir).map_err(|source| io("read", dir, source))?;
    for entry in entries {
        let entry = entry.map_err(|source| io("read", dir, source))?;
        let path = entry.path();
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.ends_with(".tmp") {
            // A write interrupted before its rename: the old record (if any) is still intact.
            let _ = fs::remove_file(&path);
            continue;
        }
        if !name.ends_with(".json") {
            continue;
        }
        let parsed = fs::read(&path)
            .map_err(|e| e.to_string())
            .and_then(|bytes| serde_json::from_slice::<T>(&bytes).map_err(|e| e.to_string()));
        match parsed {
            Ok(record) => records.push(record),
            Err(e) => {
                tracing::error!(path = %path.display(), error = %e, "unreadable record moved aside");
                let _ = fs::rename(&path, path.with_extension("json.corrupt"));
            }
        }
    }
    Ok(records)
}

/// Write-temp-fsync-rename-fsync(dir): after a crash the file is either the old or the new
/// record, never a torn one, and the rename itself is durable.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
    let dir = path.parent().unwrap_or(Path::new("/"));
    let mut tmp_name = path.file_name().unwrap_or_default().to_os_string();
    tmp_name.push(".tmp");
    let tmp = dir.join(tmp_name);
    let mut file = fs::File::create(&tmp).map_err(|source| io("create", &tmp, source))?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .map_err(|source| io("write", &tmp, source))?;
    drop(file);
    fs::rename(&tmp, path).map_err(|source| io("rename into place", path, source))?;
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|source| io("sync", dir, source))
}

fn write_record<T: Serialize>(dir: &Path, id: &str, record: &T) -> Result<(), StoreError> {
    let bytes = serde_json::to_vec(record).map_err(|source| StoreError::Encode {
        id: id.to_string(),
        source,
    })?;
    write_atomic(&dir.join(format!("{id}.json")), &bytes)
}

fn remove_record(dir: &Path, id: &str) -> Result<(), StoreError> {
    let path = dir.join(format!("{id}.json"));
    match fs::remove_file(&path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(source) => return Err(io("remove", &path, source)),
    }
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|source| io("sync", dir, source))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sandbox(id: &str, name: &str) -> SandboxRecord {
        SandboxRecord {
            id: id.to_string(),
            name: name.to_string(),
            config: PodSandboxConfig::default(),
            runtime_handler: String::new(),
            created_at: 1,
            state: SandboxState::Ready,
            netns: None,
            cni_attached: false,
            ips: vec![],
            infra_pid: 0,
            dir: PathBuf::from("/nonexistent"),
        }
    }

    fn temp() -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "rcri-store-test-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0)
        ));
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn records_survive_a_reopen_and_names_stay_reserved() {
        let dir = temp();
        let store = Store::open(&dir).unwrap();
        store
            .insert_sandbox(sandbox("abc123", "pod_ns_uid_0"))
            .unwrap();
        assert!(matches!(
            store.insert_sandbox(sandbox("def456", "pod_ns_uid_0")),
            Err(StoreError::NameInUse { .. })
        ));
        drop(store);
        // A torn temp file and a corrupt record must not stop the reopen.
        fs::write(dir.join("sandboxes/zzz.json.tmp"), b"{").unwrap();
        fs::write(dir.join("sandboxes/bad.json"), b"{").unwrap();
        let store = Store::open(&dir).unwrap();
        assert_eq!(store.sandboxes().len(), 1);
        assert!(store.insert_sandbox(sandbox("x", "pod_ns_uid_0")).is_err());
        assert_eq!(
            store.resolve_sandbox("abc").unwrap().as_deref(),
            Some("abc123")
        );
        store.remove_sandbox("abc123").unwrap();
        store.remove_sandbox("abc123").unwrap();
        store.insert_sandbox(sandbox("x", "pod_ns_uid_0")).unwrap();
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn ambiguous_prefixes_are_refused() {
        let dir = temp();
        let store = Store::open(&dir).unwrap();
        store.insert_sandbox(sandbox("ab1", "a")).unwrap();
        store.insert_sandbox(sandbox("ab2", "b")).unwrap();
        assert!(store.resolve_sandbox("ab").is_err());
        assert_eq!(
            store.resolve_sandbox("ab2").unwrap().as_deref(),
            Some("ab2")
        );
        assert_eq!(store.resolve_sandbox("zz").unwrap(), None);
        fs::remove_dir_all(&dir).unwrap();
    }
}
