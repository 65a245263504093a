//! CNI plugins per the CNI spec (1.0, and the 0.3/0.4 versions still common in conflists).
//!
//! The network is the lexically first `*.conflist` / `*.conf` / `*.json` in the conf dir (what
//! libcni's consumers, containerd and CRI-O, do). For a pod, the loopback plugin is run first
//! on `lo`, then every plugin of the list in order on `eth0`, each given the previous one's
//! result as `prevResult`; DEL runs the plugins in reverse order and goes on past failures, so
//! that a half-set-up pod can still be torn down.
use std::io::{self, Write};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::{json, Map, Value};

#[derive(Debug, thiserror::Error)]
pub enum CniError {
    #[error("no CNI network config (*.conflist, *.conf, *.json) in {0}")]
    NoConfig(PathBuf),
    #[error("CNI network config {path}: {reason}")]
    BadConfig { path: PathBuf, reason: String },
    #[error("CNI plugin {plugin:?} not found in {dirs:?}")]
    PluginNotFound { plugin: String, dirs: Vec<PathBuf> },
    #[error("CNI plugin {plugin} {command} failed (code {code}): {msg}{details}")]
    Plugin {
        plugin: String,
        command: &'static str,
        code: i64,
        msg: String,
        details: String,
    },
    #[error("CNI plugin {plugin} {command}: bad result: {reason}")]
    BadResult {
        plugin: String,
        command: &'static str,
        reason: String,
    },
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("CNI DEL left errors: {0}")]
    Del(String),
}

/// A port the pod asks the host to forward (CRI PortMapping → portmap plugin).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortMapping {
    pub host_port: u16,
    pub container_port: u16,
    pub protocol: String,
    pub host_ip: String,
}

/// What the pod's network attachment gave it.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct NetworkStatus {
    pub ips: Vec<IpAddr>,
    /// The last plugin's result as it printed it (the CNI "prevResult" for CHECK).
    #[serde(default, skip_serializing_if = "Value::is_null")]
    pub result: Value,
}

#[derive(Debug, Clone)]
pub struct Cni {
    pub conf_dir: PathBuf,
    pub bin_dirs: Vec<PathBuf>,
}

/// A network configuration list, normalized from a .conflist or a single-plugin .conf.
#[derive(Debug, Clone)]
pub struct NetworkConfigList {
    pub path: PathBuf,
    pub name: String,
    pub cni_version: String,
    pub disable_check: bool,
    /// Each plugin's config object as written (with at least "type").
    pub plugins: Vec<Map<String, Value>>,
}

/// The identity of one attachment, passed to each plugin through the environment.
struct Attachment<'a> {
    container_id: &'a str,
    netns: &'a Path,
    ifname: &'a str,
    cni_args: String,
    ports: &'a [PortMapping],
}

/// The name of the loopback network attached to every pod before the configured one.
const LOOPBACK_NETWORK: &str = "cni-loopback";

impl Cni {
    /// Errors unless a usable network config and its plugins exist (for Status NetworkReady).
    pub fn check(&self) -> Result<(), CniError> {
        let list = self.load()?;
        for p in &list.plugins {
            self.find_plugin(plugin_type(p, &list.path)?)?;
        }
        self.find_plugin("loopback")?;
        Ok(())
    }

