//! Kubernetes `v1` objects as manifests carry them: Pod, ConfigMap and Secret, typed with the
//! API's camelCase field names. Only what a node acts on is modelled; other fields are reported
//! as warnings by the parser (kubectl's behaviour for unknown fields), never silently dropped.
use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{bail, Context};
use base64::Engine;

use serde::{Deserialize, Serialize};

/// One document of a manifest file.
#[derive(Debug, Clone)]
pub enum Object {
    Pod(Box<Pod>),
    ConfigMap(ConfigMap),
    Secret(Secret),
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct ObjectMeta {
    pub name: String,
    pub namespace: String,
    pub uid: String,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub creation_timestamp: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct Pod {
    pub api_version: String,
    pub kind: String,
    pub metadata: ObjectMeta,
    pub spec: PodSpec,
}

#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
pub enum RestartPolicy {
    #[default]
    Always,
    OnFailure,
    Never,
}

#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
pub enum PullPolicy {
    Always,
    #[default]
    IfNotPresent,
    Never,
}

#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
pub enum DnsPolicy {
    #[default]
    ClusterFirst,
    ClusterFirstWithHostNet,
    Default,
    None,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct PodSpec {
    pub containers: Vec<Container>,
    pub init_containers: Vec<Container>,
    pub volumes: Vec<Volume>,
    pub restart_policy: Option<RestartPolicy>,
    pub termination_grace_period_seconds: Option<i64>,
    pub active_deadline_seconds: Option<i64>,
    pub dns_policy: Option<DnsPolicy>,
    pub dns_config: Option<PodDnsConfig>,
    pub hostname: Option<String>,
    pub subdomain: Option<String>,
    pub host_network: bool,
    #[serde(rename = "hostPID")]
    pub host_pid: bool,
    #[serde(rename = "hostIPC")]
    pub host_ipc: bool,
    pub host_users: Option<bool>,
    pub share_process_namespace: Option<bool>,
    pub security_context: Option<PodSecurityContext>,
    pub node_name: Option<String>,
    pub host_aliases: Vec<HostAlias>,
    pub service_account_name: Option<String>,
    pub automount_service_account_token: Option<bool>,
    pub enable_service_links: Option<bool>,
    pub priority_class_name: Option<String>,
    pub runtime_class_name: Option<String>,
    pub node_selector: BTreeMap<String, String>,
    pub tolerations: Vec<serde_json::Value>,
    pub affinity: Option<serde_json::Value>,
    pub scheduler_name: Option<String>,
    pub image_pull_secrets: Vec<LocalObjectReference>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct PodDnsConfig {
    pub nameservers: Vec<String>,
    pub searches: Vec<String>,
    pub options: Vec<PodDnsConfigOption>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct PodDnsConfigOption {
    pub name: String,
    pub value: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct HostAlias {
    pub ip: String,
    pub hostnames: Vec<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct LocalObjectReference {
    pub name: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct PodSecurityContext {
    pub run_as_user: Option<i64>,
    pub run_as_group: Option<i64>,
    pub run_as_non_root: Option<bool>,
    pub fs_group: Option<i64>,
    pub supplemental_groups: Vec<i64>,
    /// "Merge" or "Strict".
    pub supplemental_groups_policy: Option<String>,
    pub sysctls: Vec<Sysctl>,
    pub seccomp_profile: Option<SeccompProfile>,
    pub se_linux_options: Option<serde_json::Value>,
    pub app_armor_profile: Option<serde_json::Value>,
    pub fs_group_change_policy: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct Sysctl {
    pub name: String,
    pub value: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct SeccompProfile {
    /// "RuntimeDefault", "Unconfined" or "Localhost".
    #[serde(rename = "type")]
    pub type_: String,
    pub localhost_profile: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct Container {
    pub name: String,
    pub image: String,
    pub image_pull_policy: Option<PullPolicy>,
    pub command: Vec<String>,
    pub args: Vec<String>,
    pub working_dir: Option<String>,
    pub env: Vec<EnvVar>,
    pub env_from: Vec<EnvFromSource>,
    pub ports: Vec<ContainerPort>,
    pub resources: ResourceRequirements,
    pub volume_mounts: Vec<VolumeMount>,
    pub liveness_probe: Option<Probe>,
    pub readiness_probe: Option<Probe>,
    pub startup_probe: Option<Probe>,
    pub lifecycle: Option<Lifecycle>,
    pub security_context: Option<SecurityContext>,
    pub stdin: bool,
    pub stdin_once: bool,
    pub tty: bool,
    pub termination_message_path: Option<String>,
    pub termination_message_policy: Option<String>,
    /// Only on init containers: "Always" makes a sidecar (not supported; validation says so).
    pub restart_policy: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct EnvVar {
    pub name: String,
    pub value: Option<String>,
    pub value_from: Option<EnvVarSource>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct EnvVarSource {
    pub field_ref: Option<ObjectFieldSelector>,
    pub resource_field_ref: Option<ResourceFieldSelector>,
    pub config_map_key_ref: Option<KeySelector>,
    pub secret_key_ref: Option<KeySelector>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct ObjectFieldSelector {
    pub api_version: Option<String>,
    /// metadata.name, metadata.namespace, metadata.uid, metadata.labels['k'],
    /// metadata.annotations['k'], spec.nodeName, spec.serviceAccountName, status.hostIP,
    /// status.hostIPs, status.podIP, status.podIPs.
    pub field_path: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct ResourceFieldSelector {
    pub container_name: Option<String>,
    /// limits.cpu, limits.memory, requests.cpu, requests.memory (ephemeral-storage too).
    pub resource: String,
    pub divisor: Option<Quantity>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct KeySelector {
    pub name: String,
    pub key: String,
    pub optional: Option<bool>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct EnvFromSource {
    pub prefix: Option<String>,
    pub config_map_ref: Option<OptionalReference>,
    pub secret_ref: Option<OptionalReference>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct OptionalReference {
    pub name: String,
    pub optional: Option<bool>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct ContainerPort {
    pub name: Option<String>,
    pub container_port: i32,
    pub host_port: Option<i32>,
    #[serde(rename = "hostIP")]
    pub host_ip: Option<String>,
    /// TCP (default), UDP or SCTP.
    pub protocol: Option<String>,
}

/// A resource quantity as written ("500m", "128Mi", 2): kept as its text; `quantity` parses it.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct Quantity(pub String);

impl<'de> Deserialize<'de> for Quantity {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            S(String),
            I(i64),
            F(f64),
        }
        Ok(Quantity(match Raw::deserialize(d)? {
            Raw::S(s) => s,
            Raw::I(i) => i.to_string(),
            Raw::F(f) => f.to_string(),
        }))
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct ResourceRequirements {
    pub limits: BTreeMap<String, Quantity>,
    pub requests: BTreeMap<String, Quantity>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct VolumeMount {
    pub name: String,
    pub mount_path: String,
    pub sub_path: Option<String>,
    pub read_only: bool,
    /// None, HostToContainer or Bidirectional.
    pub mount_propagation: Option<String>,
    /// Disabled, IfPossible or Enabled.
    pub recursive_read_only: Option<String>,
}

/// A file mode (`mode`, `defaultMode`). Manifests write them in octal (`0644`), which kubectl's
/// YAML 1.1 reads as a number but serde_yaml_ng's YAML 1.2 reads as the string "0644"; both
/// that string (and `0o644`) and a plain number are accepted here.
fn file_mode<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<i32>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        I(i32),
        S(String),
    }
    let text = match Option::<Raw>::deserialize(d)? {
        None => return Ok(None),
        Some(Raw::I(i)) => return Ok(Some(i)),
        Some(Raw::S(s)) => s,
    };
    // A leading 0 means octal (YAML 1.1), so "0999" is an error rather than 999.
    let parsed = match text.strip_prefix("0o").or_else(|| text.strip_prefix('0')) {
        Some("") => Ok(0),
        Some(octal) => i32::from_str_radix(octal, 8),
        None => text.parse(),
    };
    parsed.map(Some).map_err(|_| {
        serde::de::Error::custom(format!(
            "invalid file mode {text:?} (expected e.g. 0644 or 420)"
        ))
    })
}

/// An integer or a string (a port number or a named port).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(untagged)]
pub enum IntOrString {
    Int(i64),
    String(String),
}

impl Default for IntOrString {
    fn default() -> Self {
        IntOrString::Int(0)
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct ExecAction {
    pub command: Vec<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct HttpHeader {
    pub name: String,
    pub value: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct HttpGetAction {
    pub path: Option<String>,
    pub port: IntOrString,
    /// Defaults to the pod IP; "localhost"/"127.0.0.1" reach the pod's own loopback.
    pub host: Option<String>,
    /// HTTP (default) or HTTPS.
    pub scheme: Option<String>,
    pub http_headers: Vec<HttpHeader>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct TcpSocketAction {
    pub port: IntOrString,
    pub host: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct SleepAction {
    pub seconds: i64,
}

/// A probe: one of exec / httpGet / tcpSocket (grpc is rejected by validation), with kubelet's
/// timing fields. `None` timing fields take the API defaults (see `Probe::*` accessors).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct Probe {
    pub exec: Option<ExecAction>,
    pub http_get: Option<HttpGetAction>,
    pub tcp_socket: Option<TcpSocketAction>,
    pub grpc: Option<serde_json::Value>,
    pub initial_delay_seconds: Option<i32>,
    pub timeout_seconds: Option<i32>,
    pub period_seconds: Option<i32>,
    pub success_threshold: Option<i32>,
    pub failure_threshold: Option<i32>,
    pub termination_grace_period_seconds: Option<i64>,
}

impl Probe {
    /// The API's defaults: initialDelay 0, timeout 1 s, period 10 s, success 1, failure 3.
    pub fn initial_delay(&self) -> i32 {
        self.initial_delay_seconds.unwrap_or(0).max(0)
    }
    pub fn timeout(&self) -> i32 {
        self.timeout_seconds.unwrap_or(1).max(1)
    }
    pub fn period(&self) -> i32 {
        self.period_seconds.unwrap_or(10).max(1)
    }
    pub fn success_threshold(&self) -> i32 {
        self.success_threshold.unwrap_or(1).max(1)
    }
    pub fn failure_threshold(&self) -> i32 {
        self.failure_threshold.unwrap_or(3).max(1)
    }
}

/// A lifecycle hook: exec, httpGet, or sleep (tcpSocket is accepted by the API but deprecated
/// and never run by kubelet).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct LifecycleHandler {
    pub exec: Option<ExecAction>,
    pub http_get: Option<HttpGetAction>,
    pub tcp_socket: Option<TcpSocketAction>,
    pub sleep: Option<SleepAction>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct Lifecycle {
    pub post_start: Option<LifecycleHandler>,
    pub pre_stop: Option<LifecycleHandler>,
    pub stop_signal: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct Capabilities {
    pub add: Vec<String>,
    pub drop: Vec<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct SecurityContext {
    pub run_as_user: Option<i64>,
    pub run_as_group: Option<i64>,
    pub run_as_non_root: Option<bool>,
    pub privileged: Option<bool>,
    pub allow_privilege_escalation: Option<bool>,
    pub capabilities: Option<Capabilities>,
    pub read_only_root_filesystem: Option<bool>,
    /// Default or Unmasked.
    pub proc_mount: Option<String>,
    pub seccomp_profile: Option<SeccompProfile>,
    pub se_linux_options: Option<serde_json::Value>,
    pub app_armor_profile: Option<serde_json::Value>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct Volume {
    pub name: String,
    pub empty_dir: Option<EmptyDirVolumeSource>,
    pub host_path: Option<HostPathVolumeSource>,
    pub config_map: Option<ConfigMapVolumeSource>,
    pub secret: Option<SecretVolumeSource>,
    pub projected: Option<ProjectedVolumeSource>,
    #[serde(rename = "downwardAPI")]
    pub downward_api: Option<DownwardApiVolumeSource>,
    /// Every other volume type (nfs, persistentVolumeClaim, csi, ...): kept by name so that
    /// validation can say which one is not supported.
    #[serde(flatten)]
    pub other: BTreeMap<String, serde_json::Value>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct EmptyDirVolumeSource {
    /// "" (node disk) or "Memory" (tmpfs).
    pub medium: Option<String>,
    pub size_limit: Option<Quantity>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct HostPathVolumeSource {
    pub path: String,
    /// "", DirectoryOrCreate, Directory, FileOrCreate, File, Socket, CharDevice, BlockDevice.
    #[serde(rename = "type")]
    pub type_: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct KeyToPath {
    pub key: String,
    pub path: String,
    #[serde(deserialize_with = "file_mode")]
    pub mode: Option<i32>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct ConfigMapVolumeSource {
    pub name: String,
    pub items: Vec<KeyToPath>,
    #[serde(deserialize_with = "file_mode")]
    pub default_mode: Option<i32>,
    pub optional: Option<bool>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct SecretVolumeSource {
    pub secret_name: String,
    pub items: Vec<KeyToPath>,
    #[serde(deserialize_with = "file_mode")]
    pub default_mode: Option<i32>,
    pub optional: Option<bool>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct DownwardApiVolumeFile {
    pub path: String,
    pub field_ref: Option<ObjectFieldSelector>,
    pub resource_field_ref: Option<ResourceFieldSelector>,
    #[serde(deserialize_with = "file_mode")]
    pub mode: Option<i32>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct DownwardApiVolumeSource {
    pub items: Vec<DownwardApiVolumeFile>,
    #[serde(deserialize_with = "file_mode")]
    pub default_mode: Option<i32>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct ProjectedVolumeSource {
    pub sources: Vec<VolumeProjection>,
    #[serde(deserialize_with = "file_mode")]
    pub default_mode: Option<i32>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct ProjectionSource {
    pub name: String,
    pub items: Vec<KeyToPath>,
    pub optional: Option<bool>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct VolumeProjection {
    pub config_map: Option<ProjectionSource>,
    pub secret: Option<ProjectionSource>,
    #[serde(rename = "downwardAPI")]
    pub downward_api: Option<DownwardApiVolumeSource>,
    /// Needs an API server to mint tokens: rejected by validation.
    pub service_account_token: Option<serde_json::Value>,
    pub cluster_trust_bundle: Option<serde_json::Value>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct ConfigMap {
    pub api_version: String,
    pub kind: String,
    pub metadata: ObjectMeta,
    pub data: BTreeMap<String, String>,
    /// Base64 in the manifest, decoded by the parser.
    pub binary_data: BTreeMap<String, String>,
    pub immutable: Option<bool>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct Secret {
    pub api_version: String,
    pub kind: String,
    pub metadata: ObjectMeta,
    /// Base64 in the manifest.
    pub data: BTreeMap<String, String>,
    /// Plain text in the manifest; merged over `data` by the parser.
    pub string_data: BTreeMap<String, String>,
    #[serde(rename = "type")]
    pub type_: Option<String>,
    pub immutable: Option<bool>,
}

impl Object {
    pub fn kind(&self) -> &'static str {
        match self {
            Object::Pod(_) => "Pod",
            Object::ConfigMap(_) => "ConfigMap",
            Object::Secret(_) => "Secret",
        }
    }

    pub fn metadata(&self) -> &ObjectMeta {
        match self {
            Object::Pod(p) => &p.metadata,
            Object::ConfigMap(c) => &c.metadata,
            Object::Secret(s) => &s.metadata,
        }
    }
}

fn decode_base64(field: &str, key: &str, text: &str) -> anyhow::Result<Vec<u8>> {
    // The API server's encoding/json accepts standard base64 with padding; line breaks are
    // tolerated in hand-written manifests, so they are dropped first.
    let compact: String = text.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    base64::engine::general_purpose::STANDARD
        .decode(compact)
        .with_context(|| format!("{field}[{key:?}]: invalid base64"))
}

impl ConfigMap {
    /// Every key with its bytes: `data` as UTF-8 and `binaryData` decoded from base64. A key
    /// in both is an error, as the API server rejects it.
    pub fn contents(&self) -> anyhow::Result<BTreeMap<String, Vec<u8>>> {
        let mut out: BTreeMap<String, Vec<u8>> = self
            .data
            .iter()
            .map(|(k, v)| (k.clone(), v.clone().into_bytes()))
            .collect();
        for (k, v) in &self.binary_data {
            if out.contains_key(k) {
                bail!("binaryData[{k:?}]: key is also in data");
            }
            out.insert(k.clone(), decode_base64("binaryData", k, v)?);
        }
        Ok(out)
    }
}

impl Secret {
    /// Every key with its bytes: `data` decoded from base64, `stringData` merged over it (the
    /// API server's rule: stringData wins).
    pub fn contents(&self) -> anyhow::Result<BTreeMap<String, Vec<u8>>> {
        let mut out = BTreeMap::new();
        for (k, v) in &self.data {
            out.insert(k.clone(), decode_base64("data", k, v)?);
        }
        for (k, v) in &self.string_data {
            out.insert(k.clone(), v.clone().into_bytes());
        }
        Ok(out)
    }
}

/// A serde_ignored path as kubectl prints field paths: `spec.containers[0].foo`.
fn field_path(path: &serde_ignored::Path) -> String {
    use serde_ignored::Path;
    match path {
        Path::Root => String::new(),
        Path::Seq { parent, index } => format!("{}[{index}]", field_path(parent)),
        Path::Map { parent, key } => {
            let parent = field_path(parent);
            if parent.is_empty() {
                key.clone()
            } else {
                format!("{parent}.{key}")
            }
        }
        Path::Some { parent }
        | Path::NewtypeStruct { parent }
        | Path::NewtypeVariant { parent } => field_path(parent),
    }
}

/// One document into its typed object: unknown fields become warnings, a type error names the
/// field (`spec.containers[0].ports[0].containerPort: invalid type ...`).
fn typed<T: serde::de::DeserializeOwned>(
    value: serde_yaml_ng::Value,
    what: &str,
    warnings: &mut Vec<String>,
) -> anyhow::Result<T> {
    let mut ignored = Vec::new();
    let result = {
        let mut record = |path: serde_ignored::Path| ignored.push(field_path(&path));
        let de = serde_ignored::Deserializer::new(value, &mut record);
        serde_path_to_error::deserialize(de)
    };
    for path in ignored {
        warnings.push(format!("{what}: {path}: unknown field, ignored"));
    }
    result.map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if path.is_empty() || path == "." {
            anyhow::anyhow!("{what}: {inner}")
        } else {
            anyhow::anyhow!("{what}: {path}: {inner}")
        }
    })
}

/// Parses every document of a YAML or JSON text (multi-document YAML `---` allowed); returns the
/// objects and the warnings about unknown fields (kubectl's behaviour: warned, not fatal).
/// Only `v1` Pod, ConfigMap and Secret are accepted; the error names the source, document and
/// (for YAML syntax errors) the line and column.
pub fn parse_objects(text: &str, source: &str) -> anyhow::Result<(Vec<Object>, Vec<String>)> {
    let mut objects = Vec::new();
    let mut warnings = Vec::new();
    for (index, document) in serde_yaml_ng::Deserializer::from_str(text).enumerate() {
        let doc_name = format!("{source}: document {}", index + 1);
        let value = serde_yaml_ng::Value::deserialize(document)
            .map_err(|e| anyhow::anyhow!("{source}: invalid YAML: {e}"))?;
        if value.is_null() {
            // An empty document, e.g. after a trailing `---`.
            continue;
        }
        let Some(map) = value.as_mapping() else {
            bail!("{doc_name}: expected an object with apiVersion and kind");
        };
        let field = |name: &str| map.get(name).and_then(|v| v.as_str()).unwrap_or("");
        let kind = field("kind").to_string();
        let api_version = field("apiVersion").to_string();
        let name = map
            .get("metadata")
            .and_then(|m| m.get("name"))
            .and_then(|n| n.as_str())
            .unwrap_or("")
            .to_string();
        if kind.is_empty() {
            bail!("{doc_name}: kind: missing (expected Pod, ConfigMap or Secret)");
        }
        let what = if name.is_empty() {
            format!("{source}: {kind}")
        } else {
            format!("{source}: {kind} {name:?}")
        };
        if !matches!(kind.as_str(), "Pod" | "ConfigMap" | "Secret") {
            bail!("{what}: kind: {kind:?} is not supported (only Pod, ConfigMap and Secret)");
        }
        if api_version != "v1" {
            bail!(
                "{what}: apiVersion: {api_version:?} is not supported for {kind} (expected \"v1\")"
            );
        }
        let object = match kind.as_str() {
            "Pod" => Object::Pod(Box::new(typed(value, &what, &mut warnings)?)),
            "ConfigMap" => {
                let cm: ConfigMap = typed(value, &what, &mut warnings)?;
                cm.contents()
                    .map_err(|e| anyhow::anyhow!("{what}: {e:#}"))?;
                Object::ConfigMap(cm)
            }
            _ => {
                let secret: Secret = typed(value, &what, &mut warnings)?;
                secret
                    .contents()
                    .map_err(|e| anyhow::anyhow!("{what}: {e:#}"))?;
                Object::Secret(secret)
            }
        };
        objects.push(object);
    }
    Ok((objects, warnings))
}

/// `parse_objects` on a file's contents, the file's path naming the source.
pub fn load_file(path: &Path) -> anyhow::Result<(Vec<Object>, Vec<String>)> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading manifest {}", path.display()))?;
    parse_objects(&text, &path.display().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    const POD: &str = r#"
apiVersion: v1
kind: Pod
metadata:
  name: web
  labels: {app: web}
spec:
  containers:
  - name: app
    image: busybox:latest
    command: ["sh", "-c", "sleep 1000"]
    resources:
      limits: {cpu: 500m, memory: 128Mi}
    ports:
    - containerPort: 80
      frobnicate: true
  volumes:
  - name: data
    emptyDir: {medium: Memory}
status:
  phase: Running
---
apiVersion: v1
kind: ConfigMap
metadata: {name: cfg}
data: {greeting: hello}
binaryData: {blob: AAEC}
---
apiVersion: v1
kind: Secret
metadata: {name: pw}
data: {password: c2VjcmV0}
stringData: {user: admin}
---
"#;

    #[test]
    fn multi_document_yaml_with_warnings() {
        let (objects, warnings) = parse_objects(POD, "pod.yaml").unwrap();
        assert_eq!(objects.len(), 3);
        let Object::Pod(pod) = &objects[0] else {
            panic!("not a pod")
        };
        assert_eq!(pod.metadata.name, "web");
        assert_eq!(pod.spec.containers[0].resources.limits["cpu"].0, "500m");
        assert_eq!(pod.spec.containers[0].ports[0].container_port, 80);
        assert_eq!(
            pod.spec.volumes[0]
                .empty_dir
                .as_ref()
                .unwrap()
                .medium
                .as_deref(),
            Some("Memory")
        );
        assert_eq!(
            warnings,
            vec![
                "pod.yaml: Pod \"web\": spec.containers[0].ports[0].frobnicate: unknown field, ignored",
                "pod.yaml: Pod \"web\": status: unknown field, ignored",
            ]
        );
        let Object::ConfigMap(cm) = &objects[1] else {
            panic!("not a configmap")
        };
        let contents = cm.contents().unwrap();
        assert_eq!(contents["greeting"], b"hello");
        assert_eq!(contents["blob"], vec![0u8, 1, 2]);
        let Object::Secret(secret) = &objects[2] else {
            panic!("not a secret")
        };
        let contents = secret.contents().unwrap();
        assert_eq!(contents["password"], b"secret");
        assert_eq!(contents["user"], b"admin");
    }

    #[test]
    fn json_is_accepted() {
        let text = r#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"j"},
            "spec":{"containers":[{"name":"c","image":"busybox","ports":[{"containerPort":8080}]}]}}"#;
        let (objects, warnings) = parse_objects(text, "pod.json").unwrap();
        assert!(warnings.is_empty());
        assert!(
            matches!(&objects[0], Object::Pod(p) if p.spec.containers[0].ports[0].container_port == 8080)
        );
    }

    #[test]
    fn invalid_yaml_names_source_and_line() {
        let text = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: [x\n";
        let err = parse_objects(text, "bad.yaml").unwrap_err().to_string();
        assert!(err.starts_with("bad.yaml: invalid YAML"), "{err}");
        assert!(err.contains("line 4 column"), "{err}");
    }

    #[test]
    fn wrong_types_name_the_field() {
        let text = "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec:\n  containers:\n  - name: c\n    ports:\n    - containerPort: eighty\n";
        let err = parse_objects(text, "p.yaml").unwrap_err().to_string();
        assert!(
            err.starts_with(
                "p.yaml: Pod \"p\": spec.containers[0].ports[0].containerPort: invalid type"
            ),
            "{err}"
        );
    }

    #[test]
    fn kinds_and_versions_are_checked() {
        let err = parse_objects(
            "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: d}\n",
            "d.yaml",
        )
        .unwrap_err()
        .to_string();
        assert_eq!(
            err,
            "d.yaml: Deployment \"d\": kind: \"Deployment\" is not supported (only Pod, ConfigMap and Secret)"
        );
        let err = parse_objects("apiVersion: v2\nkind: Pod\n", "x.yaml")
            .unwrap_err()
            .to_string();
        assert!(err.contains("apiVersion: \"v2\" is not supported"), "{err}");
        let err = parse_objects("metadata: {name: d}\n", "x.yaml")
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("x.yaml: document 1: kind: missing"),
            "{err}"
        );
        let err = parse_objects("- 1\n", "x.yaml").unwrap_err().to_string();
        assert!(err.contains("expected an object"), "{err}");
    }

    #[test]
    fn bad_base64_names_the_key() {
        let text =
            "apiVersion: v1\nkind: Secret\nmetadata: {name: s}\ndata: {token: \"not base64!\"}\n";
        let err = parse_objects(text, "s.yaml").unwrap_err().to_string();
        assert!(
            err.starts_with("s.yaml: Secret \"s\": data[\"token\"]: invalid base64"),
            "{err}"
        );
        let text =
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\nbinaryData: {b: \"@@\"}\n";
        let err = parse_objects(text, "c.yaml").unwrap_err().to_string();
        assert!(err.contains("binaryData[\"b\"]: invalid base64"), "{err}");
    }

    #[test]
    fn octal_file_modes() {
        let text = "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec:\n  volumes:\n  - name: a\n    secret: {secretName: s, defaultMode: 0400, items: [{key: k, path: k, mode: 0o600}]}\n  - name: b\n    configMap: {name: c, defaultMode: 420}\n  - name: c\n    configMap: {name: c, defaultMode: 0999}\n";
        let err = parse_objects(text, "p.yaml").unwrap_err().to_string();
        assert!(
            err.contains("spec.volumes[2].configMap.defaultMode: invalid file mode \"0999\""),
            "{err}"
        );
        let text = text.split("  - name: c").next().unwrap();
        let (objects, _) = parse_objects(text, "p.yaml").unwrap();
        let Object::Pod(pod) = &objects[0] else {
            panic!()
        };
        let secret = pod.spec.volumes[0].secret.as_ref().unwrap();
        assert_eq!(secret.default_mode, Some(0o400));
        assert_eq!(secret.items[0].mode, Some(0o600));
        assert_eq!(
            pod.spec.volumes[1]
                .config_map
                .as_ref()
                .unwrap()
                .default_mode,
            Some(420)
        );
    }

    #[test]
    fn load_file_names_the_file() {
        let err = load_file(Path::new("/nonexistent/rcri-pod.yaml")).unwrap_err();
        assert!(format!("{err:#}").contains("/nonexistent/rcri-pod.yaml"));
    }
}
