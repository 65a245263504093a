//! `update`: change a running container's limits with runc's flags, or with a LinuxResources
//! JSON from `--resources FILE` (`-` for stdin); flags given as well override the file.
use anyhow::Context;
use oci_spec::runtime::{LinuxPids, LinuxResources};
use std::io::Read;
use std::path::Path;

#[derive(clap::Args, Debug, Default)]
pub struct UpdateArgs {
    /// A LinuxResources JSON file (`-` for stdin)
    #[arg(short, long)]
    pub resources: Option<String>,
    /// Block IO weight (10..1000)
    #[arg(long = "blkio-weight")]
    pub blkio_weight: Option<u16>,
    /// CPU CFS period in microseconds
    #[arg(long = "cpu-period")]
    pub cpu_period: Option<u64>,
    /// CPU CFS quota in microseconds per period (-1: unlimited)
    #[arg(long = "cpu-quota", allow_hyphen_values = true)]
    pub cpu_quota: Option<i64>,
    /// CPU CFS burst in microseconds
    #[arg(long = "cpu-burst")]
    pub cpu_burst: Option<u64>,
    /// CPU shares (relative weight)
    #[arg(long = "cpu-share", alias = "cpu-shares")]
    pub cpu_shares: Option<u64>,
    /// Realtime period in microseconds
    #[arg(long = "cpu-rt-period")]
    pub cpu_rt_period: Option<u64>,
    /// Realtime runtime in microseconds per period
    #[arg(long = "cpu-rt-runtime", allow_hyphen_values = true)]
    pub cpu_rt_runtime: Option<i64>,
    /// CPUs to run on (0-3, 0,1)
    #[arg(long = "cpuset-cpus")]
    pub cpuset_cpus: Option<String>,
    /// Memory nodes to use (0-3, 0,1)
    #[arg(long = "cpuset-mems")]
    pub cpuset_mems: Option<String>,
    /// Memory limit (bytes, or with a unit: 64m, 1g; -1: unlimited)
    #[arg(long, allow_hyphen_values = true)]
    pub memory: Option<String>,
    /// Memory soft limit
    #[arg(long = "memory-reservation", allow_hyphen_values = true)]
    pub memory_reservation: Option<String>,
    /// Memory plus swap limit (-1: unlimited swap)
    #[arg(long = "memory-swap", allow_hyphen_values = true)]
    pub memory_swap: Option<String>,
    /// Kernel memory limit (deprecated, ignored by the kernel)
    #[arg(long = "kernel-memory", allow_hyphen_values = true, hide = true)]
    pub kernel_memory: Option<String>,
    /// Kernel TCP buffer memory limit (cgroup v1)
    #[arg(long = "kernel-memory-tcp", allow_hyphen_values = true)]
    pub kernel_memory_tcp: Option<String>,
    /// Maximum number of processes (0 or -1: unlimited)
    #[arg(long = "pids-limit", allow_hyphen_values = true)]
    pub pids_limit: Option<i64>,
    /// Intel RDT L3 cache schema (not supported)
    #[arg(long = "l3-cache-schema", hide = true)]
    pub l3_cache_schema: Option<String>,
    /// Intel RDT memory bandwidth schema (not supported)
    #[arg(long = "mem-bw-schema", hide = true)]
    pub mem_bw_schema: Option<String>,
    /// Container id
    pub id: String,
}

pub fn run(root: &Path, a: &UpdateArgs) -> anyhow::Result<()> {
    let changes = resources_of(a)?;
    crate::container::update(root, &a.id, &changes)?;
    Ok(())
}

