//! Reading a cgroup's usage, on cgroup v1, v2, or a hybrid of both (v1 controllers plus an
//! empty unified hierarchy): each figure comes from the v1 controller when that controller is
//! mounted as v1, else from the unified hierarchy.
//!
//! A cgroup is located from `/proc/<pid>/cgroup` of a process in it, joined to the mount points
//! of `/proc/self/mountinfo`, so relative cgroupsPaths (nested under rcri's own cgroup) and
//! kubelet's cgroup parents are found the same way, as the runtime made them.

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};

/// v1 `memory.limit_in_bytes` of an unlimited cgroup is the largest page-aligned i64; anything
/// this large means "no limit".
const UNLIMITED: u64 = 1 << 62;

/// Where the cgroup hierarchies are mounted.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Mounts {
    /// v1: (controllers of the hierarchy, mount point, root of the hierarchy the mount shows).
    pub v1: Vec<(Vec<String>, PathBuf, String)>,
    /// v2: (mount point, root).
    pub unified: Option<(PathBuf, String)>,
}

impl Mounts {
    pub fn of_self() -> Mounts {
        parse_mountinfo(&fs::read_to_string("/proc/self/mountinfo").unwrap_or_default())
    }
}

/// mountinfo: `id parent maj:min root mount-point options [optional...] - fstype source super`.
pub fn parse_mountinfo(text: &str) -> Mounts {
    let mut mounts = Mounts::default();
    for line in text.lines() {
        let fields: Vec<&str> = line.split(' ').collect();
        let Some(dash) = fields.iter().position(|f| *f == "-") else {
            continue;
        };
        let (Some(root), Some(point), Some(fstype), Some(options)) = (
            fields.get(3),
            fields.get(4),
            fields.get(dash + 1),
            fields.get(dash + 3),
        ) else {
            continue;
        };
        let point = PathBuf::from(point.replace("\\040", " "));
        match *fstype {
            "cgroup2" => {
                mounts.unified.get_or_insert((point, root.to_string()));
            }
            "cgroup" => {
                let controllers: Vec<String> = options
                    .split(',')
                    .filter(|o| !matches!(*o, "rw" | "ro") && !o.contains('='))
                    .map(String::from)
                    .collect();
                if !mounts.v1.iter().any(|(c, _, _)| *c == controllers) {
                    mounts.v1.push((controllers, point, root.to_string()));
                }
            }
            _ => {}
        }
    }
    mounts
}

/// The directories of one cgroup: per v1 controller, and in the unified hierarchy.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Cgroup {
    pub v1: HashMap<String, PathBuf>,
    pub v2: Option<PathBuf>,
}

fn under(mount: &Path, root: &str, path: &str) -> Option<PathBuf> {
    // A mount that shows a sub-tree (a cgroup namespace, a container) sees paths relative to it.
    let rel = if root == "/" {
        path
    } else {
        path.strip_prefix(root)?
    };
    Some(mount.join(rel.trim_start_matches('/')))
}

/// The cgroup of the process whose `/proc/<pid>/cgroup` is `text`.
pub fn parse_proc_cgroup(text: &str, mounts: &Mounts) -> Cgroup {
    let mut cgroup = Cgroup::default();
    for line in text.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(_), Some(controllers), Some(path)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        if controllers.is_empty() {
            if let Some((mount, root)) = &mounts.unified {
                cgroup.v2 = under(mount, root, path);
            }
            continue;
        }
        let names: Vec<String> = controllers.split(',').map(String::from).collect();
        // Mount options may carry flags (xattr, clone_children, ...) besides the controllers.
        let mounted = mounts
            .v1
            .iter()
            .find(|(c, _, _)| names.iter().all(|n| c.contains(n)));
        if let Some((_, mount, root)) = mounted {
            if let Some(dir) = under(mount, root, path) {
                for name in names {
                    cgroup.v1.insert(name, dir.clone());
                }
            }
        }
    }
    cgroup
}

/// The cgroup at `path` (absolute within each hierarchy, as a cgroupfs cgroup parent is), if
/// it exists in at least one hierarchy.
pub fn at_path(path: &str, mounts: &Mounts) -> Option<Cgroup> {
    let mut cgroup = Cgroup::default();
    for (controllers, mount, root) in &mounts.v1 {
        if let Some(dir) = under(mount, root, path).filter(|d| d.is_dir()) {
            for c in controllers {
                cgroup.v1.insert(c.clone(), dir.clone());
            }
        }
    }
    if let Some((mount, root)) = &mounts.unified {
        cgroup.v2 = under(mount, root, path).filter(|d| d.is_dir());
    }
    (!cgroup.v1.is_empty() || cgroup.v2.is_some()).then_some(cgroup)
}

/// Cumulative CPU time, nanoseconds.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct Cpu {
    pub usage_ns: u64,
    pub user_ns: u64,
    pub system_ns: u64,
}

#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct Memory {
    pub usage: u64,
    /// None: unlimited.
    pub limit: Option<u64>,
    /// usage − inactive file pages, as kubelet and cadvisor compute it: what cannot be
    /// reclaimed without pressure.
    pub working_set: u64,
    pub rss: u64,
    pub cache: u64,
    pub page_faults: u64,
    pub major_page_faults: u64,
    pub swap: Option<u64>,
}

