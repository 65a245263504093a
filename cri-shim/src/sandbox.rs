//! Pod sandboxes: a pinned network namespace with the CNI network attached, the pod's
//! hostname/hosts/resolv.conf files, and an infra process (`rcri pause`) run by the OCI runtime
//! that holds the pod's IPC and UTS (and, when the pod shares it, PID) namespaces for the pod's
//! containers to join.
//!
//! The infra container's rootfs is an empty read-only directory into which the runtime
//! bind-mounts, read-only, our own binary as `/rcri` and the host's library directories it links
//! against (`/usr`, `/lib*`, or the symlinks that stand for them on merged-/usr hosts): no pause
//! image to pull or build, and the process is the same executable the node already trusts. Its
//! RSS is that of a sleeping Rust binary that touched almost none of its pages.

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use k8s_cri::v1::{IdMapping, NamespaceMode, PodSandboxConfig};
use serde_json::{json, Value};

use crate::cni::{CniError, PortMapping};
use crate::monitor::{self, MonitorArgs, MonitorError};
use crate::netns::NetnsError;
use crate::runtime_client::RuntimeError;
use crate::store::{SandboxRecord, SandboxState, StoreError};
use crate::Context;

/// How long StopPodSandbox waits for the killed infra process to be reaped.
const INFRA_EXIT_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error("{0}")]
    InvalidArgument(String),
    #[error("pod sandbox {0} not found")]
    NotFound(String),
    #[error("pod sandbox name {name:?} is already reserved for {id}")]
    AlreadyExists { name: String, id: String },
    #[error("{0}")]
    FailedPrecondition(String),
    #[error("failed to {action}")]
    Io {
        action: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Store(StoreError),
    #[error("OCI runtime")]
    Runtime(#[from] RuntimeError),
    #[error("failed to run the infra container")]
    Monitor(#[from] MonitorError),
    #[error("network namespace")]
    Netns(#[from] NetnsError),
    #[error("CNI")]
    Cni(#[from] CniError),
    #[error("background task failed: {0}")]
    Join(String),
}

impl From<StoreError> for SandboxError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NameInUse { name, id } => SandboxError::AlreadyExists { name, id },
            other => SandboxError::Store(other),
        }
    }
}

fn io_err(action: impl Into<String>) -> impl FnOnce(std::io::Error) -> SandboxError {
    let action = action.into();
    move |source| SandboxError::Io { action, source }
}

/// kubelet's pod identity: unique per (name, namespace, uid, attempt).
pub fn sandbox_name(config: &PodSandboxConfig) -> Result<String, SandboxError> {
    let meta = config
        .metadata
        .as_ref()
        .ok_or_else(|| SandboxError::InvalidArgument("sandbox config has no metadata".into()))?;
    for (field, value) in [
        ("name", &meta.name),
        ("namespace", &meta.namespace),
        ("uid", &meta.uid),
    ] {
        if value.is_empty() {
            return Err(SandboxError::InvalidArgument(format!(
                "sandbox metadata.{field} is empty"
            )));
        }
    }
    Ok(format!(
        "{}_{}_{}_{}",
        meta.name, meta.namespace, meta.uid, meta.attempt
    ))
}

/// The pod's namespace options (defaults: POD for all, i.e. a private namespace per pod).
fn namespace_mode(
    config: &PodSandboxConfig,
    pick: fn(&k8s_cri::v1::NamespaceOption) -> i32,
) -> NamespaceMode {
    config
        .linux
        .as_ref()
        .and_then(|l| l.security_context.as_ref())
        .and_then(|s| s.namespace_options.as_ref())
        .map(|o| NamespaceMode::try_from(pick(o)).unwrap_or(NamespaceMode::Pod))
        .unwrap_or(NamespaceMode::Pod)
}

pub fn host_network(config: &PodSandboxConfig) -> bool {
    namespace_mode(config, |o| o.network) == NamespaceMode::Node
}
pub fn pid_mode(config: &PodSandboxConfig) -> NamespaceMode {
    namespace_mode(config, |o| o.pid)
}
pub fn ipc_mode(config: &PodSandboxConfig) -> NamespaceMode {
    namespace_mode(config, |o| o.ipc)
}

/// The pod's own user namespace (Kubernetes hostUsers: false): its uid and gid mapping, or
/// None when the pod uses the host's. Only meaningful once [`validate_userns`] passed.
pub fn userns_mappings(config: &PodSandboxConfig) -> Option<(IdMapping, IdMapping)> {
    let u = config
        .linux
        .as_ref()?
        .security_context
        .as_ref()?
        .namespace_options
        .as_ref()?
        .userns_options
        .as_ref()?;
    if u.mode != NamespaceMode::Pod as i32 {
        return None;
    }
    Some((*u.uids.first()?, *u.gids.first()?))
}

/// `/proc/<infra>/ns/user` of a pod with its own user namespace, which its containers join
/// and with which their rootfs and volumes are id-mapped.
pub fn userns_path(record: &SandboxRecord) -> Option<PathBuf> {
    userns_mappings(&record.config)?;
    Some(PathBuf::from(format!("/proc/{}/ns/user", record.infra_pid)))
}

/// A runtime-spec `uidMappings`/`gidMappings` list of one CRI mapping.
pub fn oci_mapping(m: &IdMapping) -> Value {
    json!([{"containerID": m.container_id, "hostID": m.host_id, "size": m.length}])
}

/// Whether the OCI runtime can run pods with their own user namespace: its `features` lists
/// the user namespace and id-mapped mounts (volumes are id-mapped; runc 1.1 cannot). Asked
/// once per rcri process; a runtime without `features` is taken not to.
pub async fn runtime_supports_userns(ctx: &Context) -> bool {
    static USERNS: tokio::sync::OnceCell<bool> = tokio::sync::OnceCell::const_new();
    *USERNS
        .get_or_init(|| async {
            let binary = &ctx.runtime.binary;
            let out = tokio::process::Command::new(binary)
                .arg("features")
                .stdin(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .kill_on_drop(true)
                .output();
            let supported = match tokio::time::timeout(Duration::from_secs(10), out).await {
                Ok(Ok(out)) if out.status.success() => serde_json::from_slice::<Value>(&out.stdout)
                    .is_ok_and(|f| {
                        let linux = &f["linux"];
                        let user = linux["namespaces"]
                            .as_array()
                            .is_some_and(|n| n.iter().any(|n| n == "user"));
                        user && linux["mountExtensions"]["idmap"]["enabled"] == json!(true)
                    }),
                _ => false,
            };
            tracing::info!(runtime = %binary.display(), supported, "user namespaces");
            supported
        })
        .await
}

/// What kubelet sends for hostUsers: false, and what containerd 2.x accepts: mode POD with
/// exactly one uid and one gid mapping, each starting at container id 0 (so the pod has a
/// root) and with the pod's other namespaces private (a user namespace cannot own the host's).
fn validate_userns(config: &PodSandboxConfig) -> Result<(), SandboxError> {
    let Some(u) = config
        .linux
        .as_ref()
        .and_then(|l| l.security_context.as_ref())
        .and_then(|s| s.namespace_options.as_ref())
        .and_then(|o| o.userns_options.as_ref())
    else {
        return Ok(());
    };
    let invalid = |m: String| Err(SandboxError::InvalidArgument(m));
    match NamespaceMode::try_from(u.mode) {
        Ok(NamespaceMode::Node) => {
            if !u.uids.is_empty() || !u.gids.is_empty() {
                return invalid("user namespace mode NODE takes no id mappings".into());
            }
            return Ok(());
        }
        Ok(NamespaceMode::Pod) => {}
        Ok(mode) => {
            return invalid(format!(
                "user namespace mode {} is not supported (only NODE and POD)",
                mode.as_str_name()
            ))
        }
        Err(_) => return invalid(format!("unknown user namespace mode {}", u.mode)),
    }
    for (what, maps) in [("uid", &u.uids), ("gid", &u.gids)] {
        let [m] = maps.as_slice() else {
            return invalid(format!(
                "a pod user namespace needs exactly one {what} mapping, got {}",
                maps.len()
            ));
        };
        if m.container_id != 0 {
            return invalid(format!(
                "the {what} mapping must start at container id 0 (got {})",
                m.container_id
            ));
        }
        if m.length == 0 || m.host_id.checked_add(m.length - 1).is_none() {
            return invalid(format!(
                "{what} mapping {}:{}:{} is empty or overflows",
                m.container_id, m.host_id, m.length
            ));
        }
    }
    for (what, mode) in [
        ("network", namespace_mode(config, |o| o.network)),
        ("pid", pid_mode(config)),
        ("ipc", ipc_mode(config)),
    ] {
        if mode == NamespaceMode::Node {
            return invalid(format!(
                "a pod with its own user namespace cannot use the host's {what} namespace"
            ));
        }
    }
    Ok(())
}

/// Files the sandbox dir holds and every container of the pod bind-mounts.
pub fn hostname_file(record: &SandboxRecord) -> PathBuf {
    record.dir.join("hostname")
}
pub fn hosts_file(record: &SandboxRecord) -> PathBuf {
    record.dir.join("hosts")
}
pub fn resolv_conf(record: &SandboxRecord) -> PathBuf {
    record.dir.join("resolv.conf")
}
/// The pod's /dev/shm: one tmpfs that every container of the pod mounts, as kubelet expects from
/// containerd and CRI-O (processes of one pod share POSIX shared memory, e.g. a database and
/// its sidecar). Only pods with their own IPC namespace have one; the others use the host's.
pub fn shm_dir(record: &SandboxRecord) -> PathBuf {
    record.dir.join("shm")
}

/// The size kubelet's docker-era default and containerd give a pod's /dev/shm.
const POD_SHM_SIZE: &str = "size=65536k";

fn mount_shm(record: &SandboxRecord) -> Result<(), SandboxError> {
    use nix::mount::{mount, MsFlags};
    let dir = shm_dir(record);
    fs::create_dir_all(&dir).map_err(io_err(format!("create {}", dir.display())))?;
    mount(
        Some("shm"),
        &dir,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        Some(format!("mode=1777,{POD_SHM_SIZE}").as_str()),
    )
    .map_err(|e| SandboxError::Io {
        action: format!("mount the pod's shm tmpfs on {}", dir.display()),
        source: e.into(),
    })
}

/// Idempotent: a sandbox without a shm mount (host IPC, or already unmounted) is fine. Must run
/// before the sandbox dir is removed: remove_dir_all would empty the tmpfs and then fail on it.
fn unmount_shm(record: &SandboxRecord) -> Result<(), SandboxError> {
    use nix::mount::{umount2, MntFlags};
    let dir = shm_dir(record);
    match umount2(&dir, MntFlags::MNT_DETACH) {
        Ok(()) | Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => Ok(()),
        Err(e) => Err(SandboxError::Io {
            action: format!("unmount the pod's shm {}", dir.display()),
            source: e.into(),
        }),
    }
}

fn exit_file(record: &SandboxRecord) -> PathBuf {
    monitor::default_exit_file(&record.dir)
}

/// The cgroup path of a pod member (infra or container), given to the runtime as cgroupsPath.
/// kubelet's cgroup_parent (absolute, cgroupfs driver) is honoured; without one the path is
/// relative, so the runtime nests it under the cgroup rcri (and its monitors) run in and never
/// touches cgroups rcri was not given.
pub fn cgroups_path(record: &SandboxRecord, member_id: &str) -> String {
    let parent = record
        .config
        .linux
        .as_ref()
        .map(|l| l.cgroup_parent.trim_end_matches('/'))
        .unwrap_or("");
    if parent.is_empty() {
        format!("rcri-{member_id}")
    } else {
        format!("{parent}/{member_id}")
    }
}

fn port_mappings(config: &PodSandboxConfig) -> Vec<PortMapping> {
    config
        .port_mappings
        .iter()
        .filter(|p| p.host_port > 0)
        .map(|p| PortMapping {
            host_port: p.host_port as u16,
            container_port: p.container_port as u16,
            protocol: match k8s_cri::v1::Protocol::try_from(p.protocol) {
                Ok(k8s_cri::v1::Protocol::Udp) => "udp".into(),
                Ok(k8s_cri::v1::Protocol::Sctp) => "sctp".into(),
                _ => "tcp".into(),
            },
            host_ip: p.host_ip.clone(),
        })
        .collect()
}

fn pod_meta(config: &PodSandboxConfig) -> (String, String) {
    config
        .metadata
        .as_ref()
        .map(|m| (m.name.clone(), m.namespace.clone()))
        .unwrap_or_default()
}

/// Checks the parts of a sandbox config that would otherwise fail half-way.
fn validate(config: &PodSandboxConfig) -> Result<(), SandboxError> {
    sandbox_name(config)?;
    validate_userns(config)?;
    if let Some(sc) = config
        .linux
        .as_ref()
        .and_then(|l| l.security_context.as_ref())
    {
        if sc.run_as_group.is_some() && sc.run_as_user.is_none() {
            return Err(SandboxError::InvalidArgument(
                "run_as_group is set without run_as_user".into(),
            ));
        }
        for (what, v) in [
            ("run_as_user", sc.run_as_user.as_ref().map(|v| v.value)),
            ("run_as_group", sc.run_as_group.as_ref().map(|v| v.value)),
        ] {
            if v.is_some_and(|v| !(0..=u32::MAX as i64).contains(&v)) {
                return Err(SandboxError::InvalidArgument(format!(
                    "{what} is out of range"
                )));
            }
        }
    }
    if config.hostname.contains('/') || config.hostname.len() > 64 {
        return Err(SandboxError::InvalidArgument(format!(
            "invalid hostname {:?}",
            config.hostname
        )));
    }
    Ok(())
}

/// RunPodSandbox. On any failure everything made so far is undone before the error returns.
pub async fn run(
    ctx: &Context,
    config: PodSandboxConfig,
    runtime_handler: String,
) -> Result<String, SandboxError> {
    validate(&config)?;
    if userns_mappings(&config).is_some() && !runtime_supports_userns(ctx).await {
        return Err(SandboxError::InvalidArgument(
            "the OCI runtime does not support user namespaces with id-mapped mounts".into(),
        ));
    }
    if !runtime_handler.is_empty() {
        return Err(SandboxError::InvalidArgument(format!(
            "unknown runtime handler {runtime_handler:?} (only the default handler exists)"
        )));
    }
    let name = sandbox_name(&config)?;
    let id = crate::new_id().map_err(io_err("generate an id"))?;
    let _guard = ctx.lock(&id).await;
    let mut record = SandboxRecord {
        id: id.clone(),
        name,
        config,
        runtime_handler,
        created_at: monitor::now_nanos(),
        state: SandboxState::Creating,
        netns: None,
        cni_attached: false,
        ips: Vec::new(),
        infra_pid: 0,
        dir: ctx.config.state_dir.join("sandboxes").join(&id),
    };
    // Persisted first: a crash from here on is recognised at start (state Creating) and undone.
    ctx.store.insert_sandbox(record.clone())?;
    match set_up(ctx, &mut record).await {
        Ok(()) => {
            // As containerd: kubelet's evented PLEG sees a pod as its sandbox "container".
            crate::events::sandbox(ctx, &id, crate::events::EventKind::Created);
            crate::events::sandbox(ctx, &id, crate::events::EventKind::Started);
            Ok(id)
        }
        Err(e) => {
            tracing::warn!(sandbox = %id, error = %crate::error_chain(&e), "RunPodSandbox failed, undoing");
            tear_down(ctx, &mut record).await;
            if let Err(store_err) = ctx.store.remove_sandbox(&id) {
                tracing::error!(sandbox = %id, error = %store_err, "failed to remove the record");
            }
            ctx.forget_lock(&id);
            Err(e)
        }
    }
}

/// Kept for callers outside this module that used the old name; prefer `crate::error_chain`.
pub use crate::error_chain as crate_error_chain;

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, SandboxError> + Send + 'static,
) -> Result<T, SandboxError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| SandboxError::Join(e.to_string()))?
}