    /// CNI ADD of the default network for a pod sandbox.
    pub fn add(
        &self,
        sandbox_id: &str,
        netns: &Path,
        pod_name: &str,
        pod_namespace: &str,
        ports: &[PortMapping],
    ) -> Result<NetworkStatus, CniError> {
        let list = self.load()?;
        let cni_args = cni_args(sandbox_id, pod_name, pod_namespace);
        let lo = Attachment {
            container_id: sandbox_id,
            netns,
            ifname: "lo",
            cni_args: cni_args.clone(),
            ports: &[],
        };
        self.run_list(&loopback_list(&list.cni_version), "ADD", &lo, None)?;
        let eth0 = Attachment {
            container_id: sandbox_id,
            netns,
            ifname: "eth0",
            cni_args,
            ports,
        };
        let result = match self.run_list(&list, "ADD", &eth0, None) {
            Ok(r) => r,
            Err(e) => {
                // Undo what the plugins before the failing one set up (IP leases, iptables),
                // as libcni's callers do; the ADD error is the one worth reporting.
                let _ = self.del_list(&list, &eth0);
                return Err(e);
            }
        };
        let ips = result_ips(&result).map_err(|reason| CniError::BadResult {
            plugin: list
                .plugins
                .last()
                .and_then(|p| p.get("type"))
                .and_then(Value::as_str)
                .unwrap_or("?")
                .to_string(),
            command: "ADD",
            reason,
        })?;
        Ok(NetworkStatus { ips, result })
    }

    /// CNI DEL; idempotent.
    pub fn del(
        &self,
        sandbox_id: &str,
        netns: &Path,
        pod_name: &str,
        pod_namespace: &str,
        ports: &[PortMapping],
    ) -> Result<(), CniError> {
        let list = self.load()?;
        let att = Attachment {
            container_id: sandbox_id,
            netns,
            ifname: "eth0",
            cni_args: cni_args(sandbox_id, pod_name, pod_namespace),
            ports,
        };
        self.del_list(&list, &att)
        // The loopback plugin's DEL does nothing worth running: lo goes with the namespace.
    }

    /// CNI CHECK of a pod's attachment, with the ADD result as prevResult (CNI ≥ 0.4.0; a
    /// list with `disableCheck` or an older version passes without running anything).
    pub fn check_pod(
        &self,
        sandbox_id: &str,
        netns: &Path,
        pod_name: &str,
        pod_namespace: &str,
        ports: &[PortMapping],
        status: &NetworkStatus,
    ) -> Result<(), CniError> {
        let list = self.load()?;
        if list.disable_check || version_lt(&list.cni_version, "0.4.0") {
            return Ok(());
        }
        let att = Attachment {
            container_id: sandbox_id,
            netns,
            ifname: "eth0",
            cni_args: cni_args(sandbox_id, pod_name, pod_namespace),
            ports,
        };
        let prev = (!status.result.is_null()).then_some(&status.result);
        for p in &list.plugins {
            self.exec_plugin(&list, p, "CHECK", &att, prev)?;
        }
        Ok(())
    }

