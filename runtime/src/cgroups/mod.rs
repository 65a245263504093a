//! The container's cgroup: placement on v1 and v2 hosts, v1 device rules.
//!
//! The host is probed from /proc/self/mountinfo: if any v1 hierarchy is mounted the container
//! gets a directory in every v1 hierarchy (including named ones such as `name=systemd`), and a
//! hybrid host's cgroup2 `unified` mount is left alone; on a pure cgroup2 host it gets one
//! directory in the unified hierarchy. Resource limits other than v1 device rules are not
//! implemented yet, and [`check_supported`] refuses configs that ask for them.
//!
//! Only the container's own directory (and whatever the container created below it) is ever
//! removed, and no other cgroup is ever written to: `enter` and `add_task` write only the
//! container's own `cgroup.procs`.
mod host;
mod v1;

use host::{Host, Target};
use nix::unistd::Pid;
use oci_spec::runtime::{LinuxDevice, LinuxResources};
use serde::{Deserialize, Serialize};
use std::borrow::Cow;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

pub use v1::default_allowed_devices;

/// How long `destroy` keeps retrying a cgroup that is still busy with exiting tasks.
const DESTROY_TIMEOUT: Duration = Duration::from_secs(1);

#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error("not implemented yet: {0}")]
    NotImplemented(String),
    #[error("failed to read {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("failed to write {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("failed to create cgroup {path}")]
    Create {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("failed to remove cgroup {path}")]
    Remove {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("failed to parse {path}: {reason} in line {line:?}")]
    Parse {
        path: PathBuf,
        line: String,
        reason: &'static str,
    },
    #[error("no usable cgroup hierarchy: {0}")]
    NoHierarchy(String),
    #[error(
        "own cgroup {cgroup} is not visible under {mount_point} (which shows {root}); \
         cannot nest the container below it"
    )]
    NotVisible {
        cgroup: PathBuf,
        mount_point: PathBuf,
        root: PathBuf,
    },
    #[error("invalid cgroups path {path:?}: {reason}")]
    InvalidPath { path: String, reason: &'static str },
    #[error("systemd cgroup paths are not supported: {0:?} (use a path such as /a/b or a/b)")]
    Systemd(String),
    #[error("{0} is not inside any mounted cgroup hierarchy")]
    UnknownDir(PathBuf),
    #[error("refusing to remove {0}: it is not a cgroup below a cgroup mount")]
    NotACgroup(PathBuf),
    #[error("invalid device rule {rule:?}: {reason}")]
    InvalidDeviceRule { rule: String, reason: &'static str },
    #[error(
        "linux.resources.devices has rules but the cgroup v1 devices controller is not \
         mounted, so they cannot be enforced"
    )]
    NoDevicesController,
}

/// What `state.json` keeps so that later commands find the container's cgroups again.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct CgroupPaths {
    /// Absolute directories, one per hierarchy the container was placed in.
    pub dirs: Vec<PathBuf>,
}

/// Which cgroup interface the container's cgroup uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum CgroupVersion {
    V1,
    V2,
}

/// Fails with a clear "not implemented yet" error for any resource this build cannot enforce.
///
/// Only `devices` is supported (on cgroup v1; see [`Cgroup::check_applicable`] for the
/// host-dependent part). A field counts as set when it holds any value: `"memory": {}` does
/// not ask for anything, `"memory": {"limit": 1048576}` does, and running without the limit
/// would be worse than refusing.
pub fn check_supported(resources: Option<&LinuxResources>) -> Result<(), CgroupError> {
    let Some(r) = resources else {
        return Ok(());
    };
    let fields = [
        ("memory limits (linux.resources.memory)", is_set(r.memory())),
        ("cpu limits (linux.resources.cpu)", is_set(r.cpu())),
        ("pids limits (linux.resources.pids)", is_set(r.pids())),
        (
            "block IO limits (linux.resources.blockIO)",
            is_set(r.block_io()),
        ),
        (
            "hugepage limits (linux.resources.hugepageLimits)",
            is_set(r.hugepage_limits()),
        ),
        (
            "network classes (linux.resources.network)",
            is_set(r.network()),
        ),
        ("RDMA limits (linux.resources.rdma)", is_set(r.rdma())),
        (
            "unified cgroup v2 settings (linux.resources.unified)",
            is_set(r.unified()),
        ),
    ];
    let unsupported: Vec<&str> = fields
        .iter()
        .filter(|(_, set)| *set)
        .map(|(name, _)| *name)
        .collect();
    if unsupported.is_empty() {
        Ok(())
    } else {
        Err(CgroupError::NotImplemented(unsupported.join(", ")))
    }
}

