//! A v1 Pod turned into CRI requests the way kubelet builds them (pkg/kubelet/kuberuntime:
//! generatePodSandboxConfig, generateContainerConfig, labels.go; pkg/kubelet/qos; the API
//! server's defaulting and validation for the parts a node acts on).
use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::time::SystemTime;

use anyhow::Context;
use k8s_cri::v1 as cri;
use k8s_cri::v1::security_profile::ProfileType;

use super::manifest::{
    Container, Pod, PodSecurityContext, PullPolicy, Quantity, SeccompProfile, SecurityContext,
};
use super::quantity;
use super::sources::ConfigSources;

mod dns;
mod env;
mod validate;

pub use env::{expand, field_ref_value, make_env, resource_field_value};
pub use validate::validate;

/// What env valueFrom / downward API need that is only known once the sandbox runs.
#[derive(Debug, Clone, Default)]
pub struct PodRuntimeInfo {
    pub pod_ip: String,
    pub pod_ips: Vec<String>,
    pub host_ip: String,
    pub node_name: String,
}

/// Where `seccompProfile: {type: Localhost, localhostProfile: x}` is looked up: kubelet's
/// <root-dir>/seccomp, with this kubelet's default root dir.
pub const SECCOMP_PROFILE_ROOT: &str = "/var/lib/rcrictl/seccomp";

// Kubelet's CPU constants (pkg/kubelet/cm/helpers_linux.go).
const MIN_SHARES: i64 = 2;
const MAX_SHARES: i64 = 262_144;
const SHARES_PER_CPU: i64 = 1024;
const MILLI_CPU_TO_CPU: i64 = 1000;
/// 100 ms, the CFS period kubelet uses (the CPUCFSQuotaPeriod gate is off by default).
pub const QUOTA_PERIOD: i64 = 100_000;
const MIN_QUOTA_PERIOD: i64 = 1000;

// pkg/kubelet/qos/policy.go
const GUARANTEED_OOM_SCORE_ADJ: i64 = -997;
const BEST_EFFORT_OOM_SCORE_ADJ: i64 = 1000;

/// The annotation and label keys kubelet puts on sandboxes and containers (labels.go).
pub mod keys {
    pub const POD_NAME: &str = "io.kubernetes.pod.name";
    pub const POD_NAMESPACE: &str = "io.kubernetes.pod.namespace";
    pub const POD_UID: &str = "io.kubernetes.pod.uid";
    pub const CONTAINER_NAME: &str = "io.kubernetes.container.name";
    pub const CONTAINER_HASH: &str = "io.kubernetes.container.hash";
    pub const RESTART_COUNT: &str = "io.kubernetes.container.restartCount";
    pub const TERMINATION_MESSAGE_PATH: &str = "io.kubernetes.container.terminationMessagePath";
    pub const TERMINATION_MESSAGE_POLICY: &str = "io.kubernetes.container.terminationMessagePolicy";
    pub const TERMINATION_GRACE_PERIOD: &str = "io.kubernetes.pod.terminationGracePeriod";
    pub const PRE_STOP_HANDLER: &str = "io.kubernetes.container.preStopHandler";
    pub const CONTAINER_PORTS: &str = "io.kubernetes.container.ports";
}