impl Memory {
    pub fn available(&self) -> Option<u64> {
        self.limit.map(|l| l.saturating_sub(self.working_set))
    }
}

fn read_u64(path: &Path) -> Option<u64> {
    fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// `key value` lines (memory.stat, cpu.stat, cpuacct.stat).
pub fn parse_flat_keyed(text: &str) -> HashMap<&str, u64> {
    text.lines()
        .filter_map(|l| {
            let (k, v) = l.split_once(' ')?;
            Some((k, v.trim().parse().ok()?))
        })
        .collect()
}

impl Cgroup {
    fn v1_file(&self, controller: &str, file: &str) -> Option<PathBuf> {
        self.v1.get(controller).map(|d| d.join(file))
    }
    fn v2_file(&self, file: &str) -> Option<PathBuf> {
        self.v2.as_ref().map(|d| d.join(file))
    }

    pub fn cpu(&self) -> Option<Cpu> {
        if let Some(usage) = self.v1_file("cpuacct", "cpuacct.usage") {
            let usage_ns = read_u64(&usage)?;
            let stat = self
                .v1_file("cpuacct", "cpuacct.stat")
                .and_then(|p| fs::read_to_string(p).ok())
                .unwrap_or_default();
            return Some(cpu_v1(usage_ns, &stat, clock_ticks()));
        }
        let stat = fs::read_to_string(self.v2_file("cpu.stat")?).ok()?;
        cpu_v2(&stat)
    }

    pub fn memory(&self) -> Option<Memory> {
        if self.v1.contains_key("memory") {
            let read = |f: &str| self.v1_file("memory", f).and_then(|p| read_u64(&p));
            let stat = fs::read_to_string(self.v1_file("memory", "memory.stat")?).ok()?;
            return Some(memory_v1(
                &stat,
                read("memory.usage_in_bytes")?,
                read("memory.limit_in_bytes"),
                read("memory.memsw.usage_in_bytes"),
            ));
        }
        let stat = fs::read_to_string(self.v2_file("memory.stat")?).ok()?;
        let current = read_u64(&self.v2_file("memory.current")?)?;
        let max = self
            .v2_file("memory.max")
            .and_then(|p| fs::read_to_string(p).ok())
            .unwrap_or_default();
        let swap = self
            .v2_file("memory.swap.current")
            .and_then(|p| read_u64(&p));
        Some(memory_v2(&stat, current, &max, swap))
    }

    /// Processes (not threads) in this cgroup itself.
    pub fn processes(&self) -> Option<u64> {
        let file = self
            .v1_file("pids", "cgroup.procs")
            .or_else(|| self.v1_file("cpu", "cgroup.procs"))
            .or_else(|| self.v2_file("cgroup.procs"))?;
        let text = fs::read_to_string(file).ok()?;
        Some(text.lines().filter(|l| !l.trim().is_empty()).count() as u64)
    }
}

fn clock_ticks() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if hz > 0 {
        hz as u64
    } else {
        100
    }
}

/// v1: cpuacct.usage in ns; cpuacct.stat's user/system in clock ticks.
pub fn cpu_v1(usage_ns: u64, stat: &str, hz: u64) -> Cpu {
    let stat = parse_flat_keyed(stat);
    let ns = |k: &str| stat.get(k).copied().unwrap_or(0) * (1_000_000_000 / hz.max(1));
    Cpu {
        usage_ns,
        user_ns: ns("user"),
        system_ns: ns("system"),
    }
}

/// v2: cpu.stat in microseconds.
pub fn cpu_v2(stat: &str) -> Option<Cpu> {
    let stat = parse_flat_keyed(stat);
    let ns = |k: &str| stat.get(k).map(|v| v * 1000);
    Some(Cpu {
        usage_ns: ns("usage_usec")?,
        user_ns: ns("user_usec").unwrap_or(0),
        system_ns: ns("system_usec").unwrap_or(0),
    })
}

/// v1: the `total_*` figures of memory.stat cover the cgroup and its descendants.
pub fn memory_v1(stat: &str, usage: u64, limit: Option<u64>, memsw_usage: Option<u64>) -> Memory {
    let stat = parse_flat_keyed(stat);
    let get = |k: &str| stat.get(k).copied().unwrap_or(0);
    let inactive_file = get("total_inactive_file");
    Memory {
        usage,
        limit: limit.filter(|l| *l < UNLIMITED),
        working_set: usage.saturating_sub(inactive_file),
        rss: get("total_rss"),
        cache: get("total_cache"),
        page_faults: get("total_pgfault"),
        major_page_faults: get("total_pgmajfault"),
        swap: memsw_usage.map(|m| m.saturating_sub(usage)),
    }
}

/// v2: memory.stat is hierarchical already; memory.max is `max` or bytes.
pub fn memory_v2(stat: &str, current: u64, max: &str, swap: Option<u64>) -> Memory {
    let stat = parse_flat_keyed(stat);
    let get = |k: &str| stat.get(k).copied().unwrap_or(0);
    Memory {
        usage: current,
        limit: max.trim().parse().ok().filter(|l| *l < UNLIMITED),
        working_set: current.saturating_sub(get("inactive_file")),
        rss: get("anon"),
        cache: get("file"),
        page_faults: get("pgfault"),
        major_page_faults: get("pgmajfault"),
        swap,
    }
}
