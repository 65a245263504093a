//! The container's cgroup: placement on v1 and v2 hosts, `linux.resources` (v1 files, or v2
//! files with v1 values converted), freezing, signalling every member, and usage stats.
//!
//! The host is probed from /proc/self/mountinfo: if any v1 hierarchy is mounted the container
//! gets a directory in every v1 hierarchy (including named ones such as `name=systemd`), and a
//! hybrid host's cgroup2 `unified` mount is left alone; on a pure cgroup2 host it gets one
//! directory in the unified hierarchy. Device rules are the devices controller's lists on v1
//! and an eBPF program attached to the cgroup on v2.
//!
//! Only the container's own directory (and whatever the container created below it) is ever
//! removed, and no other cgroup is ever written to: `enter` and `add_task` write only the
//! container's own `cgroup.procs` (or, for `enter` on v1, its `tasks`).
mod devices_v2;
mod host;
mod resources;
mod stats;
mod v1;

use host::{Host, Target};
use nix::unistd::Pid;
use oci_spec::runtime::LinuxResources;
use serde::{Deserialize, Serialize};
use std::borrow::Cow;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

pub use resources::{blkio_weight_to_io_weight, cpu_max, pids_max, shares_to_weight, swap_to_v2};
pub use stats::Stats;
pub use v1::default_allowed_devices;

/// How long `destroy` keeps retrying a cgroup that is still busy with exiting tasks.
const DESTROY_TIMEOUT: Duration = Duration::from_secs(1);
/// How long `freeze` waits for every task to reach the frozen state.
const FREEZE_TIMEOUT: Duration = Duration::from_secs(5);

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
    #[error("invalid linux.resources.{field}: {reason}")]
    InvalidResource { field: &'static str, reason: String },
    #[error("{what} is not supported: {reason}")]
    Unsupported { what: String, reason: String },
    #[error("{file} needs the cgroup {controller} controller, which {reason}")]
    ControllerMissing {
        file: String,
        controller: String,
        reason: String,
    },
    #[error("unknown linux.resources.unified key {key:?}: there is no such file in {dir}")]
    UnknownUnifiedKey { key: String, dir: PathBuf },
    #[error("failed to write {value:?} to {path}: no such device on this host")]
    NoSuchDevice { path: PathBuf, value: String },
    #[error("cannot set {path} to {limit}: the cgroup already uses {usage} bytes")]
    BelowUsage {
        path: PathBuf,
        limit: String,
        usage: u64,
    },
    #[error(
        "the container did not freeze within {secs} s ({path} says {state:?}); thawed it again"
    )]
    FreezeTimeout {
        path: PathBuf,
        state: String,
        secs: u64,
    },
    #[error("the container's cgroup has no freezer (no freezer controller is mounted)")]
    NoFreezer,
    #[error("failed to {what} {dir} (cgroup v2 device filter)")]
    DeviceFilter {
        what: String,
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("failed to signal pid {pid}")]
    Signal {
        pid: i32,
        #[source]
        source: nix::Error,
    },
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