    /// Loads the network config in use: the lexically first file of the conf dir that parses.
    pub fn load(&self) -> Result<NetworkConfigList, CniError> {
        let dir = std::fs::read_dir(&self.conf_dir).map_err(|source| {
            if source.kind() == io::ErrorKind::NotFound {
                CniError::NoConfig(self.conf_dir.clone())
            } else {
                CniError::Io {
                    what: "read",
                    path: self.conf_dir.clone(),
                    source,
                }
            }
        })?;
        let mut files: Vec<PathBuf> = dir
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                matches!(
                    p.extension().and_then(|e| e.to_str()),
                    Some("conflist" | "conf" | "json")
                ) && p.is_file()
            })
            .collect();
        files.sort();
        let mut first_err = None;
        for f in files {
            match load_file(&f) {
                Ok(l) => return Ok(l),
                // A broken file is skipped like libcni's callers do, but reported if none
                // works, since it is most likely the one the admin meant.
                Err(e) => {
                    first_err.get_or_insert(e);
                }
            }
        }
        Err(first_err.unwrap_or_else(|| CniError::NoConfig(self.conf_dir.clone())))
    }

    fn find_plugin(&self, name: &str) -> Result<PathBuf, CniError> {
        use std::os::unix::fs::PermissionsExt;
        for d in &self.bin_dirs {
            let p = d.join(name);
            if let Ok(m) = std::fs::metadata(&p) {
                if m.is_file() && m.permissions().mode() & 0o111 != 0 {
                    return Ok(p);
                }
            }
        }
        Err(CniError::PluginNotFound {
            plugin: name.to_string(),
            dirs: self.bin_dirs.clone(),
        })
    }

    fn run_list(
        &self,
        list: &NetworkConfigList,
        command: &'static str,
        att: &Attachment,
        prev: Option<&Value>,
    ) -> Result<Value, CniError> {
        let mut prev = prev.cloned();
        for p in &list.plugins {
            let r = self.exec_plugin(list, p, command, att, prev.as_ref())?;
            prev = Some(r);
        }
        Ok(prev.unwrap_or(Value::Null))
    }

    fn del_list(&self, list: &NetworkConfigList, att: &Attachment) -> Result<(), CniError> {
        let mut errors = Vec::new();
        for p in list.plugins.iter().rev() {
            if let Err(e) = self.exec_plugin(list, p, "DEL", att, None) {
                errors.push(e.to_string());
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(CniError::Del(errors.join("; ")))
        }
    }

    /// Runs one plugin binary per the CNI protocol: parameters in the environment, the
    /// plugin's network config on stdin, a result or an error object on stdout.
    fn exec_plugin(
        &self,
        list: &NetworkConfigList,
        plugin: &Map<String, Value>,
        command: &'static str,
        att: &Attachment,
        prev: Option<&Value>,
    ) -> Result<Value, CniError> {
        let ty = plugin_type(plugin, &list.path)?;
        let bin = self.find_plugin(ty)?;
        let conf = plugin_stdin(list, plugin, prev, att.ports);
        let cni_path = std::env::join_paths(&self.bin_dirs)
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_default();
        let mut child = Command::new(&bin)
            .env("CNI_COMMAND", command)
            .env("CNI_CONTAINERID", att.container_id)
            .env("CNI_NETNS", att.netns)
            .env("CNI_IFNAME", att.ifname)
            .env("CNI_ARGS", &att.cni_args)
            .env("CNI_PATH", cni_path)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|source| CniError::Io {
                what: "run",
                path: bin.clone(),
                source,
            })?;
        let io_err = |source| CniError::Io {
            what: "talk to",
            path: bin.clone(),
            source,
        };
        let conf_bytes = serde_json::to_vec(&conf).unwrap_or_default();
        if let Some(mut stdin) = child.stdin.take() {
            // A plugin that exits without reading its stdin gives EPIPE; its exit status and
            // output below tell what happened.
            let _ = stdin.write_all(&conf_bytes);
        }
        let out = child.wait_with_output().map_err(io_err)?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        if !out.status.success() {
            let (code, msg, details) = match serde_json::from_str::<Value>(&stdout) {
                Ok(v) => (
                    v.get("code").and_then(Value::as_i64).unwrap_or(-1),
                    v.get("msg")
                        .and_then(Value::as_str)
                        .unwrap_or("")
                        .to_string(),
                    v.get("details")
                        .and_then(Value::as_str)
                        .filter(|d| !d.is_empty())
                        .map(|d| format!(" ({d})"))
                        .unwrap_or_default(),
                ),
                Err(_) => (
                    out.status.code().map(i64::from).unwrap_or(-1),
                    format!(
                        "{}{}",
                        stdout.trim(),
                        String::from_utf8_lossy(&out.stderr).trim()
                    ),
                    String::new(),
                ),
            };
            return Err(CniError::Plugin {
                plugin: ty.to_string(),
                command,
                code,
                msg,
                details,
            });
        }
        if command != "ADD" || stdout.trim().is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_str(&stdout).map_err(|e| CniError::BadResult {
            plugin: ty.to_string(),
            command,
            reason: format!("{e}: {}", stdout.trim()),
        })
    }
}

