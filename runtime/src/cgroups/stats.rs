//! The container's usage counters, shaped and named as runc's `events` prints them
//! (containerd's runc shim decodes exactly these field names).
use super::{read_file, CgroupError, CgroupVersion, Layout};
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::Path;

#[derive(Debug, Default, Clone, Serialize)]
pub struct Stats {
    pub cpu: Cpu,
    pub memory: Memory,
    pub pids: Pids,
    pub blkio: Blkio,
    pub hugetlb: BTreeMap<String, Hugetlb>,
}

#[derive(Debug, Default, Clone, Serialize)]
pub struct Cpu {
    pub usage: CpuUsage,
    pub throttling: Throttling,
}

/// Nanoseconds.
#[derive(Debug, Default, Clone, Serialize)]
pub struct CpuUsage {
    #[serde(skip_serializing_if = "is_zero")]
    pub total: u64,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub percpu: Vec<u64>,
    pub kernel: u64,
    pub user: u64,
}

#[derive(Debug, Default, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Throttling {
    #[serde(skip_serializing_if = "is_zero")]
    pub periods: u64,
    #[serde(skip_serializing_if = "is_zero")]
    pub throttled_periods: u64,
    /// Nanoseconds.
    #[serde(skip_serializing_if = "is_zero")]
    pub throttled_time: u64,
}

#[derive(Debug, Default, Clone, Serialize)]
pub struct MemoryEntry {
    pub limit: u64,
    #[serde(skip_serializing_if = "is_zero")]
    pub usage: u64,
    #[serde(skip_serializing_if = "is_zero")]
    pub max: u64,
    pub failcnt: u64,
}

#[derive(Debug, Default, Clone, Serialize)]
pub struct Memory {
    #[serde(skip_serializing_if = "is_zero")]
    pub cache: u64,
    pub usage: MemoryEntry,
    pub swap: MemoryEntry,
    pub kernel: MemoryEntry,
    #[serde(rename = "kernelTCP")]
    pub kernel_tcp: MemoryEntry,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub raw: BTreeMap<String, u64>,
}

#[derive(Debug, Default, Clone, Serialize)]
pub struct Pids {
    #[serde(skip_serializing_if = "is_zero")]
    pub current: u64,
    #[serde(skip_serializing_if = "is_zero")]
    pub limit: u64,
}

#[derive(Debug, Default, Clone, Serialize)]
pub struct BlkioEntry {
    #[serde(skip_serializing_if = "is_zero")]
    pub major: u64,
    #[serde(skip_serializing_if = "is_zero")]
    pub minor: u64,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub op: String,
    #[serde(skip_serializing_if = "is_zero")]
    pub value: u64,
}

#[derive(Debug, Default, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Blkio {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub io_service_bytes_recursive: Vec<BlkioEntry>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub io_serviced_recursive: Vec<BlkioEntry>,
}

#[derive(Debug, Default, Clone, Serialize)]
pub struct Hugetlb {
    #[serde(skip_serializing_if = "is_zero")]
    pub usage: u64,
    #[serde(skip_serializing_if = "is_zero")]
    pub max: u64,
    pub failcnt: u64,
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}

