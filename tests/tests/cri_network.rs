//! rcri pod networking: a pinned network namespace with the CNI bridge network, shared by the
//! pod's containers, reachable from the test's namespace (where rcri and the bridge live).

use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Result};
use e2e::cri::{cni_available, container_config, pod_config, Rcri};

/// Polls an ExecSync until its stdout contains `want`.
fn exec_until(rcri: &Rcri, id: &str, cmd: &[&str], want: &str) -> Result<String> {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let out = rcri
            .exec_sync(id, cmd, 5)
            .map_err(|s| anyhow!("ExecSync {cmd:?}: {s:?}"))?;
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        if stdout.contains(want) {
            return Ok(stdout);
        }
        if Instant::now() > deadline {
            bail!(
                "{cmd:?} never printed {want:?}; last stdout {stdout:?} stderr {:?}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn containers_of_a_pod_share_its_network_and_the_pod_ip_answers() -> Result<()> {
    if !cni_available() {
        bail!("CNI plugins missing: run hack/setup.sh (containernetworking-plugins)");
    }
    let rcri = Rcri::start()?;
    let mut pod = pod_config("web", false, &rcri.log_dir());
    // A namespaced sysctl, set in the pod's network namespace by the infra container.
    if let Some(linux) = pod.linux.as_mut() {
        linux
            .sysctls
            .insert("net.ipv4.ping_group_range".into(), "0 4242".into());
    }
    let pod_id = rcri
        .run_pod(&pod)
        .map_err(|s| anyhow!("RunPodSandbox: {s:?}\n{}", rcri.server_log()))?;
    let ip = rcri.pod_ip(&pod_id)?;
    assert!(
        ip.starts_with(&rcri.subnet[..rcri.subnet.len() - 4]),
        "{ip} not in {}",
        rcri.subnet
    );

    let server = rcri.run_container(
        &pod_id,
        &container_config(
            "server",
            &[
                "sh",
                "-c",
                "while true; do echo hello-from-server | nc -l -p 8080; done",
            ],
        ),
        &pod,
    )?;
    let client = rcri.run_container(
        &pod_id,
        &container_config("client", &["sleep", "1000"]),
        &pod,
    )?;
    // Same network namespace: localhost reaches the other container's port.
    exec_until(
        &rcri,
        &client,
        &["sh", "-c", "nc -w 2 127.0.0.1 8080 </dev/null"],
        "hello-from-server",
    )?;
    // The pod's IP answers from the test's namespace, through the CNI bridge.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let out = rcri.in_netns(&["busybox", "nc", "-w", "2", &ip, "8080"])?;
        if out.stdout.contains("hello-from-server") {
            break;
        }
        if Instant::now() > deadline {
            bail!("pod IP {ip} did not answer: {out}");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    // The pod's hostname and /etc/hosts reach every container.
    let out = rcri.exec_sync(&client, &["hostname"], 5)?;
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "web");
    let out = rcri.exec_sync(&client, &["cat", "/proc/sys/net/ipv4/ping_group_range"], 5)?;
    let range: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .map(String::from)
        .collect();
    assert_eq!(range, ["0", "4242"]);
    let out = rcri.exec_sync(&server, &["cat", "/etc/hosts"], 5)?;
    assert!(String::from_utf8_lossy(&out.stdout).contains(&ip));

    // Stop tears the network down (the netns pin goes), remove is idempotent.
    let status = rcri.pod_status(&pod_id)?;
    let info = status.info.get("info").cloned().unwrap_or_default();
    let netns: serde_json::Value = serde_json::from_str(&info)?;
    let netns_path = netns["netns"].as_str().unwrap_or("").to_string();
    assert!(!netns_path.is_empty(), "{info}");
    assert!(std::path::Path::new(&netns_path).exists());
    rcri.stop_pod(&pod_id)?;
    assert!(
        !std::path::Path::new(&netns_path).exists(),
        "{netns_path} left behind"
    );
    rcri.remove_pod(&pod_id)?;
    rcri.remove_pod(&pod_id)?;
    Ok(())
}