fn is_set<T: Serialize>(field: &Option<T>) -> bool {
    match field.as_ref().map(serde_json::to_value) {
        None => false,
        Some(Ok(serde_json::Value::Null)) => false,
        Some(Ok(serde_json::Value::Object(map))) => !map.is_empty(),
        Some(Ok(serde_json::Value::Array(items))) => !items.is_empty(),
        // A value that cannot even be serialized is certainly not an empty one.
        Some(_) => true,
    }
}

/// The container's directory in one hierarchy.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Placement {
    dir: PathBuf,
    mount_point: PathBuf,
    /// v1 controllers of the hierarchy; empty on v2.
    controllers: Vec<String>,
}

impl Placement {
    fn has(&self, controller: &str) -> bool {
        self.controllers.iter().any(|c| c == controller)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Layout {
    version: CgroupVersion,
    placements: Vec<Placement>,
}

/// A container's cgroup on this host.
#[derive(Debug, Clone)]
pub struct Cgroup {
    paths: CgroupPaths,
    /// Known after `resolve`; worked out again from the host's mounts for `from_paths`.
    layout: Option<Layout>,
}

impl Cgroup {
    /// Works out (without touching anything) where the container's cgroup lives:
    /// absolute `cgroups_path` under each hierarchy root; empty or relative under the
    /// cgroup rcrun itself runs in (empty means `<own>/<id>`).
    pub fn resolve(cgroups_path: Option<&str>, id: &str) -> Result<Self, CgroupError> {
        let target = host::target(cgroups_path, id)?;
        Cgroup::on_host(&Host::probe()?, &target)
    }

    fn on_host(host: &Host, target: &Target) -> Result<Self, CgroupError> {
        let dirs = host.dirs(target)?;
        let placements = host
            .hierarchies
            .iter()
            .zip(&dirs)
            .map(|(h, dir)| Placement {
                dir: dir.clone(),
                mount_point: h.mount_point.clone(),
                controllers: h.controllers.clone(),
            })
            .collect();
        Ok(Cgroup {
            paths: CgroupPaths { dirs },
            layout: Some(Layout {
                version: host.version,
                placements,
            }),
        })
    }

    /// Re-opens a container's cgroup from what state.json kept.
    pub fn from_paths(paths: CgroupPaths) -> Self {
        Cgroup {
            paths,
            layout: None,
        }
    }

    pub fn paths(&self) -> &CgroupPaths {
        &self.paths
    }

    /// Whether the container's cgroup is v1 or v2.
    pub fn version(&self) -> Result<CgroupVersion, CgroupError> {
        Ok(self.layout()?.version)
    }

    fn layout(&self) -> Result<Cow<'_, Layout>, CgroupError> {
        if let Some(layout) = &self.layout {
            return Ok(Cow::Borrowed(layout));
        }
        let host = Host::probe()?;
        let placements = self
            .paths
            .dirs
            .iter()
            .map(|dir| {
                let h = host
                    .hierarchy_of(dir)
                    .ok_or_else(|| CgroupError::UnknownDir(dir.clone()))?;
                Ok(Placement {
                    dir: dir.clone(),
                    mount_point: h.mount_point.clone(),
                    controllers: h.controllers.clone(),
                })
            })
            .collect::<Result<_, CgroupError>>()?;
        Ok(Cow::Owned(Layout {
            version: host.version,
            placements,
        }))
    }

    /// The host-dependent half of validation, for callers that want to fail before any side
    /// effect (`create` checks it again): device rules need the v1 devices controller, as
    /// the cgroup v2 eBPF device filter is not implemented yet.
    pub fn check_applicable(&self, resources: Option<&LinuxResources>) -> Result<(), CgroupError> {
        check_supported(resources)?;
        let rules = device_rules(resources);
        if rules.is_empty() {
            return Ok(());
        }
        let layout = self.layout()?;
        match layout.version {
            CgroupVersion::V2 => Err(CgroupError::NotImplemented(
                "device rules on cgroup v2 (eBPF), linux.resources.devices".to_string(),
            )),
            CgroupVersion::V1 if !layout.placements.iter().any(|p| p.has("devices")) => {
                Err(CgroupError::NoDevicesController)
            }
            CgroupVersion::V1 => v1::rule_writes(rules).map(|_| ()),
        }
    }

    /// Creates the directories (v1: cpuset.cpus/mems copied from the parent) and applies the
    /// resources this build supports (v1 devices). Idempotent.
    ///
    /// With device rules, the container's rules are written in order and then runc's default
    /// allow list ([`default_allowed_devices`]); the nodes from `linux.devices` need
    /// [`Cgroup::allow_devices`] as well. If anything fails, the directories this call made
    /// are removed again.
    pub fn create(&self, resources: Option<&LinuxResources>) -> Result<(), CgroupError> {
        self.check_applicable(resources)?;
        let layout = self.layout()?;
        let mut created = Vec::new();
        let result = create_placements(&layout, resources, &mut created);
        if result.is_err() {
            for dir in created.iter().rev() {
                // Best effort: the original error is the one worth reporting.
                let _ = std::fs::remove_dir(dir);
            }
        }
        result
    }

    /// Allows read, write and mknod of each device node from `linux.devices`, so the nodes
    /// rcrun creates in the container's /dev can be used under a deny-all rule (runc does the
    /// same). Call after `create`. A no-op where no device cgroup applies (no devices
    /// controller, or cgroup v2 where nothing is filtered yet).
    pub fn allow_devices(&self, devices: &[LinuxDevice]) -> Result<(), CgroupError> {
        if devices.is_empty() {
            return Ok(());
        }
        let layout = self.layout()?;
        if layout.version != CgroupVersion::V1 {
            return Ok(());
        }
        let rules: Vec<_> = devices.iter().map(v1::device_node_rule).collect();
        let writes = v1::rule_writes(&rules)?;
        for placement in layout.placements.iter().filter(|p| p.has("devices")) {
            v1::apply_rules(&placement.dir, &writes)?;
        }
        Ok(())
    }

    /// Moves the calling process into the cgroup (writes 0 to each cgroup.procs).
    /// Called in the forked child before it joins or creates any namespace.
    pub fn enter(&self) -> Result<(), CgroupError> {
        for dir in &self.paths.dirs {
            write_file(&dir.join("cgroup.procs"), "0")?;
        }
        Ok(())
    }

    /// Moves another process (and all its threads) into the cgroup, e.g. the container's
    /// init from the parent side.
    pub fn add_task(&self, pid: Pid) -> Result<(), CgroupError> {
        let pid = pid.as_raw().to_string();
        for dir in &self.paths.dirs {
            write_file(&dir.join("cgroup.procs"), &pid)?;
        }
        Ok(())
    }

    /// Every pid in the cgroup (for `kill --all`), as seen from the caller's pid namespace.
    /// Includes sub-cgroups the container made; an already removed cgroup has no pids.
    pub fn pids(&self) -> Result<Vec<Pid>, CgroupError> {
        let mut pids = Vec::new();
        for dir in &self.paths.dirs {
            for cgroup in subtree(dir)? {
                let path = cgroup.join("cgroup.procs");
                let text = match std::fs::read_to_string(&path) {
                    Ok(text) => text,
                    // Removed under us (a container deleting its own sub-cgroup).
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                    Err(source) => return Err(CgroupError::Read { path, source }),
                };
                for line in text.lines().filter(|l| !l.trim().is_empty()) {
                    let pid = line.trim().parse::<i32>().map_err(|_| CgroupError::Parse {
                        path: path.clone(),
                        line: line.to_string(),
                        reason: "not a pid",
                    })?;
                    pids.push(Pid::from_raw(pid));
                }
            }
        }
        pids.sort_unstable_by_key(|p| p.as_raw());
        pids.dedup();
        Ok(pids)
    }

    /// Removes the directories (deepest first), waiting briefly for dying tasks to leave.
    /// Missing directories are not an error.
    ///
    /// Only the recorded directories and the cgroups below them are removed; parents created
    /// by `create` for a multi-level cgroups path stay, as with runc. Every directory is
    /// attempted even if one fails; the first failure is returned.
    pub fn destroy(&self) -> Result<(), CgroupError> {
        let deadline = Instant::now() + DESTROY_TIMEOUT;
        let mut first_error = None;
        for dir in &self.paths.dirs {
            let result = ensure_removable(dir).and_then(|exists| {
                if exists {
                    remove_tree(dir, deadline)
                } else {
                    Ok(())
                }
            });
            if let Err(e) = result {
                first_error.get_or_insert(e);
            }
        }
        first_error.map_or(Ok(()), Err)
    }
}

fn device_rules(resources: Option<&LinuxResources>) -> &[oci_spec::runtime::LinuxDeviceCgroup] {
    resources
        .and_then(|r| r.devices().as_deref())
        .unwrap_or_default()
}

fn create_placements(
    layout: &Layout,
    resources: Option<&LinuxResources>,
    created: &mut Vec<PathBuf>,
) -> Result<(), CgroupError> {
    for placement in &layout.placements {
        let first_new = created.len();
        mkdir_levels(&placement.dir, &placement.mount_point, created)?;
        if layout.version == CgroupVersion::V1 && placement.has("cpuset") {
            // Top-down, so each new level can inherit from the one just filled above it.
            // The leaf is included even if it already existed: an interrupted earlier create
            // may have left it empty, and it is the container's own cgroup.
            let mut levels: Vec<PathBuf> = created[first_new..].to_vec();
            if !levels.contains(&placement.dir) {
                levels.push(placement.dir.clone());
            }
            for level in &levels {
                v1::inherit_cpuset(level, &placement.mount_point)?;
            }
        }
    }

    let rules = device_rules(resources);
    if !rules.is_empty() && layout.version == CgroupVersion::V1 {
        let mut writes = v1::rule_writes(rules)?;
        writes.extend(v1::rule_writes(&default_allowed_devices())?);
        for placement in layout.placements.iter().filter(|p| p.has("devices")) {
            v1::apply_rules(&placement.dir, &writes)?;
        }
    }
    Ok(())
}

/// `mkdir -p` below `mount_point`, recording each directory this call created, top-down.
fn mkdir_levels(
    dir: &Path,
    mount_point: &Path,
    created: &mut Vec<PathBuf>,
) -> Result<(), CgroupError> {
    let mut missing = Vec::new();
    let mut cursor = Some(dir);
    while let Some(level) = cursor.filter(|l| l.starts_with(mount_point) && *l != mount_point) {
        if level.exists() {
            break;
        }
        missing.push(level.to_path_buf());
        cursor = level.parent();
    }
    for level in missing.into_iter().rev() {
        match std::fs::DirBuilder::new().mode(0o755).create(&level) {
            Ok(()) => created.push(level),
            // Someone else (another rcrun creating a sibling) made it first: not ours.
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(source) => {
                return Err(CgroupError::Create {
                    path: level,
                    source,
                })
            }
        }
    }
    Ok(())
}

/// `dir` and every cgroup below it, parents before children. A missing `dir` yields nothing.
fn subtree(dir: &Path) -> Result<Vec<PathBuf>, CgroupError> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(current) = stack.pop() {
        let entries = match std::fs::read_dir(&current) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(source) => {
                return Err(CgroupError::Read {
                    path: current,
                    source,
                })
            }
        };
        for entry in entries {
            let entry = entry.map_err(|source| CgroupError::Read {
                path: current.clone(),
                source,
            })?;
            // Control files are regular files; only sub-cgroups are directories.
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                stack.push(entry.path());
            }
        }
        out.push(current);
    }
    out.sort_by_key(|p| p.components().count());
    Ok(out)
}