/// A control file that the kernel may lack (no swap accounting, no CFS bandwidth...) reads as
/// absent; any other failure is an error.
fn read_opt(path: &Path) -> Result<Option<String>, CgroupError> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(Some(text)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(CgroupError::Read {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// A single number; "max" (v2's unlimited) reads as u64::MAX, as runc reports it.
fn read_u64(path: &Path) -> Result<u64, CgroupError> {
    Ok(read_opt(path)?.map_or(0, |t| parse_u64(&t)))
}

fn parse_u64(text: &str) -> u64 {
    match text.trim() {
        "max" => u64::MAX,
        t => t.parse().unwrap_or(0),
    }
}

/// `key value` lines (memory.stat, cpu.stat, memory.events, memory.oom_control).
pub(super) fn flat_keyed(text: &str) -> BTreeMap<String, u64> {
    text.lines()
        .filter_map(|l| {
            let (k, v) = l.split_once(' ')?;
            Some((k.to_string(), v.trim().parse().ok()?))
        })
        .collect()
}

fn keyed_file(path: &Path) -> Result<BTreeMap<String, u64>, CgroupError> {
    Ok(read_opt(path)?.map(|t| flat_keyed(&t)).unwrap_or_default())
}

/// The sizes of the huge pages this kernel has ("2MB", "1GB"), from /sys/kernel/mm/hugepages.
fn hugepage_sizes() -> Vec<String> {
    let Ok(entries) = std::fs::read_dir("/sys/kernel/mm/hugepages") else {
        return Vec::new();
    };
    let mut out: Vec<String> = entries
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let kb: u64 = name
                .strip_prefix("hugepages-")?
                .strip_suffix("kB")?
                .parse()
                .ok()?;
            Some(match kb {
                kb if kb >= 1 << 20 => format!("{}GB", kb >> 20),
                kb if kb >= 1 << 10 => format!("{}MB", kb >> 10),
                kb => format!("{kb}KB"),
            })
        })
        .collect();
    out.sort();
    out
}

pub(super) fn collect(layout: &Layout) -> Result<Stats, CgroupError> {
    match layout.version {
        CgroupVersion::V2 => match layout.placements.first() {
            Some(p) => v2(&p.dir),
            None => Ok(Stats::default()),
        },
        CgroupVersion::V1 => {
            let dir_of = |controller: &str| {
                layout
                    .placements
                    .iter()
                    .find(|p| p.has(controller))
                    .map(|p| p.dir.as_path())
            };
            v1(&dir_of)
        }
    }
}

fn v1<'a>(dir_of: &dyn Fn(&str) -> Option<&'a Path>) -> Result<Stats, CgroupError> {
    let mut s = Stats::default();
    if let Some(dir) = dir_of("cpuacct") {
        s.cpu.usage.total = read_u64(&dir.join("cpuacct.usage"))?;
        s.cpu.usage.percpu = read_opt(&dir.join("cpuacct.usage_percpu"))?
            .map(|t| {
                t.split_whitespace()
                    .filter_map(|n| n.parse().ok())
                    .collect()
            })
            .unwrap_or_default();
        // cpuacct.stat counts USER_HZ ticks; runc reports nanoseconds.
        let ticks = keyed_file(&dir.join("cpuacct.stat"))?;
        let hz = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
            .ok()
            .flatten()
            .filter(|hz| *hz > 0)
            .map_or(100, |hz| hz as u64);
        let ns = |t: u64| t.saturating_mul(1_000_000_000 / hz);
        s.cpu.usage.user = ns(ticks.get("user").copied().unwrap_or(0));
        s.cpu.usage.kernel = ns(ticks.get("system").copied().unwrap_or(0));
    }
    if let Some(dir) = dir_of("cpu") {
        let stat = keyed_file(&dir.join("cpu.stat"))?;
        s.cpu.throttling = Throttling {
            periods: stat.get("nr_periods").copied().unwrap_or(0),
            throttled_periods: stat.get("nr_throttled").copied().unwrap_or(0),
            throttled_time: stat.get("throttled_time").copied().unwrap_or(0),
        };
    }
    if let Some(dir) = dir_of("memory") {
        let entry = |prefix: &str| -> Result<MemoryEntry, CgroupError> {
            Ok(MemoryEntry {
                limit: read_u64(&dir.join(format!("{prefix}.limit_in_bytes")))?,
                usage: read_u64(&dir.join(format!("{prefix}.usage_in_bytes")))?,
                max: read_u64(&dir.join(format!("{prefix}.max_usage_in_bytes")))?,
                failcnt: read_u64(&dir.join(format!("{prefix}.failcnt")))?,
            })
        };
        s.memory.usage = entry("memory")?;
        s.memory.swap = entry("memory.memsw")?;
        s.memory.kernel = entry("memory.kmem")?;
        s.memory.kernel_tcp = entry("memory.kmem.tcp")?;
        s.memory.raw = keyed_file(&dir.join("memory.stat"))?;
        s.memory.cache = s.memory.raw.get("cache").copied().unwrap_or(0);
    }
    if let Some(dir) = dir_of("pids") {
        s.pids.current = read_u64(&dir.join("pids.current"))?;
        s.pids.limit = limit_or_zero(read_opt(&dir.join("pids.max"))?);
    }
    if let Some(dir) = dir_of("blkio") {
        let entries = |file: &str| -> Result<Vec<BlkioEntry>, CgroupError> {
            Ok(read_opt(&dir.join(file))?
                .map(|t| blkio_v1_entries(&t))
                .unwrap_or_default())
        };
        s.blkio.io_service_bytes_recursive = entries("blkio.throttle.io_service_bytes_recursive")?;
        s.blkio.io_serviced_recursive = entries("blkio.throttle.io_serviced_recursive")?;
    }
    if let Some(dir) = dir_of("hugetlb") {
        for size in hugepage_sizes() {
            let f = |what: &str| dir.join(format!("hugetlb.{size}.{what}"));
            let h = Hugetlb {
                usage: read_u64(&f("usage_in_bytes"))?,
                max: read_u64(&f("max_usage_in_bytes"))?,
                failcnt: read_u64(&f("failcnt"))?,
            };
            s.hugetlb.insert(size, h);
        }
    }
    Ok(s)
}

