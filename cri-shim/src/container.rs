//! Containers of a pod: CRI ContainerConfig → OCI bundle (config.json + rootfs), started through
//! a monitor (`rcri monitor`) that owns the container's stdio and records its exit; stop, remove,
//! status, ExecSync.
//!
//! CreateContainer only writes the bundle; the OCI runtime's `create` runs at StartContainer
//! (as containerd does), so a container that was created but never started costs no process.

use std::collections::{BTreeSet, HashMap};
use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Component, Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use k8s_cri::v1::{
    security_profile::ProfileType, Capability, ContainerConfig, LinuxContainerResources,
    LinuxContainerSecurityContext, MountPropagation, NamespaceMode, PodSandboxConfig,
    SupplementalGroupsPolicy,
};
use serde_json::{json, Value};
use tokio::io::AsyncReadExt;

use crate::image::{ImageConfig, ImageError};
use crate::monitor::{self, MonitorArgs, MonitorError};
use crate::runtime_client::RuntimeError;
use crate::sandbox::{self, SandboxError};
use crate::store::{ContainerRecord, ContainerState, SandboxRecord, SandboxState, StoreError};
use crate::Context;

/// /proc and /sys paths hidden from unprivileged containers (CRI's and containerd's defaults).
pub const DEFAULT_MASKED_PATHS: &[&str] = &[
    "/proc/acpi",
    "/proc/asound",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];
pub const DEFAULT_READONLY_PATHS: &[&str] = &[
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

/// The capabilities a container gets unless its security context says otherwise (Docker's,
/// containerd's and CRI-O's default set).
const DEFAULT_CAPABILITIES: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
];

/// Every capability the kernel defines, in the kernel's numbering (index = CAP_* number).
const ALL_CAPABILITIES: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
];

const DEFAULT_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// How long StopContainer waits after SIGKILL for the monitor to record the exit.
const KILL_TIMEOUT: Duration = Duration::from_secs(10);
/// How long ExecSync waits for the exec'd process's output pipes after it exited (a background
/// child may hold them open forever).
const EXEC_DRAIN_TIMEOUT: Duration = Duration::from_secs(5);
/// ExecSync keeps at most this much of each stream (kubelet caps probe output far lower).
const EXEC_OUTPUT_LIMIT: u64 = 16 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum ContainerError {
    #[error("{0}")]
    InvalidArgument(String),
    #[error("container {0} not found")]
    NotFound(String),
    #[error("container name {name:?} is already reserved for {id}")]
    AlreadyExists { name: String, id: String },
    #[error("{0}")]
    FailedPrecondition(String),
    #[error("{0}")]
    DeadlineExceeded(String),
    #[error("failed to {action}")]
    Io {
        action: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Sandbox(#[from] SandboxError),
    #[error(transparent)]
    Store(StoreError),
    #[error("OCI runtime")]
    Runtime(#[from] RuntimeError),
    #[error("failed to start the container")]
    Monitor(#[from] MonitorError),
    #[error("image")]
    Image(#[from] ImageError),
}

impl From<StoreError> for ContainerError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NameInUse { name, id } => ContainerError::AlreadyExists { name, id },
            other => ContainerError::Store(other),
        }
    }
}

fn io_err(action: impl Into<String>) -> impl FnOnce(std::io::Error) -> ContainerError {
    let action = action.into();
    move |source| ContainerError::Io { action, source }
}

fn invalid(msg: impl Into<String>) -> ContainerError {
    ContainerError::InvalidArgument(msg.into())
}

// ---------------------------------------------------------------------------------------------
// CreateContainer
// ---------------------------------------------------------------------------------------------

/// kubelet's container identity within its pod.
pub fn container_name(
    config: &ContainerConfig,
    pod: &PodSandboxConfig,
) -> Result<String, ContainerError> {
    let meta = config
        .metadata
        .as_ref()
        .ok_or_else(|| invalid("container config has no metadata"))?;
    if meta.name.is_empty() {
        return Err(invalid("container metadata.name is empty"));
    }
    let pod = pod.metadata.clone().unwrap_or_default();
    Ok(format!(
        "{}_{}_{}_{}_{}",
        meta.name, pod.name, pod.namespace, pod.uid, meta.attempt
    ))
}

/// The image a container runs: from the image store, or (bring-up only) the fallback rootfs.
struct ResolvedImage {
    id: String,
    config: ImageConfig,
    from_store: bool,
}

fn resolve_image(ctx: &Context, reference: &str) -> Result<ResolvedImage, ContainerError> {
    match ctx.images.get(reference) {
        Ok(image) => {
            // Refused now rather than when StopContainer needs it.
            crate::image::stop_signal::runtime_signal(&image.config.stop_signal)
                .map_err(|e| invalid(format!("image {reference:?}: {e}")))?;
            Ok(ResolvedImage {
                id: image.id,
                config: image.config,
                from_store: true,
            })
        }
        Err(e) => match &ctx.config.fallback_rootfs {
            Some(_) => Ok(ResolvedImage {
                id: reference.to_string(),
                config: ImageConfig::default(),
                from_store: false,
            }),
            None => Err(match e {
                ImageError::NotFound(r) => invalid(format!("image {r:?} not found: pull it first")),
                other => other.into(),
            }),
        },
    }
}

fn security_context(config: &ContainerConfig) -> LinuxContainerSecurityContext {
    config
        .linux
        .as_ref()
        .and_then(|l| l.security_context.clone())
        .unwrap_or_default()
}

fn ns_mode(
    sc: &LinuxContainerSecurityContext,
    pick: fn(&k8s_cri::v1::NamespaceOption) -> i32,
) -> NamespaceMode {
    sc.namespace_options
        .as_ref()
        .map(|o| NamespaceMode::try_from(pick(o)).unwrap_or(NamespaceMode::Pod))
        .unwrap_or(NamespaceMode::Pod)
}

/// Validation that needs no side effect, done before anything is made.
pub fn validate(config: &ContainerConfig) -> Result<(), ContainerError> {
    let image = config
        .image
        .as_ref()
        .map(|i| i.image.as_str())
        .unwrap_or("");
    if image.is_empty() {
        return Err(invalid("container config has no image"));
    }
    let sc = security_context(config);
    if sc.run_as_group.is_some() && sc.run_as_user.is_none() && sc.run_as_username.is_empty() {
        return Err(invalid(
            "run_as_group is set without run_as_user or run_as_username",
        ));
    }
    for (what, v) in [
        ("run_as_user", sc.run_as_user.as_ref().map(|v| v.value)),
        ("run_as_group", sc.run_as_group.as_ref().map(|v| v.value)),
    ] {
        if v.is_some_and(|v| !(0..=u32::MAX as i64).contains(&v)) {
            return Err(invalid(format!("{what} is out of range")));
        }
    }
    if sc
        .supplemental_groups
        .iter()
        .any(|&g| !(0..=u32::MAX as i64).contains(&g))
    {
        return Err(invalid("a supplemental group is out of range"));
    }
    if sc.privileged
        && sc
            .namespace_options
            .as_ref()
            .is_some_and(|o| o.userns_options.is_some())
    {
        return Err(invalid("privileged containers cannot use user namespaces"));
    }
    for m in &config.mounts {
        if !m.container_path.starts_with('/') {
            return Err(invalid(format!(
                "mount path {:?} is not absolute",
                m.container_path
            )));
        }
        if !m.host_path.starts_with('/') {
            return Err(invalid(format!(
                "mount host path {:?} is not absolute",
                m.host_path
            )));
        }
        if m.image.is_some() {
            return Err(invalid("image volumes are not supported"));
        }
        validate_recursive_read_only(m)?;
        if !m.uid_mappings.is_empty() || !m.gid_mappings.is_empty() {
            return Err(invalid("id-mapped mounts are not supported"));
        }
    }
    for d in &config.devices {
        if !d.container_path.starts_with('/') || !d.host_path.starts_with('/') {
            return Err(invalid(format!("device paths must be absolute: {d:?}")));
        }
        if !d.permissions.chars().all(|c| "rwm".contains(c)) {
            return Err(invalid(format!(
                "invalid device permissions {:?}",
                d.permissions
            )));
        }
    }
    if config.log_path.split('/').any(|c| c == "..") {
        return Err(invalid("log_path must not contain '..'"));
    }
    capabilities(&sc)?;
    Ok(())
}

/// CreateContainer: validates, reserves the name, writes the bundle. Undone on failure.
pub async fn create(
    ctx: &Context,
    sandbox_id: &str,
    config: ContainerConfig,
    _sandbox_config: Option<PodSandboxConfig>,
) -> Result<String, ContainerError> {
    validate(&config)?;
    if config.mounts.iter().any(|m| m.recursive_read_only) && !runtime_supports_rro(ctx).await {
        return Err(ContainerError::FailedPrecondition(format!(
            "recursive read-only mounts: the OCI runtime {} does not support the rro option",
            ctx.runtime.binary.display()
        )));
    }
    let pod = sandbox::get(ctx, sandbox_id)?;
    if pod.state != SandboxState::Ready {
        return Err(ContainerError::FailedPrecondition(format!(
            "pod sandbox {} is not ready",
            pod.id
        )));
    }
    let name = container_name(&config, &pod.config)?;
    let image_ref = config
        .image
        .as_ref()
        .map(|i| i.image.clone())
        .unwrap_or_default();
    let image = resolve_image(ctx, &image_ref)?;
    let id = crate::new_id().map_err(io_err("generate an id"))?;
    let _guard = ctx.lock(&id).await;
    let log_path = match pod.config.log_directory.as_str() {
        "" => None,
        dir if config.log_path.is_empty() => Some(Path::new(dir).join(format!("{}.log", id))),
        dir => Some(Path::new(dir).join(&config.log_path)),
    };
    let mut record = ContainerRecord {
        id: id.clone(),
        sandbox_id: pod.id.clone(),
        name,
        config,
        image_id: image.id.clone(),
        image_ref,
        image_rootfs: image.from_store,
        bundle: ctx.config.state_dir.join("containers").join(&id),
        log_path,
        state: ContainerState::Creating,
        created_at: monitor::now_nanos(),
        started_at: 0,
        finished_at: 0,
        exit_code: 0,
        reason: String::new(),
        message: String::new(),
        pid: 0,
        monitor_pid: 0,
    };
    ctx.store.insert_container(record.clone())?;
    match write_bundle(ctx, &pod, &record, &image) {
        Ok(()) => {
            record.state = ContainerState::Created;
            if let Err(e) = ctx.store.update_container(&record) {
                discard(ctx, &record);
                return Err(e.into());
            }
            crate::events::container(ctx, &record, crate::events::EventKind::Created);
            Ok(id)
        }
        Err(e) => {
            discard(ctx, &record);
            Err(e)
        }
    }
}

/// Removes a container that never ran: its rootfs, bundle and record.
fn discard(ctx: &Context, record: &ContainerRecord) {
    if let Err(e) = remove_files(ctx, record) {
        tracing::warn!(container = %record.id, error = %crate::error_chain(&e), "failed to remove the bundle");
    }
    if let Err(e) = ctx.store.remove_container(&record.id) {
        tracing::warn!(container = %record.id, error = %e, "failed to remove the record");
    }
    ctx.forget_lock(&record.id);
}

fn remove_files(ctx: &Context, record: &ContainerRecord) -> Result<(), ContainerError> {
    let rootfs = record.bundle.join("rootfs");
    if record.image_rootfs {
        // An overlay still mounted there must not be deleted through (that would write
        // whiteouts, or worse with a bind mount), so a failed unmount stops the removal.
        tokio::task::block_in_place(|| ctx.images.remove_rootfs(&record.id, &rootfs))?;
    }
    match fs::remove_dir_all(&record.bundle) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_err(format!("remove {}", record.bundle.display()))(e)),
    }
}