fn resources_of(a: &UpdateArgs) -> anyhow::Result<LinuxResources> {
    if a.l3_cache_schema.is_some() || a.mem_bw_schema.is_some() {
        anyhow::bail!("not implemented yet: Intel RDT (--l3-cache-schema, --mem-bw-schema)");
    }
    let mut r: LinuxResources = match a.resources.as_deref() {
        None => LinuxResources::default(),
        Some(source) => {
            let mut text = String::new();
            if source == "-" {
                std::io::stdin()
                    .read_to_string(&mut text)
                    .context("failed to read resources from stdin")?;
            } else {
                text = std::fs::read_to_string(source)
                    .with_context(|| format!("failed to read {source}"))?;
            }
            serde_json::from_str(&text)
                .with_context(|| format!("{source} is not a LinuxResources JSON"))?
        }
    };

    let size = |flag: &str, v: &Option<String>| -> anyhow::Result<Option<i64>> {
        v.as_deref()
            .map(|s| parse_size(s).with_context(|| format!("invalid --{flag} {s:?}")))
            .transpose()
    };
    let memory = [
        size("memory", &a.memory)?,
        size("memory-reservation", &a.memory_reservation)?,
        size("memory-swap", &a.memory_swap)?,
        size("kernel-memory", &a.kernel_memory)?,
        size("kernel-memory-tcp", &a.kernel_memory_tcp)?,
    ];
    if memory.iter().any(Option::is_some) {
        let mut m = r.memory().unwrap_or_default();
        let [limit, reservation, swap, kernel, kernel_tcp] = memory;
        if limit.is_some() {
            m.set_limit(limit);
        }
        if reservation.is_some() {
            m.set_reservation(reservation);
        }
        if swap.is_some() {
            m.set_swap(swap);
        }
        if kernel.is_some() {
            m.set_kernel(kernel);
        }
        if kernel_tcp.is_some() {
            m.set_kernel_tcp(kernel_tcp);
        }
        r.set_memory(Some(m));
    }

    let cpu_given = a.cpu_period.is_some()
        || a.cpu_quota.is_some()
        || a.cpu_burst.is_some()
        || a.cpu_shares.is_some()
        || a.cpu_rt_period.is_some()
        || a.cpu_rt_runtime.is_some()
        || a.cpuset_cpus.is_some()
        || a.cpuset_mems.is_some();
    if cpu_given {
        let mut c = r.cpu().clone().unwrap_or_default();
        if a.cpu_period.is_some() {
            c.set_period(a.cpu_period);
        }
        if a.cpu_quota.is_some() {
            c.set_quota(a.cpu_quota);
        }
        if a.cpu_burst.is_some() {
            c.set_burst(a.cpu_burst);
        }
        if a.cpu_shares.is_some() {
            c.set_shares(a.cpu_shares);
        }
        if a.cpu_rt_period.is_some() {
            c.set_realtime_period(a.cpu_rt_period);
        }
        if a.cpu_rt_runtime.is_some() {
            c.set_realtime_runtime(a.cpu_rt_runtime);
        }
        if a.cpuset_cpus.is_some() {
            c.set_cpus(a.cpuset_cpus.clone());
        }
        if a.cpuset_mems.is_some() {
            c.set_mems(a.cpuset_mems.clone());
        }
        r.set_cpu(Some(c));
    }
    if let Some(limit) = a.pids_limit {
        let mut p = LinuxPids::default();
        p.set_limit(limit);
        r.set_pids(Some(p));
    }
    if let Some(weight) = a.blkio_weight {
        let mut b = r.block_io().clone().unwrap_or_default();
        b.set_weight(Some(weight));
        r.set_block_io(Some(b));
    }
    Ok(r)
}

/// Bytes as runc's flags take them: a plain number, `-1`, or a number with a binary unit
/// (`64m`, `1g`, `512KiB`, `2 GB`).
fn parse_size(text: &str) -> anyhow::Result<i64> {
    let t = text.trim();
    if t == "-1" {
        return Ok(-1);
    }
    let digits_end = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (number, unit) = t.split_at(digits_end);
    let number: i64 = number.parse().context("not a number")?;
    let unit = unit.trim().to_ascii_lowercase();
    let unit = unit.strip_suffix('b').unwrap_or(&unit);
    let unit = unit.strip_suffix('i').unwrap_or(unit);
    let shift = match unit {
        "" => 0,
        "k" => 10,
        "m" => 20,
        "g" => 30,
        "t" => 40,
        "p" => 50,
        other => anyhow::bail!("unknown unit {other:?}"),
    };
    number.checked_mul(1i64 << shift).context("too large")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_like_runc() {
        assert_eq!(parse_size("1024").ok(), Some(1024));
        assert_eq!(parse_size("-1").ok(), Some(-1));
        assert_eq!(parse_size("64m").ok(), Some(64 << 20));
        assert_eq!(parse_size("1G").ok(), Some(1 << 30));
        assert_eq!(parse_size("512KiB").ok(), Some(512 << 10));
        assert_eq!(parse_size("2 mb").ok(), Some(2 << 20));
        assert!(parse_size("12x").is_err());
        assert!(parse_size("-5").is_err());
    }

    #[test]
    fn flags_override_the_resources_file() {
        let a = UpdateArgs {
            memory: Some("32m".into()),
            cpu_quota: Some(-1),
            cpu_period: Some(50_000),
            pids_limit: Some(10),
            blkio_weight: Some(300),
            ..UpdateArgs::default()
        };
        let r = resources_of(&a).expect("builds");
        assert_eq!(r.memory().as_ref().and_then(|m| m.limit()), Some(32 << 20));
        let cpu = r.cpu().clone().expect("cpu");
        assert_eq!((cpu.quota(), cpu.period()), (Some(-1), Some(50_000)));
        assert_eq!(r.pids().as_ref().map(|p| p.limit()), Some(10));
        assert_eq!(r.block_io().as_ref().and_then(|b| b.weight()), Some(300));
        assert!(r.unified().is_none());
    }
}