/// pids.max reads "max" when unlimited; runc then reports 0 (no limit).
fn limit_or_zero(text: Option<String>) -> u64 {
    match text.as_deref().map(str::trim) {
        None | Some("max") => 0,
        Some(t) => t.parse().unwrap_or(0),
    }
}

/// `8:0 Read 4096` lines; the `Total` line is dropped as runc does.
pub(super) fn blkio_v1_entries(text: &str) -> Vec<BlkioEntry> {
    text.lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let (dev, op, value) = (f.next()?, f.next()?, f.next()?);
            let (major, minor) = dev.split_once(':')?;
            Some(BlkioEntry {
                major: major.parse().ok()?,
                minor: minor.parse().ok()?,
                op: op.to_string(),
                value: value.parse().ok()?,
            })
        })
        .collect()
}

/// io.stat's `8:0 rbytes=1 wbytes=2 rios=3 wios=4 ...` as runc's v1-shaped entries.
pub(super) fn io_v2_entries(text: &str) -> (Vec<BlkioEntry>, Vec<BlkioEntry>) {
    let (mut bytes, mut ios) = (Vec::new(), Vec::new());
    for line in text.lines() {
        let mut f = line.split_whitespace();
        let Some((major, minor)) = f.next().and_then(|d| d.split_once(':')) else {
            continue;
        };
        let (Ok(major), Ok(minor)) = (major.parse(), minor.parse()) else {
            continue;
        };
        for kv in f {
            let Some((k, v)) = kv.split_once('=') else {
                continue;
            };
            let Ok(value) = v.parse() else { continue };
            let (list, op) = match k {
                "rbytes" => (&mut bytes, "Read"),
                "wbytes" => (&mut bytes, "Write"),
                "rios" => (&mut ios, "Read"),
                "wios" => (&mut ios, "Write"),
                _ => continue,
            };
            list.push(BlkioEntry {
                major,
                minor,
                op: op.to_string(),
                value,
            });
        }
    }
    (bytes, ios)
}

fn v2(dir: &Path) -> Result<Stats, CgroupError> {
    let mut s = Stats::default();
    let cpu = keyed_file(&dir.join("cpu.stat"))?;
    let us = |k: &str| cpu.get(k).copied().unwrap_or(0).saturating_mul(1000);
    s.cpu.usage.total = us("usage_usec");
    s.cpu.usage.user = us("user_usec");
    s.cpu.usage.kernel = us("system_usec");
    s.cpu.throttling = Throttling {
        periods: cpu.get("nr_periods").copied().unwrap_or(0),
        throttled_periods: cpu.get("nr_throttled").copied().unwrap_or(0),
        throttled_time: us("throttled_usec"),
    };

    let events = keyed_file(&dir.join("memory.events"))?;
    s.memory.usage = MemoryEntry {
        limit: read_u64(&dir.join("memory.max"))?,
        usage: read_u64(&dir.join("memory.current"))?,
        max: read_u64(&dir.join("memory.peak"))?,
        failcnt: events.get("max").copied().unwrap_or(0),
    };
    s.memory.swap = MemoryEntry {
        limit: read_u64(&dir.join("memory.swap.max"))?,
        usage: read_u64(&dir.join("memory.swap.current"))?,
        max: read_u64(&dir.join("memory.swap.peak"))?,
        failcnt: 0,
    };
    s.memory.raw = keyed_file(&dir.join("memory.stat"))?;
    s.memory.cache = s.memory.raw.get("file").copied().unwrap_or(0);

    s.pids.current = read_u64(&dir.join("pids.current"))?;
    s.pids.limit = limit_or_zero(read_opt(&dir.join("pids.max"))?);

    if let Some(text) = read_opt(&dir.join("io.stat"))? {
        let (bytes, ios) = io_v2_entries(&text);
        s.blkio.io_service_bytes_recursive = bytes;
        s.blkio.io_serviced_recursive = ios;
    }
    for size in hugepage_sizes() {
        let f = |what: &str| dir.join(format!("hugetlb.{size}.{what}"));
        if read_opt(&f("current"))?.is_none() {
            continue;
        }
        let h = Hugetlb {
            usage: read_u64(&f("current"))?,
            max: read_u64(&f("max"))?,
            failcnt: keyed_file(&f("events"))?.get("max").copied().unwrap_or(0),
        };
        s.hugetlb.insert(size, h);
    }
    Ok(s)
}

