//! The state directory `<root>/<id>/`: `state.json` written atomically, a lock per container,
//! and the OCI state document that `rcrun state` prints.
use crate::cgroups::CgroupPaths;
use nix::fcntl::{Flock, FlockArg};
use oci_spec::runtime::Spec;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::fs::File;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

pub const DEFAULT_ROOT: &str = "/run/rcrun";
const STATE_FILE: &str = "state.json";
pub const EXEC_FIFO: &str = "exec.fifo";
/// The longest id we accept: it becomes a directory name, and names are at most 255 bytes.
pub const MAX_ID_LEN: usize = 255;

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("invalid container id {0:?}: use 1-255 characters from [A-Za-z0-9_+.-], not \".\" or \"..\"")]
    InvalidId(String),
    #[error("container {0:?} already exists")]
    Exists(String),
    #[error("container {0:?} does not exist")]
    NotFound(String),
    #[error("failed to {action} {path}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("failed to lock {path}")]
    Lock {
        path: PathBuf,
        #[source]
        source: nix::Error,
    },
    #[error("corrupt state file {path}")]
    Corrupt {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
}

fn io(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> StateError {
    let path = path.to_path_buf();
    move |source| StateError::Io {
        action,
        path,
        source,
    }
}

/// Checks an id the way runc does, so it is always a single safe path component.
pub fn validate_id(id: &str) -> Result<(), StateError> {
    let ok = !id.is_empty()
        && id.len() <= MAX_ID_LEN
        && id != "."
        && id != ".."
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_+.-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(StateError::InvalidId(id.to_string()))
    }
}

/// What rcrun remembers about a container between commands.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Saved {
    pub id: String,
    /// The container's init as seen from the host; 0 until create finished.
    pub pid: i32,
    /// Start time of `pid` (field 22 of /proc/<pid>/stat), to tell it from a reused pid.
    pub pid_start: u64,
    pub bundle: PathBuf,
    pub rootfs: PathBuf,
    /// RFC 3339 with nanoseconds.
    pub created: String,
    pub owner: String,
    #[serde(default)]
    pub annotations: HashMap<String, String>,
    #[serde(default)]
    pub cgroup: CgroupPaths,
    /// Whether the container has its own pid namespace (kill/delete must then only
    /// signal pid 1; otherwise every process of its cgroup).
    pub private_pid_ns: bool,
    pub config: Spec,
}

/// One container's directory under the root, locked for as long as this value lives.
pub struct ContainerDir {
    pub id: String,
    pub path: PathBuf,
    _lock: Flock<File>,
}

impl ContainerDir {
    /// Creates `<root>/<id>/`; fails if it exists, so two creates of one id cannot both win.
    pub fn create(root: &Path, id: &str) -> Result<Self, StateError> {
        validate_id(id)?;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o711)
            .create(root)
            .map_err(io("create state root", root))?;
        let path = root.join(id);
        match std::fs::DirBuilder::new().mode(0o711).create(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                return Err(StateError::Exists(id.to_string()))
            }
            Err(e) => return Err(io("create state directory", &path)(e)),
        }
        Self::lock(id, path)
    }

    /// Opens and locks an existing container's directory.
    pub fn open(root: &Path, id: &str) -> Result<Self, StateError> {
        validate_id(id)?;
        let path = root.join(id);
        if !path.join(STATE_FILE).exists() {
            return Err(StateError::NotFound(id.to_string()));
        }
        Self::lock(id, path)
    }

    fn lock(id: &str, path: PathBuf) -> Result<Self, StateError> {
        let dir = File::open(&path).map_err(io("open state directory", &path))?;
        let lock =
            Flock::lock(dir, FlockArg::LockExclusive).map_err(|(_, source)| StateError::Lock {
                path: path.clone(),
                source,
            })?;
        Ok(ContainerDir {
            id: id.to_string(),
            path,
            _lock: lock,
        })
    }

    pub fn fifo_path(&self) -> PathBuf {
        self.path.join(EXEC_FIFO)
    }

    pub fn load(&self) -> Result<Saved, StateError> {
        load(&self.path)
    }

    /// Writes state.json by write-to-temp + rename, so a reader never sees half a file.
    pub fn save(&self, saved: &Saved) -> Result<(), StateError> {
        let tmp = self.path.join(".state.json.tmp");
        let path = self.path.join(STATE_FILE);
        let data = serde_json::to_vec(saved).map_err(|source| StateError::Corrupt {
            path: path.clone(),
            source,
        })?;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .custom_flags(libc::O_CLOEXEC)
            .open(&tmp)
            .map_err(io("write", &tmp))?;
        f.write_all(&data).map_err(io("write", &tmp))?;
        std::fs::rename(&tmp, &path).map_err(io("rename into place", &path))?;
        Ok(())
    }

    /// Removes the directory and everything in it.
    pub fn remove(self) -> Result<(), StateError> {
        std::fs::remove_dir_all(&self.path).map_err(io("remove state directory", &self.path))
    }
}

/// Reads a container's state without taking its lock (for `state` and `list`).
pub fn load(dir: &Path) -> Result<Saved, StateError> {
    let path = dir.join(STATE_FILE);
    let data = match std::fs::read(&path) {
        Ok(d) => d,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let id = dir
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            return Err(StateError::NotFound(id));
        }
        Err(e) => return Err(io("read", &path)(e)),
    };
    serde_json::from_slice(&data).map_err(|source| StateError::Corrupt { path, source })
}

/// The ids of every container under `root` (directories with a state file).
pub fn list_ids(root: &Path) -> Result<Vec<String>, StateError> {
    let entries = match std::fs::read_dir(root) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io("read state root", root)(e)),
    };
    let mut ids: Vec<String> = entries
        .filter_map(|e| e.ok())
        .filter(|e| e.path().join(STATE_FILE).exists())
        .filter_map(|e| e.file_name().into_string().ok())
        .collect();
    ids.sort();
    Ok(ids)
}

/// Lifecycle status as the runtime spec names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Creating,
    Created,
    Running,
    Paused,
    Stopped,
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Status::Creating => "creating",
            Status::Created => "created",
            Status::Running => "running",
            Status::Paused => "paused",
            Status::Stopped => "stopped",
        })
    }
}

/// The OCI state document (runtime.md "State"), plus the fields runc adds for `list`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OciState {
    pub oci_version: String,
    pub id: String,
    pub status: Status,
    pub pid: i32,
    pub bundle: PathBuf,
    pub rootfs: PathBuf,
    pub created: String,
    pub owner: String,
    #[serde(skip_serializing_if = "HashMap::is_empty", default)]
    pub annotations: HashMap<String, String>,
}