fn write_bundle(
    ctx: &Context,
    pod: &SandboxRecord,
    record: &ContainerRecord,
    image: &ResolvedImage,
) -> Result<(), ContainerError> {
    fs::create_dir_all(&record.bundle)
        .map_err(io_err(format!("create {}", record.bundle.display())))?;
    let rootfs = record.bundle.join("rootfs");
    if image.from_store {
        let userns_path = sandbox::userns_path(pod);
        let userns = userns_path
            .as_deref()
            .zip(sandbox::userns_mappings(&pod.config))
            .map(|(ns, (u, g))| crate::image::PodUserns {
                ns,
                root_uid: u.host_id,
                root_gid: g.host_id,
            });
        tokio::task::block_in_place(|| {
            ctx.images
                .mount_rootfs_in_userns(&image.id, &record.id, &rootfs, userns)
        })?;
    } else if let Some(src) = &ctx.config.fallback_rootfs {
        copy_tree(src, &rootfs)?;
    }
    let spec = build_spec(ctx, pod, record, &image.config, &rootfs)?;
    // Parsing our own output with oci-spec catches a malformed field here, with a clear error,
    // rather than as a runtime failure at StartContainer.
    serde_json::from_value::<oci_spec::runtime::Spec>(spec.clone())
        .map_err(|e| invalid(format!("the generated OCI spec is invalid: {e}")))?;
    let path = record.bundle.join("config.json");
    fs::write(&path, serde_json::to_vec_pretty(&spec).unwrap_or_default())
        .map_err(io_err(format!("write {}", path.display())))
}

fn copy_tree(src: &Path, dst: &Path) -> Result<(), ContainerError> {
    let status = std::process::Command::new("cp")
        .arg("-a")
        .arg(src)
        .arg(dst)
        .stdin(Stdio::null())
        .status()
        .map_err(io_err("run cp"))?;
    if !status.success() {
        return Err(ContainerError::Io {
            action: format!("copy {} to {}", src.display(), dst.display()),
            source: std::io::Error::other(format!("cp exited with {status}")),
        });
    }
    Ok(())
}

/// "All capabilities" for privileged and add ALL: those in rcri's own bounding set, as
/// containerd does (WithAllCurrentCapabilities). A capability outside it (e.g. CAP_SYS_RESOURCE
/// when rcri itself runs in a container without it) cannot be granted: asking the kernel for it
/// fails the whole container with EPERM.
fn held_capabilities() -> Vec<String> {
    let bounding = fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            let hex = status.lines().find_map(|l| l.strip_prefix("CapBnd:"))?;
            u64::from_str_radix(hex.trim(), 16).ok()
        })
        .unwrap_or(u64::MAX);
    ALL_CAPABILITIES
        .iter()
        .enumerate()
        .filter(|(bit, _)| bounding & (1u64 << bit) != 0)
        .map(|(_, c)| c.to_string())
        .collect()
}

/// CRI capability names come with or without the CAP_ prefix, in any case.
fn cap_name(name: &str) -> String {
    let upper = name.to_ascii_uppercase();
    if upper.starts_with("CAP_") {
        upper
    } else {
        format!("CAP_{upper}")
    }
}

/// The capability set: privileged → all; else the default set, then (as containerd orders it)
/// add ALL, drop ALL, the individual adds, the individual drops.
fn capabilities(sc: &LinuxContainerSecurityContext) -> Result<Vec<String>, ContainerError> {
    if sc.privileged {
        return Ok(held_capabilities());
    }
    let empty = Capability::default();
    let caps = sc.capabilities.as_ref().unwrap_or(&empty);
    let is_all = |c: &String| c.eq_ignore_ascii_case("ALL");
    let mut set: BTreeSet<String> = DEFAULT_CAPABILITIES.iter().map(|c| c.to_string()).collect();
    if caps.add_capabilities.iter().any(is_all) {
        set = held_capabilities().into_iter().collect();
    }
    if caps.drop_capabilities.iter().any(is_all) {
        set.clear();
    }
    for add in caps.add_capabilities.iter().filter(|c| !is_all(c)) {
        let name = cap_name(add);
        if !ALL_CAPABILITIES.contains(&name.as_str()) {
            return Err(invalid(format!("unknown capability {add:?}")));
        }
        set.insert(name);
    }
    for drop in caps.drop_capabilities.iter().filter(|c| !is_all(c)) {
        let name = cap_name(drop);
        if !ALL_CAPABILITIES.contains(&name.as_str()) {
            return Err(invalid(format!("unknown capability {drop:?}")));
        }
        set.remove(&name);
    }
    Ok(set.into_iter().collect())
}

/// containerd's rules: a recursive read-only mount must also be read-only, and private (a
/// propagated submount would arrive after the attributes were set, writable).
fn validate_recursive_read_only(m: &k8s_cri::v1::Mount) -> Result<(), ContainerError> {
    if !m.recursive_read_only {
        return Ok(());
    }
    if !m.readonly {
        return Err(invalid(format!(
            "mount {:?}: recursive_read_only needs readonly",
            m.container_path
        )));
    }
    if MountPropagation::try_from(m.propagation) != Ok(MountPropagation::PropagationPrivate) {
        return Err(invalid(format!(
            "mount {:?}: recursive_read_only needs private propagation",
            m.container_path
        )));
    }
    Ok(())
}

/// Whether the OCI runtime honours the `rro` mount option: its `features` lists it. Asked once
/// per rcri process (the runtime binary is fixed for its lifetime); a runtime without
/// `features`, or whose answer cannot be read, is taken not to.
pub(crate) async fn runtime_supports_rro(ctx: &Context) -> bool {
    static RRO: tokio::sync::OnceCell<bool> = tokio::sync::OnceCell::const_new();
    *RRO.get_or_init(|| async {
        let binary = &ctx.runtime.binary;
        let out = tokio::process::Command::new(binary)
            .arg("features")
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .output();
        let supported = match tokio::time::timeout(Duration::from_secs(10), out).await {
            Ok(Ok(out)) if out.status.success() => serde_json::from_slice::<Value>(&out.stdout)
                .is_ok_and(|f| {
                    f["mountOptions"]
                        .as_array()
                        .is_some_and(|o| o.iter().any(|o| o == "rro"))
                }),
            _ => false,
        };
        tracing::info!(runtime = %binary.display(), supported, "recursive read-only mounts");
        supported
    })
    .await
}

