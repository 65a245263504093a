//! Container environment as kubelet's makeEnvironmentVariables builds it, and `$(VAR)`
//! expansion as k8s.io/kubernetes/third_party/forked/golang/expansion does it.
use std::collections::HashMap;

use anyhow::{bail, Context};

use super::PodRuntimeInfo;
use crate::kubelet::manifest::{Container, ObjectFieldSelector, Pod, ResourceFieldSelector};
use crate::kubelet::quantity;
use crate::kubelet::sources::ConfigSources;

/// Expands `$(NAME)` from `lookup`; `$$` is an escaped `$`; an unknown name or an unclosed
/// `$(` is left as written; any other `$x` stays as is.
pub fn expand(input: &str, lookup: &dyn Fn(&str) -> Option<String>) -> String {
    let bytes = input.as_bytes();
    let mut out = String::with_capacity(input.len());
    let mut checkpoint = 0;
    let mut cursor = 0;
    while cursor < bytes.len() {
        if bytes[cursor] == b'$' && cursor + 1 < bytes.len() {
            out.push_str(&input[checkpoint..cursor]);
            let rest = &input[cursor + 1..];
            let advance = match bytes[cursor + 1] {
                b'$' => {
                    out.push('$');
                    1
                }
                b'(' => match rest.find(')') {
                    Some(close) => {
                        let name = &rest[1..close];
                        match lookup(name) {
                            Some(v) => out.push_str(&v),
                            None => out.push_str(&format!("$({name})")),
                        }
                        close + 1
                    }
                    None => {
                        out.push_str("$(");
                        1
                    }
                },
                _ => {
                    // Not a reference: the `$` and the next character are kept (the next
                    // character may be a multi-byte one, so it is copied whole).
                    let c = rest.chars().next().unwrap_or_default();
                    out.push('$');
                    out.push(c);
                    c.len_utf8()
                }
            };
            cursor += advance + 1;
            checkpoint = cursor;
        } else {
            cursor += 1;
        }
    }
    out.push_str(&input[checkpoint.min(input.len())..]);
    out
}

/// Node capacity the downward API reports for limits a container does not set (kubelet falls
/// back to the node's allocatable).
pub(crate) fn node_cpu_millis() -> i64 {
    std::thread::available_parallelism()
        .map(|n| n.get() as i64 * 1000)
        .unwrap_or(1000)
}

pub(crate) fn node_memory_bytes() -> anyhow::Result<i64> {
    let text = std::fs::read_to_string("/proc/meminfo").context("reading /proc/meminfo")?;
    text.lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<i64>().ok())
        .map(|kb| kb * 1024)
        .context("/proc/meminfo has no MemTotal")
}

/// `metadata.labels['key']` → Some("key").
fn subscript<'a>(path: &'a str, prefix: &str) -> Option<&'a str> {
    let inner = path
        .strip_prefix(prefix)?
        .strip_prefix('[')?
        .strip_suffix(']')?;
    inner
        .strip_prefix('\'')
        .and_then(|s| s.strip_suffix('\''))
        .or_else(|| inner.strip_prefix('"').and_then(|s| s.strip_suffix('"')))
}

/// Labels or annotations as the downward API volume writes them: `key="value"` lines, sorted.
pub(crate) fn format_map(map: &std::collections::BTreeMap<String, String>) -> String {
    map.iter()
        .map(|(k, v)| format!("{k}={}", serde_json::Value::String(v.clone())))
        .collect::<Vec<_>>()
        .join("\n")
}

