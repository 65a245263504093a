//! ContainerStats and PodSandboxStats: CPU and memory from the cgroups, the writable layer's
//! disk use from its overlay upper dir, the pod's network counters from its namespace, process
//! counts — computed as containerd's CRI plugin and cadvisor compute each field.
//!
//! Everything here reads files (and walks directories): callers run it off the async workers.

pub mod cgroup;
pub mod metrics;
pub mod netdev;

use std::collections::{HashMap, HashSet};
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use k8s_cri::v1 as cri;

use crate::store::{ContainerRecord, ContainerState, SandboxRecord, SandboxState};
use crate::Context;

use cgroup::{Cgroup, Mounts};

/// Two CPU samples closer than this give a rate too noisy to report: the older sample is kept
/// and the last computed rate reported again.
const MIN_SAMPLE_INTERVAL_NS: i64 = 1_000_000_000;

#[derive(Debug, Clone, Copy)]
struct CpuSample {
    at: i64,
    usage_ns: u64,
    nano_cores: Option<u64>,
}

/// The previous CPU sample of each container and pod, so that usage_nano_cores is the rate
/// between two calls (as containerd keeps it per container).
#[derive(Debug, Default)]
pub struct CpuSampler {
    samples: Mutex<HashMap<String, CpuSample>>,
}

impl CpuSampler {
    /// Records `usage_ns` at `at` and returns the average rate (ns of CPU per second, i.e.
    /// nano-cores) since the previous sample; None for a first sample or after a reset.
    pub fn nano_cores(&self, key: &str, usage_ns: u64, at: i64) -> Option<u64> {
        let mut samples = self.samples.lock().unwrap_or_else(|p| p.into_inner());
        let fresh = CpuSample {
            at,
            usage_ns,
            nano_cores: None,
        };
        let Some(prev) = samples.get(key).copied() else {
            samples.insert(key.to_string(), fresh);
            return None;
        };
        // A counter that went back (a pod summed over members, one of which ended) starts over.
        if usage_ns < prev.usage_ns || at < prev.at {
            samples.insert(key.to_string(), fresh);
            return None;
        }
        let elapsed = at - prev.at;
        if elapsed < MIN_SAMPLE_INTERVAL_NS {
            return prev.nano_cores;
        }
        let rate = ((usage_ns - prev.usage_ns) as u128 * 1_000_000_000 / elapsed as u128) as u64;
        samples.insert(
            key.to_string(),
            CpuSample {
                nano_cores: Some(rate),
                ..fresh
            },
        );
        Some(rate)
    }

    /// Drops the samples of objects that no longer exist.
    pub fn retain(&self, alive: &HashSet<String>) {
        let mut samples = self.samples.lock().unwrap_or_else(|p| p.into_inner());
        samples.retain(|k, _| alive.contains(k));
    }
}

fn value(v: u64) -> Option<cri::UInt64Value> {
    Some(cri::UInt64Value { value: v })
}

/// The cgroup of a running member (container or infra) from its init's /proc entry. The path
/// must name the member (cgroupsPath ends with its id): a recycled pid is not trusted.
fn member_cgroup(pid: i32, id: &str, mounts: &Mounts) -> Option<Cgroup> {
    if pid <= 0 {
        return None;
    }
    let text = fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    let cgroup = cgroup::parse_proc_cgroup(&text, mounts);
    let names_us = |p: &PathBuf| p.to_string_lossy().contains(id);
    (cgroup.v1.values().any(names_us) || cgroup.v2.as_ref().is_some_and(names_us)).then_some(cgroup)
}

/// What one cgroup read gave.
#[derive(Debug, Default, Clone, Copy)]
pub struct Usage {
    pub at: i64,
    pub cpu: Option<cgroup::Cpu>,
    pub memory: Option<cgroup::Memory>,
    pub processes: Option<u64>,
}

impl Usage {
    fn read(cgroup: &Cgroup) -> Usage {
        Usage {
            at: crate::monitor::now_nanos(),
            cpu: cgroup.cpu(),
            memory: cgroup.memory(),
            processes: cgroup.processes(),
        }
    }

    /// Adds another member's usage (pods without a cgroup of their own).
    fn add(&mut self, other: &Usage) {
        fn sum<T: Copy>(a: Option<T>, b: Option<T>, f: fn(T, T) -> T) -> Option<T> {
            match (a, b) {
                (Some(a), Some(b)) => Some(f(a, b)),
                (a, b) => a.or(b),
            }
        }
        self.at = self.at.max(other.at);
        self.cpu = sum(self.cpu, other.cpu, |a, b| cgroup::Cpu {
            usage_ns: a.usage_ns + b.usage_ns,
            user_ns: a.user_ns + b.user_ns,
            system_ns: a.system_ns + b.system_ns,
        });
        self.memory = sum(self.memory, other.memory, |a, b| cgroup::Memory {
            usage: a.usage + b.usage,
            // Members' limits do not add up to a pod limit.
            limit: None,
            working_set: a.working_set + b.working_set,
            rss: a.rss + b.rss,
            cache: a.cache + b.cache,
            page_faults: a.page_faults + b.page_faults,
            major_page_faults: a.major_page_faults + b.major_page_faults,
            swap: sum(a.swap, b.swap, |x, y| x + y),
        });
        self.processes = sum(self.processes, other.processes, |a, b| a + b);
    }
}