/// The host-independent half of validation (values, ranges, syntax), for the bundle loader:
/// a zero period, a negative limit or a malformed cpu list fails here, before anything exists.
pub fn check_supported(resources: Option<&LinuxResources>) -> Result<(), CgroupError> {
    match resources {
        Some(r) => resources::validate(r),
        None => Ok(()),
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
    /// effect (`create` checks it again): every resource must map onto this host's cgroup
    /// version, v1 resources need their controller mounted, and device rules need the v1
    /// devices controller, as the cgroup v2 eBPF device filter is not implemented yet.
    pub fn check_applicable(&self, resources: Option<&LinuxResources>) -> Result<(), CgroupError> {
        check_supported(resources)?;
        let Some(r) = resources else {
            return Ok(());
        };
        let layout = self.layout()?;
        match layout.version {
            CgroupVersion::V2 => {
                resources::v2_settings(r)?;
            }
            CgroupVersion::V1 => {
                let mut settings = resources::v1_settings(r)?;
                let (limit, swap) = r
                    .memory()
                    .as_ref()
                    .map(resources::v1_memory_limits)
                    .unwrap_or_default();
                if limit.is_some() || swap.is_some() {
                    settings.push(resources::Setting {
                        controller: "memory".into(),
                        file: "memory.limit_in_bytes".into(),
                        value: String::new(),
                        fallback: None,
                    });
                }
                for s in &settings {
                    if !layout.placements.iter().any(|p| p.has(&s.controller)) {
                        return Err(CgroupError::ControllerMissing {
                            file: s.file.clone(),
                            controller: s.controller.clone(),
                            reason: "is not mounted on this host".into(),
                        });
                    }
                }
            }
        }
        let rules = device_rules(resources);
        if rules.is_empty() {
            return Ok(());
        }
        match layout.version {
            CgroupVersion::V2 => devices_v2::program(rules).map(|_| ()),
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
    /// allow list ([`default_allowed_devices`]); nodes from `linux.devices` get no rule of
    /// their own (as in runc). If anything fails, the directories this call made are removed
    /// again.
    pub fn create(&self, resources: Option<&LinuxResources>) -> Result<(), CgroupError> {
        self.check_applicable(resources)?;
        let layout = self.layout()?;
        let mut created = Vec::new();
        let result = create_placements(&layout, resources, &mut created)
            .and_then(|()| resources.map_or(Ok(()), |r| apply(&layout, r, false)))
            .and_then(|()| self.create_v2_device_filter(&layout, resources));
        if result.is_err() {
            for dir in created.iter().rev() {
                // Best effort: the original error is the one worth reporting.
                let _ = std::fs::remove_dir(dir);
            }
        }
        result
    }

    /// On a cgroup v2 host, the container's cgroup directory opened for clone3's
    /// CLONE_INTO_CGROUP; None on v1 (or if it cannot be opened: the child then enters itself).
    pub fn v2_dir_fd(&self) -> Option<std::os::fd::OwnedFd> {
        match (self.version(), self.paths.dirs.as_slice()) {
            (Ok(CgroupVersion::V2), [dir]) => nix::fcntl::open(
                dir,
                nix::fcntl::OFlag::O_PATH
                    | nix::fcntl::OFlag::O_DIRECTORY
                    | nix::fcntl::OFlag::O_CLOEXEC,
                nix::sys::stat::Mode::empty(),
            )
            .ok(),
            _ => None,
        }
    }

    /// Moves the calling process into the cgroup. Called in the container's first process
    /// before it joins any namespace or makes its cgroup namespace; the caller must be
    /// single-threaded (a fresh fork is).
    ///
    /// On v1 it writes 0 to `tasks` rather than `cgroup.procs`: moving one thread that is the
    /// writer itself lets the kernel skip the global threadgroup lock, whose write side waits
    /// for an RCU grace period (5–20 ms here, the largest single cost of a `run`). For a
    /// single-threaded process, moving its one thread moves the process. v2 has no `tasks`
    /// (its `cgroup.threads` only moves threads within a threaded subtree), so there it is
    /// `cgroup.procs`; v2 hosts normally use CLONE_INTO_CGROUP and never get here.
    pub fn enter(&self) -> Result<(), CgroupError> {
        for dir in &self.paths.dirs {
            match write_file(&dir.join("tasks"), "0") {
                Err(CgroupError::Write { source, .. })
                    if source.kind() == std::io::ErrorKind::NotFound =>
                {
                    write_file(&dir.join("cgroup.procs"), "0")?
                }
                other => other?,
            }
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

    /// v2: the container's device rules then the default allow list, as one eBPF program.
    fn create_v2_device_filter(
        &self,
        layout: &Layout,
        resources: Option<&LinuxResources>,
    ) -> Result<(), CgroupError> {
        let rules = device_rules(resources);
        if layout.version != CgroupVersion::V2 || rules.is_empty() {
            return Ok(());
        }
        let mut all = rules.to_vec();
        all.extend(default_allowed_devices());
        if let Some(p) = layout.placements.first() {
            devices_v2::apply(&p.dir, &all)?;
        }
        Ok(())
    }

    /// Changes the limits of an existing (running) container's cgroup: `rcrun update`.
    /// Device rules are left as they are. With `memory.checkBeforeUpdate` a memory limit
    /// below the current usage is refused on v2 (v1's kernel refuses it anyway).
    pub fn update(&self, resources: &LinuxResources) -> Result<(), CgroupError> {
        self.check_applicable(Some(resources))?;
        let layout = self.layout()?;
        apply(&layout, resources, true)
    }

    /// Freezes every task of the cgroup (`rcrun pause`), waiting until the kernel reports the
    /// whole cgroup frozen; if that does not happen in time it thaws again and fails, so a
    /// failed pause never leaves a half-frozen container.
    pub fn freeze(&self) -> Result<(), CgroupError> {
        let (file, version) = self.freezer()?;
        let (value, state_file) = match version {
            CgroupVersion::V1 => ("FROZEN", file.clone()),
            CgroupVersion::V2 => ("1", file.with_file_name("cgroup.events")),
        };
        let deadline = Instant::now() + FREEZE_TIMEOUT;
        let result = (|| loop {
            // v1: a task that was forking while the cgroup froze can leave it FREEZING for
            // good; writing FROZEN again retries the freeze, as runc does.
            write_file(&file, value)?;
            let state = read_file(&state_file)?;
            let frozen = match version {
                CgroupVersion::V1 => state.trim() == "FROZEN",
                CgroupVersion::V2 => state.lines().any(|l| l.trim() == "frozen 1"),
            };
            if frozen {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(CgroupError::FreezeTimeout {
                    path: state_file.clone(),
                    state: state.trim().to_string(),
                    secs: FREEZE_TIMEOUT.as_secs(),
                });
            }
            std::thread::sleep(Duration::from_millis(10));
        })();
        if result.is_err() {
            // Best effort: the freeze error is the one to report.
            let _ = self.thaw();
        }
        result
    }

    /// Thaws the cgroup (`rcrun resume`).
    pub fn thaw(&self) -> Result<(), CgroupError> {
        let (file, version) = self.freezer()?;
        match version {
            CgroupVersion::V1 => write_file(&file, "THAWED"),
            CgroupVersion::V2 => write_file(&file, "0"),
        }
    }

    /// Whether the cgroup is frozen; a cgroup without a freezer, or already removed, is not.
    pub fn is_frozen(&self) -> Result<bool, CgroupError> {
        let (file, version) = match self.freezer() {
            Ok(f) => f,
            Err(CgroupError::NoFreezer) => return Ok(false),
            Err(e) => return Err(e),
        };
        let text = match std::fs::read_to_string(&file) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
            Err(source) => return Err(CgroupError::Read { path: file, source }),
        };
        Ok(match version {
            CgroupVersion::V1 => text.trim() == "FROZEN",
            CgroupVersion::V2 => text.trim() == "1",
        })
    }

    /// The freezer's control file: v1 `freezer.state`, v2 `cgroup.freeze`.
    fn freezer(&self) -> Result<(PathBuf, CgroupVersion), CgroupError> {
        let layout = self.layout()?;
        let file = match layout.version {
            CgroupVersion::V1 => layout
                .placements
                .iter()
                .find(|p| p.has("freezer"))
                .map(|p| p.dir.join("freezer.state")),
            CgroupVersion::V2 => layout
                .placements
                .first()
                .map(|p| p.dir.join("cgroup.freeze")),
        };
        file.map(|f| (f, layout.version))
            .ok_or(CgroupError::NoFreezer)
    }

    /// Sends `signal` to every process in the cgroup and the cgroups below it (`kill --all`,
    /// `delete --force`). SIGKILL on v2 uses `cgroup.kill` when the kernel has it (5.14+),
    /// which also catches tasks forked while the list was being read. Frozen v1 tasks only
    /// act on SIGKILL once thawed, so a frozen cgroup is thawed after the kill.
    pub fn signal_all(&self, signal: crate::signal::KillSignal) -> Result<(), CgroupError> {
        use crate::signal::KillSignal;
        let layout = self.layout()?;
        if signal == KillSignal::KILL && layout.version == CgroupVersion::V2 {
            if let Some(p) = layout.placements.first() {
                let kill_file = p.dir.join("cgroup.kill");
                if kill_file.exists() {
                    return write_file(&kill_file, "1");
                }
            }
        }
        for pid in self.pids()? {
            match signal.send(pid) {
                Ok(()) | Err(nix::Error::ESRCH) => {}
                Err(source) => {
                    return Err(CgroupError::Signal {
                        pid: pid.as_raw(),
                        source,
                    })
                }
            }
        }
        if signal == KillSignal::KILL && self.is_frozen()? {
            self.thaw()?;
        }
        Ok(())
    }

    /// The usage counters `rcrun events` reports.
    pub fn stats(&self) -> Result<Stats, CgroupError> {
        stats::collect(&*self.layout()?)
    }

    /// How many processes the OOM killer has killed in the cgroup so far.
    pub fn oom_kills(&self) -> Result<u64, CgroupError> {
        stats::oom_kills(&*self.layout()?)
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

/// Writes the resources (everything but device rules) into the container's cgroup.
fn apply(layout: &Layout, r: &LinuxResources, update: bool) -> Result<(), CgroupError> {
    match layout.version {
        CgroupVersion::V1 => {
            let dir_of = |controller: &str| {
                layout
                    .placements
                    .iter()
                    .find(|p| p.has(controller))
                    .map(|p| p.dir.as_path())
            };
            let settings = resources::v1_settings(r)?;
            // cpuset first (settings are in that order), then the memory limits, whose order
            // depends on what is set now, then the rest.
            let (cpuset, rest): (Vec<_>, Vec<_>) =
                settings.iter().partition(|s| s.controller == "cpuset");
            for s in cpuset {
                if let Some(dir) = dir_of(&s.controller) {
                    write_setting(dir, s, false)?;
                }
            }
            if let (Some(m), Some(dir)) = (r.memory(), dir_of("memory")) {
                let (limit, swap) = resources::v1_memory_limits(m);
                apply_v1_memory_limits(dir, limit, swap)?;
            }
            for s in rest {
                if let Some(dir) = dir_of(&s.controller) {
                    write_setting(dir, s, false)?;
                }
            }
        }
        CgroupVersion::V2 => {
            let Some(placement) = layout.placements.first() else {
                return Ok(());
            };
            let dir = placement.dir.as_path();
            let settings = resources::v2_settings(r)?;
            let unified = r.unified().clone().unwrap_or_default();
            let mut needed: Vec<&str> = settings
                .iter()
                .map(|s| s.controller.as_str())
                .filter(|c| V2_CONTROLLERS.contains(c))
                .collect();
            needed.sort_unstable();
            needed.dedup();
            enable_controllers(placement, &needed)?;
            if let Some(m) = r.memory() {
                let limit = m.limit().filter(|l| *l > 0);
                if let (true, Some(limit)) =
                    (update && m.check_before_update() == Some(true), limit)
                {
                    let usage = stats::memory_usage(dir, CgroupVersion::V2)?;
                    if u64::try_from(limit).is_ok_and(|l| l < usage) {
                        return Err(CgroupError::BelowUsage {
                            path: dir.join("memory.max"),
                            limit: limit.to_string(),
                            usage,
                        });
                    }
                }
            }
            for s in &settings {
                write_setting(dir, s, unified.contains_key(&s.file))?;
            }
        }
    }
    Ok(())
}

/// The cgroup v2 controllers rcrun enables for a container's resources.
const V2_CONTROLLERS: &[&str] = &[
    "cpu", "cpuset", "hugetlb", "io", "memory", "misc", "pids", "rdma",
];

/// Makes `needed` available to the container's cgroup: each level from the hierarchy root down
/// to the container's parent must list them in `cgroup.subtree_control`. Only levels that lack
/// one are written, so a host that already delegates them (systemd, a VM harness) is left as
/// it is.
fn enable_controllers(placement: &Placement, needed: &[&str]) -> Result<(), CgroupError> {
    if needed.is_empty() {
        return Ok(());
    }
    let Ok(rel) = placement.dir.strip_prefix(&placement.mount_point) else {
        return Ok(());
    };
    let mut level = placement.mount_point.clone();
    for component in rel.components() {
        let control = level.join("cgroup.subtree_control");
        let enabled = read_file(&control)?;
        let missing: Vec<&str> = needed
            .iter()
            .copied()
            .filter(|c| !enabled.split_whitespace().any(|e| e == *c))
            .collect();
        if !missing.is_empty() {
            let available = read_file(&level.join("cgroup.controllers"))?;
            if let Some(absent) = missing
                .iter()
                .find(|c| !available.split_whitespace().any(|a| a == **c))
            {
                return Err(CgroupError::ControllerMissing {
                    file: format!("{absent}.*"),
                    controller: absent.to_string(),
                    reason: format!(
                        "is not available in {} (not delegated to this cgroup)",
                        level.join("cgroup.controllers").display()
                    ),
                });
            }
            let value: Vec<String> = missing.iter().map(|c| format!("+{c}")).collect();
            write_file(&control, &value.join(" "))?;
        }
        level = level.join(component);
    }
    Ok(())
}

/// Writes one setting, trying its fallback file when the kernel lacks the first one, and
/// naming the problem when the kernel says no.
fn write_setting(dir: &Path, s: &resources::Setting, unified_key: bool) -> Result<(), CgroupError> {
    let path = dir.join(&s.file);
    let missing = |file: &str| CgroupError::Unsupported {
        what: file.to_string(),
        reason: format!("the kernel has no such file in {}", dir.display()),
    };
    match write_raw(&path, &s.value) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && unified_key => {
            Err(CgroupError::UnknownUnifiedKey {
                key: s.file.clone(),
                dir: dir.to_path_buf(),
            })
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => match &s.fallback {
            Some((file, value)) => match write_raw(&dir.join(file), value) {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    Err(missing(&format!("{} (nor {file})", s.file)))
                }
                Err(e) => Err(write_error(&dir.join(file), value, e)),
            },
            None => Err(missing(&s.file)),
        },
        Err(e) => Err(write_error(&path, &s.value, e)),
    }
}

fn write_error(path: &Path, value: &str, source: std::io::Error) -> CgroupError {
    match source.raw_os_error() {
        Some(libc::ENODEV) => CgroupError::NoSuchDevice {
            path: path.to_path_buf(),
            value: value.to_string(),
        },
        _ => CgroupError::Write {
            path: path.to_path_buf(),
            source,
        },
    }
}

/// v1 keeps memory.memsw.limit_in_bytes (memory+swap) >= memory.limit_in_bytes at every
/// moment, so whichever of the two moves first must not cross the other's current value.
fn apply_v1_memory_limits(
    dir: &Path,
    limit: Option<i64>,
    memsw: Option<i64>,
) -> Result<(), CgroupError> {
    let limit_file = dir.join("memory.limit_in_bytes");
    let memsw_file = dir.join("memory.memsw.limit_in_bytes");
    let write_limit = |value: i64| -> Result<(), CgroupError> {
        match write_raw(&limit_file, &value.to_string()) {
            Ok(()) => Ok(()),
            // The kernel reclaims first and gives up with EBUSY when usage stays above.
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) => Err(CgroupError::BelowUsage {
                path: limit_file.clone(),
                limit: value.to_string(),
                usage: stats::memory_usage(dir, CgroupVersion::V1)?,
            }),
            Err(e) => Err(write_error(&limit_file, &value.to_string(), e)),
        }
    };
    let write_memsw = |value: i64| -> Result<(), CgroupError> {
        match write_raw(&memsw_file, &value.to_string()) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(CgroupError::Unsupported {
                what: "linux.resources.memory.swap".into(),
                reason: format!(
                    "swap accounting is off in this kernel (no {})",
                    memsw_file.display()
                ),
            }),
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) => Err(CgroupError::BelowUsage {
                path: memsw_file.clone(),
                limit: value.to_string(),
                usage: stats::memory_usage(dir, CgroupVersion::V1)?,
            }),
            Err(e) => Err(write_error(&memsw_file, &value.to_string(), e)),
        }
    };
    match (limit, memsw) {
        (None, None) => Ok(()),
        (Some(l), None) => write_limit(l),
        (limit, Some(sw)) => {
            let current: u64 = read_file(&limit_file)?.trim().parse().unwrap_or(u64::MAX);
            let raise_memsw_first = sw < 0 || u64::try_from(sw).is_ok_and(|sw| sw >= current);
            if raise_memsw_first {
                write_memsw(sw)?;
                limit.map_or(Ok(()), write_limit)
            } else {
                limit.map_or(Ok(()), write_limit)?;
                write_memsw(sw)
            }
        }
    }
}

/// `mkdir -p` below `mount_point`, recording each directory this call created, top-down.
fn mkdir_levels(
    dir: &Path,
    mount_point: &Path,
    created: &mut Vec<PathBuf>,
) -> Result<(), CgroupError> {
    // The parent usually exists already: one mkdir instead of a stat of every level.
    if dir.starts_with(mount_point) && dir != mount_point {
        match std::fs::DirBuilder::new().mode(0o755).create(dir) {
            Ok(()) => {
                created.push(dir.to_path_buf());
                return Ok(());
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => return Ok(()),
            Err(_) => {}
        }
    }
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
    // Usually a leaf whose tasks are gone: one rmdir, no walk. Otherwise (sub-cgroups, or EBUSY
    // while a task is still exiting: cgroupfs says EBUSY for both) walk and retry.
    match std::fs::remove_dir(dir) {
        Ok(()) => return Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(_) => {}
    }
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
    crate::kernel_file::read(path).map_err(|source| CgroupError::Read {
        path: path.to_path_buf(),
        source,
    })
}

/// Writes a value to an existing cgroup control file in one write(2): the kernel takes each
/// write as one complete value, so it must neither be split nor be created or truncated.
fn write_file(path: &Path, value: &str) -> Result<(), CgroupError> {
    write_raw(path, value).map_err(|source| CgroupError::Write {
        path: path.to_path_buf(),
        source,
    })
}

fn write_raw(path: &Path, value: &str) -> std::io::Result<()> {
    let mut file = std::fs::OpenOptions::new().write(true).open(path)?;
    file.write_all(value.as_bytes())
}

#[cfg(test)]
mod tests;