/// A fieldRef's value. `info` is None for volumes (set up before the pod has an IP; the API
/// allows only metadata fields there).
pub fn field_ref_value(
    pod: &Pod,
    info: Option<&PodRuntimeInfo>,
    selector: &ObjectFieldSelector,
) -> anyhow::Result<String> {
    let path = selector.field_path.as_str();
    let meta = &pod.metadata;
    if let Some(key) = subscript(path, "metadata.labels") {
        return Ok(meta.labels.get(key).cloned().unwrap_or_default());
    }
    if let Some(key) = subscript(path, "metadata.annotations") {
        return Ok(meta.annotations.get(key).cloned().unwrap_or_default());
    }
    let needs_info =
        || info.with_context(|| format!("fieldPath {path:?} is only available in env"));
    Ok(match path {
        "metadata.name" => meta.name.clone(),
        "metadata.namespace" => meta.namespace.clone(),
        "metadata.uid" => meta.uid.clone(),
        "metadata.labels" => format_map(&meta.labels),
        "metadata.annotations" => format_map(&meta.annotations),
        "spec.nodeName" => needs_info()?.node_name.clone(),
        "spec.serviceAccountName" => pod.spec.service_account_name.clone().unwrap_or_default(),
        "status.hostIP" => needs_info()?.host_ip.clone(),
        "status.hostIPs" => needs_info()?.host_ip.clone(),
        "status.podIP" => needs_info()?.pod_ip.clone(),
        "status.podIPs" => needs_info()?.pod_ips.join(","),
        other => bail!("fieldPath {other:?} is not supported"),
    })
}

/// A resourceFieldRef's value: the container's limit or request divided by the divisor and
/// rounded up; an unset limit reports the node's capacity (kubelet's behaviour).
pub fn resource_field_value(
    pod: &Pod,
    default_container: Option<&Container>,
    selector: &ResourceFieldSelector,
) -> anyhow::Result<String> {
    let container = match selector.container_name.as_deref().filter(|n| !n.is_empty()) {
        Some(name) => pod
            .spec
            .containers
            .iter()
            .chain(&pod.spec.init_containers)
            .find(|c| c.name == name)
            .with_context(|| format!("resourceFieldRef: no container named {name:?}"))?,
        None => default_container.context("resourceFieldRef: containerName is required")?,
    };
    let (kind, resource) = selector
        .resource
        .split_once('.')
        .with_context(|| format!("resource {:?} is not supported", selector.resource))?;
    let map = match kind {
        "limits" => &container.resources.limits,
        "requests" => &container.resources.requests,
        _ => bail!("resource {:?} is not supported", selector.resource),
    };
    let divisor = selector.divisor.clone().unwrap_or_default();
    let divisor = if divisor.0.is_empty() {
        crate::kubelet::manifest::Quantity("1".into())
    } else {
        divisor
    };
    let value = map.get(resource);
    let ceil_div = |a: i64, b: i64| -> anyhow::Result<String> {
        if b <= 0 {
            bail!("divisor {:?} must be positive", divisor.0);
        }
        Ok(((a + b - 1).div_euclid(b)).to_string())
    };
    match resource {
        "cpu" => {
            let milli = match value {
                Some(q) => quantity::milli_value(q)?,
                None if kind == "limits" => node_cpu_millis(),
                None => 0,
            };
            ceil_div(milli, quantity::milli_value(&divisor)?)
        }
        "memory" | "ephemeral-storage" => {
            let bytes = match value {
                Some(q) => quantity::value(q)?,
                None if kind == "limits" && resource == "memory" => node_memory_bytes()?,
                None => 0,
            };
            ceil_div(bytes, quantity::value(&divisor)?)
        }
        other => bail!("resource {other:?} is not supported"),
    }
}

fn is_optional(o: Option<bool>) -> bool {
    o.unwrap_or(false)
}