/// A container's cgroup usage; None when it is not running.
pub fn container_usage(record: &ContainerRecord, mounts: &Mounts) -> Option<Usage> {
    if record.state != ContainerState::Running {
        return None;
    }
    member_cgroup(record.pid, &record.id, mounts).map(|c| Usage::read(&c))
}

fn cpu_usage(ctx: &Context, key: &str, usage: &Usage) -> Option<cri::CpuUsage> {
    let cpu = usage.cpu?;
    Some(cri::CpuUsage {
        timestamp: usage.at,
        usage_core_nano_seconds: value(cpu.usage_ns),
        usage_nano_cores: ctx
            .cpu_samples
            .nano_cores(key, cpu.usage_ns, usage.at)
            .and_then(value),
    })
}

fn memory_usage(usage: &Usage) -> Option<cri::MemoryUsage> {
    let m = usage.memory?;
    Some(cri::MemoryUsage {
        timestamp: usage.at,
        working_set_bytes: value(m.working_set),
        available_bytes: m.available().and_then(value),
        usage_bytes: value(m.usage),
        rss_bytes: value(m.rss),
        page_faults: value(m.page_faults),
        major_page_faults: value(m.major_page_faults),
    })
}

fn swap_usage(usage: &Usage) -> Option<cri::SwapUsage> {
    let m = usage.memory?;
    Some(cri::SwapUsage {
        timestamp: usage.at,
        swap_available_bytes: None,
        swap_usage_bytes: value(m.swap?),
    })
}

/// The directory holding a container's writes: its overlay upper dir (see `image`), or the
/// plain rootfs copy of the bring-up fallback.
pub fn writable_dir(ctx: &Context, record: &ContainerRecord) -> PathBuf {
    if record.image_rootfs {
        ctx.images
            .root
            .join("containers")
            .join(&record.id)
            .join("upper")
    } else {
        record.bundle.join("rootfs")
    }
}

/// Bytes on disk (allocated blocks, as du counts them) and inodes under `dir`, each inode once.
pub fn disk_usage(dir: &Path) -> (u64, u64) {
    fn walk(dir: &Path, dev: u64, seen: &mut HashSet<u64>, bytes: &mut u64, inodes: &mut u64) {
        let Ok(entries) = fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let Ok(meta) = entry.metadata() else { continue };
            // The upper dir is one filesystem; a mount under a fallback rootfs copy is not ours.
            if meta.dev() != dev {
                continue;
            }
            if seen.insert(meta.ino()) {
                *inodes += 1;
                *bytes += meta.blocks() * 512;
            }
            if meta.is_dir() {
                walk(&entry.path(), dev, seen, bytes, inodes);
            }
        }
    }
    let Ok(top) = fs::metadata(dir) else {
        return (0, 0);
    };
    let (mut bytes, mut inodes) = (top.blocks() * 512, 1);
    let mut seen = HashSet::from([top.ino()]);
    walk(dir, top.dev(), &mut seen, &mut bytes, &mut inodes);
    (bytes, inodes)
}

fn writable_layer(ctx: &Context, record: &ContainerRecord) -> cri::FilesystemUsage {
    let (bytes, inodes) = disk_usage(&writable_dir(ctx, record));
    cri::FilesystemUsage {
        timestamp: crate::monitor::now_nanos(),
        // The same id ImageFsInfo gives, so kubelet pairs the layer with that filesystem.
        fs_id: Some(cri::FilesystemIdentifier {
            mountpoint: ctx.images.root.display().to_string(),
        }),
        used_bytes: value(bytes),
        inodes_used: value(inodes),
    }
}

fn container_attributes(record: &ContainerRecord) -> cri::ContainerAttributes {
    cri::ContainerAttributes {
        id: record.id.clone(),
        metadata: record.config.metadata.clone(),
        labels: record.config.labels.clone(),
        annotations: record.config.annotations.clone(),
    }
}

/// ContainerStats of one container (CPU and memory only while it runs).
pub fn container_stats(
    ctx: &Context,
    record: &ContainerRecord,
    mounts: &Mounts,
) -> cri::ContainerStats {
    let usage = container_usage(record, mounts);
    cri::ContainerStats {
        attributes: Some(container_attributes(record)),
        cpu: usage.as_ref().and_then(|u| cpu_usage(ctx, &record.id, u)),
        memory: usage.as_ref().and_then(memory_usage),
        writable_layer: Some(writable_layer(ctx, record)),
        swap: usage.as_ref().and_then(swap_usage),
    }
}