/// A random UUID from the kernel (the API server would assign one).
fn new_uid() -> String {
    if let Ok(u) = std::fs::read_to_string("/proc/sys/kernel/random/uuid") {
        return u.trim().to_string();
    }
    // /proc unreadable: hash the clock and pid with std's randomly keyed hasher.
    use std::hash::{BuildHasher, Hasher};
    let mut parts = [0u64; 2];
    for (i, p) in parts.iter_mut().enumerate() {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u128(
            SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or_default(),
        );
        h.write_u32(std::process::id());
        h.write_usize(i);
        *p = h.finish();
    }
    let hex = format!("{:016x}{:016x}", parts[0], parts[1]);
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

/// The default pull policy for an image reference: Always for `:latest` or no tag (and no
/// digest), else IfNotPresent (the API server's SetDefaults_Container).
pub fn default_pull_policy(image: &str) -> PullPolicy {
    if image.contains('@') {
        return PullPolicy::IfNotPresent;
    }
    // The tag is after the last ':' that follows the last '/' (a registry port is not a tag).
    let last = image.rsplit('/').next().unwrap_or(image);
    match last.rsplit_once(':') {
        Some((_, "latest")) | None => PullPolicy::Always,
        Some(_) => PullPolicy::IfNotPresent,
    }
}

fn default_container(c: &mut Container) {
    if c.image_pull_policy.is_none() {
        c.image_pull_policy = Some(default_pull_policy(&c.image));
    }
    for port in &mut c.ports {
        if port.protocol.as_deref().unwrap_or("").is_empty() {
            port.protocol = Some("TCP".into());
        }
    }
    for (name, limit) in c.resources.limits.clone() {
        c.resources.requests.entry(name).or_insert(limit);
    }
    if c.termination_message_path
        .as_deref()
        .unwrap_or("")
        .is_empty()
    {
        c.termination_message_path = Some("/dev/termination-log".into());
    }
    if c.termination_message_policy
        .as_deref()
        .unwrap_or("")
        .is_empty()
    {
        c.termination_message_policy = Some("File".into());
    }
}

/// Defaults as the API server would apply them: namespace "default", uid (a random UUID) when
/// empty, restartPolicy Always, terminationGracePeriodSeconds 30, dnsPolicy ClusterFirst,
/// imagePullPolicy, requests from limits, port protocol TCP, terminationMessagePath/Policy,
/// and creationTimestamp (RFC 3339 now).
pub fn apply_defaults(pod: &mut Pod) {
    if pod.api_version.is_empty() {
        pod.api_version = "v1".into();
    }
    if pod.kind.is_empty() {
        pod.kind = "Pod".into();
    }
    let meta = &mut pod.metadata;
    if meta.namespace.is_empty() {
        meta.namespace = "default".into();
    }
    if meta.uid.is_empty() {
        meta.uid = new_uid();
    }
    if meta.creation_timestamp.is_none() {
        meta.creation_timestamp =
            Some(humantime::format_rfc3339_seconds(SystemTime::now()).to_string());
    }
    let spec = &mut pod.spec;
    spec.restart_policy.get_or_insert(Default::default());
    spec.termination_grace_period_seconds.get_or_insert(30);
    spec.dns_policy.get_or_insert(Default::default());
    for c in spec
        .containers
        .iter_mut()
        .chain(spec.init_containers.iter_mut())
    {
        default_container(c);
    }
    for v in &mut spec.volumes {
        // defaultMode 0644 for every file-projecting volume (SetDefaults_*VolumeSource).
        if let Some(s) = &mut v.config_map {
            s.default_mode.get_or_insert(0o644);
        }
        if let Some(s) = &mut v.secret {
            s.default_mode.get_or_insert(0o644);
        }
        if let Some(s) = &mut v.projected {
            s.default_mode.get_or_insert(0o644);
        }
        if let Some(s) = &mut v.downward_api {
            s.default_mode.get_or_insert(0o644);
        }
        if let Some(h) = &mut v.host_path {
            h.type_.get_or_insert_with(String::new);
        }
    }
}

/// The pod's QoS class (pkg/apis/core/v1/helper/qos.GetPodQOS), from cpu and memory only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QosClass {
    Guaranteed,
    Burstable,
    BestEffort,
}

impl QosClass {
    pub fn as_str(self) -> &'static str {
        match self {
            QosClass::Guaranteed => "Guaranteed",
            QosClass::Burstable => "Burstable",
            QosClass::BestEffort => "BestEffort",
        }
    }
}

fn nonzero(map: &BTreeMap<String, Quantity>, name: &str) -> Option<i64> {
    let q = map.get(name)?;
    let v = quantity::milli_value(q).ok()?;
    (v != 0).then_some(v)
}