/// The container's environment in definition order: envFrom first, then env (each value
/// expanded with what was defined before it), later definitions replacing earlier ones.
/// A missing non-optional ConfigMap/Secret or key is an error (kubelet's
/// CreateContainerConfigError).
pub fn make_env(
    pod: &Pod,
    container: &Container,
    info: &PodRuntimeInfo,
    sources: &ConfigSources,
) -> anyhow::Result<Vec<(String, String)>> {
    let ns = pod.metadata.namespace.as_str();
    let mut order: Vec<String> = Vec::new();
    let mut env: HashMap<String, String> = HashMap::new();
    let set = |order: &mut Vec<String>, env: &mut HashMap<String, String>, k: String, v: String| {
        if env.insert(k.clone(), v).is_none() {
            order.push(k);
        }
    };
    for (i, from) in container.env_from.iter().enumerate() {
        let prefix = from.prefix.clone().unwrap_or_default();
        let (kind, reference, data) = if let Some(r) = &from.config_map_ref {
            ("configmap", r, sources.config_map(ns, &r.name))
        } else if let Some(r) = &from.secret_ref {
            ("secret", r, sources.secret(ns, &r.name))
        } else {
            continue;
        };
        let Some(data) = data else {
            if is_optional(reference.optional) {
                continue;
            }
            bail!("envFrom[{i}]: {kind} {:?} not found", reference.name);
        };
        for (key, value) in data {
            let name = format!("{prefix}{key}");
            // Keys that cannot be variable names are skipped, as kubelet does (with an event).
            if name.is_empty() || name.contains('=') {
                continue;
            }
            set(
                &mut order,
                &mut env,
                name,
                String::from_utf8_lossy(value).into_owned(),
            );
        }
    }
    for var in &container.env {
        let value = if let Some(v) = var.value.as_deref().filter(|v| !v.is_empty()) {
            expand(v, &|name| env.get(name).cloned())
        } else if let Some(from) = &var.value_from {
            let field = format!("env {:?}", var.name);
            if let Some(f) = &from.field_ref {
                field_ref_value(pod, Some(info), f).with_context(|| field.clone())?
            } else if let Some(r) = &from.resource_field_ref {
                resource_field_value(pod, Some(container), r).with_context(|| field.clone())?
            } else if let Some(k) = from.config_map_key_ref.as_ref() {
                match sources.config_map(ns, &k.name) {
                    None if is_optional(k.optional) => continue,
                    None => bail!("{field}: configmap {:?} not found", k.name),
                    Some(data) => match data.get(&k.key) {
                        None if is_optional(k.optional) => continue,
                        None => bail!(
                            "{field}: couldn't find key {} in ConfigMap {ns}/{}",
                            k.key,
                            k.name
                        ),
                        Some(v) => String::from_utf8_lossy(v).into_owned(),
                    },
                }
            } else if let Some(k) = from.secret_key_ref.as_ref() {
                match sources.secret(ns, &k.name) {
                    None if is_optional(k.optional) => continue,
                    None => bail!("{field}: secret {:?} not found", k.name),
                    Some(data) => match data.get(&k.key) {
                        None if is_optional(k.optional) => continue,
                        None => bail!(
                            "{field}: couldn't find key {} in Secret {ns}/{}",
                            k.key,
                            k.name
                        ),
                        Some(v) => String::from_utf8_lossy(v).into_owned(),
                    },
                }
            } else {
                String::new()
            }
        } else {
            String::new()
        };
        set(&mut order, &mut env, var.name.clone(), value);
    }
    Ok(order
        .into_iter()
        .map(|k| {
            let v = env.remove(&k).unwrap_or_default();
            (k, v)
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lookup(name: &str) -> Option<String> {
        match name {
            "VAR" => Some("value".into()),
            "EMPTY" => Some(String::new()),
            _ => None,
        }
    }

    #[test]
    fn expansion_follows_kubernetes_rules() {
        for (input, want) in [
            ("$(VAR)", "value"),
            ("a-$(VAR)-b", "a-value-b"),
            ("$(VAR)$(VAR)", "valuevalue"),
            ("$$(VAR)", "$(VAR)"),
            ("$$$(VAR)", "$value"),
            ("$$$$(VAR)", "$$(VAR)"),
            ("$(UNKNOWN)", "$(UNKNOWN)"),
            ("$(EMPTY)x", "x"),
            ("$(VAR", "$(VAR"),
            ("$VAR", "$VAR"),
            ("$", "$"),
            ("a$", "a$"),
            ("$$", "$"),
            ("$()", "$()"),
            ("héllo $(VAR) $é", "héllo value $é"),
            ("no refs", "no refs"),
        ] {
            assert_eq!(expand(input, &lookup), want, "{input}");
        }
    }

    #[test]
    fn subscripts() {
        assert_eq!(
            subscript("metadata.labels['app']", "metadata.labels"),
            Some("app")
        );
        assert_eq!(
            subscript("metadata.labels[\"a/b\"]", "metadata.labels"),
            Some("a/b")
        );
        assert_eq!(subscript("metadata.labels", "metadata.labels"), None);
    }
}
