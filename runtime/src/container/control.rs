//! What runc lets one do to a living container through its cgroup: `pause`, `resume`,
//! `update`, `ps` and `events`.
use super::{status, ContainerError};
use crate::cgroups::{Cgroup, Stats};
use crate::state::{ContainerDir, Saved, Status};
use nix::unistd::Pid;
use oci_spec::runtime::LinuxResources;
use serde::Serialize;
use std::path::Path;
use std::time::{Duration, Instant};

/// How often `events` looks for new OOM kills and for the container's end between stats.
const EVENTS_POLL: Duration = Duration::from_millis(100);

fn open_alive(
    root: &Path,
    id: &str,
    action: &'static str,
) -> Result<(ContainerDir, Saved, Status), ContainerError> {
    let dir = ContainerDir::open(root, id)?;
    let saved = dir.load()?;
    let st = status(&dir.path, &saved);
    if st == Status::Stopped {
        return Err(ContainerError::BadState {
            action,
            id: id.into(),
            status: st,
        });
    }
    Ok((dir, saved, st))
}

/// Freezes every process of a created or running container.
pub fn pause(root: &Path, id: &str) -> Result<(), ContainerError> {
    let (_dir, saved, st) = open_alive(root, id, "pause")?;
    if st == Status::Paused {
        return Err(ContainerError::BadState {
            action: "pause",
            id: id.into(),
            status: st,
        });
    }
    Cgroup::from_paths(saved.cgroup).freeze()?;
    Ok(())
}

/// Thaws a paused container.
pub fn resume(root: &Path, id: &str) -> Result<(), ContainerError> {
    let (_dir, saved, st) = open_alive(root, id, "resume")?;
    if st != Status::Paused {
        return Err(ContainerError::BadState {
            action: "resume",
            id: id.into(),
            status: st,
        });
    }
    Cgroup::from_paths(saved.cgroup).thaw()?;
    Ok(())
}

/// Changes a container's limits: `changes` is merged into the resources it has (fields given
/// replace, others stay, as runc's `update` does), the whole result is written to its cgroup
/// and remembered in state.json for the next update.
pub fn update(root: &Path, id: &str, changes: &LinuxResources) -> Result<(), ContainerError> {
    let (dir, mut saved, _) = open_alive(root, id, "update")?;
    let current = saved
        .config
        .linux()
        .as_ref()
        .and_then(|l| l.resources().clone())
        .unwrap_or_default();
    let merged = merge_resources(&current, changes)?;
    Cgroup::from_paths(saved.cgroup.clone()).update(&merged)?;
    let mut linux = saved.config.linux().clone().unwrap_or_default();
    linux.set_resources(Some(merged));
    saved.config.set_linux(Some(linux));
    dir.save(&saved)?;
    Ok(())
}

/// `changes` laid over `current`, field by field (nested objects merged, lists replaced).
pub fn merge_resources(
    current: &LinuxResources,
    changes: &LinuxResources,
) -> Result<LinuxResources, ContainerError> {
    fn merge(base: &mut serde_json::Value, over: serde_json::Value) {
        match (base, over) {
            (serde_json::Value::Object(b), serde_json::Value::Object(o)) => {
                for (k, v) in o {
                    if v.is_null() {
                        continue;
                    }
                    merge(b.entry(k).or_insert(serde_json::Value::Null), v);
                }
            }
            (b, o) => *b = o,
        }
    }
    let invalid = |e: serde_json::Error| ContainerError::Invalid(format!("linux.resources: {e}"));
    let mut base = serde_json::to_value(current).map_err(invalid)?;
    merge(&mut base, serde_json::to_value(changes).map_err(invalid)?);
    serde_json::from_value(base).map_err(invalid)
}

/// Every process of the container (host pids), for `ps`.
pub fn pids(root: &Path, id: &str) -> Result<Vec<Pid>, ContainerError> {
    let saved = crate::state::load(&root.join(id))?;
    crate::state::validate_id(id)?;
    Ok(Cgroup::from_paths(saved.cgroup).pids()?)
}

/// One line of `rcrun events`, as runc prints it.
#[derive(Debug, Serialize)]
pub struct Event {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data: Option<Stats>,
}

/// The container's stats now.
pub fn stats(root: &Path, id: &str) -> Result<Event, ContainerError> {
    crate::state::validate_id(id)?;
    let dir = root.join(id);
    let saved = crate::state::load(&dir)?;
    if status(&dir, &saved) == Status::Stopped {
        return Err(ContainerError::BadState {
            action: "get stats of",
            id: id.into(),
            status: Status::Stopped,
        });
    }
    Ok(Event {
        kind: "stats",
        id: id.into(),
        data: Some(Cgroup::from_paths(saved.cgroup).stats()?),
    })
}

/// Streams events until the container stops: stats every `interval`, and an `oom` event each
/// time the kernel's OOM killer strikes in the container's cgroup. The state lock is not
/// held, so other commands keep working on the container meanwhile.
pub fn events(
    root: &Path,
    id: &str,
    interval: Duration,
    emit: &mut dyn FnMut(&Event) -> std::io::Result<()>,
) -> Result<(), ContainerError> {
    crate::state::validate_id(id)?;
    let dir = root.join(id);
    let saved = crate::state::load(&dir)?;
    let cgroup = Cgroup::from_paths(saved.cgroup.clone());
    let mut ooms = cgroup.oom_kills()?;
    let mut next_stats = Instant::now();
    let write_failed = |e: std::io::Error| ContainerError::Invalid(format!("events: {e}"));
    loop {
        // A deleted container (state.json gone) ends the stream as a stopped one does.
        let alive = crate::state::load(&dir)
            .map(|s| status(&dir, &s) != Status::Stopped)
            .unwrap_or(false);
        let now_ooms = cgroup.oom_kills().unwrap_or(ooms);
        for _ in ooms..now_ooms {
            emit(&Event {
                kind: "oom",
                id: id.into(),
                data: None,
            })
            .map_err(write_failed)?;
        }
        ooms = now_ooms.max(ooms);
        if !alive {
            return Ok(());
        }
        if Instant::now() >= next_stats {
            if let Ok(data) = cgroup.stats() {
                emit(&Event {
                    kind: "stats",
                    id: id.into(),
                    data: Some(data),
                })
                .map_err(write_failed)?;
            }
            next_stats = Instant::now() + interval;
        }
        std::thread::sleep(EVENTS_POLL.min(interval));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn update_merges_field_by_field() {
        let current: LinuxResources = serde_json::from_str(
            r#"{"memory":{"limit":100,"swap":200},"cpu":{"quota":1000,"period":100000},
                "pids":{"limit":5}}"#,
        )
        .expect("json");
        let changes: LinuxResources =
            serde_json::from_str(r#"{"memory":{"limit":50},"cpu":{"period":50000}}"#)
                .expect("json");
        let merged = merge_resources(&current, &changes).expect("merges");
        let memory = merged.memory().expect("memory");
        assert_eq!(memory.limit(), Some(50));
        assert_eq!(memory.swap(), Some(200));
        let cpu = merged.cpu().clone().expect("cpu");
        assert_eq!((cpu.quota(), cpu.period()), (Some(1000), Some(50000)));
        assert_eq!(merged.pids().map(|p| p.limit()), Some(5));
    }

    #[test]
    fn events_use_runc_field_names() {
        let oom = Event {
            kind: "oom",
            id: "c".into(),
            data: None,
        };
        assert_eq!(
            serde_json::to_string(&oom).expect("json"),
            r#"{"type":"oom","id":"c"}"#
        );
    }
}