pub fn qos_class(pod: &Pod) -> QosClass {
    let mut requests: BTreeMap<&str, i64> = BTreeMap::new();
    let mut limits: BTreeMap<&str, i64> = BTreeMap::new();
    let mut guaranteed = true;
    for c in pod.spec.containers.iter().chain(&pod.spec.init_containers) {
        for name in ["cpu", "memory"] {
            if let Some(v) = nonzero(&c.resources.requests, name) {
                *requests.entry(name).or_default() += v;
            }
            match nonzero(&c.resources.limits, name) {
                Some(v) => *limits.entry(name).or_default() += v,
                None => guaranteed = false,
            }
        }
    }
    if requests.is_empty() && limits.is_empty() {
        return QosClass::BestEffort;
    }
    if guaranteed && requests.iter().all(|(k, v)| limits.get(k) == Some(v)) && limits.len() == 2 {
        // Requests default to limits, so equal sums here mean equal per container.
        return QosClass::Guaranteed;
    }
    QosClass::Burstable
}

/// CPU shares for milli-CPU (kubelet's MilliCPUToShares): 2 for none, at most 262144.
pub fn milli_cpu_to_shares(milli: i64) -> i64 {
    if milli == 0 {
        return MIN_SHARES;
    }
    (milli * SHARES_PER_CPU / MILLI_CPU_TO_CPU).clamp(MIN_SHARES, MAX_SHARES)
}

/// CFS quota for a milli-CPU limit over `QUOTA_PERIOD` (kubelet's milliCPUToQuota): 0 (no
/// limit) for none, at least 1 ms.
pub fn milli_cpu_to_quota(milli: i64) -> i64 {
    if milli == 0 {
        return 0;
    }
    (milli * QUOTA_PERIOD / MILLI_CPU_TO_CPU).max(MIN_QUOTA_PERIOD)
}

/// The OOM score adjustment of a container (GetContainerOOMScoreAdjust): Guaranteed and
/// system-node-critical pods -997, BestEffort 1000, Burstable 1000 - 1000·request/capacity
/// kept within [3, 999].
pub fn oom_score_adj(pod: &Pod, container: &Container, memory_capacity: i64) -> i64 {
    if pod.spec.priority_class_name.as_deref() == Some("system-node-critical") {
        return GUARANTEED_OOM_SCORE_ADJ;
    }
    match qos_class(pod) {
        QosClass::Guaranteed => return GUARANTEED_OOM_SCORE_ADJ,
        QosClass::BestEffort => return BEST_EFFORT_OOM_SCORE_ADJ,
        QosClass::Burstable => {}
    }
    let request = container
        .resources
        .requests
        .get("memory")
        .and_then(|q| quantity::value(q).ok())
        .unwrap_or(0);
    let capacity = memory_capacity.max(1);
    let adj = 1000 - (1000 * i128::from(request) / i128::from(capacity)) as i64;
    if adj < 1000 + GUARANTEED_OOM_SCORE_ADJ {
        1000 + GUARANTEED_OOM_SCORE_ADJ
    } else if adj == BEST_EFFORT_OOM_SCORE_ADJ {
        adj - 1
    } else {
        adj
    }
}

fn milli(map: &BTreeMap<String, Quantity>, name: &str) -> anyhow::Result<i64> {
    match map.get(name) {
        Some(q) => quantity::milli_value(q),
        None => Ok(0),
    }
}

fn bytes(map: &BTreeMap<String, Quantity>, name: &str) -> anyhow::Result<i64> {
    match map.get(name) {
        Some(q) => quantity::value(q),
        None => Ok(0),
    }
}

/// kubelet's calculateLinuxResources: shares from the request (or the limit when only a limit
/// is set), quota from the limit with the 100 ms period, memory limit.
fn linux_resources(
    cpu_request: i64,
    cpu_limit: i64,
    memory_limit: i64,
) -> cri::LinuxContainerResources {
    let shares = if cpu_request == 0 && cpu_limit != 0 {
        milli_cpu_to_shares(cpu_limit)
    } else {
        milli_cpu_to_shares(cpu_request)
    };
    cri::LinuxContainerResources {
        cpu_shares: shares,
        cpu_quota: milli_cpu_to_quota(cpu_limit),
        cpu_period: QUOTA_PERIOD,
        memory_limit_in_bytes: memory_limit,
        ..Default::default()
    }
}