/// An /etc/passwd or /etc/group of the image, read only if it is a regular file inside the
/// rootfs: a symlink there could point at a host file when read from outside the container.
fn read_image_file(rootfs: &Path, rel: &str) -> Option<String> {
    let mut path = rootfs.to_path_buf();
    for part in Path::new(rel).components() {
        if let Component::Normal(p) = part {
            path.push(p);
            if fs::symlink_metadata(&path).ok()?.file_type().is_symlink() {
                return None;
            }
        }
    }
    fs::read_to_string(path).ok()
}

struct PasswdEntry {
    name: String,
    uid: u32,
    gid: u32,
}

fn passwd(rootfs: &Path) -> Vec<PasswdEntry> {
    read_image_file(rootfs, "etc/passwd")
        .unwrap_or_default()
        .lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split(':').collect();
            Some(PasswdEntry {
                name: f.first()?.to_string(),
                uid: f.get(2)?.parse().ok()?,
                gid: f.get(3)?.parse().ok()?,
            })
        })
        .collect()
}

/// (group name, gid, members) of the image's /etc/group.
fn groups(rootfs: &Path) -> Vec<(String, u32, Vec<String>)> {
    read_image_file(rootfs, "etc/group")
        .unwrap_or_default()
        .lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split(':').collect();
            let members = f
                .get(3)
                .map(|m| {
                    m.split(',')
                        .filter(|s| !s.is_empty())
                        .map(String::from)
                        .collect()
                })
                .unwrap_or_default();
            Some((f.first()?.to_string(), f.get(2)?.parse().ok()?, members))
        })
        .collect()
}

/// uid, gid and additional gids as kubelet expects them: run_as_user / run_as_username win over
/// the image's USER; the gid is run_as_group, else the user's primary group from the image's
/// /etc/passwd, else 0. The additional gids are, as containerd makes them, that gid, then (with
/// SupplementalGroupsPolicy Merge, the default) the user's groups from the image's /etc/group,
/// then supplemental_groups; Strict leaves the image's /etc/group out.
fn resolve_user(
    sc: &LinuxContainerSecurityContext,
    image: &ImageConfig,
    rootfs: &Path,
) -> Result<(u32, u32, Vec<u32>), ContainerError> {
    let users = passwd(rootfs);
    let (mut uid, mut gid, mut name): (u32, Option<u32>, Option<String>) = (0, None, None);
    if let Some(u) = &sc.run_as_user {
        uid = u.value as u32;
        if let Some(e) = users.iter().find(|e| e.uid == uid) {
            gid = Some(e.gid);
            name = Some(e.name.clone());
        }
    } else if !sc.run_as_username.is_empty() {
        let e = users
            .iter()
            .find(|e| e.name == sc.run_as_username)
            .ok_or_else(|| {
                invalid(format!(
                    "user {:?} not found in the image",
                    sc.run_as_username
                ))
            })?;
        uid = e.uid;
        gid = Some(e.gid);
        name = Some(e.name.clone());
    } else if !image.user.is_empty() {
        let (user, group) = match image.user.split_once(':') {
            Some((u, g)) => (u, Some(g)),
            None => (image.user.as_str(), None),
        };
        let entry = match user.parse::<u32>() {
            Ok(n) => {
                uid = n;
                users.iter().find(|e| e.uid == n)
            }
            Err(_) => {
                let e = users.iter().find(|e| e.name == user).ok_or_else(|| {
                    invalid(format!("image user {user:?} not found in the image"))
                })?;
                uid = e.uid;
                Some(e)
            }
        };
        if let Some(e) = entry {
            gid = Some(e.gid);
            name = Some(e.name.clone());
        }
        if let Some(g) = group {
            gid = Some(match g.parse::<u32>() {
                Ok(n) => n,
                Err(_) => groups(rootfs)
                    .iter()
                    .find(|(n, _, _)| n == g)
                    .map(|(_, id, _)| *id)
                    .ok_or_else(|| invalid(format!("image group {g:?} not found in the image")))?,
            });
        }
    } else if let Some(e) = users.iter().find(|e| e.uid == 0) {
        gid = Some(e.gid);
        name = Some(e.name.clone());
    }
    if let Some(g) = &sc.run_as_group {
        gid = Some(g.value as u32);
    }
    let gid = gid.unwrap_or(0);
    let mut extra: Vec<u32> = vec![gid];
    let strict = SupplementalGroupsPolicy::try_from(sc.supplemental_groups_policy)
        == Ok(SupplementalGroupsPolicy::Strict);
    if let Some(name) = name.as_ref().filter(|_| !strict) {
        for (_, id, members) in groups(rootfs) {
            if members.iter().any(|m| m == name) && !extra.contains(&id) {
                extra.push(id);
            }
        }
    }
    for g in &sc.supplemental_groups {
        let g = *g as u32;
        if !extra.contains(&g) {
            extra.push(g);
        }
    }
    Ok((uid, gid, extra))
}

/// ContainerStatus.user: the identity the container's process has. While it runs, what the
/// kernel says of it (/proc/<pid>/status); before and after, the one the runtime was told to
/// give it (the bundle's config.json), which stays with the container until it is removed.
pub fn user(record: &ContainerRecord) -> Option<k8s_cri::v1::ContainerUser> {
    let running = (record.state == ContainerState::Running && record.pid > 0)
        .then(|| fs::read_to_string(format!("/proc/{}/status", record.pid)).ok())
        .flatten()
        .and_then(|status| user_from_proc_status(&status));
    let linux = running.or_else(|| {
        let spec: Value =
            serde_json::from_slice(&fs::read(record.bundle.join("config.json")).ok()?).ok()?;
        let user = &spec["process"]["user"];
        Some(k8s_cri::v1::LinuxContainerUser {
            uid: user["uid"].as_i64()?,
            gid: user["gid"].as_i64()?,
            supplemental_groups: user["additionalGids"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_i64)
                .collect(),
        })
    })?;
    Some(k8s_cri::v1::ContainerUser { linux: Some(linux) })
}

/// Real uid and gid and the groups of a /proc/<pid>/status.
fn user_from_proc_status(status: &str) -> Option<k8s_cri::v1::LinuxContainerUser> {
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
    };
    let first = |name: &str| field(name)?.split_whitespace().next()?.parse().ok();
    Some(k8s_cri::v1::LinuxContainerUser {
        uid: first("Uid")?,
        gid: first("Gid")?,
        supplemental_groups: field("Groups")?
            .split_whitespace()
            .filter_map(|g| g.parse().ok())
            .collect(),
    })
}

/// Image env first, then the CRI envs (which win on equal keys); PATH always set.
pub fn merge_env(image: &ImageConfig, config: &ContainerConfig, hostname: &str) -> Vec<String> {
    let mut env: Vec<String> = Vec::new();
    let mut set = |entry: String| {
        let key = entry.split('=').next().unwrap_or("").to_string();
        if let Some(slot) = env
            .iter_mut()
            .find(|e| e.split('=').next() == Some(key.as_str()))
        {
            *slot = entry;
        } else {
            env.push(entry);
        }
    };
    set(DEFAULT_PATH.to_string());
    set(format!("HOSTNAME={hostname}"));
    for e in &image.env {
        set(e.clone());
    }
    for kv in &config.envs {
        set(format!("{}={}", kv.key, kv.value));
    }
    env
}

/// kubelet's rule: `command` replaces the image's ENTRYPOINT (and then the image's CMD is
/// dropped); `args` replaces CMD.
pub fn process_args(
    image: &ImageConfig,
    config: &ContainerConfig,
) -> Result<Vec<String>, ContainerError> {
    let args = if config.command.is_empty() {
        let mut a = image.entrypoint.clone();
        if config.args.is_empty() {
            a.extend(image.cmd.iter().cloned());
        } else {
            a.extend(config.args.iter().cloned());
        }
        a
    } else {
        let mut a = config.command.clone();
        a.extend(config.args.iter().cloned());
        a
    };
    if args.is_empty() {
        return Err(invalid(
            "no command specified: neither the container config nor the image gives one",
        ));
    }
    Ok(args)
}

