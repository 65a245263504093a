//! UpdateContainerResources: new Linux resources for a container after its creation. A running
//! container gets them through the runtime's `update --resources` (runc's command line); a
//! created one, whose runtime container does not exist yet (it is made at StartContainer),
//! only in its config.json. Both keep them in the container's record and config.json, so
//! ContainerStatus reports them and a later start applies them.

use std::fs;
use std::path::Path;

use k8s_cri::v1::LinuxContainerResources;
use serde_json::Value;

use crate::container::{self, ContainerError};
use crate::store::ContainerState;
use crate::Context;

fn io_err(action: String) -> impl FnOnce(std::io::Error) -> ContainerError {
    move |source| ContainerError::Io { action, source }
}

/// CRI fields left zero or empty mean "unchanged" (kubelet sends what it manages); the
/// runtime keeps the old value of a field left out of the JSON, and so does the record.
pub fn merge(
    old: &LinuxContainerResources,
    new: &LinuxContainerResources,
) -> LinuxContainerResources {
    let pick = |n: i64, o: i64| if n != 0 { n } else { o };
    let pick_str = |n: &String, o: &String| if n.is_empty() { o.clone() } else { n.clone() };
    LinuxContainerResources {
        cpu_period: pick(new.cpu_period, old.cpu_period),
        cpu_quota: pick(new.cpu_quota, old.cpu_quota),
        cpu_shares: pick(new.cpu_shares, old.cpu_shares),
        memory_limit_in_bytes: pick(new.memory_limit_in_bytes, old.memory_limit_in_bytes),
        // Set on the init process at creation; not a cgroup setting.
        oom_score_adj: old.oom_score_adj,
        cpuset_cpus: pick_str(&new.cpuset_cpus, &old.cpuset_cpus),
        cpuset_mems: pick_str(&new.cpuset_mems, &old.cpuset_mems),
        hugepage_limits: if new.hugepage_limits.is_empty() {
            old.hugepage_limits.clone()
        } else {
            new.hugepage_limits.clone()
        },
        unified: {
            let mut u = old.unified.clone();
            u.extend(new.unified.clone());
            u
        },
        memory_swap_limit_in_bytes: pick(
            new.memory_swap_limit_in_bytes,
            old.memory_swap_limit_in_bytes,
        ),
    }
}

fn validate(r: &LinuxContainerResources) -> Result<(), ContainerError> {
    let invalid = |m: &str| Err(ContainerError::InvalidArgument(m.to_string()));
    if r.memory_limit_in_bytes < 0 {
        return invalid("memory_limit_in_bytes is negative");
    }
    if r.cpu_shares < 0 || r.cpu_period < 0 {
        return invalid("cpu_shares and cpu_period must not be negative");
    }
    if r.hugepage_limits.iter().any(|h| h.page_size.is_empty()) {
        return invalid("a hugepage limit has no page size");
    }
    Ok(())
}

/// Replaces `linux.resources` of the bundle's config.json, keeping what CRI resources do not
/// cover (the device rules); written to a temp file and renamed.
fn write_config(bundle: &Path, resources: &Value) -> Result<(), ContainerError> {
    let path = bundle.join("config.json");
    let text = fs::read(&path).map_err(io_err(format!("read {}", path.display())))?;
    let mut spec: Value = serde_json::from_slice(&text).map_err(|e| ContainerError::Io {
        action: format!("parse {}", path.display()),
        source: std::io::Error::other(e),
    })?;
    let old = spec["linux"]["resources"].take();
    let mut merged = resources.clone();
    if let Some(devices) = old.get("devices") {
        merged["devices"] = devices.clone();
    }
    spec["linux"]["resources"] = merged;
    let tmp = bundle.join(".config.json.tmp");
    fs::write(&tmp, serde_json::to_vec_pretty(&spec).unwrap_or_default())
        .map_err(io_err(format!("write {}", tmp.display())))?;
    fs::rename(&tmp, &path).map_err(io_err(format!("replace {}", path.display())))
}

/// UpdateContainerResources for Linux.
pub async fn update(
    ctx: &Context,
    id: &str,
    new: LinuxContainerResources,
) -> Result<(), ContainerError> {
    validate(&new)?;
    let record = container::get(ctx, id)?;
    let _guard = ctx.lock(&record.id).await;
    let mut record = container::get(ctx, &record.id)?;
    let old = record
        .config
        .linux
        .as_ref()
        .and_then(|l| l.resources.clone())
        .unwrap_or_default();
    let merged = merge(&old, &new);
    let full = container::resources(&merged);
    match record.state {
        ContainerState::Created => {}
        ContainerState::Running => {
            let file = record.bundle.join("update-resources.json");
            fs::write(&file, container::resources(&new).to_string())
                .map_err(io_err(format!("write {}", file.display())))?;
            let result = ctx.runtime.update(&record.id, &file).await;
            let _ = fs::remove_file(&file);
            result?;
        }
        other => {
            return Err(ContainerError::FailedPrecondition(format!(
                "container {} is {other:?}: only a created or running container can be updated",
                record.id
            )))
        }
    }
    write_config(&record.bundle, &full)?;
    record
        .config
        .linux
        .get_or_insert_with(Default::default)
        .resources = Some(merged);
    ctx.store.update_container(&record)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_cri::v1::HugepageLimit;

    #[test]
    fn unset_fields_keep_their_old_values() {
        let old = LinuxContainerResources {
            cpu_shares: 512,
            memory_limit_in_bytes: 100 << 20,
            oom_score_adj: 999,
            cpuset_cpus: "0".into(),
            ..Default::default()
        };
        let new = LinuxContainerResources {
            memory_limit_in_bytes: 200 << 20,
            cpu_quota: 50_000,
            hugepage_limits: vec![HugepageLimit {
                page_size: "2MB".into(),
                limit: 0,
            }],
            oom_score_adj: 5,
            ..Default::default()
        };
        let m = merge(&old, &new);
        assert_eq!(m.memory_limit_in_bytes, 200 << 20);
        assert_eq!(m.cpu_shares, 512);
        assert_eq!(m.cpu_quota, 50_000);
        assert_eq!(m.cpuset_cpus, "0");
        assert_eq!(m.oom_score_adj, 999);
        assert_eq!(m.hugepage_limits.len(), 1);
    }

    #[test]
    fn config_json_keeps_its_device_rules() {
        let dir = std::env::temp_dir().join(format!("rcri-update-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let spec = serde_json::json!({"linux": {"resources": {"devices": [{"allow": false, "access": "rwm"}], "memory": {"limit": 1}}}});
        fs::write(dir.join("config.json"), spec.to_string()).unwrap();
        write_config(&dir, &serde_json::json!({"memory": {"limit": 2}})).unwrap();
        let back: Value =
            serde_json::from_slice(&fs::read(dir.join("config.json")).unwrap()).unwrap();
        assert_eq!(back["linux"]["resources"]["memory"]["limit"], 2);
        assert_eq!(back["linux"]["resources"]["devices"][0]["access"], "rwm");
        fs::remove_dir_all(&dir).unwrap();
        assert!(validate(&LinuxContainerResources {
            memory_limit_in_bytes: -1,
            ..Default::default()
        })
        .is_err());
    }
}