/// The resources of one container, as generateLinuxContainerResources computes them.
pub fn container_resources(
    pod: &Pod,
    container: &Container,
    memory_capacity: i64,
) -> anyhow::Result<cri::LinuxContainerResources> {
    let r = &container.resources;
    let mut out = linux_resources(
        milli(&r.requests, "cpu").context("resources.requests.cpu")?,
        milli(&r.limits, "cpu").context("resources.limits.cpu")?,
        bytes(&r.limits, "memory").context("resources.limits.memory")?,
    );
    out.oom_score_adj = oom_score_adj(pod, container, memory_capacity);
    Ok(out)
}

/// The pod's resources (PodRequestsAndLimits): per resource, the larger of the sum over the
/// containers and the largest init container.
fn pod_total(
    pod: &Pod,
    pick: fn(&Container) -> &BTreeMap<String, Quantity>,
    name: &str,
    milli_units: bool,
) -> anyhow::Result<i64> {
    let get = |c: &Container| -> anyhow::Result<i64> {
        if milli_units {
            milli(pick(c), name)
        } else {
            bytes(pick(c), name)
        }
    };
    let mut sum = 0i64;
    for c in &pod.spec.containers {
        sum = sum.saturating_add(get(c)?);
    }
    for c in &pod.spec.init_containers {
        sum = sum.max(get(c)?);
    }
    Ok(sum)
}

fn pod_resources(pod: &Pod) -> anyhow::Result<cri::LinuxContainerResources> {
    Ok(linux_resources(
        pod_total(pod, |c| &c.resources.requests, "cpu", true)?,
        pod_total(pod, |c| &c.resources.limits, "cpu", true)?,
        pod_total(pod, |c| &c.resources.limits, "memory", false)?,
    ))
}

/// The seccomp profile kubelet passes (getSeccompProfile): the container's, else the pod's,
/// else Unconfined (kubelet's --seccomp-default is off by default).
fn seccomp(
    pod: Option<&SeccompProfile>,
    container: Option<&SeccompProfile>,
) -> cri::SecurityProfile {
    let Some(p) = container.or(pod) else {
        return cri::SecurityProfile {
            profile_type: ProfileType::Unconfined as i32,
            localhost_ref: String::new(),
        };
    };
    match p.type_.as_str() {
        "RuntimeDefault" => cri::SecurityProfile {
            profile_type: ProfileType::RuntimeDefault as i32,
            localhost_ref: String::new(),
        },
        "Localhost" => cri::SecurityProfile {
            profile_type: ProfileType::Localhost as i32,
            localhost_ref: Path::new(SECCOMP_PROFILE_ROOT)
                .join(p.localhost_profile.as_deref().unwrap_or(""))
                .display()
                .to_string(),
        },
        _ => cri::SecurityProfile {
            profile_type: ProfileType::Unconfined as i32,
            localhost_ref: String::new(),
        },
    }
}

/// The host id where a pod's user namespace (hostUsers: false) starts: 65536 ids per pod.
/// Kubelet allocates these ranges from state it keeps; this kubelet keeps none across runs,
/// so a stable hash of the pod uid picks one of 1024 ranges (a collision is unlikely with a
/// node's few pods, and a restarted pod keeps its range).
fn userns_offset(uid: &str) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for b in uid.bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    // Ranges 1..=1024 (host ids 65536 up to 2^26 + 65536), never 0: the host's own ids.
    (1 + h % 1024) * 65_536
}

/// The namespace options kubelet gives both sandbox and containers (NamespacesForPod).
fn namespace_options(pod: &Pod) -> cri::NamespaceOption {
    let mode = |host: bool| {
        if host {
            cri::NamespaceMode::Node as i32
        } else {
            cri::NamespaceMode::Pod as i32
        }
    };
    let spec = &pod.spec;
    let pid = if spec.host_pid {
        cri::NamespaceMode::Node
    } else if spec.share_process_namespace == Some(true) {
        cri::NamespaceMode::Pod
    } else {
        cri::NamespaceMode::Container
    };
    let userns_options = (spec.host_users == Some(false)).then(|| {
        let offset = userns_offset(&pod.metadata.uid);
        let map = vec![cri::IdMapping {
            host_id: offset,
            container_id: 0,
            length: 65_536,
        }];
        cri::UserNamespace {
            mode: cri::NamespaceMode::Pod as i32,
            uids: map.clone(),
            gids: map,
        }
    });
    cri::NamespaceOption {
        network: mode(spec.host_network),
        pid: pid as i32,
        ipc: mode(spec.host_ipc),
        target_id: String::new(),
        userns_options,
    }
}