fn cni_args(sandbox_id: &str, pod_name: &str, pod_namespace: &str) -> String {
    format!(
        "IgnoreUnknown=1;K8S_POD_NAMESPACE={pod_namespace};K8S_POD_NAME={pod_name};\
         K8S_POD_INFRA_CONTAINER_ID={sandbox_id}"
    )
}

fn loopback_list(version: &str) -> NetworkConfigList {
    let mut p = Map::new();
    p.insert("type".into(), Value::from("loopback"));
    NetworkConfigList {
        path: PathBuf::from("<built-in loopback>"),
        name: LOOPBACK_NETWORK.into(),
        cni_version: version.to_string(),
        disable_check: true,
        plugins: vec![p],
    }
}

fn plugin_type<'a>(plugin: &'a Map<String, Value>, path: &Path) -> Result<&'a str, CniError> {
    let ty = plugin
        .get("type")
        .and_then(Value::as_str)
        .ok_or_else(|| CniError::BadConfig {
            path: path.to_path_buf(),
            reason: "a plugin has no \"type\"".into(),
        })?;
    // The type names a file in the bin dirs: never a path.
    if ty.is_empty() || ty.contains('/') || ty == "." || ty == ".." {
        return Err(CniError::BadConfig {
            path: path.to_path_buf(),
            reason: format!("bad plugin type {ty:?}"),
        });
    }
    Ok(ty)
}

/// The config one plugin reads on stdin: its own object plus the list's name and version, the
/// previous result, and the runtime config for the capabilities it declares.
fn plugin_stdin(
    list: &NetworkConfigList,
    plugin: &Map<String, Value>,
    prev: Option<&Value>,
    ports: &[PortMapping],
) -> Value {
    let mut conf = plugin.clone();
    conf.insert("name".into(), Value::from(list.name.clone()));
    conf.insert("cniVersion".into(), Value::from(list.cni_version.clone()));
    if let Some(prev) = prev.filter(|p| !p.is_null()) {
        conf.insert("prevResult".into(), prev.clone());
    }
    let wants = |cap: &str| {
        plugin
            .get("capabilities")
            .and_then(|c| c.get(cap))
            .and_then(Value::as_bool)
            .unwrap_or(false)
    };
    let mut runtime = Map::new();
    if wants("portMappings") {
        // Ports without a host port are only informational in the CRI; nothing to map.
        let pm: Vec<Value> = ports
            .iter()
            .filter(|p| p.host_port != 0)
            .map(|p| {
                let mut m = json!({
                    "hostPort": p.host_port,
                    "containerPort": p.container_port,
                    "protocol": if p.protocol.is_empty() { "tcp".to_string() } else { p.protocol.to_lowercase() },
                });
                if !p.host_ip.is_empty() {
                    m["hostIP"] = Value::from(p.host_ip.clone());
                }
                m
            })
            .collect();
        if !pm.is_empty() {
            runtime.insert("portMappings".into(), Value::Array(pm));
        }
    }
    if !runtime.is_empty() {
        conf.insert("runtimeConfig".into(), Value::Object(runtime));
    }
    Value::Object(conf)
}