// seccomp_profile_path is deprecated in CRI but older kubelets still send it.
#[allow(deprecated)]
fn seccomp(
    sc: &LinuxContainerSecurityContext,
    caps: &[String],
) -> Result<Option<Value>, ContainerError> {
    let (kind, localhost) = match &sc.seccomp {
        Some(p) => (
            ProfileType::try_from(p.profile_type).unwrap_or(ProfileType::RuntimeDefault),
            p.localhost_ref.clone(),
        ),
        None => match sc.seccomp_profile_path.as_str() {
            "" | "unconfined" => (ProfileType::Unconfined, String::new()),
            "runtime/default" | "docker/default" => (ProfileType::RuntimeDefault, String::new()),
            other => match other.strip_prefix("localhost/") {
                Some(path) => (ProfileType::Localhost, path.to_string()),
                None => return Err(invalid(format!("invalid seccomp profile {other:?}"))),
            },
        },
    };
    if sc.privileged {
        return Ok(None);
    }
    match kind {
        ProfileType::Unconfined => Ok(None),
        // The allow-list profile of containerd/CRI-O, gated on the container's capabilities.
        ProfileType::RuntimeDefault => {
            let profile = crate::seccomp_default::runtime_default(caps);
            let value = serde_json::to_value(&profile)
                .map_err(|e| invalid(format!("cannot encode the default seccomp profile: {e}")))?;
            Ok(Some(value))
        }
        ProfileType::Localhost => {
            if !localhost.starts_with('/') {
                return Err(invalid(format!(
                    "seccomp localhost profile {localhost:?} is not absolute"
                )));
            }
            let text = fs::read_to_string(&localhost)
                .map_err(|e| invalid(format!("cannot read seccomp profile {localhost}: {e}")))?;
            let profile: Value = serde_json::from_str(&text).map_err(|e| {
                invalid(format!(
                    "seccomp profile {localhost} is not valid JSON: {e}"
                ))
            })?;
            Ok(Some(profile))
        }
    }
}

/// Only what was asked for: a zero or empty field is "unset" in CRI, and writing it would make
/// the runtime set (or refuse) a limit nobody wanted.
pub fn resources(r: &LinuxContainerResources) -> Value {
    let mut out = json!({});
    let mut cpu = serde_json::Map::new();
    if r.cpu_shares > 0 {
        cpu.insert("shares".into(), json!(r.cpu_shares));
    }
    if r.cpu_quota != 0 {
        cpu.insert("quota".into(), json!(r.cpu_quota));
    }
    if r.cpu_period > 0 {
        cpu.insert("period".into(), json!(r.cpu_period));
    }
    if !r.cpuset_cpus.is_empty() {
        cpu.insert("cpus".into(), json!(r.cpuset_cpus));
    }
    if !r.cpuset_mems.is_empty() {
        cpu.insert("mems".into(), json!(r.cpuset_mems));
    }
    if !cpu.is_empty() {
        out["cpu"] = Value::Object(cpu);
    }
    let mut memory = serde_json::Map::new();
    if r.memory_limit_in_bytes > 0 {
        memory.insert("limit".into(), json!(r.memory_limit_in_bytes));
    }
    if r.memory_swap_limit_in_bytes > 0 {
        memory.insert("swap".into(), json!(r.memory_swap_limit_in_bytes));
    }
    if !memory.is_empty() {
        out["memory"] = Value::Object(memory);
    }
    let hugepages: Vec<Value> = r
        .hugepage_limits
        .iter()
        .filter(|h| !h.page_size.is_empty())
        .map(|h| json!({"pageSize": h.page_size, "limit": h.limit}))
        .collect();
    if !hugepages.is_empty() {
        out["hugepageLimits"] = json!(hugepages);
    }
    if !r.unified.is_empty() {
        out["unified"] = json!(r.unified);
    }
    out
}

fn device_numbers(rdev: u64) -> (u64, u64) {
    let major = ((rdev >> 8) & 0xfff) | ((rdev >> 32) & !0xfff);
    let minor = (rdev & 0xff) | ((rdev >> 12) & !0xff);
    (major, minor)
}