fn supplemental_groups(sc: Option<&PodSecurityContext>) -> (Vec<i64>, i32) {
    let Some(sc) = sc else {
        return (Vec::new(), 0);
    };
    let mut groups = Vec::new();
    groups.extend(sc.fs_group);
    groups.extend(sc.supplemental_groups.iter().copied());
    let policy = match sc.supplemental_groups_policy.as_deref() {
        Some("Strict") => cri::SupplementalGroupsPolicy::Strict as i32,
        _ => cri::SupplementalGroupsPolicy::Merge as i32,
    };
    (groups, policy)
}

fn all_containers(pod: &Pod) -> impl Iterator<Item = &Container> {
    pod.spec.init_containers.iter().chain(&pod.spec.containers)
}

/// Truncates a hostname to 63 characters the way kubelet does (trailing '-' and '.' removed).
fn truncate_hostname(name: &str) -> String {
    if name.len() <= 63 {
        return name.to_string();
    }
    name[..63].trim_end_matches(['-', '.']).to_string()
}

/// The pod's hostname as kubelet computes it (GeneratePodHostNameAndDomain): spec.hostname or
/// the pod name, truncated to 63 characters.
pub fn pod_hostname(pod: &Pod) -> String {
    truncate_hostname(
        pod.spec
            .hostname
            .as_deref()
            .filter(|h| !h.is_empty())
            .unwrap_or(&pod.metadata.name),
    )
}

fn protocol(p: Option<&str>) -> i32 {
    match p {
        Some("UDP") => cri::Protocol::Udp as i32,
        Some("SCTP") => cri::Protocol::Sctp as i32,
        _ => cri::Protocol::Tcp as i32,
    }
}

/// The sandbox config as kubelet builds it (generatePodSandboxConfig). DNS comes from the
/// host's /etc/resolv.conf unless dnsPolicy is None.
pub fn sandbox_config(
    pod: &Pod,
    attempt: u32,
    log_dir: &Path,
) -> anyhow::Result<cri::PodSandboxConfig> {
    let resolv = std::fs::read_to_string("/etc/resolv.conf").ok();
    sandbox_config_with(pod, attempt, log_dir, resolv.as_deref())
}

fn sandbox_config_with(
    pod: &Pod,
    attempt: u32,
    log_dir: &Path,
    resolv_conf: Option<&str>,
) -> anyhow::Result<cri::PodSandboxConfig> {
    let meta = &pod.metadata;
    let spec = &pod.spec;
    let hostname = if spec.host_network {
        // Host-network pods keep the node's hostname (kubelet leaves the field empty).
        String::new()
    } else {
        pod_hostname(pod)
    };
    let mut labels: HashMap<String, String> = meta.labels.clone().into_iter().collect();
    labels.insert(keys::POD_NAME.into(), meta.name.clone());
    labels.insert(keys::POD_NAMESPACE.into(), meta.namespace.clone());
    labels.insert(keys::POD_UID.into(), meta.uid.clone());
    let port_mappings = spec
        .containers
        .iter()
        .flat_map(|c| &c.ports)
        .map(|p| cri::PortMapping {
            protocol: protocol(p.protocol.as_deref()),
            container_port: p.container_port,
            host_port: p.host_port.unwrap_or(0),
            host_ip: p.host_ip.clone().unwrap_or_default(),
        })
        .collect();
    let sc = spec.security_context.as_ref();
    let (supplemental_groups, supplemental_groups_policy) = supplemental_groups(sc);
    let security_context = cri::LinuxSandboxSecurityContext {
        namespace_options: Some(namespace_options(pod)),
        run_as_user: sc
            .and_then(|s| s.run_as_user)
            .map(|value| cri::Int64Value { value }),
        run_as_group: sc
            .and_then(|s| s.run_as_group)
            .map(|value| cri::Int64Value { value }),
        supplemental_groups,
        supplemental_groups_policy,
        privileged: all_containers(pod).any(|c| {
            c.security_context
                .as_ref()
                .and_then(|s| s.privileged)
                .unwrap_or(false)
        }),
        seccomp: Some(seccomp(sc.and_then(|s| s.seccomp_profile.as_ref()), None)),
        ..Default::default()
    };
    let sysctls = sc
        .map(|s| {
            s.sysctls
                .iter()
                .map(|x| (x.name.clone(), x.value.clone()))
                .collect()
        })
        .unwrap_or_default();
    Ok(cri::PodSandboxConfig {
        metadata: Some(cri::PodSandboxMetadata {
            name: meta.name.clone(),
            uid: meta.uid.clone(),
            namespace: meta.namespace.clone(),
            attempt,
        }),
        hostname,
        log_directory: log_dir.display().to_string(),
        dns_config: Some(dns::pod_dns_config(pod, resolv_conf)?),
        port_mappings,
        labels,
        annotations: meta.annotations.clone().into_iter().collect(),
        linux: Some(cri::LinuxPodSandboxConfig {
            cgroup_parent: String::new(),
            security_context: Some(security_context),
            sysctls,
            overhead: None,
            resources: Some(pod_resources(pod).context("spec.containers[*].resources")?),
        }),
        windows: None,
    })
}