/// How many times the kernel's OOM killer has killed in the cgroup: v2 memory.events
/// `oom_kill`, v1 memory.oom_control `oom_kill` (kernel 4.13+).
pub(super) fn oom_kills(layout: &Layout) -> Result<u64, CgroupError> {
    let (dir, file) = match layout.version {
        CgroupVersion::V2 => match layout.placements.first() {
            Some(p) => (p.dir.as_path(), "memory.events"),
            None => return Ok(0),
        },
        CgroupVersion::V1 => match layout.placements.iter().find(|p| p.has("memory")) {
            Some(p) => (p.dir.as_path(), "memory.oom_control"),
            None => return Ok(0),
        },
    };
    let path = dir.join(file);
    // Gone with the cgroup: no more OOMs can happen.
    let Some(text) = read_opt(&path)? else {
        return Ok(0);
    };
    Ok(flat_keyed(&text).get("oom_kill").copied().unwrap_or(0))
}

/// Current memory usage in bytes, for `checkBeforeUpdate` and clear "below usage" errors.
pub(super) fn memory_usage(dir: &Path, version: CgroupVersion) -> Result<u64, CgroupError> {
    let file = match version {
        CgroupVersion::V2 => "memory.current",
        CgroupVersion::V1 => "memory.usage_in_bytes",
    };
    Ok(parse_u64(&read_file(&dir.join(file))?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_kernel_formats() {
        let stat = flat_keyed("nr_periods 10\nnr_throttled 4\nthrottled_time 99\n");
        assert_eq!(stat.get("nr_throttled"), Some(&4));
        let v1 = blkio_v1_entries("8:0 Read 4096\n8:0 Write 0\nTotal 4096\n");
        assert_eq!(v1.len(), 2);
        assert_eq!(
            (v1[0].major, v1[0].op.as_str(), v1[0].value),
            (8, "Read", 4096)
        );
        let (bytes, ios) = io_v2_entries("254:0 rbytes=512 wbytes=1024 rios=1 wios=2 dbytes=0\n");
        assert_eq!(bytes.len(), 2);
        assert_eq!(ios[1].value, 2);
        assert_eq!(parse_u64("max\n"), u64::MAX);
        assert_eq!(limit_or_zero(Some("max\n".into())), 0);
        assert_eq!(limit_or_zero(Some("32\n".into())), 32);
    }

    #[test]
    fn serializes_with_runc_field_names() {
        let mut s = Stats::default();
        s.cpu.throttling.throttled_periods = 3;
        s.memory.usage.limit = 16;
        s.memory.usage.failcnt = 2;
        s.pids.current = 5;
        let v = serde_json::to_value(&s).expect("serializes");
        assert_eq!(v["cpu"]["throttling"]["throttledPeriods"], 3);
        assert_eq!(v["memory"]["usage"]["limit"], 16);
        assert_eq!(v["memory"]["usage"]["failcnt"], 2);
        assert!(v["memory"]["kernelTCP"].is_object());
        assert_eq!(v["pids"]["current"], 5);
        assert!(v["hugetlb"].is_object());
        assert!(v["blkio"].is_object());
    }
}