/// rmdir of `dir` and its sub-cgroups, deepest first. A v1 cgroup stays busy (EBUSY) for a
/// moment after its last task was killed, until the task has finished exiting.
fn remove_tree(dir: &Path, deadline: Instant) -> Result<(), CgroupError> {
    for cgroup in subtree(dir)?.iter().rev() {
        loop {
            match std::fs::remove_dir(cgroup) {
                Ok(()) => break,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => break,
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) && Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(10));
                }
                Err(source) => {
                    return Err(CgroupError::Remove {
                        path: cgroup.clone(),
                        source,
                    })
                }
            }
        }
    }
    Ok(())
}

/// Guards `destroy` against a damaged or hostile state.json: only a directory on a cgroup
/// filesystem that is not itself a mount point (a hierarchy root) may be removed.
/// Returns whether `dir` exists.
fn ensure_removable(dir: &Path) -> Result<bool, CgroupError> {
    let meta = match std::fs::symlink_metadata(dir) {
        Ok(meta) => meta,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(source) => {
            return Err(CgroupError::Read {
                path: dir.to_path_buf(),
                source,
            })
        }
    };
    let fs_type = nix::sys::statfs::statfs(dir)
        .map_err(|errno| CgroupError::Read {
            path: dir.to_path_buf(),
            source: errno.into(),
        })?
        .filesystem_type();
    let on_cgroupfs = fs_type == nix::sys::statfs::CGROUP_SUPER_MAGIC
        || fs_type == nix::sys::statfs::CGROUP2_SUPER_MAGIC;
    let parent_same_fs = dir
        .parent()
        .and_then(|p| std::fs::metadata(p).ok())
        .is_some_and(|p| p.dev() == meta.dev());
    if meta.is_dir() && on_cgroupfs && parent_same_fs {
        Ok(true)
    } else {
        Err(CgroupError::NotACgroup(dir.to_path_buf()))
    }
}

/// Reads a cgroup control file.
fn read_file(path: &Path) -> Result<String, CgroupError> {
    std::fs::read_to_string(path).map_err(|source| CgroupError::Read {
        path: path.to_path_buf(),
        source,
    })
}

/// Writes a value to an existing cgroup control file in one write(2): the kernel takes each
/// write as one complete value, so it must neither be split nor be created or truncated.
fn write_file(path: &Path, value: &str) -> Result<(), CgroupError> {
    let err = |source| CgroupError::Write {
        path: path.to_path_buf(),
        source,
    };
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(err)?;
    file.write_all(value.as_bytes()).map_err(err)
}

#[cfg(test)]
mod tests;