/// The pod's own cgroup (kubelet's cgroup parent), when it has one that exists.
fn pod_cgroup(sandbox: &SandboxRecord, mounts: &Mounts) -> Option<Cgroup> {
    let parent = sandbox
        .config
        .linux
        .as_ref()?
        .cgroup_parent
        .trim_end_matches('/');
    if parent.is_empty() {
        return None;
    }
    cgroup::at_path(parent, mounts)
}

/// The pod's usage: its cgroup parent's when it has one (it holds every member, past ones
/// too), else the sum of the infra's and the running containers'. Processes are always counted
/// per member: cgroup.procs is not hierarchical.
pub fn pod_usage(
    sandbox: &SandboxRecord,
    containers: &[ContainerRecord],
    mounts: &Mounts,
) -> Option<Usage> {
    let mut members: Option<Usage> = None;
    let infra = (sandbox.state == SandboxState::Ready)
        .then(|| member_cgroup(sandbox.infra_pid, &sandbox.id, mounts))
        .flatten()
        .map(|c| Usage::read(&c));
    for u in infra
        .into_iter()
        .chain(containers.iter().filter_map(|c| container_usage(c, mounts)))
    {
        match members.as_mut() {
            Some(m) => m.add(&u),
            None => members = Some(u),
        }
    }
    match pod_cgroup(sandbox, mounts) {
        Some(cg) => {
            let mut own = Usage::read(&cg);
            own.processes = members.and_then(|m| m.processes);
            Some(own)
        }
        None => members,
    }
}

fn network_usage(sandbox: &SandboxRecord) -> Option<cri::NetworkUsage> {
    let netns = sandbox.netns.as_ref()?;
    if sandbox.state != SandboxState::Ready {
        return None;
    }
    let interfaces = match netdev::read(netns) {
        Ok(i) => i,
        Err(e) => {
            tracing::debug!(sandbox = %sandbox.id, error = %crate::error_chain(&e), "no network stats");
            return None;
        }
    };
    let to_cri = |i: &netdev::Interface| cri::NetworkInterfaceUsage {
        name: i.name.clone(),
        rx_bytes: value(i.rx_bytes),
        rx_errors: value(i.rx_errors),
        tx_bytes: value(i.tx_bytes),
        tx_errors: value(i.tx_errors),
    };
    Some(cri::NetworkUsage {
        timestamp: crate::monitor::now_nanos(),
        // The interface CNI plugins create in the pod, kubelet's default.
        default_interface: interfaces.iter().find(|i| i.name == "eth0").map(to_cri),
        interfaces: interfaces.iter().map(to_cri).collect(),
    })
}

/// PodSandboxStats of one pod, with its containers' stats.
pub fn sandbox_stats(
    ctx: &Context,
    sandbox: &SandboxRecord,
    containers: &[ContainerRecord],
    mounts: &Mounts,
) -> cri::PodSandboxStats {
    let usage = pod_usage(sandbox, containers, mounts);
    cri::PodSandboxStats {
        attributes: Some(cri::PodSandboxAttributes {
            id: sandbox.id.clone(),
            metadata: sandbox.config.metadata.clone(),
            labels: sandbox.config.labels.clone(),
            annotations: sandbox.config.annotations.clone(),
        }),
        linux: Some(cri::LinuxPodSandboxStats {
            cpu: usage.as_ref().and_then(|u| cpu_usage(ctx, &sandbox.id, u)),
            memory: usage.as_ref().and_then(memory_usage),
            network: network_usage(sandbox),
            process: usage
                .as_ref()
                .and_then(|u| u.processes)
                .map(|n| cri::ProcessUsage {
                    timestamp: usage.as_ref().map(|u| u.at).unwrap_or_default(),
                    process_count: value(n),
                }),
            containers: containers
                .iter()
                .map(|c| container_stats(ctx, c, mounts))
                .collect(),
        }),
        windows: None,
    }
}

/// ListContainerStats' filter: id and pod id (or unique prefixes, as crictl passes them) and
/// labels.
pub fn container_matches(r: &ContainerRecord, filter: &Option<cri::ContainerStatsFilter>) -> bool {
    let Some(f) = filter else { return true };
    r.id.starts_with(&f.id)
        && r.sandbox_id.starts_with(&f.pod_sandbox_id)
        && crate::container::labels_match(&r.config.labels, &f.label_selector)
}

/// ListPodSandboxStats' filter: id (or prefix) and labels.
pub fn sandbox_matches(r: &SandboxRecord, filter: &Option<cri::PodSandboxStatsFilter>) -> bool {
    let Some(f) = filter else { return true };
    r.id.starts_with(&f.id) && crate::container::labels_match(&r.config.labels, &f.label_selector)
}

/// Forgets the CPU samples of containers and pods that are gone.
pub fn prune_samples(ctx: &Context) {
    let mut alive: HashSet<String> = ctx.store.containers().into_iter().map(|c| c.id).collect();
    alive.extend(ctx.store.sandboxes().into_iter().map(|s| s.id));
    ctx.cpu_samples.retain(&alive);
}

#[cfg(test)]
mod tests;
