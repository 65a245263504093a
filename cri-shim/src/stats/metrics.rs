//! ListMetricDescriptors and ListPodSandboxMetrics: the cadvisor-named metrics kubelet serves
//! on /metrics/cadvisor when PodAndContainerStatsFromCRI is on, with CRI-O's label keys
//! (`id`, `name`, `image`, then per-metric ones) and its units (whole seconds for CPU time).

use k8s_cri::v1 as cri;
use k8s_cri::v1::MetricType;

use super::{cgroup::Mounts, container_usage, netdev, Usage};
use crate::store::{ContainerRecord, SandboxRecord, SandboxState};

const BASE_LABELS: &[&str] = &["id", "name", "image"];

struct Descriptor {
    name: &'static str,
    help: &'static str,
    extra_labels: &'static [&'static str],
    kind: MetricType,
}

const fn d(
    name: &'static str,
    help: &'static str,
    extra_labels: &'static [&'static str],
    kind: MetricType,
) -> Descriptor {
    Descriptor {
        name,
        help,
        extra_labels,
        kind,
    }
}

use MetricType::{Counter, Gauge};

const CPU_USAGE: &str = "container_cpu_usage_seconds_total";
const CPU_USER: &str = "container_cpu_user_seconds_total";
const CPU_SYSTEM: &str = "container_cpu_system_seconds_total";
const MEM_USAGE: &str = "container_memory_usage_bytes";
const MEM_WORKING_SET: &str = "container_memory_working_set_bytes";
const MEM_RSS: &str = "container_memory_rss";
const MEM_CACHE: &str = "container_memory_cache";
const MEM_SWAP: &str = "container_memory_swap";
const PROCESSES: &str = "container_processes";
const SPEC_MEMORY_LIMIT: &str = "container_spec_memory_limit_bytes";
const SPEC_CPU_SHARES: &str = "container_spec_cpu_shares";
const SPEC_CPU_QUOTA: &str = "container_spec_cpu_quota";
const SPEC_CPU_PERIOD: &str = "container_spec_cpu_period";
const START_TIME: &str = "container_start_time_seconds";
const LAST_SEEN: &str = "container_last_seen";
const RX_BYTES: &str = "container_network_receive_bytes_total";
const RX_PACKETS: &str = "container_network_receive_packets_total";
const RX_DROPPED: &str = "container_network_receive_packets_dropped_total";
const RX_ERRORS: &str = "container_network_receive_errors_total";
const TX_BYTES: &str = "container_network_transmit_bytes_total";
const TX_PACKETS: &str = "container_network_transmit_packets_total";
const TX_DROPPED: &str = "container_network_transmit_packets_dropped_total";
const TX_ERRORS: &str = "container_network_transmit_errors_total";

const DESCRIPTORS: &[Descriptor] = &[
    d(
        CPU_USAGE,
        "Cumulative CPU time consumed in seconds.",
        &["cpu"],
        Counter,
    ),
    d(
        CPU_USER,
        "Cumulative user CPU time consumed in seconds.",
        &[],
        Counter,
    ),
    d(
        CPU_SYSTEM,
        "Cumulative system CPU time consumed in seconds.",
        &[],
        Counter,
    ),
    d(
        MEM_USAGE,
        "Current memory usage in bytes, including all memory regardless of when it was accessed",
        &[],
        Gauge,
    ),
    d(MEM_WORKING_SET, "Current working set in bytes.", &[], Gauge),
    d(MEM_RSS, "Size of RSS in bytes.", &[], Gauge),
    d(
        MEM_CACHE,
        "Number of bytes of page cache memory.",
        &[],
        Gauge,
    ),
    d(MEM_SWAP, "Container swap usage in bytes.", &[], Gauge),
    d(
        PROCESSES,
        "Number of processes running inside the container.",
        &[],
        Gauge,
    ),
    d(
        SPEC_MEMORY_LIMIT,
        "Memory limit for the container in bytes.",
        &[],
        Gauge,
    ),
    d(SPEC_CPU_SHARES, "CPU share of the container.", &[], Gauge),
    d(SPEC_CPU_QUOTA, "CPU quota of the container.", &[], Gauge),
    d(SPEC_CPU_PERIOD, "CPU period of the container.", &[], Gauge),
    d(
        START_TIME,
        "Start time of the container since unix epoch in seconds.",
        &[],
        Gauge,
    ),
    d(
        LAST_SEEN,
        "Last time a container was seen by the exporter",
        &[],
        Gauge,
    ),
    d(
        RX_BYTES,
        "Cumulative count of bytes received",
        &["interface"],
        Counter,
    ),
    d(
        RX_PACKETS,
        "Cumulative count of packets received",
        &["interface"],
        Counter,
    ),
    d(
        RX_DROPPED,
        "Cumulative count of packets dropped while receiving",
        &["interface"],
        Counter,
    ),
    d(
        RX_ERRORS,
        "Cumulative count of errors encountered while receiving",
        &["interface"],
        Counter,
    ),
    d(
        TX_BYTES,
        "Cumulative count of bytes transmitted",
        &["interface"],
        Counter,
    ),
    d(
        TX_PACKETS,
        "Cumulative count of packets transmitted",
        &["interface"],
        Counter,
    ),
    d(
        TX_DROPPED,
        "Cumulative count of packets dropped while transmitting",
        &["interface"],
        Counter,
    ),
    d(
        TX_ERRORS,
        "Cumulative count of errors encountered while transmitting",
        &["interface"],
        Counter,
    ),
];

