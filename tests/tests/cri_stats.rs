//! rcri stats, metrics, UpdateContainerResources and GetContainerEvents, on real pods: what the
//! CRI reports is checked against what the containers did (memory they filled, CPU they
//! burned, files they wrote, traffic they got) and against their cgroups.

use std::collections::HashMap;
use std::fs;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use e2e::cri::{cni_available, container_config, pod_config, v1 as cri, Rcri};

const MIB: u64 = 1 << 20;

fn need_cni() -> Result<()> {
    if !cni_available() {
        bail!("CNI plugins missing: run hack/setup.sh (containernetworking-plugins)");
    }
    Ok(())
}

fn container_stats(rcri: &Rcri, id: &str) -> Result<cri::ContainerStats, tonic::Status> {
    let mut rs = rcri.rs();
    rcri.block_on(rs.container_stats(cri::ContainerStatsRequest {
        container_id: id.into(),
    }))
    .and_then(|r| {
        r.into_inner()
            .stats
            .ok_or_else(|| tonic::Status::internal("no stats"))
    })
}

fn list_container_stats(
    rcri: &Rcri,
    filter: cri::ContainerStatsFilter,
) -> Result<Vec<cri::ContainerStats>> {
    let mut rs = rcri.rs();
    Ok(rcri
        .block_on(rs.list_container_stats(cri::ListContainerStatsRequest {
            filter: Some(filter),
        }))?
        .into_inner()
        .stats)
}

fn pod_stats(rcri: &Rcri, id: &str) -> Result<cri::PodSandboxStats, tonic::Status> {
    let mut rs = rcri.rs();
    rcri.block_on(rs.pod_sandbox_stats(cri::PodSandboxStatsRequest {
        pod_sandbox_id: id.into(),
    }))
    .and_then(|r| {
        r.into_inner()
            .stats
            .ok_or_else(|| tonic::Status::internal("no stats"))
    })
}

fn update(rcri: &Rcri, id: &str, linux: cri::LinuxContainerResources) -> Result<(), tonic::Status> {
    let mut rs = rcri.rs();
    rcri.block_on(
        rs.update_container_resources(cri::UpdateContainerResourcesRequest {
            container_id: id.into(),
            linux: Some(linux),
            windows: None,
            annotations: HashMap::new(),
        }),
    )
    .map(|_| ())
}

fn v(x: &Option<cri::UInt64Value>) -> u64 {
    x.as_ref().map(|v| v.value).unwrap_or(0)
}

/// The container's init pid, from ContainerStatus' verbose info.
fn container_pid(rcri: &Rcri, id: &str) -> Result<i32> {
    let mut rs = rcri.rs();
    let info = rcri
        .block_on(rs.container_status(cri::ContainerStatusRequest {
            container_id: id.into(),
            verbose: true,
        }))?
        .into_inner()
        .info;
    let verbose: serde_json::Value =
        serde_json::from_str(info.get("info").ok_or_else(|| anyhow!("no verbose info"))?)?;
    verbose["pid"]
        .as_i64()
        .map(|p| p as i32)
        .ok_or_else(|| anyhow!("no pid in {verbose}"))
}

/// A v1 controller's directory for `pid` (this host is a v1/v2 hybrid; the v2 path is run in
/// the VM of hack/vmtest.sh by the unit tests' fixtures).
fn v1_cgroup_dir(pid: i32, controller: &str) -> Result<String> {
    let text = fs::read_to_string(format!("/proc/{pid}/cgroup"))?;
    for line in text.lines() {
        let mut parts = line.splitn(3, ':');
        let (_, controllers, path) = (parts.next(), parts.next(), parts.next());
        if controllers.is_some_and(|c| c.split(',').any(|c| c == controller)) {
            return Ok(format!("/sys/fs/cgroup/{controller}{}", path.unwrap_or("")));
        }
    }
    bail!("no {controller} cgroup for {pid}: {text}")
}