fn load_file(path: &Path) -> Result<NetworkConfigList, CniError> {
    let bad = |reason: String| CniError::BadConfig {
        path: path.to_path_buf(),
        reason,
    };
    let text = std::fs::read_to_string(path).map_err(|source| CniError::Io {
        what: "read",
        path: path.to_path_buf(),
        source,
    })?;
    let v: Value = serde_json::from_str(&text).map_err(|e| bad(e.to_string()))?;
    let obj = v
        .as_object()
        .ok_or_else(|| bad("not a JSON object".into()))?;
    let name = obj
        .get("name")
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())
        .ok_or_else(|| bad("no \"name\"".into()))?
        .to_string();
    let cni_version = obj
        .get("cniVersion")
        .and_then(Value::as_str)
        .unwrap_or("0.1.0")
        .to_string();
    let disable_check = obj
        .get("disableCheck")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let is_list = path.extension().and_then(|e| e.to_str()) == Some("conflist")
        || obj.contains_key("plugins");
    let plugins: Vec<Map<String, Value>> = if is_list {
        let arr = obj
            .get("plugins")
            .and_then(Value::as_array)
            .ok_or_else(|| bad("no \"plugins\" list".into()))?;
        arr.iter()
            .map(|p| {
                p.as_object()
                    .cloned()
                    .ok_or_else(|| bad("a plugin is not an object".into()))
            })
            .collect::<Result<_, _>>()?
    } else {
        // A single-plugin .conf is its own only plugin.
        vec![obj.clone()]
    };
    if plugins.is_empty() {
        return Err(bad("empty \"plugins\" list".into()));
    }
    for p in &plugins {
        plugin_type(p, path)?;
    }
    Ok(NetworkConfigList {
        path: path.to_path_buf(),
        name,
        cni_version,
        disable_check,
        plugins,
    })
}

/// The pod's addresses from a CNI result: 0.3.0+ `ips` (only those on an interface inside the
/// pod's namespace when the result says which), or 0.1/0.2 `ip4`/`ip6`.
pub fn result_ips(result: &Value) -> Result<Vec<IpAddr>, String> {
    let parse = |cidr: &str| -> Result<IpAddr, String> {
        let addr = cidr.split('/').next().unwrap_or(cidr);
        addr.parse()
            .map_err(|e| format!("bad address {cidr:?}: {e}"))
    };
    let mut ips = Vec::new();
    if let Some(list) = result.get("ips").and_then(Value::as_array) {
        let ifaces = result
            .get("interfaces")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        for ip in list {
            let in_pod = match ip.get("interface").and_then(Value::as_u64) {
                Some(i) => ifaces
                    .get(i as usize)
                    .and_then(|f| f.get("sandbox"))
                    .and_then(Value::as_str)
                    .is_some_and(|s| !s.is_empty()),
                None => true,
            };
            if !in_pod {
                continue;
            }
            if let Some(a) = ip.get("address").and_then(Value::as_str) {
                ips.push(parse(a)?);
            }
        }
    } else {
        for key in ["ip4", "ip6"] {
            if let Some(a) = result
                .get(key)
                .and_then(|v| v.get("ip"))
                .and_then(Value::as_str)
            {
                ips.push(parse(a)?);
            }
        }
    }
    // IPv4 first: CRI's PodSandboxStatus.network.ip is the first, kubelet expects v4 there
    // on dual-stack nodes configured v4-primary, which is the common case.
    ips.sort_by_key(|ip| ip.is_ipv6());
    Ok(ips)
}

/// Compares dotted versions ("0.3.1" < "0.4.0" < "1.0.0").
fn version_lt(a: &str, b: &str) -> bool {
    let parts = |s: &str| -> Vec<u64> { s.split('.').map(|p| p.parse().unwrap_or(0)).collect() };
    parts(a) < parts(b)
}

/// The conflist hack/setup.sh installs and tests use: bridge + host-local + portmap.
pub fn default_conflist(name: &str, bridge: &str, subnet: &str) -> Value {
    json!({
        "cniVersion": "1.0.0",
        "name": name,
        "plugins": [
            {
                "type": "bridge",
                "bridge": bridge,
                "isGateway": true,
                "ipMasq": false,
                "hairpinMode": true,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{ "subnet": subnet }]],
                    "routes": [{ "dst": "0.0.0.0/0" }]
                }
            },
            { "type": "portmap", "capabilities": { "portMappings": true } }
        ]
    })
}

/// Only for diagnostics: which plugin types a loaded list runs, in order.
pub fn plugin_types(list: &NetworkConfigList) -> Vec<String> {
    list.plugins
        .iter()
        .filter_map(|p| p.get("type").and_then(Value::as_str).map(str::to_string))
        .collect()
}

#[cfg(test)]
mod tests;
