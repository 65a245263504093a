//! rcri restart safety: `kill -9` rcri while pods run, restart it, and find every pod and
//! container in the right state, exits that happened meanwhile recorded, nothing leaked.

use std::fs;
use std::time::Duration;

use anyhow::{anyhow, Result};
use e2e::cri::{cni_available, container_config, pod_config, v1 as cri, Rcri};
use e2e::{mounts_under, pid_alive, proc_status};

fn monitor_pid(rcri: &Rcri, id: &str) -> Result<i32> {
    let mut rs = rcri.rs();
    let resp = rcri
        .block_on(rs.container_status(cri::ContainerStatusRequest {
            container_id: id.into(),
            verbose: true,
        }))?
        .into_inner();
    let info: serde_json::Value =
        serde_json::from_str(resp.info.get("info").map(String::as_str).unwrap_or("{}"))?;
    info["monitorPid"]
        .as_i64()
        .map(|p| p as i32)
        .ok_or_else(|| anyhow!("no monitorPid in {info}"))
}

#[test]
fn kill_9_and_restart_keeps_pods_and_records_exits() -> Result<()> {
    let mut rcri = Rcri::start()?;
    let host_network = !cni_available();
    let pod = pod_config("survivor", host_network, &rcri.log_dir());
    let pod_id = rcri
        .run_pod(&pod)
        .map_err(|s| anyhow!("RunPodSandbox: {s:?}\n{}", rcri.server_log()))?;
    let long = rcri.run_container(
        &pod_id,
        &container_config("long", &["sh", "-c", "echo started; exec sleep 1000"]),
        &pod,
    )?;
    let short = rcri.run_container(
        &pod_id,
        &container_config("short", &["sh", "-c", "sleep 2; echo bye; exit 5"]),
        &pod,
    )?;
    let monitor = monitor_pid(&rcri, &long)?;
    // The monitor's memory footprint (a performance goal: <= 2 MB per container).
    // RssFile is mostly the binary's text, shared by every monitor and rcri itself; RssAnon
    // is what each monitor costs on its own.
    eprintln!(
        "monitor {monitor}: VmRSS {} (RssAnon {}, RssFile {})",
        proc_status(monitor, "VmRSS")?,
        proc_status(monitor, "RssAnon")?,
        proc_status(monitor, "RssFile")?
    );

    rcri.kill9()?;
    std::thread::sleep(Duration::from_secs(3));
    assert!(pid_alive(monitor), "the monitor died with rcri");
    rcri.spawn()?;

    let pods = rcri.list_pods(None)?;
    assert_eq!(pods.len(), 1);
    assert_eq!(pods[0].state, cri::PodSandboxState::SandboxReady as i32);
    let status = rcri.container_status(&long)?;
    assert_eq!(status.state, cri::ContainerState::ContainerRunning as i32);
    let status = rcri.container_status(&short)?;
    assert_eq!(status.state, cri::ContainerState::ContainerExited as i32);
    assert_eq!(status.exit_code, 5);
    assert_eq!(status.reason, "Error");
    let log = fs::read_to_string(rcri.log_dir().join("short.log"))?;
    assert!(log.contains(" stdout F bye"), "{log}");

    // The running container is still fully usable.
    let out = rcri.exec_sync(&long, &["echo", "still here"], 5)?;
    assert_eq!(String::from_utf8_lossy(&out.stdout), "still here\n");
    rcri.stop_container(&long, 2)?;
    let status = rcri.container_status(&long)?;
    assert_eq!(status.state, cri::ContainerState::ContainerExited as i32);
    assert!(!pid_alive(monitor) || proc_status(monitor, "State")?.starts_with('Z'));

    // Removing the pod leaves nothing: no runtime state, no netns pin, no bundles.
    rcri.stop_pod(&pod_id)?;
    rcri.remove_pod(&pod_id)?;
    let runtime_left: Vec<_> = fs::read_dir(rcri.runtime_root())?.flatten().collect();
    assert!(runtime_left.is_empty(), "{runtime_left:?}");
    // The netns dir itself stays a (shared) mount point, like /run/netns of `ip netns`; no
    // pin and no other mount may remain.
    let netns_dir = rcri.state().join("netns");
    let mounts: Vec<_> = mounts_under(&rcri.state())
        .into_iter()
        .filter(|m| *m != netns_dir)
        .collect();
    assert!(mounts.is_empty(), "{mounts:?}");
    assert_eq!(fs::read_dir(rcri.state().join("containers"))?.count(), 0);
    assert_eq!(fs::read_dir(rcri.state().join("sandboxes"))?.count(), 0);
    Ok(())
}

/// A RunPodSandbox cut short by a crash (its record still says Creating) is undone at the next
/// start: the infra container, the CNI attachment and the netns pin all go.
#[test]
fn a_half_made_sandbox_is_undone_at_restart() -> Result<()> {
    let mut rcri = Rcri::start()?;
    let host_network = !cni_available();
    let pod = pod_config("halfmade", host_network, &rcri.log_dir());
    let pod_id = rcri
        .run_pod(&pod)
        .map_err(|s| anyhow!("RunPodSandbox: {s:?}\n{}", rcri.server_log()))?;
    rcri.kill9()?;
    let record = rcri
        .root()
        .join("metadata/sandboxes")
        .join(format!("{pod_id}.json"));
    let mut value: serde_json::Value = serde_json::from_slice(&fs::read(&record)?)?;
    value["state"] = "Creating".into();
    fs::write(&record, serde_json::to_vec(&value)?)?;
    rcri.spawn()?;
    assert!(rcri.list_pods(None)?.is_empty());
    assert!(!record.exists());
    let runtime_left: Vec<_> = fs::read_dir(rcri.runtime_root())?.flatten().collect();
    assert!(runtime_left.is_empty(), "{runtime_left:?}");
    let netns_dir = rcri.state().join("netns");
    let mounts: Vec<_> = mounts_under(&rcri.state())
        .into_iter()
        .filter(|m| *m != netns_dir)
        .collect();
    assert!(mounts.is_empty(), "{mounts:?}");
    assert_eq!(fs::read_dir(rcri.state().join("sandboxes"))?.count(), 0);
    Ok(())
}