fn wait_until<T>(
    what: &str,
    timeout: Duration,
    mut probe: impl FnMut() -> Result<Option<T>>,
) -> Result<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(t) = probe()? {
            return Ok(t);
        }
        if Instant::now() > deadline {
            bail!("timed out waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn stats_follow_memory_cpu_disk_and_processes() -> Result<()> {
    need_cni()?;
    let rcri = Rcri::start()?;
    let pod = pod_config("hog", false, &rcri.log_dir());
    let pod_id = rcri
        .run_pod(&pod)
        .map_err(|s| anyhow!("RunPodSandbox: {s:?}\n{}", rcri.server_log()))?;
    // 20 MiB in a tmpfs (charged to the container, not reclaimable file cache), a sleeper, and
    // a shell burning a CPU.
    let id = rcri.run_container(
        &pod_id,
        &container_config(
            "hog",
            &[
                "sh",
                "-c",
                "dd if=/dev/zero of=/dev/shm/fill bs=1M count=20 2>/dev/null; sleep 1000 & while :; do :; done",
            ],
        ),
        &pod,
    )?;

    let first = wait_until("20 MiB of working set", Duration::from_secs(20), || {
        let s = container_stats(&rcri, &id)?;
        let ws = s
            .memory
            .as_ref()
            .map(|m| v(&m.working_set_bytes))
            .unwrap_or(0);
        Ok((ws > 20 * MIB).then_some(s))
    })?;
    let memory = first.memory.context("memory")?;
    assert!(
        v(&memory.usage_bytes) >= v(&memory.working_set_bytes),
        "{memory:?}"
    );
    assert!(v(&memory.page_faults) > 0, "{memory:?}");
    assert_eq!(memory.available_bytes, None, "no limit was set: {memory:?}");
    let attrs = first.attributes.clone().context("attributes")?;
    assert_eq!(attrs.id, id);
    assert_eq!(attrs.labels.get("name").map(String::as_str), Some("hog"));

    std::thread::sleep(Duration::from_millis(1200));
    let second = container_stats(&rcri, &id)?;
    let (cpu1, cpu2) = (first.cpu.context("cpu")?, second.cpu.context("cpu")?);
    let (u1, u2) = (
        v(&cpu1.usage_core_nano_seconds),
        v(&cpu2.usage_core_nano_seconds),
    );
    assert!(u2 > u1 + 100_000_000, "CPU time did not grow: {u1} -> {u2}");
    assert!(cpu2.timestamp > cpu1.timestamp);
    let cores = v(&cpu2.usage_nano_cores);
    // A busy loop: most of a core (the machine is shared, so not all of it).
    assert!(cores > 100_000_000, "usage_nano_cores {cores}");
    assert!(
        cores < 1_500_000_000,
        "one loop cannot use {cores} nano-cores"
    );

    // The writable layer grows with a file written in the container.
    let layer = |s: &cri::ContainerStats| {
        let l = s.writable_layer.clone().unwrap_or_default();
        (v(&l.used_bytes), v(&l.inodes_used))
    };
    let (bytes_before, inodes_before) = layer(&second);
    let out = rcri
        .exec_sync(
            &id,
            &["dd", "if=/dev/urandom", "of=/big", "bs=1M", "count=5"],
            20,
        )
        .map_err(|s| anyhow!("ExecSync: {s:?}"))?;
    assert_eq!(out.exit_code, 0, "{}", String::from_utf8_lossy(&out.stderr));
    let (bytes_after, inodes_after) = layer(&container_stats(&rcri, &id)?);
    assert!(
        bytes_after >= bytes_before + 5 * MIB,
        "writable layer {bytes_before} -> {bytes_after}"
    );
    assert!(
        inodes_after > inodes_before,
        "inodes {inodes_before} -> {inodes_after}"
    );

    // Pod stats: the container's memory, CPU, and the processes of the pod: the infra, the
    // shell and its sleeper.
    let ps = pod_stats(&rcri, &pod_id).map_err(|s| anyhow!("PodSandboxStats: {s:?}"))?;
    let linux = ps.linux.clone().context("linux")?;
    assert_eq!(
        ps.attributes.as_ref().map(|a| a.id.as_str()),
        Some(pod_id.as_str())
    );
    assert!(v(&linux.memory.context("memory")?.working_set_bytes) > 20 * MIB);
    assert!(v(&linux.cpu.context("cpu")?.usage_core_nano_seconds) >= u2);
    assert_eq!(v(&linux.process.context("process")?.process_count), 3);
    assert_eq!(linux.containers.len(), 1);

    // Filters.
    let by = |filter: cri::ContainerStatsFilter| -> Result<Vec<String>> {
        Ok(list_container_stats(&rcri, filter)?
            .into_iter()
            .filter_map(|s| s.attributes.map(|a| a.id))
            .collect())
    };
    assert_eq!(by(Default::default())?, vec![id.clone()]);
    assert_eq!(
        by(cri::ContainerStatsFilter {
            id: id[..12].into(),
            ..Default::default()
        })?,
        vec![id.clone()]
    );
    assert_eq!(
        by(cri::ContainerStatsFilter {
            pod_sandbox_id: pod_id.clone(),
            label_selector: [("name".to_string(), "hog".to_string())].into(),
            ..Default::default()
        })?,
        vec![id.clone()]
    );
    assert!(by(cri::ContainerStatsFilter {
        label_selector: [("name".to_string(), "other".to_string())].into(),
        ..Default::default()
    })?
    .is_empty());
    let mut rs = rcri.rs();
    let listed = rcri
        .block_on(rs.list_pod_sandbox_stats(cri::ListPodSandboxStatsRequest {
            filter: Some(cri::PodSandboxStatsFilter {
                id: String::new(),
                label_selector: [("app".to_string(), "nope".to_string())].into(),
            }),
        }))?
        .into_inner()
        .stats;
    assert!(listed.is_empty());
    Ok(())
}

#[test]
fn pod_network_counters_grow_with_traffic() -> Result<()> {
    need_cni()?;
    let rcri = Rcri::start()?;
    let pod = pod_config("net", false, &rcri.log_dir());
    let pod_id = rcri
        .run_pod(&pod)
        .map_err(|s| anyhow!("RunPodSandbox: {s:?}\n{}", rcri.server_log()))?;
    rcri.run_container(&pod_id, &container_config("idle", &["sleep", "1000"]), &pod)?;
    let ip = rcri.pod_ip(&pod_id)?;
    let eth0 = |rcri: &Rcri| -> Result<cri::NetworkInterfaceUsage> {
        let stats = pod_stats(rcri, &pod_id).map_err(|s| anyhow!("PodSandboxStats: {s:?}"))?;
        let net = stats
            .linux
            .and_then(|l| l.network)
            .context("no network stats")?;
        assert!(net.interfaces.iter().all(|i| i.name != "lo"), "{net:?}");
        net.default_interface.context("no default interface")
    };
    let before = eth0(&rcri)?;
    assert_eq!(before.name, "eth0");
    // 20 pings of 1000 bytes from the test's namespace, where the bridge is.
    let out = rcri.in_netns(&[
        "busybox", "ping", "-c", "20", "-i", "0.05", "-s", "1000", "-W", "5", &ip,
    ])?;
    assert!(out.success(), "ping {ip}: {out:?}");
    let after = eth0(&rcri)?;
    assert!(
        v(&after.rx_bytes) >= v(&before.rx_bytes) + 20 * 1000,
        "rx {before:?} -> {after:?}"
    );
    assert!(
        v(&after.tx_bytes) >= v(&before.tx_bytes) + 20 * 1000,
        "tx {before:?} -> {after:?}"
    );

    // The same counters as metrics, labelled with the pod and the interface.
    let mut rs = rcri.rs();
    let descriptors = rcri
        .block_on(rs.list_metric_descriptors(cri::ListMetricDescriptorsRequest {}))?
        .into_inner()
        .descriptors;
    let keys: HashMap<String, usize> = descriptors
        .iter()
        .map(|d| (d.name.clone(), d.label_keys.len()))
        .collect();
    let metrics = rcri
        .block_on(rs.list_pod_sandbox_metrics(cri::ListPodSandboxMetricsRequest {}))?
        .into_inner()
        .pod_metrics;
    let ours = metrics
        .iter()
        .find(|m| m.pod_sandbox_id == pod_id)
        .context("no metrics for the pod")?;
    let rx = ours
        .metrics
        .iter()
        .find(|m| {
            m.name == "container_network_receive_bytes_total"
                && m.label_values.last().map(String::as_str) == Some("eth0")
        })
        .context("no receive bytes metric for eth0")?;
    assert!(v(&rx.value) >= v(&after.rx_bytes));
    assert_eq!(rx.metric_type, cri::MetricType::Counter as i32);
    let container = ours
        .container_metrics
        .first()
        .context("no container metrics")?;
    assert!(container
        .metrics
        .iter()
        .any(|m| m.name == "container_memory_working_set_bytes" && v(&m.value) > 0));
    for m in ours.metrics.iter().chain(&container.metrics) {
        assert_eq!(
            Some(&m.label_values.len()),
            keys.get(&m.name),
            "metric {} does not match its descriptor",
            m.name
        );
    }
    Ok(())
}

#[test]
fn update_container_resources_changes_the_cgroup_and_the_status() -> Result<()> {
    need_cni()?;
    let rcri = Rcri::start()?;
    let pod = pod_config("upd", false, &rcri.log_dir());
    let pod_id = rcri
        .run_pod(&pod)
        .map_err(|s| anyhow!("RunPodSandbox: {s:?}\n{}", rcri.server_log()))?;
    let id = rcri.run_container(
        &pod_id,
        &container_config("sleeper", &["sleep", "1000"]),
        &pod,
    )?;
    let pid = container_pid(&rcri, &id)?;
    let memory_dir = v1_cgroup_dir(pid, "memory")?;
    let cpu_dir = v1_cgroup_dir(pid, "cpu")?;

    update(
        &rcri,
        &id,
        cri::LinuxContainerResources {
            memory_limit_in_bytes: (64 * MIB) as i64,
            cpu_shares: 512,
            ..Default::default()
        },
    )
    .map_err(|s| anyhow!("UpdateContainerResources: {s:?}\n{}", rcri.server_log()))?;
    let limit: u64 = fs::read_to_string(format!("{memory_dir}/memory.limit_in_bytes"))?
        .trim()
        .parse()?;
    assert_eq!(limit, 64 * MIB);
    let shares: u64 = fs::read_to_string(format!("{cpu_dir}/cpu.shares"))?
        .trim()
        .parse()?;
    assert_eq!(shares, 512);
    let status = rcri.container_status(&id)?;
    let resources = status
        .resources
        .and_then(|r| r.linux)
        .context("no resources in ContainerStatus")?;
    assert_eq!(resources.memory_limit_in_bytes, (64 * MIB) as i64);
    assert_eq!(resources.cpu_shares, 512);
    // With a limit, stats tell what is left.
    let memory = container_stats(&rcri, &id)?.memory.context("memory")?;
    assert_eq!(
        v(&memory.available_bytes),
        64 * MIB - v(&memory.working_set_bytes)
    );

    // A second update of one field keeps the other.
    update(
        &rcri,
        &id,
        cri::LinuxContainerResources {
            memory_limit_in_bytes: (96 * MIB) as i64,
            ..Default::default()
        },
    )
    .map_err(|s| anyhow!("UpdateContainerResources: {s:?}"))?;
    let resources = rcri
        .container_status(&id)?
        .resources
        .and_then(|r| r.linux)
        .context("no resources")?;
    assert_eq!(resources.memory_limit_in_bytes, (96 * MIB) as i64);
    assert_eq!(resources.cpu_shares, 512);
    let limit: u64 = fs::read_to_string(format!("{memory_dir}/memory.limit_in_bytes"))?
        .trim()
        .parse()?;
    assert_eq!(limit, 96 * MIB);

    // A created container takes the update when it starts.
    let created = rcri.create_container(
        &pod_id,
        &container_config("later", &["sleep", "1000"]),
        &pod,
    )?;
    update(
        &rcri,
        &created,
        cri::LinuxContainerResources {
            memory_limit_in_bytes: (32 * MIB) as i64,
            ..Default::default()
        },
    )
    .map_err(|s| anyhow!("UpdateContainerResources on a created container: {s:?}"))?;
    rcri.start_container(&created)?;
    let later_dir = v1_cgroup_dir(container_pid(&rcri, &created)?, "memory")?;
    let limit: u64 = fs::read_to_string(format!("{later_dir}/memory.limit_in_bytes"))?
        .trim()
        .parse()?;
    assert_eq!(limit, 32 * MIB);

    // Errors: unknown id, exited container, nonsense value.
    let code = |r: Result<(), tonic::Status>| r.err().map(|s| s.code());
    assert_eq!(
        code(update(&rcri, "does-not-exist", Default::default())),
        Some(tonic::Code::NotFound)
    );
    rcri.stop_container(&id, 0)?;
    assert_eq!(
        code(update(
            &rcri,
            &id,
            cri::LinuxContainerResources {
                memory_limit_in_bytes: (64 * MIB) as i64,
                ..Default::default()
            }
        )),
        Some(tonic::Code::FailedPrecondition)
    );
    assert_eq!(
        code(update(
            &rcri,
            &created,
            cri::LinuxContainerResources {
                memory_limit_in_bytes: -5,
                ..Default::default()
            }
        )),
        Some(tonic::Code::InvalidArgument)
    );
    Ok(())
}

#[test]
fn stats_of_unknown_objects_are_not_found() -> Result<()> {
    let rcri = Rcri::start()?;
    let code = |r: Result<(), tonic::Status>| r.err().map(|s| s.code());
    assert_eq!(
        code(container_stats(&rcri, "nope").map(|_| ())),
        Some(tonic::Code::NotFound)
    );
    assert_eq!(
        code(pod_stats(&rcri, "nope").map(|_| ())),
        Some(tonic::Code::NotFound)
    );
    assert_eq!(
        code(container_stats(&rcri, "").map(|_| ())),
        Some(tonic::Code::InvalidArgument)
    );
    assert!(list_container_stats(&rcri, Default::default())?.is_empty());
    Ok(())
}

type Event = (String, i32);

/// Events for `ids` until `want` of them arrived (or the timeout).
fn collect_events(
    rcri: &Rcri,
    stream: &mut tonic::Streaming<cri::ContainerEventResponse>,
    ids: &[&str],
    want: usize,
    timeout: Duration,
) -> Result<Vec<(Event, cri::ContainerEventResponse)>> {
    let deadline = Instant::now() + timeout;
    let mut got = Vec::new();
    while got.len() < want {
        let left = deadline.saturating_duration_since(Instant::now());
        let next = rcri
            .block_on(async { tokio::time::timeout(left, stream.message()).await })
            .map_err(|_| anyhow!("only {} of {want} events: {got:?}", got.len()))??
            .context("the event stream ended")?;
        if ids.contains(&next.container_id.as_str()) {
            got.push(((next.container_id.clone(), next.container_event_type), next));
        }
    }
    Ok(got)
}

#[test]
fn container_events_arrive_in_order() -> Result<()> {
    use cri::ContainerEventType::*;
    need_cni()?;
    let rcri = Rcri::start()?;
    let mut rs = rcri.rs();
    let mut stream = rcri
        .block_on(rs.get_container_events(cri::GetEventsRequest {}))?
        .into_inner();

    let pod = pod_config("events", false, &rcri.log_dir());
    let pod_id = rcri
        .run_pod(&pod)
        .map_err(|s| anyhow!("RunPodSandbox: {s:?}\n{}", rcri.server_log()))?;
    let id = rcri.run_container(&pod_id, &container_config("c", &["sleep", "1000"]), &pod)?;
    rcri.stop_container(&id, 2)?;
    // Status calls notice the exit again: still one STOPPED.
    rcri.container_status(&id)?;
    rcri.remove_container(&id)?;

    let got = collect_events(
        &rcri,
        &mut stream,
        &[&pod_id, &id],
        6,
        Duration::from_secs(20),
    )?;
    let kinds: Vec<Event> = got.iter().map(|(e, _)| e.clone()).collect();
    assert_eq!(
        kinds,
        vec![
            (pod_id.clone(), ContainerCreatedEvent as i32),
            (pod_id.clone(), ContainerStartedEvent as i32),
            (id.clone(), ContainerCreatedEvent as i32),
            (id.clone(), ContainerStartedEvent as i32),
            (id.clone(), ContainerStoppedEvent as i32),
            (id.clone(), ContainerDeletedEvent as i32),
        ]
    );
    // Each event carries the pod's status and its containers' as they were then.
    let (_, started) = &got[3];
    assert_eq!(
        started.pod_sandbox_status.as_ref().map(|p| p.id.as_str()),
        Some(pod_id.as_str())
    );
    let running = started
        .containers_statuses
        .iter()
        .find(|c| c.id == id)
        .context("the started container is not in the event")?;
    assert_eq!(running.state, cri::ContainerState::ContainerRunning as i32);
    assert!(got
        .windows(2)
        .all(|w| w[0].1.created_at <= w[1].1.created_at));

    // A container that ends by itself is told without anyone asking for its status.
    let quick = rcri.run_container(&pod_id, &container_config("quick", &["true"]), &pod)?;
    let got = collect_events(&rcri, &mut stream, &[&quick], 3, Duration::from_secs(20))?;
    let kinds: Vec<i32> = got.iter().map(|((_, k), _)| *k).collect();
    assert_eq!(
        kinds,
        vec![
            ContainerCreatedEvent as i32,
            ContainerStartedEvent as i32,
            ContainerStoppedEvent as i32
        ]
    );
    let (_, stopped) = &got[2];
    let exited = stopped
        .containers_statuses
        .iter()
        .find(|c| c.id == quick)
        .context("no status of the exited container")?;
    assert_eq!(exited.state, cri::ContainerState::ContainerExited as i32);

    // The pod: stopped, then deleted (with its container).
    rcri.stop_pod(&pod_id)?;
    rcri.remove_pod(&pod_id)?;
    let got = collect_events(
        &rcri,
        &mut stream,
        &[&pod_id, &quick],
        3,
        Duration::from_secs(20),
    )?;
    let kinds: Vec<Event> = got.iter().map(|(e, _)| e.clone()).collect();
    assert_eq!(
        kinds,
        vec![
            (pod_id.clone(), ContainerStoppedEvent as i32),
            (quick.clone(), ContainerDeletedEvent as i32),
            (pod_id.clone(), ContainerDeletedEvent as i32),
        ]
    );
    Ok(())
}
