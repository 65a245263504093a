//! The v1 PodStatus (Kubernetes JSON field names), and the pod as `kubectl get pod` prints it:
//! the table with kubectl's STATUS column, or the whole object as YAML or JSON.
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::manifest::Pod;
use super::records::RuntimeInfo;

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct PodStatus {
    /// Pending, Running, Succeeded, Failed ("" before the first update is read as Pending).
    pub phase: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<PodCondition>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(rename = "hostIP", skip_serializing_if = "Option::is_none")]
    pub host_ip: Option<String>,
    #[serde(rename = "hostIPs", skip_serializing_if = "Vec::is_empty")]
    pub host_ips: Vec<PodIp>,
    #[serde(rename = "podIP", skip_serializing_if = "Option::is_none")]
    pub pod_ip: Option<String>,
    #[serde(rename = "podIPs", skip_serializing_if = "Vec::is_empty")]
    pub pod_ips: Vec<PodIp>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub start_time: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub init_container_statuses: Vec<ContainerStatus>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub container_statuses: Vec<ContainerStatus>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub qos_class: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct PodIp {
    pub ip: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct PodCondition {
    #[serde(rename = "type")]
    pub type_: String,
    /// "True" or "False".
    pub status: String,
    pub last_probe_time: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_transition_time: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct ContainerStatus {
    pub name: String,
    pub image: String,
    #[serde(rename = "imageID")]
    pub image_id: String,
    #[serde(rename = "containerID", skip_serializing_if = "Option::is_none")]
    pub container_id: Option<String>,
    pub ready: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub started: Option<bool>,
    pub restart_count: u32,
    pub state: ContainerState,
    pub last_state: ContainerState,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct ContainerState {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub waiting: Option<StateWaiting>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub running: Option<StateRunning>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub terminated: Option<StateTerminated>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct StateWaiting {
    pub reason: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct StateRunning {
    pub started_at: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct StateTerminated {
    pub exit_code: i32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signal: Option<i32>,
    pub reason: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    pub started_at: String,
    pub finished_at: String,
    #[serde(rename = "containerID", skip_serializing_if = "Option::is_none")]
    pub container_id: Option<String>,
}

impl ContainerState {
    pub fn waiting(reason: &str, message: Option<String>) -> ContainerState {
        ContainerState {
            waiting: Some(StateWaiting {
                reason: reason.to_string(),
                message,
            }),
            ..Default::default()
        }
    }
}

/// RFC 3339 in seconds, UTC, as the API server writes timestamps.
pub fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

pub fn parse_time(s: &str) -> Option<SystemTime> {
    humantime::parse_rfc3339_weak(s.trim_end_matches('Z')).ok()
}

/// kubectl's `duration.HumanDuration` (k8s.io/apimachinery/pkg/util/duration).
pub fn human_duration(d: Duration) -> String {
    let seconds = d.as_secs();
    if seconds < 120 {
        return format!("{seconds}s");
    }
    let minutes = seconds / 60;
    if minutes < 10 {
        let s = seconds % 60;
        return if s == 0 {
            format!("{minutes}m")
        } else {
            format!("{minutes}m{s}s")
        };
    }
    if minutes < 180 {
        return format!("{minutes}m");
    }
    let hours = seconds / 3600;
    if hours < 8 {
        let m = minutes % 60;
        return if m == 0 {
            format!("{hours}h")
        } else {
            format!("{hours}h{m}m")
        };
    }
    if hours < 48 {
        return format!("{hours}h");
    }
    if hours < 24 * 8 {
        let h = hours % 24;
        return if h == 0 {
            format!("{}d", hours / 24)
        } else {
            format!("{}d{h}h", hours / 24)
        };
    }
    if hours < 24 * 365 * 2 {
        return format!("{}d", hours / 24);
    }
    if hours < 24 * 365 * 8 {
        let dy = (hours / 24) % 365;
        return if dy == 0 {
            format!("{}y", hours / 24 / 365)
        } else {
            format!("{}y{dy}d", hours / 24 / 365)
        };
    }
    format!("{}y", hours / 24 / 365)
}

fn since(t: Option<&str>, now: SystemTime) -> String {
    match t.and_then(parse_time) {
        Some(t) => human_duration(now.duration_since(t).unwrap_or_default()),
        None => "<unknown>".to_string(),
    }
}

/// One pod as the table needs it.
pub struct PodView<'a> {
    pub pod: &'a Pod,
    pub status: &'a PodStatus,
    pub runtime: &'a RuntimeInfo,
}

/// kubectl's READY, STATUS and RESTARTS cells (printPod in kubectl's
/// pkg/printers/internalversion/printers.go), sidecar init containers aside (not supported).
pub fn status_cells(v: &PodView, now: SystemTime) -> (String, String, String) {
    let st = v.status;
    let total = v.pod.spec.containers.len();
    let mut ready = 0;
    let mut restarts: u64 = 0;
    let mut last_restart: Option<SystemTime> = None;
    let phase = if st.phase.is_empty() {
        "Pending"
    } else {
        &st.phase
    };
    let mut reason = st.reason.clone().unwrap_or_else(|| phase.to_string());
    let note_restart = |cs: &ContainerStatus, last: &mut Option<SystemTime>| {
        if let Some(t) = cs
            .last_state
            .terminated
            .as_ref()
            .and_then(|t| parse_time(&t.finished_at))
        {
            if last.is_none_or(|l| l < t) {
                *last = Some(t);
            }
        }
    };

    let mut initializing = false;
    let n_init = v.pod.spec.init_containers.len();
    for (i, cs) in st.init_container_statuses.iter().enumerate() {
        restarts += u64::from(cs.restart_count);
        note_restart(cs, &mut last_restart);
        if let Some(t) = &cs.state.terminated {
            if t.exit_code == 0 {
                continue;
            }
            reason = if t.reason.is_empty() {
                match t.signal {
                    Some(s) if s != 0 => format!("Init:Signal:{s}"),
                    _ => format!("Init:ExitCode:{}", t.exit_code),
                }
            } else {
                format!("Init:{}", t.reason)
            };
        } else if let Some(w) = cs
            .state
            .waiting
            .as_ref()
            .filter(|w| !w.reason.is_empty() && w.reason != "PodInitializing")
        {
            reason = format!("Init:{}", w.reason);
        } else {
            reason = format!("Init:{i}/{n_init}");
        }
        initializing = true;
        break;
    }

    let initialized = st
        .conditions
        .iter()
        .any(|c| c.type_ == "Initialized" && c.status == "True");
    if !initializing || initialized {
        restarts = 0;
        last_restart = None;
        let mut has_running = false;
        for cs in st.container_statuses.iter().rev() {
            restarts += u64::from(cs.restart_count);
            note_restart(cs, &mut last_restart);
            if let Some(w) = cs.state.waiting.as_ref().filter(|w| !w.reason.is_empty()) {
                reason = w.reason.clone();
            } else if let Some(t) = &cs.state.terminated {
                reason = if !t.reason.is_empty() {
                    t.reason.clone()
                } else {
                    match t.signal {
                        Some(s) if s != 0 => format!("Signal:{s}"),
                        _ => format!("ExitCode:{}", t.exit_code),
                    }
                };
            } else if cs.ready && cs.state.running.is_some() {
                has_running = true;
                ready += 1;
            }
        }
        if reason == "Completed" && has_running {
            let pod_ready = st
                .conditions
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True");
            reason = if pod_ready { "Running" } else { "NotReady" }.to_string();
        }
    }

    if v.runtime.deletion_timestamp.is_some() && phase != "Succeeded" && phase != "Failed" {
        reason = "Terminating".to_string();
    }

    let restarts = match last_restart {
        Some(t) if restarts != 0 => format!(
            "{restarts} ({} ago)",
            human_duration(now.duration_since(t).unwrap_or_default())
        ),
        _ => restarts.to_string(),
    };
    (format!("{ready}/{total}"), reason, restarts)
}

/// Lays cells out as kubectl's tabwriter does (min width 6, padding 3, last column unpadded).
fn tabulate(rows: &[Vec<String>]) -> String {
    tabwriter(rows, 6)
}

/// Columns as Go's text/tabwriter lays out kubectl's and crictl's tables: each column as wide
/// as its widest cell plus 3, at least `min_width`; the last column unpadded.
pub fn tabwriter(rows: &[Vec<String>], min_width: usize) -> String {
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..cols)
        .map(|i| {
            rows.iter()
                .filter_map(|r| r.get(i))
                .map(|c| c.chars().count() + 3)
                .max()
                .unwrap_or(0)
                .max(min_width)
        })
        .collect();
    let mut out = String::new();
    for r in rows {
        let mut line = String::new();
        for (i, c) in r.iter().enumerate() {
            if i + 1 == r.len() {
                line.push_str(c);
            } else {
                line.push_str(&format!("{c:<w$}", w = widths[i]));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// The `kubectl get pods` table; `all_namespaces` adds the NAMESPACE column, `wide` IP and NODE.
pub fn table(pods: &[PodView], wide: bool, all_namespaces: bool, now: SystemTime) -> String {
    let mut header: Vec<String> = Vec::new();
    if all_namespaces {
        header.push("NAMESPACE".into());
    }
    for h in ["NAME", "READY", "STATUS", "RESTARTS", "AGE"] {
        header.push(h.into());
    }
    if wide {
        header.push("IP".into());
        header.push("NODE".into());
    }
    let mut rows = vec![header];
    for v in pods {
        let (ready, status, restarts) = status_cells(v, now);
        let mut row = Vec::new();
        if all_namespaces {
            row.push(v.pod.metadata.namespace.clone());
        }
        row.push(v.pod.metadata.name.clone());
        row.push(ready);
        row.push(status);
        row.push(restarts);
        row.push(since(v.pod.metadata.creation_timestamp.as_deref(), now));
        if wide {
            row.push(v.status.pod_ip.clone().unwrap_or_else(|| "<none>".into()));
            row.push(
                v.pod
                    .spec
                    .node_name
                    .clone()
                    .filter(|n| !n.is_empty())
                    .unwrap_or_else(|| "<none>".into()),
            );
        }
        rows.push(row);
    }
    tabulate(&rows)
}

/// The whole v1 Pod object: manifest (metadata, spec) with its status; the sandbox id as the
/// `rcrictl.io/sandbox-id` annotation, deletion time and grace as kubectl shows them.
pub fn pod_object(v: &PodView) -> Result<Value> {
    let mut obj = serde_json::to_value(v.pod).context("cannot serialise the pod")?;
    let map = obj
        .as_object_mut()
        .context("a pod serialises to a JSON object")?;
    map.insert("apiVersion".into(), json!("v1"));
    map.insert("kind".into(), json!("Pod"));
    let mut status = serde_json::to_value(v.status).context("cannot serialise the status")?;
    if let Some(s) = status.as_object_mut() {
        if s.get("phase").and_then(Value::as_str) == Some("") {
            s.insert("phase".into(), json!("Pending"));
        }
    }
    map.insert("status".into(), status);
    if let Some(meta) = map.get_mut("metadata").and_then(Value::as_object_mut) {
        if !v.runtime.sandbox_id.is_empty() {
            let ann = meta
                .entry("annotations")
                .or_insert_with(|| json!({}))
                .as_object_mut();
            if let Some(ann) = ann {
                ann.insert("rcrictl.io/sandbox-id".into(), json!(v.runtime.sandbox_id));
            }
        }
        if let Some(t) = &v.runtime.deletion_timestamp {
            meta.insert("deletionTimestamp".into(), json!(t));
        }
        if let Some(g) = v.runtime.deletion_grace_period_seconds {
            meta.insert("deletionGracePeriodSeconds".into(), json!(g));
        }
    }
    Ok(obj)
}

/// `kind: List` around several pods, as kubectl prints `get pods -o json`.
pub fn list_object(items: Vec<Value>) -> Value {
    json!({"apiVersion": "v1", "kind": "List", "items": items, "metadata": {"resourceVersion": ""}})
}

pub fn to_yaml(v: &Value) -> Result<String> {
    serde_yaml_ng::to_string(v).context("cannot render YAML")
}

pub fn to_json(v: &Value) -> Result<String> {
    let mut s = serde_json::to_string_pretty(v).context("cannot render JSON")?;
    s.push('\n');
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kubelet::manifest::Container;

    fn pod(n_init: usize, n: usize) -> Pod {
        let mut p = Pod::default();
        p.metadata.name = "web".into();
        p.metadata.namespace = "default".into();
        for i in 0..n_init {
            p.spec.init_containers.push(Container {
                name: format!("init{i}"),
                ..Default::default()
            });
        }
        for i in 0..n {
            p.spec.containers.push(Container {
                name: format!("c{i}"),
                ..Default::default()
            });
        }
        p
    }

    fn running(ready: bool) -> ContainerStatus {
        ContainerStatus {
            ready,
            state: ContainerState {
                running: Some(StateRunning {
                    started_at: "2026-01-01T00:00:00Z".into(),
                }),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    fn waiting(reason: &str) -> ContainerStatus {
        ContainerStatus {
            state: ContainerState::waiting(reason, None),
            ..Default::default()
        }
    }

    fn terminated(code: i32, reason: &str) -> ContainerStatus {
        ContainerStatus {
            state: ContainerState {
                terminated: Some(StateTerminated {
                    exit_code: code,
                    reason: reason.into(),
                    ..Default::default()
                }),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    fn cond(t: &str, s: bool) -> PodCondition {
        PodCondition {
            type_: t.into(),
            status: if s { "True" } else { "False" }.into(),
            ..Default::default()
        }
    }

    fn cells(p: &Pod, st: &PodStatus, deleting: bool) -> (String, String, String) {
        let mut rt = RuntimeInfo::default();
        if deleting {
            rt.deletion_timestamp = Some("2026-01-01T00:00:00Z".into());
        }
        let now = parse_time("2026-01-01T00:10:00Z").unwrap();
        status_cells(
            &PodView {
                pod: p,
                status: st,
                runtime: &rt,
            },
            now,
        )
    }

    fn status_of(p: &Pod, st: &PodStatus) -> String {
        cells(p, st, false).1
    }

    #[test]
    fn status_column_like_kubectl() {
        let p = pod(0, 1);
        let mut st = PodStatus::default();
        assert_eq!(status_of(&p, &st), "Pending");
        st.phase = "Pending".into();
        st.container_statuses = vec![waiting("ContainerCreating")];
        assert_eq!(status_of(&p, &st), "ContainerCreating");
        st.container_statuses = vec![waiting("ErrImagePull")];
        assert_eq!(status_of(&p, &st), "ErrImagePull");
        st.container_statuses = vec![waiting("ImagePullBackOff")];
        assert_eq!(status_of(&p, &st), "ImagePullBackOff");
        st.phase = "Running".into();
        st.container_statuses = vec![running(true)];
        assert_eq!(cells(&p, &st, false).0, "1/1");
        assert_eq!(status_of(&p, &st), "Running");
        st.container_statuses = vec![waiting("CrashLoopBackOff")];
        assert_eq!(status_of(&p, &st), "CrashLoopBackOff");
        st.phase = "Succeeded".into();
        st.container_statuses = vec![terminated(0, "Completed")];
        assert_eq!(status_of(&p, &st), "Completed");
        st.phase = "Failed".into();
        st.container_statuses = vec![terminated(1, "Error")];
        assert_eq!(status_of(&p, &st), "Error");
        st.container_statuses = vec![terminated(137, "OOMKilled")];
        assert_eq!(status_of(&p, &st), "OOMKilled");
        st.container_statuses = vec![terminated(3, "")];
        assert_eq!(status_of(&p, &st), "ExitCode:3");
    }

    #[test]
    fn completed_with_a_running_container_is_running_or_not_ready() {
        let p = pod(0, 2);
        let mut st = PodStatus {
            phase: "Running".into(),
            container_statuses: vec![running(true), terminated(0, "Completed")],
            ..Default::default()
        };
        // kubectl walks the statuses from the last: "Completed" is the reason, but a ready
        // running container turns it back.
        st.conditions = vec![cond("Ready", false)];
        assert_eq!(status_of(&p, &st), "NotReady");
        st.conditions = vec![cond("Ready", true)];
        assert_eq!(status_of(&p, &st), "Running");
        assert_eq!(cells(&p, &st, false).0, "1/2");
        // Running but not ready: no reason from it, phase stays.
        st.container_statuses = vec![running(false), running(false)];
        assert_eq!(status_of(&p, &st), "Running");
        assert_eq!(cells(&p, &st, false).0, "0/2");
    }

    #[test]
    fn init_container_cases() {
        let p = pod(2, 1);
        let mut st = PodStatus {
            phase: "Pending".into(),
            conditions: vec![cond("Initialized", false)],
            init_container_statuses: vec![running(false), waiting("PodInitializing")],
            container_statuses: vec![waiting("PodInitializing")],
            ..Default::default()
        };
        assert_eq!(status_of(&p, &st), "Init:0/2");
        st.init_container_statuses = vec![terminated(0, "Completed"), running(false)];
        assert_eq!(status_of(&p, &st), "Init:1/2");
        st.init_container_statuses = vec![terminated(0, "Completed"), terminated(1, "Error")];
        assert_eq!(status_of(&p, &st), "Init:Error");
        st.init_container_statuses = vec![terminated(0, "Completed"), waiting("CrashLoopBackOff")];
        assert_eq!(status_of(&p, &st), "Init:CrashLoopBackOff");
        st.init_container_statuses = vec![terminated(0, "Completed"), terminated(0, "Completed")];
        st.conditions = vec![cond("Initialized", true)];
        assert_eq!(status_of(&p, &st), "PodInitializing");
    }

    #[test]
    fn terminating_and_restarts() {
        let p = pod(0, 1);
        let mut c = running(true);
        c.restart_count = 3;
        c.last_state.terminated = Some(StateTerminated {
            exit_code: 1,
            reason: "Error".into(),
            finished_at: "2026-01-01T00:09:55Z".into(),
            ..Default::default()
        });
        let st = PodStatus {
            phase: "Running".into(),
            container_statuses: vec![c],
            ..Default::default()
        };
        assert_eq!(cells(&p, &st, false).2, "3 (5s ago)");
        assert_eq!(cells(&p, &st, true).1, "Terminating");
        let done = PodStatus {
            phase: "Succeeded".into(),
            container_statuses: vec![terminated(0, "Completed")],
            ..Default::default()
        };
        assert_eq!(cells(&p, &done, true).1, "Completed");
        assert_eq!(cells(&p, &done, false).2, "0");
    }

    #[test]
    fn table_layout_and_ages() {
        let mut p = pod(0, 1);
        p.metadata.creation_timestamp = Some("2026-01-01T00:00:00Z".into());
        let st = PodStatus {
            phase: "Running".into(),
            pod_ip: Some("10.88.0.5".into()),
            container_statuses: vec![running(true)],
            ..Default::default()
        };
        let rt = RuntimeInfo::default();
        let now = parse_time("2026-01-01T00:10:00Z").unwrap();
        let views = [PodView {
            pod: &p,
            status: &st,
            runtime: &rt,
        }];
        assert_eq!(
            table(&views, false, false, now),
            "NAME   READY   STATUS    RESTARTS   AGE\nweb    1/1     Running   0          10m\n"
        );
        let wide = table(&views, true, true, now);
        assert!(wide.starts_with("NAMESPACE   NAME   READY"), "{wide}");
        assert!(wide.contains("10.88.0.5   <none>"), "{wide}");
        assert_eq!(human_duration(Duration::from_secs(119)), "119s");
        assert_eq!(human_duration(Duration::from_secs(150)), "2m30s");
        assert_eq!(human_duration(Duration::from_secs(4 * 3600 + 60)), "4h1m");
        assert_eq!(human_duration(Duration::from_secs(3 * 86400)), "3d");
    }

    #[test]
    fn object_has_kind_status_and_sandbox_annotation() {
        let p = pod(0, 1);
        let st = PodStatus {
            phase: "Running".into(),
            pod_ip: Some("10.0.0.2".into()),
            pod_ips: vec![PodIp {
                ip: "10.0.0.2".into(),
            }],
            container_statuses: vec![running(true)],
            ..Default::default()
        };
        let rt = RuntimeInfo {
            sandbox_id: "abc".into(),
            ..Default::default()
        };
        let v = pod_object(&PodView {
            pod: &p,
            status: &st,
            runtime: &rt,
        })
        .unwrap();
        assert_eq!(v["kind"], "Pod");
        assert_eq!(v["apiVersion"], "v1");
        assert_eq!(v["status"]["podIP"], "10.0.0.2");
        assert_eq!(v["status"]["podIPs"][0]["ip"], "10.0.0.2");
        assert_eq!(v["status"]["containerStatuses"][0]["restartCount"], 0);
        assert!(v["status"]["containerStatuses"][0]["state"]["running"]["startedAt"].is_string());
        assert_eq!(v["metadata"]["annotations"]["rcrictl.io/sandbox-id"], "abc");
        let y = to_yaml(&v).unwrap();
        assert!(y.contains("kind: Pod"), "{y}");
    }
}