/// Every metric ListPodSandboxMetrics may return.
pub fn descriptors() -> Vec<cri::MetricDescriptor> {
    DESCRIPTORS
        .iter()
        .map(|d| cri::MetricDescriptor {
            name: d.name.into(),
            help: d.help.into(),
            label_keys: BASE_LABELS
                .iter()
                .chain(d.extra_labels)
                .map(|s| s.to_string())
                .collect(),
        })
        .collect()
}

/// Collects the metrics of one object under its base labels.
struct Collector {
    at: i64,
    base: Vec<String>,
    out: Vec<cri::Metric>,
}

impl Collector {
    fn push(&mut self, name: &'static str, extra: &[&str], value: u64) {
        let kind = DESCRIPTORS
            .iter()
            .find(|d| d.name == name)
            .map(|d| d.kind)
            .unwrap_or(Gauge);
        let mut labels = self.base.clone();
        labels.extend(extra.iter().map(|s| s.to_string()));
        self.out.push(cri::Metric {
            name: name.into(),
            timestamp: self.at,
            metric_type: kind as i32,
            label_values: labels,
            value: Some(cri::UInt64Value { value }),
        });
    }

    fn usage(&mut self, usage: &Usage) {
        const NS: u64 = 1_000_000_000;
        if let Some(cpu) = usage.cpu {
            self.push(CPU_USAGE, &["total"], cpu.usage_ns / NS);
            self.push(CPU_USER, &[], cpu.user_ns / NS);
            self.push(CPU_SYSTEM, &[], cpu.system_ns / NS);
        }
        if let Some(m) = usage.memory {
            self.push(MEM_USAGE, &[], m.usage);
            self.push(MEM_WORKING_SET, &[], m.working_set);
            self.push(MEM_RSS, &[], m.rss);
            self.push(MEM_CACHE, &[], m.cache);
            if let Some(swap) = m.swap {
                self.push(MEM_SWAP, &[], swap);
            }
        }
        if let Some(p) = usage.processes {
            self.push(PROCESSES, &[], p);
        }
    }
}

fn container_metrics(record: &ContainerRecord, mounts: &Mounts) -> cri::ContainerMetrics {
    let name = record
        .config
        .metadata
        .as_ref()
        .map(|m| m.name.clone())
        .unwrap_or_default();
    let mut c = Collector {
        at: crate::monitor::now_nanos(),
        base: vec![record.id.clone(), name, record.image_ref.clone()],
        out: Vec::new(),
    };
    if let Some(usage) = container_usage(record, mounts) {
        c.at = usage.at;
        c.usage(&usage);
        c.push(LAST_SEEN, &[], (usage.at / 1_000_000_000) as u64);
    }
    if let Some(r) = record
        .config
        .linux
        .as_ref()
        .and_then(|l| l.resources.as_ref())
    {
        if r.memory_limit_in_bytes > 0 {
            c.push(SPEC_MEMORY_LIMIT, &[], r.memory_limit_in_bytes as u64);
        }
        if r.cpu_shares > 0 {
            c.push(SPEC_CPU_SHARES, &[], r.cpu_shares as u64);
        }
        if r.cpu_quota > 0 {
            c.push(SPEC_CPU_QUOTA, &[], r.cpu_quota as u64);
        }
        if r.cpu_period > 0 {
            c.push(SPEC_CPU_PERIOD, &[], r.cpu_period as u64);
        }
    }
    if record.started_at > 0 {
        c.push(START_TIME, &[], (record.started_at / 1_000_000_000) as u64);
    }
    cri::ContainerMetrics {
        container_id: record.id.clone(),
        metrics: c.out,
    }
}

/// One pod's metrics: network under the pod (name `POD`, as cadvisor and CRI-O label the
/// pod's own cgroup), the rest per container.
pub fn pod_metrics(
    sandbox: &SandboxRecord,
    containers: &[ContainerRecord],
    mounts: &Mounts,
) -> cri::PodSandboxMetrics {
    let mut pod = Collector {
        at: crate::monitor::now_nanos(),
        base: vec![sandbox.id.clone(), "POD".into(), String::new()],
        out: Vec::new(),
    };
    if let (Some(netns), SandboxState::Ready) = (&sandbox.netns, sandbox.state) {
        match netdev::read(netns) {
            Ok(interfaces) => {
                for i in interfaces {
                    let name = [i.name.as_str()];
                    pod.push(RX_BYTES, &name, i.rx_bytes);
                    pod.push(RX_PACKETS, &name, i.rx_packets);
                    pod.push(RX_DROPPED, &name, i.rx_dropped);
                    pod.push(RX_ERRORS, &name, i.rx_errors);
                    pod.push(TX_BYTES, &name, i.tx_bytes);
                    pod.push(TX_PACKETS, &name, i.tx_packets);
                    pod.push(TX_DROPPED, &name, i.tx_dropped);
                    pod.push(TX_ERRORS, &name, i.tx_errors);
                }
            }
            Err(e) => {
                tracing::debug!(sandbox = %sandbox.id, error = %crate::error_chain(&e), "no network metrics")
            }
        }
    }
    if let Some(usage) = super::pod_usage(sandbox, containers, mounts) {
        pod.usage(&usage);
    }
    cri::PodSandboxMetrics {
        pod_sandbox_id: sandbox.id.clone(),
        metrics: pod.out,
        container_metrics: containers
            .iter()
            .map(|c| container_metrics(c, mounts))
            .collect(),
    }
}