// Kubelet's lists for the Default procMount (pkg/securitycontext/util.go) are moby's, the same
// ones rcri applies when a request leaves them empty: one copy, in rcri's container module.
use crate::container::{DEFAULT_MASKED_PATHS, DEFAULT_READONLY_PATHS};

/// determineEffectiveSecurityContext: the container's fields over the pod's.
fn container_security_context(
    pod: &Pod,
    container: &Container,
) -> cri::LinuxContainerSecurityContext {
    let psc = pod.spec.security_context.as_ref();
    let empty = SecurityContext::default();
    let csc = container.security_context.as_ref().unwrap_or(&empty);
    let run_as_user = csc.run_as_user.or(psc.and_then(|p| p.run_as_user));
    let run_as_group = csc.run_as_group.or(psc.and_then(|p| p.run_as_group));
    let privileged = csc.privileged.unwrap_or(false);
    let (supplemental_groups, supplemental_groups_policy) = supplemental_groups(psc);
    let unmasked = csc.proc_mount.as_deref() == Some("Unmasked");
    let paths = |list: &[&str]| {
        if unmasked {
            Vec::new()
        } else {
            list.iter().map(|s| s.to_string()).collect()
        }
    };
    cri::LinuxContainerSecurityContext {
        // As written ("NET_ADMIN"); the runtime adds the CAP_ prefix, as with kubelet.
        capabilities: csc.capabilities.as_ref().map(|c| cri::Capability {
            add_capabilities: c.add.clone(),
            drop_capabilities: c.drop.clone(),
            add_ambient_capabilities: Vec::new(),
        }),
        privileged,
        namespace_options: Some(namespace_options(pod)),
        run_as_user: run_as_user.map(|value| cri::Int64Value { value }),
        run_as_group: run_as_group.map(|value| cri::Int64Value { value }),
        readonly_rootfs: csc.read_only_root_filesystem.unwrap_or(false),
        supplemental_groups,
        supplemental_groups_policy,
        // AddNoNewPrivileges: only when allowPrivilegeEscalation is explicitly false.
        no_new_privs: !privileged && csc.allow_privilege_escalation == Some(false),
        masked_paths: paths(DEFAULT_MASKED_PATHS),
        readonly_paths: paths(DEFAULT_READONLY_PATHS),
        seccomp: Some(seccomp(
            psc.and_then(|p| p.seccomp_profile.as_ref()),
            csc.seccomp_profile.as_ref(),
        )),
        ..Default::default()
    }
}