fn build_spec(
    ctx: &Context,
    pod: &SandboxRecord,
    record: &ContainerRecord,
    image: &ImageConfig,
    rootfs: &Path,
) -> Result<Value, ContainerError> {
    let config = &record.config;
    let sc = security_context(config);
    let privileged = sc.privileged;
    let caps = capabilities(&sc)?;
    let (uid, gid, additional) = resolve_user(&sc, image, rootfs)?;
    let hostname = fs::read_to_string(sandbox::hostname_file(pod))
        .map(|h| h.trim().to_string())
        .unwrap_or_default();
    let cwd = if !config.working_dir.is_empty() {
        config.working_dir.clone()
    } else if !image.working_dir.is_empty() {
        image.working_dir.clone()
    } else {
        "/".to_string()
    };
    if !cwd.starts_with('/') {
        return Err(invalid(format!("working dir {cwd:?} is not absolute")));
    }
    let mut process = json!({
        // The monitor passes --console-socket to `create` and holds the pty master.
        "terminal": config.tty,
        "user": {"uid": uid, "gid": gid, "additionalGids": additional},
        "args": process_args(image, config)?,
        "env": merge_env(image, config, &hostname),
        "cwd": cwd,
        "capabilities": {"bounding": caps, "effective": caps, "permitted": caps},
        "noNewPrivileges": sc.no_new_privs,
    });
    let resources_in = config.linux.as_ref().and_then(|l| l.resources.clone());
    if let Some(r) = &resources_in {
        if r.oom_score_adj != 0 {
            process["oomScoreAdj"] = json!(sandbox::clamp_oom_score_adj(r.oom_score_adj));
        }
    }

    let sysfs_opts = if privileged {
        json!(["nosuid", "noexec", "nodev", "rw"])
    } else {
        json!(["nosuid", "noexec", "nodev", "ro"])
    };
    let mut mounts = vec![
        json!({"destination": "/proc", "type": "proc", "source": "proc", "options": ["nosuid", "noexec", "nodev"]}),
        json!({"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]}),
        json!({"destination": "/dev/pts", "type": "devpts", "source": "devpts", "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]}),
        pod_shm_mount(pod),
        json!({"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue", "options": ["nosuid", "noexec", "nodev"]}),
        json!({"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": sysfs_opts}),
        json!({"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup", "options": ["nosuid", "noexec", "nodev", "relatime", if privileged { "rw" } else { "ro" }]}),
    ];
    let taken: Vec<&str> = config
        .mounts
        .iter()
        .map(|m| m.container_path.as_str())
        .collect();
    let pod_file_mode = if sc.readonly_rootfs { "ro" } else { "rw" };
    for (dest, src) in [
        ("/etc/hostname", sandbox::hostname_file(pod)),
        ("/etc/hosts", sandbox::hosts_file(pod)),
        ("/etc/resolv.conf", sandbox::resolv_conf(pod)),
    ] {
        if !taken.contains(&dest) && src.exists() {
            mounts.push(json!({"destination": dest, "type": "bind", "source": src, "options": ["rbind", "rprivate", pod_file_mode]}));
            // Owned by the pod's root, as they are in a pod without a user namespace.
            idmap_for_pod(mounts.last_mut(), pod, &[], &[]);
        }
    }
    let mut rootfs_propagation: Option<&str> = None;
    for m in &config.mounts {
        let mut host = PathBuf::from(&m.host_path);
        if !host.exists() {
            // As kubelet's hostPath "DirectoryOrCreate" and containerd do for a missing source.
            fs::create_dir_all(&host).map_err(io_err(format!("create {}", host.display())))?;
        }
        host = fs::canonicalize(&host).map_err(io_err(format!("resolve {}", host.display())))?;
        let propagation = match MountPropagation::try_from(m.propagation)
            .unwrap_or(MountPropagation::PropagationPrivate)
        {
            MountPropagation::PropagationPrivate => "rprivate",
            MountPropagation::PropagationHostToContainer => {
                rootfs_propagation.get_or_insert("rslave");
                "rslave"
            }
            MountPropagation::PropagationBidirectional => {
                rootfs_propagation = Some("rshared");
                "rshared"
            }
        };
        // selinux_relabel is ignored: this host has no SELinux.
        let mode = if m.readonly { "ro" } else { "rw" };
        let mut options = vec!["rbind", propagation, mode];
        if m.recursive_read_only {
            // ro alone leaves the submounts rbind brings along writable.
            options.push("rro");
        }
        mounts.push(json!({"destination": m.container_path, "type": "bind", "source": host, "options": options}));
        // As containerd: a pod with its own user namespace gets its volumes id-mapped, with the
        // mount's own mappings if kubelet gave some, else the pod's.
        idmap_for_pod(mounts.last_mut(), pod, &m.uid_mappings, &m.gid_mappings);
    }

    let mut device_rules = vec![json!({"allow": privileged, "access": "rwm"})];
    let mut devices = Vec::new();
    for d in &config.devices {
        let meta = fs::metadata(&d.host_path)
            .map_err(|e| invalid(format!("device {}: {e}", d.host_path)))?;
        let kind = if meta.file_type().is_char_device() {
            "c"
        } else if meta.file_type().is_block_device() {
            "b"
        } else {
            return Err(invalid(format!("{} is not a device", d.host_path)));
        };
        let (major, minor) = device_numbers(meta.rdev());
        let access = if d.permissions.is_empty() {
            "rwm"
        } else {
            d.permissions.as_str()
        };
        devices.push(json!({"path": d.container_path, "type": kind, "major": major, "minor": minor, "fileMode": meta.mode() & 0o777, "uid": meta.uid(), "gid": meta.gid()}));
        device_rules.push(
            json!({"allow": true, "type": kind, "major": major, "minor": minor, "access": access}),
        );
    }
    let mut linux_resources = resources_in
        .as_ref()
        .map(resources)
        .unwrap_or_else(|| json!({}));
    linux_resources["devices"] = json!(device_rules);

    let namespaces = container_namespaces(ctx, pod, &sc)?;
    let mut linux = json!({
        "namespaces": namespaces,
        "cgroupsPath": sandbox::cgroups_path(pod, &record.id),
        "resources": linux_resources,
    });
    if !devices.is_empty() {
        linux["devices"] = json!(devices);
    }
    if let Some(p) = rootfs_propagation {
        linux["rootfsPropagation"] = json!(p);
    }
    if !privileged {
        linux["maskedPaths"] = if sc.masked_paths.is_empty() {
            json!(DEFAULT_MASKED_PATHS)
        } else {
            json!(sc.masked_paths)
        };
        linux["readonlyPaths"] = if sc.readonly_paths.is_empty() {
            json!(DEFAULT_READONLY_PATHS)
        } else {
            json!(sc.readonly_paths)
        };
    }
    if let Some(profile) = seccomp(&sc, &caps)? {
        linux["seccomp"] = profile;
    }
    let mut spec = json!({
        "ociVersion": "1.0.2",
        "process": process,
        "root": {"path": "rootfs", "readonly": sc.readonly_rootfs},
        "mounts": mounts,
        "linux": linux,
        "annotations": {
            "io.kubernetes.cri.container-type": "container",
            "io.kubernetes.cri.sandbox-id": pod.id,
        },
    });
    if !sandbox::host_network(&pod.config) {
        spec["hostname"] = json!(hostname);
    }
    Ok(spec)
}

/// Adds the pod's id mappings (or `uids`/`gids` when given) to a bind mount of a pod with its
/// own user namespace; a pod without one is left alone.
fn idmap_for_pod(
    mount: Option<&mut Value>,
    pod: &SandboxRecord,
    uids: &[k8s_cri::v1::IdMapping],
    gids: &[k8s_cri::v1::IdMapping],
) {
    let (Some(mount), Some((pod_uids, pod_gids))) = (mount, sandbox::userns_mappings(&pod.config))
    else {
        return;
    };
    let list = |given: &[k8s_cri::v1::IdMapping], pod: &k8s_cri::v1::IdMapping| {
        if given.is_empty() {
            sandbox::oci_mapping(pod)
        } else {
            json!(given
                .iter()
                .map(|m| json!({"containerID": m.container_id, "hostID": m.host_id, "size": m.length}))
                .collect::<Vec<_>>())
        }
    };
    mount["uidMappings"] = list(uids, &pod_uids);
    mount["gidMappings"] = list(gids, &pod_gids);
}

/// The namespaces of a pod member: the pod's network (the pinned netns), its IPC and UTS (the
/// infra's), PID per the container's mode, and always a new mount namespace.
fn container_namespaces(
    ctx: &Context,
    pod: &SandboxRecord,
    sc: &LinuxContainerSecurityContext,
) -> Result<Vec<Value>, ContainerError> {
    if pod.infra_pid <= 0 {
        return Err(ContainerError::FailedPrecondition(format!(
            "pod sandbox {} has no running infra process",
            pod.id
        )));
    }
    let infra = |kind: &str| format!("/proc/{}/ns/{kind}", pod.infra_pid);
    let mut ns = vec![json!({"type": "mount"})];
    if sandbox::userns_path(pod).is_some() {
        ns.push(json!({"type": "user", "path": infra("user")}));
        // cgroup2 can only be mounted by the owner of the cgroup namespace: one of our own.
        ns.push(json!({"type": "cgroup"}));
    }
    if !sandbox::host_network(&pod.config) {
        let netns = pod.netns.clone().ok_or_else(|| {
            ContainerError::FailedPrecondition(format!(
                "pod sandbox {} has no network namespace",
                pod.id
            ))
        })?;
        ns.push(json!({"type": "network", "path": netns}));
        ns.push(json!({"type": "uts", "path": infra("uts")}));
    }
    if ns_mode(sc, |o| o.ipc) != NamespaceMode::Node {
        ns.push(json!({"type": "ipc", "path": infra("ipc")}));
    }
    match ns_mode(sc, |o| o.pid) {
        NamespaceMode::Node => {}
        NamespaceMode::Container => ns.push(json!({"type": "pid"})),
        NamespaceMode::Pod => ns.push(json!({"type": "pid", "path": infra("pid")})),
        NamespaceMode::Target => {
            let target_id = sc
                .namespace_options
                .as_ref()
                .map(|o| o.target_id.clone())
                .unwrap_or_default();
            let target = ctx
                .store
                .resolve_container(&target_id)?
                .and_then(|id| ctx.store.container(&id))
                .filter(|c| c.state == ContainerState::Running && c.pid > 0)
                .ok_or_else(|| invalid(format!("target container {target_id:?} is not running")))?;
            ns.push(json!({"type": "pid", "path": format!("/proc/{}/ns/pid", target.pid)}));
        }
    }
    Ok(ns)
}

// ---------------------------------------------------------------------------------------------
// Start, stop, remove, status
// ---------------------------------------------------------------------------------------------

fn exit_file(record: &ContainerRecord) -> PathBuf {
    monitor::default_exit_file(&record.bundle)
}

/// Folds the monitor's exit file into a Running container's record.
pub fn refresh(ctx: &Context, record: &mut ContainerRecord) {
    if record.state != ContainerState::Running {
        return;
    }
    let mut exit = monitor::read_exit_file(&exit_file(record));
    let mut orphaned = false;
    if exit.is_none() && monitor_gone(record) {
        // The monitor writes the exit file before it exits: read again to tell "it just
        // finished" from "it was killed" (OOM killer, kill -9) and the exit is lost for good.
        exit = monitor::read_exit_file(&exit_file(record));
        orphaned = exit.is_none();
    }
    if orphaned {
        // Nobody would reap the init, log its output or record its end: stop it now rather
        // than report a container that runs unobserved.
        kill_orphaned_init(record);
        exit = Some(monitor::ExitRecord {
            exit_code: ORPHANED_EXIT_CODE,
            finished_at: monitor::now_nanos(),
            oom_killed: false,
        });
    }
    if let Some(exit) = exit {
        mark_exited(record, exit);
        if orphaned {
            record.message =
                "the container's monitor died; the container was killed and its exit status is unknown"
                    .into();
        }
        if let Err(e) = ctx.store.update_container(record) {
            tracing::warn!(container = %record.id, error = %e, "failed to persist the exit");
        }
        crate::events::container(ctx, record, crate::events::EventKind::Stopped);
    }
}

/// What containerd reports for a task whose shim died: the exit status is unknown.
const ORPHANED_EXIT_CODE: i32 = 255;

/// Whether the container's monitor is gone (dead, a zombie, or its pid reused by another
/// process). Unknown (no pid recorded yet) is not gone.
fn monitor_gone(record: &ContainerRecord) -> bool {
    let pid = fs::read_to_string(monitor::monitor_pid_file(&record.bundle))
        .ok()
        .and_then(|s| s.trim().parse::<i32>().ok())
        .unwrap_or(record.monitor_pid);
    if pid <= 0 {
        return false;
    }
    match fs::read(format!("/proc/{pid}/cmdline")) {
        // A zombie's cmdline is empty; another process's does not name this container's bundle.
        Ok(cmdline) => {
            let bundle = record.bundle.to_string_lossy();
            !String::from_utf8_lossy(&cmdline).contains(bundle.as_ref())
        }
        Err(_) => true,
    }
}

/// SIGKILL to the container init, if `record.pid` still is it (its cgroup names the container).
fn kill_orphaned_init(record: &ContainerRecord) {
    if record.pid <= 0 {
        return;
    }
    let ours = fs::read_to_string(format!("/proc/{}/cgroup", record.pid))
        .is_ok_and(|cgroups| cgroups.contains(&record.id));
    if ours {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(record.pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
}

fn mark_exited(record: &mut ContainerRecord, exit: monitor::ExitRecord) {
    record.state = ContainerState::Exited;
    record.exit_code = exit.exit_code;
    record.finished_at = exit.finished_at;
    record.pid = 0;
    record.reason = if exit.oom_killed {
        "OOMKilled"
    } else if exit.exit_code == 0 {
        "Completed"
    } else {
        "Error"
    }
    .to_string();
}

pub fn get(ctx: &Context, id: &str) -> Result<ContainerRecord, ContainerError> {
    let full = ctx
        .store
        .resolve_container(id)?
        .ok_or_else(|| ContainerError::NotFound(id.to_string()))?;
    let mut record = ctx
        .store
        .container(&full)
        .ok_or_else(|| ContainerError::NotFound(id.to_string()))?;
    refresh(ctx, &mut record);
    Ok(record)
}

pub fn list(ctx: &Context) -> Vec<ContainerRecord> {
    let mut records = ctx.store.containers();
    for record in &mut records {
        refresh(ctx, record);
    }
    records.retain(|r| r.state != ContainerState::Creating);
    records
}

/// StartContainer: the monitor runs the runtime's create, then we start it. A failure leaves
/// the container Exited with reason StartError (as containerd reports it), not half-running.
pub async fn start(ctx: &Context, id: &str) -> Result<(), ContainerError> {
    let record = get(ctx, id)?;
    let _guard = ctx.lock(&record.id).await;
    let mut record = get(ctx, &record.id)?;
    if record.state != ContainerState::Created {
        return Err(ContainerError::FailedPrecondition(format!(
            "container {} is {:?}, not created",
            record.id, record.state
        )));
    }
    let pod = sandbox::get(ctx, &record.sandbox_id)?;
    if pod.state != SandboxState::Ready {
        return Err(ContainerError::FailedPrecondition(format!(
            "pod sandbox {} is not ready",
            pod.id
        )));
    }
    let _ = fs::remove_file(exit_file(&record));
    let args = MonitorArgs {
        id: record.id.clone(),
        bundle: record.bundle.clone(),
        log_path: record.log_path.clone(),
        exit_file: exit_file(&record),
        runtime: ctx.runtime.binary.clone(),
        runtime_root: ctx.runtime.root.clone(),
        sync_fd: 3,
        stdio: monitor::StdioMode {
            tty: record.config.tty,
            stdin: record.config.stdin,
            stdin_once: record.config.stdin_once,
        },
    };
    let result = async {
        let spawned = monitor::spawn(&ctx.rcri_exe, &args).await?;
        record.pid = spawned.container_pid;
        record.monitor_pid = spawned.monitor_pid;
        // Stamped before the call: a short-lived container may be gone (and its finish time
        // recorded) by the time `start` returns.
        record.started_at = monitor::now_nanos();
        ctx.runtime.start(&record.id).await?;
        Ok::<(), ContainerError>(())
    }
    .await;
    match result {
        Ok(()) => {
            record.state = ContainerState::Running;
            ctx.store.update_container(&record)?;
            crate::events::container(ctx, &record, crate::events::EventKind::Started);
            Ok(())
        }
        Err(e) => {
            let _ = ctx.runtime.delete(&record.id, true).await;
            record.state = ContainerState::Exited;
            record.reason = "StartError".into();
            record.message = crate::error_chain(&e);
            record.exit_code = 128;
            record.finished_at = monitor::now_nanos();
            record.pid = 0;
            ctx.store.update_container(&record)?;
            crate::events::container(ctx, &record, crate::events::EventKind::Stopped);
            Err(e)
        }
    }
}

/// Waits until the monitor recorded the exit, up to `timeout`.
async fn wait_exit(record: &ContainerRecord, timeout: Duration) -> Option<monitor::ExitRecord> {
    let path = exit_file(record);
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(exit) = monitor::read_exit_file(&path) {
            return Some(exit);
        }
        if tokio::time::Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Signals every process of the container when its init is not the last of its PID namespace
/// (shared pod or host PID namespace); else the init alone, whose death ends the rest.
fn signal_all(record: &ContainerRecord) -> bool {
    ns_mode(&security_context(&record.config), |o| o.pid) != NamespaceMode::Container
}

/// The image's StopSignal (as containerd: the CRI gives none), else SIGTERM. The image is
/// found by its id, the digest of its config: that config cannot have changed since
/// CreateContainer, and the image cannot be removed while the container's rootfs uses it.
fn stop_signal(ctx: &Context, record: &ContainerRecord) -> String {
    let configured = if record.image_rootfs {
        ctx.images
            .get(&record.image_id)
            .ok()
            .and_then(|i| crate::image::stop_signal::runtime_signal(&i.config.stop_signal).ok())
            .flatten()
    } else {
        None
    };
    configured.unwrap_or_else(|| "SIGTERM".to_string())
}

/// StopContainer: the image's stop signal (default SIGTERM), up to `timeout` seconds, then
/// SIGKILL. Idempotent.
pub async fn stop(ctx: &Context, id: &str, timeout_secs: i64) -> Result<(), ContainerError> {
    let record = get(ctx, id)?;
    let _guard = ctx.lock(&record.id).await;
    let record = get(ctx, &record.id)?;
    stop_locked(ctx, record, timeout_secs).await
}

async fn stop_locked(
    ctx: &Context,
    mut record: ContainerRecord,
    timeout_secs: i64,
) -> Result<(), ContainerError> {
    if record.state != ContainerState::Running {
        return Ok(());
    }
    let all = signal_all(&record);
    let mut exit = None;
    if timeout_secs > 0 {
        let signal = stop_signal(ctx, &record);
        match ctx.runtime.kill(&record.id, &signal, all).await {
            Ok(()) | Err(RuntimeError::NotFound(_)) => {}
            Err(e) => {
                tracing::warn!(container = %record.id, %signal, error = %crate::error_chain(&e), "stop signal failed")
            }
        }
        exit = wait_exit(&record, Duration::from_secs(timeout_secs as u64)).await;
    }
    if exit.is_none() {
        match ctx.runtime.kill(&record.id, "SIGKILL", all).await {
            Ok(()) | Err(RuntimeError::NotFound(_)) => {}
            Err(e) => {
                tracing::warn!(container = %record.id, error = %crate::error_chain(&e), "SIGKILL failed")
            }
        }
        exit = wait_exit(&record, KILL_TIMEOUT).await;
    }
    let Some(exit) = exit else {
        return Err(ContainerError::DeadlineExceeded(format!(
            "container {} did not exit within {KILL_TIMEOUT:?} of SIGKILL",
            record.id
        )));
    };
    mark_exited(&mut record, exit);
    ctx.store.update_container(&record)?;
    crate::events::container(ctx, &record, crate::events::EventKind::Stopped);
    ctx.runtime.delete(&record.id, true).await?;
    Ok(())
}

/// RemoveContainer: kills a running container, deletes it from the runtime, removes its rootfs,
/// bundle and record. Idempotent. The log file stays (kubelet owns and removes it).
pub async fn remove(ctx: &Context, id: &str) -> Result<(), ContainerError> {
    let record = match get(ctx, id) {
        Ok(r) => r,
        Err(ContainerError::NotFound(_)) => return Ok(()),
        Err(e) => return Err(e),
    };
    let _guard = ctx.lock(&record.id).await;
    let Some(mut record) = ctx.store.container(&record.id) else {
        return Ok(());
    };
    refresh(ctx, &mut record);
    stop_locked(ctx, record.clone(), 0).await?;
    ctx.runtime.delete(&record.id, true).await?;
    remove_files(ctx, &record)?;
    ctx.store.remove_container(&record.id)?;
    crate::events::container(ctx, &record, crate::events::EventKind::Deleted);
    ctx.forget_lock(&record.id);
    Ok(())
}

/// Stops every container of a pod (StopPodSandbox), each with `timeout_secs` of grace.
pub async fn stop_all_in(
    ctx: &Context,
    sandbox_id: &str,
    timeout_secs: i64,
) -> Result<(), ContainerError> {
    for record in ctx.store.containers_of(sandbox_id) {
        stop(ctx, &record.id, timeout_secs).await?;
    }
    Ok(())
}

pub async fn remove_all_in(ctx: &Context, sandbox_id: &str) -> Result<(), ContainerError> {
    for record in ctx.store.containers_of(sandbox_id) {
        remove(ctx, &record.id).await?;
    }
    Ok(())
}

/// ReopenContainerLog: the monitor reopens the log path on SIGUSR1.
pub async fn reopen_log(ctx: &Context, id: &str) -> Result<(), ContainerError> {
    let record = get(ctx, id)?;
    if record.state != ContainerState::Running {
        return Err(ContainerError::FailedPrecondition(format!(
            "container {} is not running",
            record.id
        )));
    }
    let pid = fs::read_to_string(monitor::monitor_pid_file(&record.bundle))
        .ok()
        .and_then(|s| s.trim().parse::<i32>().ok())
        .unwrap_or(record.monitor_pid);
    if pid <= 0 {
        return Err(ContainerError::FailedPrecondition(
            "the container has no monitor".into(),
        ));
    }
    // kubelet renames the file, then calls us, then expects the new file at once (as with
    // containerd and CRI-O): the monitor reopens asynchronously, so wait until it has.
    let log = record.log_path.clone();
    let renamed_away = log.as_ref().is_some_and(|p| !p.exists());
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGUSR1,
    )
    .map_err(|e| ContainerError::Io {
        action: format!("signal monitor {pid}"),
        source: e.into(),
    })?;
    let Some(log) = log.filter(|_| renamed_away) else {
        return Ok(());
    };
    let deadline = tokio::time::Instant::now() + LOG_REOPEN_TIMEOUT;
    while !log.exists() {
        if tokio::time::Instant::now() > deadline {
            return Err(ContainerError::DeadlineExceeded(format!(
                "the monitor of container {} did not reopen {} within {LOG_REOPEN_TIMEOUT:?}",
                record.id,
                log.display()
            )));
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Ok(())
}

const LOG_REOPEN_TIMEOUT: Duration = Duration::from_secs(5);

/// At start: forget half-made containers, fold in exits that happened while rcri was down,
/// notice containers that vanished without a recorded exit.
pub async fn recover(ctx: &Context) {
    for mut record in ctx.store.containers() {
        match record.state {
            ContainerState::Creating => {
                tracing::info!(container = %record.id, "undoing a CreateContainer interrupted by a crash");
                discard(ctx, &record);
            }
            ContainerState::Created => {
                // A crash between the runtime's create and start: the half-started container is
                // removed so that StartContainer can run again from a clean state.
                if let Ok(Some(_)) = ctx.runtime.state(&record.id).await {
                    let _ = ctx.runtime.kill(&record.id, "SIGKILL", true).await;
                    let _ = ctx.runtime.delete(&record.id, true).await;
                }
            }
            ContainerState::Running => {
                refresh(ctx, &mut record);
                if record.state != ContainerState::Running {
                    continue;
                }
                let alive = matches!(ctx.runtime.state(&record.id).await, Ok(Some(s)) if s.status == "running" || s.status == "paused");
                if !alive {
                    // Give a monitor that is just finishing a moment to write the file.
                    if let Some(exit) = wait_exit(&record, Duration::from_secs(2)).await {
                        mark_exited(&mut record, exit);
                    } else {
                        record.state = ContainerState::Exited;
                        record.exit_code = 255;
                        record.finished_at = monitor::now_nanos();
                        record.reason = "Error".into();
                        record.message = "the container ended while rcri was down and no exit status was recorded".into();
                        record.pid = 0;
                    }
                    if let Err(e) = ctx.store.update_container(&record) {
                        tracing::warn!(container = %record.id, error = %e, "failed to persist the exit");
                    }
                    crate::events::container(ctx, &record, crate::events::EventKind::Stopped);
                }
            }
            ContainerState::Exited | ContainerState::Unknown => {}
        }
    }
}

// ---------------------------------------------------------------------------------------------
// ExecSync
// ---------------------------------------------------------------------------------------------

pub struct ExecOutput {
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub exit_code: i32,
}

/// ExecSync: runs `cmd` in the container through the runtime's exec, in the foreground, with
/// piped output. On timeout the exec'd process is SIGKILLed by its pid (from --pid-file) while
/// the runtime's exec still waits for it, so the runtime reaps it and no zombie is left in the
/// container; then the runtime's process group is killed too.
pub async fn exec_sync(
    ctx: &Context,
    id: &str,
    cmd: Vec<String>,
    timeout_secs: i64,
) -> Result<ExecOutput, ContainerError> {
    if cmd.is_empty() {
        return Err(invalid("exec command is empty"));
    }
    let record = get(ctx, id)?;
    if record.state != ContainerState::Running {
        return Err(ContainerError::FailedPrecondition(format!(
            "container {} is not running",
            record.id
        )));
    }
    let config_path = record.bundle.join("config.json");
    let spec: Value = fs::read(&config_path)
        .map_err(io_err(format!("read {}", config_path.display())))
        .and_then(|b| {
            serde_json::from_slice(&b)
                .map_err(|e| invalid(format!("bad {}: {e}", config_path.display())))
        })?;
    let mut process = spec.get("process").cloned().unwrap_or_else(|| json!({}));
    process["args"] = json!(cmd);
    process["terminal"] = json!(false);
    // The exec'd process is not the container's init: oomScoreAdj is inherited, not reset.
    if let Some(obj) = process.as_object_mut() {
        obj.remove("oomScoreAdj");
    }
    let tag = crate::new_id().map_err(io_err("generate an id"))?;
    let process_file = record.bundle.join(format!("exec-{}.json", &tag[..16]));
    let pid_file = record.bundle.join(format!("exec-{}.pid", &tag[..16]));
    fs::write(
        &process_file,
        serde_json::to_vec(&process).unwrap_or_default(),
    )
    .map_err(io_err(format!("write {}", process_file.display())))?;
    let result = run_exec(ctx, &record.id, &process_file, &pid_file, timeout_secs).await;
    let _ = fs::remove_file(&process_file);
    let _ = fs::remove_file(&pid_file);
    result
}

async fn run_exec(
    ctx: &Context,
    id: &str,
    process_file: &Path,
    pid_file: &Path,
    timeout_secs: i64,
) -> Result<ExecOutput, ContainerError> {
    let mut command = ctx.runtime.exec_command(id, process_file, pid_file);
    command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    let mut child = command
        .spawn()
        .map_err(io_err(format!("run {}", ctx.runtime.binary.display())))?;
    let group = child.id().map(|p| p as i32);
    let stdout_task = tokio::spawn(read_capped(child.stdout.take()));
    let stderr_task = tokio::spawn(read_capped(child.stderr.take()));
    let status = if timeout_secs > 0 {
        match tokio::time::timeout(Duration::from_secs(timeout_secs as u64), child.wait()).await {
            Ok(status) => status,
            Err(_) => {
                if let Some(pid) = fs::read_to_string(pid_file)
                    .ok()
                    .and_then(|s| s.trim().parse::<i32>().ok())
                {
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(pid),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                }
                // The runtime reaps the killed process and exits; if it does not, its whole
                // process group goes.
                if tokio::time::timeout(Duration::from_secs(2), child.wait())
                    .await
                    .is_err()
                {
                    if let Some(pgid) = group {
                        let _ = nix::sys::signal::killpg(
                            nix::unistd::Pid::from_raw(pgid),
                            nix::sys::signal::Signal::SIGKILL,
                        );
                    }
                    let _ = child.wait().await;
                }
                stdout_task.abort();
                stderr_task.abort();
                return Err(ContainerError::DeadlineExceeded(format!(
                    "command timed out after {timeout_secs}s"
                )));
            }
        }
    } else {
        child.wait().await
    }
    .map_err(io_err("wait for the runtime's exec"))?;
    // The runtime normally returns only once the process is gone; if it failed while the
    // process still ran (its own error is in stderr), the process must not outlive the call.
    if let Some(pid) = fs::read_to_string(pid_file)
        .ok()
        .and_then(|s| s.trim().parse::<i32>().ok())
    {
        let pid = nix::unistd::Pid::from_raw(pid);
        if nix::sys::signal::kill(pid, None).is_ok() {
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
        }
    }
    let stdout = tokio::time::timeout(EXEC_DRAIN_TIMEOUT, stdout_task)
        .await
        .ok()
        .and_then(|r| r.ok())
        .unwrap_or_default();
    let stderr = tokio::time::timeout(EXEC_DRAIN_TIMEOUT, stderr_task)
        .await
        .ok()
        .and_then(|r| r.ok())
        .unwrap_or_default();
    use std::os::unix::process::ExitStatusExt;
    let exit_code = status
        .code()
        .or_else(|| status.signal().map(|s| 128 + s))
        .unwrap_or(255);
    Ok(ExecOutput {
        stdout,
        stderr,
        exit_code,
    })
}

/// Reads a pipe to its end, keeping at most EXEC_OUTPUT_LIMIT bytes.
async fn read_capped<R: tokio::io::AsyncRead + Unpin>(pipe: Option<R>) -> Vec<u8> {
    let mut buf = Vec::new();
    if let Some(p) = pipe {
        let _ = p.take(EXEC_OUTPUT_LIMIT).read_to_end(&mut buf).await;
    }
    buf
}

/// Labels match a selector when every selector key is present with the same value.
pub fn labels_match(labels: &HashMap<String, String>, selector: &HashMap<String, String>) -> bool {
    selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

/// /dev/shm of a container: the pod's shared tmpfs, the host's for a host-IPC pod, or (a pod
/// made before pods had one) a private tmpfs.
fn pod_shm_mount(pod: &crate::store::SandboxRecord) -> Value {
    let opts = json!(["rbind", "nosuid", "noexec", "nodev"]);
    if sandbox::ipc_mode(&pod.config) == k8s_cri::v1::NamespaceMode::Node {
        return json!({"destination": "/dev/shm", "type": "bind", "source": "/dev/shm", "options": opts});
    }
    let shared = sandbox::shm_dir(pod);
    if shared.is_dir() {
        return json!({"destination": "/dev/shm", "type": "bind", "source": shared, "options": opts});
    }
    json!({"destination": "/dev/shm", "type": "tmpfs", "source": "shm", "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]})
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_cri::v1::Int64Value;

    fn sc_with(add: &[&str], drop: &[&str]) -> LinuxContainerSecurityContext {
        LinuxContainerSecurityContext {
            capabilities: Some(Capability {
                add_capabilities: add.iter().map(|s| s.to_string()).collect(),
                drop_capabilities: drop.iter().map(|s| s.to_string()).collect(),
                add_ambient_capabilities: vec![],
            }),
            ..Default::default()
        }
    }

    #[test]
    fn capabilities_add_drop_and_all() {
        let caps = capabilities(&sc_with(&["NET_ADMIN"], &["chown", "CAP_KILL"])).unwrap();
        assert!(caps.contains(&"CAP_NET_ADMIN".to_string()));
        assert!(!caps.contains(&"CAP_CHOWN".to_string()));
        assert!(!caps.contains(&"CAP_KILL".to_string()));
        assert_eq!(
            capabilities(&sc_with(&[], &["ALL"])).unwrap(),
            Vec::<String>::new()
        );
        assert_eq!(
            capabilities(&sc_with(&["NET_RAW"], &["ALL"])).unwrap(),
            vec!["CAP_NET_RAW".to_string()]
        );
        // ALL is what this process may hand out: every capability of its bounding set.
        let mut held = held_capabilities();
        held.sort();
        assert_eq!(capabilities(&sc_with(&["ALL"], &[])).unwrap(), held);
        assert!(held_capabilities().contains(&"CAP_SYS_ADMIN".to_string()));
        assert!(capabilities(&sc_with(&["BOGUS"], &[])).is_err());
    }

    #[test]
    fn command_and_args_follow_kubelet() {
        let image = ImageConfig {
            entrypoint: vec!["/ep".into()],
            cmd: vec!["c1".into()],
            ..Default::default()
        };
        let mut config = ContainerConfig::default();
        assert_eq!(process_args(&image, &config).unwrap(), ["/ep", "c1"]);
        config.args = vec!["a".into()];
        assert_eq!(process_args(&image, &config).unwrap(), ["/ep", "a"]);
        config.command = vec!["/cmd".into()];
        assert_eq!(process_args(&image, &config).unwrap(), ["/cmd", "a"]);
        config.args.clear();
        assert_eq!(process_args(&image, &config).unwrap(), ["/cmd"]);
        assert!(process_args(&ImageConfig::default(), &ContainerConfig::default()).is_err());
    }

    #[test]
    fn env_merges_with_cri_winning() {
        let image = ImageConfig {
            env: vec!["A=1".into(), "PATH=/img".into()],
            ..Default::default()
        };
        let config = ContainerConfig {
            envs: vec![k8s_cri::v1::KeyValue {
                key: "A".into(),
                value: "2".into(),
            }],
            ..Default::default()
        };
        let env = merge_env(&image, &config, "h");
        assert!(env.contains(&"A=2".to_string()));
        assert!(env.contains(&"PATH=/img".to_string()));
        assert!(env.contains(&"HOSTNAME=h".to_string()));
        assert_eq!(env.iter().filter(|e| e.starts_with("A=")).count(), 1);
    }

    #[test]
    fn unset_resources_are_omitted() {
        assert_eq!(resources(&LinuxContainerResources::default()), json!({}));
        let r = LinuxContainerResources {
            memory_limit_in_bytes: 1 << 20,
            cpu_shares: 2,
            ..Default::default()
        };
        assert_eq!(
            resources(&r),
            json!({"cpu": {"shares": 2}, "memory": {"limit": 1048576}})
        );
    }

    #[test]
    fn proc_status_gives_the_real_ids_and_the_groups() {
        let status = "Name:\tsh\nUid:\t1000\t1001\t1002\t1003\nGid:\t50\t51\t52\t53\n\
                      Groups:\t50 1234 50000 \nNgid:\t0\n";
        let u = user_from_proc_status(status).unwrap();
        assert_eq!((u.uid, u.gid), (1000, 50));
        assert_eq!(u.supplemental_groups, [50, 1234, 50000]);
        let u = user_from_proc_status("Uid:\t0\t0\t0\t0\nGid:\t0\t0\t0\t0\nGroups:\t\n").unwrap();
        assert!(u.supplemental_groups.is_empty());
        assert!(user_from_proc_status("Uid:\t0\t0\t0\t0\n").is_none());
    }

    #[test]
    fn run_as_group_needs_a_user() {
        let config = ContainerConfig {
            image: Some(k8s_cri::v1::ImageSpec {
                image: "x".into(),
                ..Default::default()
            }),
            linux: Some(k8s_cri::v1::LinuxContainerConfig {
                security_context: Some(LinuxContainerSecurityContext {
                    run_as_group: Some(Int64Value { value: 5 }),
                    ..Default::default()
                }),
                resources: None,
            }),
            ..Default::default()
        };
        assert!(matches!(
            validate(&config),
            Err(ContainerError::InvalidArgument(_))
        ));
    }

    #[test]
    fn recursive_read_only_needs_readonly_and_private() {
        let m = |readonly, propagation: MountPropagation| k8s_cri::v1::Mount {
            container_path: "/mnt".into(),
            host_path: "/tmp".into(),
            readonly,
            recursive_read_only: true,
            propagation: propagation as i32,
            ..Default::default()
        };
        assert!(
            validate_recursive_read_only(&m(true, MountPropagation::PropagationPrivate)).is_ok()
        );
        for bad in [
            m(false, MountPropagation::PropagationPrivate),
            m(true, MountPropagation::PropagationHostToContainer),
            m(true, MountPropagation::PropagationBidirectional),
        ] {
            assert!(
                matches!(
                    validate_recursive_read_only(&bad),
                    Err(ContainerError::InvalidArgument(_))
                ),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn device_numbers_split_like_glibc() {
        // /dev/null is 1:3 everywhere.
        let meta = fs::metadata("/dev/null").unwrap();
        assert_eq!(device_numbers(meta.rdev()), (1, 3));
    }

    #[test]
    fn seccomp_profile_kinds() {
        use k8s_cri::v1::SecurityProfile;
        let with = |profile_type: ProfileType| LinuxContainerSecurityContext {
            seccomp: Some(SecurityProfile {
                profile_type: profile_type as i32,
                localhost_ref: String::new(),
            }),
            ..Default::default()
        };
        let caps = capabilities(&LinuxContainerSecurityContext::default()).unwrap();
        // RuntimeDefault: the allow-list profile, ENOSYS by default, mount refused.
        let p = seccomp(&with(ProfileType::RuntimeDefault), &caps)
            .unwrap()
            .expect("a profile");
        assert_eq!(p["defaultAction"], "SCMP_ACT_ERRNO");
        assert_eq!(p["defaultErrnoRet"], 38);
        let rule_of = |p: &Value, name: &str| {
            p["syscalls"]
                .as_array()
                .unwrap()
                .iter()
                .find(|r| {
                    r.get("args").is_none() && r["names"].as_array().unwrap().contains(&json!(name))
                })
                .map(|r| r["action"].clone())
        };
        assert_eq!(rule_of(&p, "mount"), Some(json!("SCMP_ACT_ERRNO")));
        // With CAP_SYS_ADMIN in the container's set, mount is allowed.
        let admin = capabilities(&sc_with(&["SYS_ADMIN"], &[])).unwrap();
        let p = seccomp(&with(ProfileType::RuntimeDefault), &admin)
            .unwrap()
            .expect("a profile");
        assert_eq!(rule_of(&p, "mount"), Some(json!("SCMP_ACT_ALLOW")));
        // The deprecated path form means the same.
        #[allow(deprecated)]
        let old = LinuxContainerSecurityContext {
            seccomp_profile_path: "runtime/default".into(),
            ..Default::default()
        };
        assert!(seccomp(&old, &caps).unwrap().is_some());
        // Unconfined, unset, and privileged: no filter.
        assert!(seccomp(&with(ProfileType::Unconfined), &caps)
            .unwrap()
            .is_none());
        assert!(seccomp(&LinuxContainerSecurityContext::default(), &caps)
            .unwrap()
            .is_none());
        let mut privileged = with(ProfileType::RuntimeDefault);
        privileged.privileged = true;
        assert!(seccomp(&privileged, &caps).unwrap().is_none());
    }
}