async fn set_up(ctx: &Context, record: &mut SandboxRecord) -> Result<(), SandboxError> {
    let rootfs = record.dir.join("rootfs");
    fs::create_dir_all(&rootfs).map_err(io_err(format!("create {}", rootfs.display())))?;
    if ipc_mode(&record.config) != NamespaceMode::Node {
        mount_shm(record)?;
    }

    // A pod with its own user namespace gets a network namespace made by its infra, inside
    // that user namespace (as containerd does): only then may the pod mount sysfs and set its
    // net sysctls, whose ids (ping_group_range) are then the pod's. It is attached to the CNI
    // network once the infra is created, before it starts.
    let own_userns = userns_mappings(&record.config).is_some();
    let mut attach_now = false;
    if !host_network(&record.config) {
        let dir = ctx.config.state_dir.join("netns");
        // Recorded before it exists: a crash while the pin is being made must leave a record
        // that recovery undoes (netns::remove accepts a pin that is missing or half-made).
        record.netns = Some(dir.join(&record.id));
        ctx.store.update_sandbox(record)?;
        let id = record.id.clone();
        let path = blocking(move || Ok(crate::netns::create(&dir, &id)?)).await?;
        record.netns = Some(path);
        attach_now = !own_userns;
    }

    let spec = infra_spec(ctx, record)?;
    let config_path = record.dir.join("config.json");
    let bytes = serde_json::to_vec_pretty(&spec).unwrap_or_default();
    fs::write(&config_path, bytes).map_err(io_err(format!("write {}", config_path.display())))?;

    let args = MonitorArgs {
        id: record.id.clone(),
        bundle: record.dir.clone(),
        log_path: None,
        exit_file: exit_file(record),
        runtime: ctx.runtime.binary.clone(),
        runtime_root: ctx.runtime.root.clone(),
        sync_fd: 3,
        stdio: monitor::StdioMode::default(),
    };
    // The pod's network (CNI ADD: plugin processes, mostly their own start-up) and its infra
    // container (the monitor and the runtime's create) need nothing from each other but the
    // network namespace, which exists now: they are made side by side, and both are done
    // before the sandbox is reported ready. Each result is recorded before any error is
    // returned, so that the undo knows what to tear down.
    let (network, infra) = tokio::join!(
        async {
            if attach_now {
                attach_network(ctx, record).await
            } else {
                Ok(())
            }
        },
        monitor::spawn(&ctx.rcri_exe, &args),
    );
    if let Ok(spawned) = &infra {
        record.infra_pid = spawned.container_pid;
    }
    network?;
    infra?;
    if let (true, Some(path)) = (own_userns, record.netns.clone()) {
        pin_infra_netns(&path, record.infra_pid)?;
        attach_network(ctx, record).await?;
    }
    // /etc/hosts names the pod's IPs, known only now.
    write_pod_files(record)?;
    ctx.runtime.start(&record.id).await?;
    record.state = SandboxState::Ready;
    ctx.store.update_sandbox(record)?;
    Ok(())
}