/// kubelet's HashContainer: FNV-32a of the container's JSON, in hex.
pub fn container_hash(container: &Container) -> String {
    let json = serde_json::to_vec(container).unwrap_or_default();
    let mut h: u32 = 0x811c_9dc5;
    for b in json {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    format!("{h:x}")
}

/// The container config as kubelet builds it (generateContainerConfig and
/// generateLinuxContainerConfig).
pub fn container_config(
    pod: &Pod,
    container: &Container,
    attempt: u32,
    info: &PodRuntimeInfo,
    sources: &ConfigSources,
    mounts: Vec<cri::Mount>,
) -> anyhow::Result<cri::ContainerConfig> {
    let memory_capacity = env::node_memory_bytes()?;
    container_config_with(
        pod,
        container,
        attempt,
        info,
        sources,
        mounts,
        memory_capacity,
    )
}

fn container_config_with(
    pod: &Pod,
    container: &Container,
    attempt: u32,
    info: &PodRuntimeInfo,
    sources: &ConfigSources,
    mounts: Vec<cri::Mount>,
    memory_capacity: i64,
) -> anyhow::Result<cri::ContainerConfig> {
    let what = || format!("container {:?}", container.name);
    let psc = pod.spec.security_context.as_ref();
    let run_as_non_root = container
        .security_context
        .as_ref()
        .and_then(|s| s.run_as_non_root)
        .or(psc.and_then(|p| p.run_as_non_root));
    let run_as_user = container
        .security_context
        .as_ref()
        .and_then(|s| s.run_as_user)
        .or(psc.and_then(|p| p.run_as_user));
    if run_as_non_root == Some(true) && run_as_user == Some(0) {
        anyhow::bail!("{}: container's runAsUser breaks non-root policy", what());
    }
    let envs = make_env(pod, container, info, sources).with_context(what)?;
    let lookup = |name: &str| {
        envs.iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    };
    let command = container
        .command
        .iter()
        .map(|s| expand(s, &lookup))
        .collect();
    let args = container.args.iter().map(|s| expand(s, &lookup)).collect();
    let meta = &pod.metadata;
    let labels = HashMap::from([
        (keys::CONTAINER_NAME.to_string(), container.name.clone()),
        (keys::POD_NAME.to_string(), meta.name.clone()),
        (keys::POD_NAMESPACE.to_string(), meta.namespace.clone()),
        (keys::POD_UID.to_string(), meta.uid.clone()),
    ]);
    let mut annotations = HashMap::from([
        (keys::CONTAINER_HASH.to_string(), container_hash(container)),
        (keys::RESTART_COUNT.to_string(), attempt.to_string()),
        (
            keys::TERMINATION_MESSAGE_PATH.to_string(),
            container
                .termination_message_path
                .clone()
                .unwrap_or_default(),
        ),
        (
            keys::TERMINATION_MESSAGE_POLICY.to_string(),
            container
                .termination_message_policy
                .clone()
                .unwrap_or_default(),
        ),
    ]);
    if let Some(grace) = pod.spec.termination_grace_period_seconds {
        annotations.insert(keys::TERMINATION_GRACE_PERIOD.into(), grace.to_string());
    }
    if let Some(pre_stop) = container
        .lifecycle
        .as_ref()
        .and_then(|l| l.pre_stop.as_ref())
    {
        annotations.insert(
            keys::PRE_STOP_HANDLER.into(),
            serde_json::to_string(pre_stop).context("encoding preStop")?,
        );
    }
    if !container.ports.is_empty() {
        annotations.insert(
            keys::CONTAINER_PORTS.into(),
            serde_json::to_string(&container.ports).context("encoding ports")?,
        );
    }
    Ok(cri::ContainerConfig {
        metadata: Some(cri::ContainerMetadata {
            name: container.name.clone(),
            attempt,
        }),
        image: Some(image_spec(container)),
        command,
        args,
        working_dir: container.working_dir.clone().unwrap_or_default(),
        envs: envs
            .into_iter()
            .map(|(key, value)| cri::KeyValue { key, value })
            .collect(),
        mounts,
        labels,
        annotations,
        log_path: format!("{}/{}.log", container.name, attempt),
        stdin: container.stdin,
        stdin_once: container.stdin_once,
        tty: container.tty,
        linux: Some(cri::LinuxContainerConfig {
            resources: Some(
                container_resources(pod, container, memory_capacity).with_context(what)?,
            ),
            security_context: Some(container_security_context(pod, container)),
        }),
        ..Default::default()
    })
}

/// The image as the user wrote it; normalising the reference is the runtime's job.
pub fn image_spec(container: &Container) -> cri::ImageSpec {
    cri::ImageSpec {
        image: container.image.clone(),
        user_specified_image: container.image.clone(),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests;