/// CNI ADD on the pod's pinned network namespace; records the pod's IPs.
async fn attach_network(ctx: &Context, record: &mut SandboxRecord) -> Result<(), SandboxError> {
    let Some(path) = record.netns.clone() else {
        return Ok(());
    };
    // CNI DEL is idempotent, so it is owed from the moment ADD may have started.
    record.cni_attached = true;
    ctx.store.update_sandbox(record)?;
    let cni = ctx.cni.clone();
    let (name, namespace) = pod_meta(&record.config);
    let ports = port_mappings(&record.config);
    let id = record.id.clone();
    let status = blocking(move || Ok(cni.add(&id, &path, &name, &namespace, &ports)?)).await?;
    record.ips = status.ips.iter().map(|ip| ip.to_string()).collect();
    Ok(())
}

/// Points the pod's netns pin (made by netns::create, which also readies its directory) at
/// the network namespace the infra made inside the pod's user namespace; the namespace the pin
/// held before goes away with it. Teardown is then the same as for any pod.
fn pin_infra_netns(path: &Path, infra_pid: i32) -> Result<(), SandboxError> {
    use nix::mount::{mount, umount2, MntFlags, MsFlags};
    let sys = |action: String| {
        move |e: nix::Error| SandboxError::Io {
            action,
            source: e.into(),
        }
    };
    umount2(path, MntFlags::MNT_DETACH).map_err(sys(format!(
        "unpin the placeholder netns {}",
        path.display()
    )))?;
    let infra_ns = PathBuf::from(format!("/proc/{infra_pid}/ns/net"));
    mount(
        Some(&infra_ns),
        path,
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .map_err(sys(format!(
        "pin {} on {}",
        infra_ns.display(),
        path.display()
    )))
}

fn write_pod_files(record: &SandboxRecord) -> Result<(), SandboxError> {
    let config = &record.config;
    let hostname = pod_hostname(config);
    let mut hosts = String::from(
        "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n\
         fe00::0\tip6-localnet\nff00::0\tip6-mcastprefix\nff02::1\tip6-allnodes\n\
         ff02::2\tip6-allrouters\n",
    );
    if host_network(config) {
        // A host-network pod sees the node's own names, as with Docker and containerd.
        if let Ok(host) = fs::read_to_string("/etc/hosts") {
            hosts = host;
        }
    } else {
        for ip in &record.ips {
            hosts.push_str(&format!("{ip}\t{hostname}\n"));
        }
    }
    let resolv = match &config.dns_config {
        Some(dns)
            if !(dns.servers.is_empty() && dns.searches.is_empty() && dns.options.is_empty()) =>
        {
            let mut text = String::new();
            if !dns.searches.is_empty() {
                text.push_str(&format!("search {}\n", dns.searches.join(" ")));
            }
            for server in &dns.servers {
                text.push_str(&format!("nameserver {server}\n"));
            }
            if !dns.options.is_empty() {
                text.push_str(&format!("options {}\n", dns.options.join(" ")));
            }
            text
        }
        _ => fs::read_to_string("/etc/resolv.conf").unwrap_or_default(),
    };
    for (path, content) in [
        (hostname_file(record), format!("{hostname}\n")),
        (hosts_file(record), hosts),
        (resolv_conf(record), resolv),
    ] {
        fs::write(&path, content).map_err(io_err(format!("write {}", path.display())))?;
    }
    Ok(())
}

fn pod_hostname(config: &PodSandboxConfig) -> String {
    if !config.hostname.is_empty() {
        return config.hostname.clone();
    }
    if host_network(config) {
        return nix::unistd::gethostname()
            .ok()
            .and_then(|h| h.into_string().ok())
            .unwrap_or_default();
    }
    let name = pod_meta(config).0;
    name.chars().take(63).collect()
}

/// The host directories the pause binary needs to start (its ELF interpreter and libraries):
/// replicated as symlinks when they are symlinks (merged /usr), else bind-mounted read-only.
const LIBRARY_DIRS: &[&str] = &["/usr", "/lib", "/lib64", "/lib32", "/libx32"];

fn infra_spec(ctx: &Context, record: &SandboxRecord) -> Result<Value, SandboxError> {
    let config = &record.config;
    let rootfs = record.dir.join("rootfs");
    let mut mounts = vec![
        json!({"destination": "/proc", "type": "proc", "source": "proc", "options": ["nosuid", "noexec", "nodev"]}),
        json!({"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]}),
        json!({"destination": "/rcri", "type": "bind", "source": ctx.rcri_exe, "options": ["rbind", "ro", "nosuid", "nodev"]}),
    ];
    // Mount points exist before the runtime makes the root read-only.
    for dir in ["proc", "dev"] {
        fs::create_dir_all(rootfs.join(dir)).map_err(io_err("create the infra rootfs"))?;
    }
    let pause = rootfs.join("rcri");
    if !pause.exists() {
        fs::write(&pause, b"").map_err(io_err(format!("create {}", pause.display())))?;
    }
    for dir in LIBRARY_DIRS {
        let host = Path::new(dir);
        let inside = rootfs.join(dir.trim_start_matches('/'));
        match fs::symlink_metadata(host) {
            Ok(meta) if meta.file_type().is_symlink() => {
                let target = fs::read_link(host).map_err(io_err(format!("read link {dir}")))?;
                if fs::symlink_metadata(&inside).is_err() {
                    std::os::unix::fs::symlink(&target, &inside)
                        .map_err(io_err(format!("link {}", inside.display())))?;
                }
            }
            Ok(meta) if meta.is_dir() => {
                fs::create_dir_all(&inside)
                    .map_err(io_err(format!("create {}", inside.display())))?;
                mounts.push(json!({"destination": dir, "type": "bind", "source": dir, "options": ["rbind", "ro", "nosuid", "nodev"]}));
            }
            _ => {}
        }
    }

    let sc = config
        .linux
        .as_ref()
        .and_then(|l| l.security_context.as_ref());
    let uid = sc
        .and_then(|s| s.run_as_user.as_ref())
        .map(|v| v.value)
        .unwrap_or(0);
    let gid = sc
        .and_then(|s| s.run_as_group.as_ref())
        .map(|v| v.value)
        .unwrap_or(0);
    let groups: Vec<i64> = sc
        .map(|s| s.supplemental_groups.clone())
        .unwrap_or_default();

    let mut namespaces = vec![json!({"type": "mount"})];
    if pid_mode(config) != NamespaceMode::Node {
        namespaces.push(json!({"type": "pid"}));
    }
    if ipc_mode(config) != NamespaceMode::Node {
        namespaces.push(json!({"type": "ipc"}));
    }
    let mut spec = json!({
        "ociVersion": "1.0.2",
        "process": {
            "terminal": false,
            "user": {"uid": uid, "gid": gid, "additionalGids": groups},
            "args": ["/rcri", "pause"],
            "env": ["PATH=/"],
            "cwd": "/",
            "capabilities": {"bounding": [], "effective": [], "permitted": []},
            "noNewPrivileges": true,
            "oomScoreAdj": clamp_oom_score_adj(-998),
        },
        "root": {"path": "rootfs", "readonly": true},
        "mounts": mounts,
        "linux": {
            "cgroupsPath": cgroups_path(record, &record.id),
            "resources": {"devices": [{"allow": false, "access": "rwm"}]},
            "maskedPaths": crate::container::DEFAULT_MASKED_PATHS,
            "readonlyPaths": crate::container::DEFAULT_READONLY_PATHS,
        },
    });
    if let Some(netns) = &record.netns {
        if userns_mappings(config).is_some() {
            namespaces.push(json!({"type": "network"}));
        } else {
            namespaces.push(json!({"type": "network", "path": netns}));
        }
        namespaces.push(json!({"type": "uts"}));
        spec["hostname"] = json!(pod_hostname(config));
    }
    if let Some((uids, gids)) = userns_mappings(config) {
        // Made before the pod's other namespaces, so that it owns them all (its containers can
        // then mount sysfs, mqueue and proc).
        namespaces.push(json!({"type": "user"}));
        spec["linux"]["uidMappings"] = oci_mapping(&uids);
        spec["linux"]["gidMappings"] = oci_mapping(&gids);
    }
    spec["linux"]["namespaces"] = json!(namespaces);
    let sysctls: HashMap<String, String> = config
        .linux
        .as_ref()
        .map(|l| l.sysctls.clone())
        .unwrap_or_default();
    if !sysctls.is_empty() {
        spec["linux"]["sysctl"] = json!(sysctls);
    }
    Ok(spec)
}

/// The kernel refuses to lower oom_score_adj below the caller's own without CAP_SYS_RESOURCE
/// (which rcri may not have, e.g. in a container); like containerd's restrict_oom_score_adj, a
/// request below our current value is raised to it instead of failing the container.
pub fn clamp_oom_score_adj(wanted: i64) -> i64 {
    let current = fs::read_to_string("/proc/self/oom_score_adj")
        .ok()
        .and_then(|s| s.trim().parse::<i64>().ok())
        .unwrap_or(0);
    wanted.clamp(current, 1000)
}

/// Refreshes the recorded state from the infra's exit file: a pod whose infra died is NotReady.
pub fn refresh(ctx: &Context, record: &mut SandboxRecord) {
    if record.state == SandboxState::Ready && monitor::read_exit_file(&exit_file(record)).is_some()
    {
        record.state = SandboxState::NotReady;
        record.infra_pid = 0;
        if let Err(e) = ctx.store.update_sandbox(record) {
            tracing::warn!(sandbox = %record.id, error = %e, "failed to persist NotReady");
        }
        crate::events::sandbox(ctx, &record.id, crate::events::EventKind::Stopped);
    }
}

pub fn get(ctx: &Context, id: &str) -> Result<SandboxRecord, SandboxError> {
    let full = ctx
        .store
        .resolve_sandbox(id)?
        .ok_or_else(|| SandboxError::NotFound(id.to_string()))?;
    let mut record = ctx
        .store
        .sandbox(&full)
        .ok_or_else(|| SandboxError::NotFound(id.to_string()))?;
    refresh(ctx, &mut record);
    Ok(record)
}

pub fn list(ctx: &Context) -> Vec<SandboxRecord> {
    let mut records = ctx.store.sandboxes();
    for record in &mut records {
        refresh(ctx, record);
    }
    records.retain(|r| r.state != SandboxState::Creating);
    records
}

/// StopPodSandbox's sandbox half (the caller stops the pod's containers first): kills the infra,
/// CNI DEL, removes the network namespace. Idempotent.
pub async fn stop(ctx: &Context, id: &str) -> Result<(), SandboxError> {
    let record = get(ctx, id)?;
    let _guard = ctx.lock(&record.id).await;
    let Some(mut record) = ctx.store.sandbox(&record.id) else {
        return Ok(());
    };
    stop_infra(ctx, &record).await?;
    release_network(ctx, &mut record).await?;
    unmount_shm(&record)?;
    record.state = SandboxState::NotReady;
    record.infra_pid = 0;
    ctx.store.update_sandbox(&record)?;
    crate::events::sandbox(ctx, &record.id, crate::events::EventKind::Stopped);
    Ok(())
}

async fn stop_infra(ctx: &Context, record: &SandboxRecord) -> Result<(), SandboxError> {
    match ctx.runtime.state(&record.id).await? {
        Some(state)
            if state.status == "running"
                || state.status == "created"
                || state.status == "paused" =>
        {
            match ctx.runtime.kill(&record.id, "SIGKILL", false).await {
                Ok(()) | Err(RuntimeError::NotFound(_)) => {}
                Err(e) => return Err(e.into()),
            }
            let exit = exit_file(record);
            let deadline = tokio::time::Instant::now() + INFRA_EXIT_TIMEOUT;
            while monitor::read_exit_file(&exit).is_none() && tokio::time::Instant::now() < deadline
            {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            ctx.runtime.delete(&record.id, true).await?;
        }
        Some(_) => ctx.runtime.delete(&record.id, true).await?,
        None => {}
    }
    Ok(())
}

async fn release_network(ctx: &Context, record: &mut SandboxRecord) -> Result<(), SandboxError> {
    if let Some(netns) = record.netns.clone() {
        if record.cni_attached {
            let cni = ctx.cni.clone();
            let (name, namespace) = pod_meta(&record.config);
            let ports = port_mappings(&record.config);
            let id = record.id.clone();
            let path = netns.clone();
            blocking(move || Ok(cni.del(&id, &path, &name, &namespace, &ports)?)).await?;
            record.cni_attached = false;
            ctx.store.update_sandbox(record)?;
        }
        blocking(move || Ok(crate::netns::remove(&netns)?)).await?;
        record.netns = None;
        ctx.store.update_sandbox(record)?;
    }
    Ok(())
}

/// Best-effort undo of whatever exists of a sandbox (failed RunPodSandbox, crash recovery).
async fn tear_down(ctx: &Context, record: &mut SandboxRecord) {
    if let Err(e) = stop_infra(ctx, record).await {
        tracing::warn!(sandbox = %record.id, error = %crate::error_chain(&e), "failed to remove the infra container");
    }
    if let Err(e) = release_network(ctx, record).await {
        tracing::warn!(sandbox = %record.id, error = %crate::error_chain(&e), "failed to release the pod network");
        // The record goes with this undo, so nothing would ever retry: the namespace goes now
        // all the same (as containerd does), and the pod's interfaces with it; what a plugin
        // keeps elsewhere (an IPAM lease) is for its own DEL, which just failed.
        if let Some(netns) = record.netns.take() {
            if let Err(e) = blocking(move || Ok(crate::netns::remove(&netns)?)).await {
                tracing::warn!(sandbox = %record.id, error = %crate::error_chain(&e), "failed to remove the pod's network namespace");
            }
        }
    }
    if let Err(e) = unmount_shm(record) {
        tracing::warn!(sandbox = %record.id, error = %crate::error_chain(&e), "failed to unmount the pod's shm");
    }
    if let Err(e) = fs::remove_dir_all(&record.dir) {
        if e.kind() != std::io::ErrorKind::NotFound {
            tracing::warn!(sandbox = %record.id, error = %e, "failed to remove the sandbox dir");
        }
    }
}

/// RemovePodSandbox's sandbox half (the caller removed the pod's containers). Idempotent: an
/// unknown id is not an error.
pub async fn remove(ctx: &Context, id: &str) -> Result<(), SandboxError> {
    let record = match get(ctx, id) {
        Ok(r) => r,
        Err(SandboxError::NotFound(_)) => return Ok(()),
        Err(e) => return Err(e),
    };
    let _guard = ctx.lock(&record.id).await;
    let Some(mut record) = ctx.store.sandbox(&record.id) else {
        return Ok(());
    };
    stop_infra(ctx, &record).await?;
    release_network(ctx, &mut record).await?;
    unmount_shm(&record)?;
    match fs::remove_dir_all(&record.dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_err(format!("remove {}", record.dir.display()))(e)),
    }
    ctx.store.remove_sandbox(&record.id)?;
    crate::events::sandbox(ctx, &record.id, crate::events::EventKind::Deleted);
    ctx.forget_lock(&record.id);
    Ok(())
}

/// At start: undo sandboxes a crash left half-made; mark those whose infra died NotReady.
pub async fn recover(ctx: &Context) {
    for mut record in ctx.store.sandboxes() {
        match record.state {
            SandboxState::Creating => {
                tracing::info!(sandbox = %record.id, "undoing a RunPodSandbox interrupted by a crash");
                tear_down(ctx, &mut record).await;
                if let Err(e) = ctx.store.remove_sandbox(&record.id) {
                    tracing::error!(sandbox = %record.id, error = %e, "failed to remove the record");
                }
            }
            SandboxState::Ready => {
                refresh(ctx, &mut record);
                if record.state == SandboxState::Ready {
                    let alive = matches!(ctx.runtime.state(&record.id).await, Ok(Some(s)) if s.status == "running");
                    if !alive {
                        record.state = SandboxState::NotReady;
                        record.infra_pid = 0;
                        if let Err(e) = ctx.store.update_sandbox(&record) {
                            tracing::warn!(sandbox = %record.id, error = %e, "failed to persist NotReady");
                        }
                        crate::events::sandbox(ctx, &record.id, crate::events::EventKind::Stopped);
                    }
                }
            }
            SandboxState::NotReady => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_cri::v1::PodSandboxMetadata;

    #[test]
    fn names_need_full_metadata() {
        let mut config = PodSandboxConfig::default();
        assert!(matches!(
            sandbox_name(&config),
            Err(SandboxError::InvalidArgument(_))
        ));
        config.metadata = Some(PodSandboxMetadata {
            name: "web".into(),
            uid: "u1".into(),
            namespace: "default".into(),
            attempt: 2,
        });
        assert_eq!(sandbox_name(&config).unwrap(), "web_default_u1_2");
    }

    #[test]
    fn oom_score_adj_is_never_below_ours() {
        let ours: i64 = fs::read_to_string("/proc/self/oom_score_adj")
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        assert_eq!(clamp_oom_score_adj(-1000), ours.max(-1000));
        assert_eq!(clamp_oom_score_adj(2000), 1000);
    }
}
