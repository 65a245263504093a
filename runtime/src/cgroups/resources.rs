//! `linux.resources` as cgroup file writes, for v1 (per-controller files) and v2 (unified
//! files, with v1 values converted the way runc and crun convert them). Pure: nothing here
//! touches the kernel, so every mapping and conversion is unit-tested.
use super::CgroupError;
use oci_spec::runtime::{LinuxBlockIo, LinuxCpu, LinuxMemory, LinuxResources};

/// One value to write into one control file of the container's cgroup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Setting {
    /// v1: the hierarchy's controller; v2: the controller to enable in `cgroup.subtree_control`
    /// (empty for core `cgroup.*` files).
    pub controller: String,
    pub file: String,
    pub value: String,
    /// Written instead when `file` does not exist (e.g. `blkio.bfq.weight` on kernels whose
    /// CFQ weight files are gone).
    pub fallback: Option<(String, String)>,
}

fn setting(controller: &str, file: impl Into<String>, value: impl ToString) -> Setting {
    Setting {
        controller: controller.to_string(),
        file: file.into(),
        value: value.to_string(),
        fallback: None,
    }
}

fn invalid(field: &'static str, reason: impl Into<String>) -> CgroupError {
    CgroupError::InvalidResource {
        field,
        reason: reason.into(),
    }
}

/// cpu.shares (2..262144, default 1024) → cpu.weight (1..10000, default 100), as runc does.
pub fn shares_to_weight(shares: u64) -> u64 {
    if shares == 0 {
        return 0;
    }
    let shares = shares.clamp(2, 262_144);
    1 + ((shares - 2) * 9999) / 262_142
}

/// blkio.weight (10..1000) → io.weight (1..10000), as runc does.
pub fn blkio_weight_to_io_weight(weight: u64) -> u64 {
    if weight == 0 {
        return 0;
    }
    let weight = weight.clamp(10, 1000);
    1 + (weight - 10) * 9999 / 990
}

/// v1's `memory.swap` is the memory+swap limit; v2's `memory.swap.max` is swap alone.
/// Returns the value for `memory.swap.max`, or None when nothing is to be written.
pub fn swap_to_v2(limit: Option<i64>, swap: Option<i64>) -> Result<Option<String>, CgroupError> {
    let limit = limit.unwrap_or(0);
    match swap.unwrap_or(0) {
        // Unlimited memory and no word on swap means both unlimited, as on v1.
        0 if limit == -1 => Ok(Some("max".into())),
        0 => Ok(None),
        -1 => Ok(Some("max".into())),
        s if s < 0 => Err(invalid("memory.swap", format!("{s} is negative"))),
        _ if limit <= 0 => Err(invalid(
            "memory.swap",
            "a swap limit needs a memory limit (memory.limit)",
        )),
        s if s < limit => Err(invalid(
            "memory.swap",
            format!("memory+swap limit {s} is below the memory limit {limit}"),
        )),
        s => Ok(Some((s - limit).to_string())),
    }
}

/// `cpu.max`: "QUOTA PERIOD" or "max PERIOD"; None when neither is set.
pub fn cpu_max(quota: Option<i64>, period: Option<u64>) -> Option<String> {
    let quota = quota.filter(|q| *q != 0);
    let period = period.filter(|p| *p != 0);
    if quota.is_none() && period.is_none() {
        return None;
    }
    let mut out = match quota {
        Some(q) if q > 0 => q.to_string(),
        _ => "max".to_string(),
    };
    if let Some(p) = period {
        out.push_str(&format!(" {p}"));
    }
    Some(out)
}

/// `pids.max`: a positive limit, or "max" for zero or negative (the spec's "unlimited").
pub fn pids_max(limit: i64) -> String {
    if limit > 0 {
        limit.to_string()
    } else {
        "max".to_string()
    }
}

/// Every value checked before any cgroup is touched: what the kernel would reject with a bare
/// EINVAL, or silently take to mean something else, is refused here with the field's name.
pub(super) fn validate(r: &LinuxResources) -> Result<(), CgroupError> {
    if let Some(m) = r.memory() {
        for (field, value) in [
            ("memory.limit", m.limit()),
            ("memory.reservation", m.reservation()),
            ("memory.swap", m.swap()),
            ("memory.kernel", m.kernel()),
            ("memory.kernelTCP", m.kernel_tcp()),
        ] {
            if let Some(v) = value {
                if v < -1 {
                    return Err(invalid(
                        field,
                        format!("{v} is negative (only -1, unlimited)"),
                    ));
                }
            }
        }
        if let (Some(limit), Some(swap)) = (m.limit(), m.swap()) {
            if limit > 0 && swap > 0 && swap < limit {
                return Err(invalid(
                    "memory.swap",
                    format!("memory+swap limit {swap} is below the memory limit {limit}"),
                ));
            }
        }
        if let Some(s) = m.swappiness() {
            if s > 100 {
                return Err(invalid("memory.swappiness", format!("{s} is above 100")));
            }
        }
    }
    if let Some(c) = r.cpu() {
        if c.period() == Some(0) {
            return Err(invalid("cpu.period", "it must be positive"));
        }
        if c.realtime_period() == Some(0) {
            return Err(invalid("cpu.realtimePeriod", "it must be positive"));
        }
        if let Some(q) = c.quota() {
            if q < -1 {
                return Err(invalid(
                    "cpu.quota",
                    format!("{q} is negative (only -1, unlimited)"),
                ));
            }
        }
        if let Some(p) = c.period() {
            if !(1000..=1_000_000).contains(&p) {
                return Err(invalid(
                    "cpu.period",
                    format!("{p} µs is outside the kernel's 1000..1000000"),
                ));
            }
        }
        for (field, list) in [("cpu.cpus", c.cpus()), ("cpu.mems", c.mems())] {
            if let Some(list) = list {
                check_cpu_list(field, list)?;
            }
        }
    }
    if let Some(b) = r.block_io() {
        for (field, w) in [
            ("blockIO.weight", b.weight()),
            ("blockIO.leafWeight", b.leaf_weight()),
        ] {
            check_blkio_weight(field, w)?;
        }
        for d in b.weight_device().iter().flatten() {
            check_device_numbers("blockIO.weightDevice", d.major(), d.minor())?;
            check_blkio_weight("blockIO.weightDevice", d.weight())?;
            check_blkio_weight("blockIO.weightDevice", d.leaf_weight())?;
        }
        for (field, list) in throttles(b) {
            for d in list {
                check_device_numbers(field, d.major(), d.minor())?;
            }
        }
    }
    for h in r.hugepage_limits().iter().flatten() {
        hugepage_size(h.page_size())?;
    }
    if let Some(unified) = r.unified() {
        for key in unified.keys() {
            if key.is_empty() || key.contains('/') || key.starts_with('.') {
                return Err(invalid(
                    "unified",
                    format!("key {key:?} is not a cgroup file name"),
                ));
            }
        }
    }
    Ok(())
}

fn check_cpu_list(field: &'static str, list: &str) -> Result<(), CgroupError> {
    let ok = list.trim().split(',').all(|part| {
        let mut ends = part.trim().splitn(2, '-');
        let first = ends.next().map(|n| n.parse::<u32>());
        let second = ends.next().map(|n| n.parse::<u32>());
        match (first, second) {
            (Some(Ok(_)), None) => true,
            (Some(Ok(a)), Some(Ok(b))) => a <= b,
            _ => false,
        }
    });
    if ok || list.trim().is_empty() {
        Ok(())
    } else {
        Err(invalid(
            field,
            format!("{list:?} is not a list such as 0-2,5"),
        ))
    }
}

fn check_blkio_weight(field: &'static str, weight: Option<u16>) -> Result<(), CgroupError> {
    match weight {
        Some(w) if w != 0 && !(10..=1000).contains(&w) => {
            Err(invalid(field, format!("{w} is outside 10..1000")))
        }
        _ => Ok(()),
    }
}

fn check_device_numbers(field: &'static str, major: i64, minor: i64) -> Result<(), CgroupError> {
    if major < 0 || minor < 0 {
        Err(invalid(
            field,
            format!("device {major}:{minor} is not a device number"),
        ))
    } else {
        Ok(())
    }
}

fn throttles(b: &LinuxBlockIo) -> [(&'static str, &[oci_spec::runtime::LinuxThrottleDevice]); 4] {
    fn list(
        l: &Option<Vec<oci_spec::runtime::LinuxThrottleDevice>>,
    ) -> &[oci_spec::runtime::LinuxThrottleDevice] {
        l.as_deref().unwrap_or_default()
    }
    [
        (
            "blockIO.throttleReadBpsDevice",
            list(b.throttle_read_bps_device()),
        ),
        (
            "blockIO.throttleWriteBpsDevice",
            list(b.throttle_write_bps_device()),
        ),
        (
            "blockIO.throttleReadIOPSDevice",
            list(b.throttle_read_iops_device()),
        ),
        (
            "blockIO.throttleWriteIOPSDevice",
            list(b.throttle_write_iops_device()),
        ),
    ]
}

/// "2MB" → "2MB" checked (the kernel's file names use the same KB/MB/GB spelling).
fn hugepage_size(size: &str) -> Result<&str, CgroupError> {
    let digits = size.trim_end_matches(['K', 'M', 'G', 'B']);
    let unit = &size[digits.len()..];
    if !digits.is_empty()
        && digits.bytes().all(|b| b.is_ascii_digit())
        && matches!(unit, "KB" | "MB" | "GB")
    {
        Ok(size)
    } else {
        Err(invalid(
            "hugepageLimits.pageSize",
            format!("{size:?} is not a size such as 2MB or 1GB"),
        ))
    }
}

/// The v1 writes, in an order the kernel accepts: cpuset before anything that could move
/// tasks, cfs period before quota, rt period before runtime.
pub(super) fn v1_settings(r: &LinuxResources) -> Result<Vec<Setting>, CgroupError> {
    validate(r)?;
    if r.unified().as_ref().is_some_and(|u| !u.is_empty()) {
        return Err(CgroupError::Unsupported {
            what: "linux.resources.unified".into(),
            reason: "it holds cgroup v2 keys and this host's controllers are on cgroup v1".into(),
        });
    }
    let mut out = Vec::new();
    if let Some(c) = r.cpu() {
        v1_cpu(c, &mut out);
    }
    if let Some(m) = r.memory() {
        v1_memory(m, &mut out);
    }
    if let Some(p) = r.pids() {
        out.push(setting("pids", "pids.max", pids_max(p.limit())));
    }
    if let Some(b) = r.block_io() {
        if let Some(w) = b.weight().filter(|w| *w != 0) {
            // Kernels without CFQ (5.0+) only have BFQ's weight file.
            let mut s = setting("blkio", "blkio.weight", w);
            s.fallback = Some(("blkio.bfq.weight".into(), w.to_string()));
            out.push(s);
        }
        if let Some(w) = b.leaf_weight().filter(|w| *w != 0) {
            out.push(setting("blkio", "blkio.leaf_weight", w));
        }
        for d in b.weight_device().iter().flatten() {
            let dev = format!("{}:{}", d.major(), d.minor());
            if let Some(w) = d.weight().filter(|w| *w != 0) {
                let mut s = setting("blkio", "blkio.weight_device", format!("{dev} {w}"));
                s.fallback = Some(("blkio.bfq.weight_device".into(), format!("{dev} {w}")));
                out.push(s);
            }
            if let Some(w) = d.leaf_weight().filter(|w| *w != 0) {
                out.push(setting(
                    "blkio",
                    "blkio.leaf_weight_device",
                    format!("{dev} {w}"),
                ));
            }
        }
        for ((_, list), file) in throttles(b).into_iter().zip([
            "blkio.throttle.read_bps_device",
            "blkio.throttle.write_bps_device",
            "blkio.throttle.read_iops_device",
            "blkio.throttle.write_iops_device",
        ]) {
            for d in list {
                let value = format!("{}:{} {}", d.major(), d.minor(), d.rate());
                out.push(setting("blkio", file, value));
            }
        }
    }
    for h in r.hugepage_limits().iter().flatten() {
        let size = hugepage_size(h.page_size())?;
        let file = format!("hugetlb.{size}.limit_in_bytes");
        out.push(setting("hugetlb", file, h.limit()));
    }
    if let Some(n) = r.network() {
        if let Some(id) = n.class_id() {
            out.push(setting("net_cls", "net_cls.classid", id));
        }
        for p in n.priorities().iter().flatten() {
            let value = format!("{} {}", p.name(), p.priority());
            out.push(setting("net_prio", "net_prio.ifpriomap", value));
        }
    }
    for (device, limit) in r.rdma().iter().flatten() {
        if let Some(value) = rdma_value(device, limit) {
            out.push(setting("rdma", "rdma.max", value));
        }
    }
    Ok(out)
}

fn v1_cpu(c: &LinuxCpu, out: &mut Vec<Setting>) {
    if let Some(cpus) = c.cpus().as_deref().filter(|s| !s.is_empty()) {
        out.push(setting("cpuset", "cpuset.cpus", cpus));
    }
    if let Some(mems) = c.mems().as_deref().filter(|s| !s.is_empty()) {
        out.push(setting("cpuset", "cpuset.mems", mems));
    }
    if let Some(shares) = c.shares().filter(|s| *s != 0) {
        out.push(setting("cpu", "cpu.shares", shares));
    }
    if let Some(period) = c.period().filter(|p| *p != 0) {
        out.push(setting("cpu", "cpu.cfs_period_us", period));
    }
    if let Some(quota) = c.quota().filter(|q| *q != 0) {
        out.push(setting("cpu", "cpu.cfs_quota_us", quota));
    }
    if let Some(burst) = c.burst() {
        out.push(setting("cpu", "cpu.cfs_burst_us", burst));
    }
    if let Some(period) = c.realtime_period().filter(|p| *p != 0) {
        out.push(setting("cpu", "cpu.rt_period_us", period));
    }
    if let Some(runtime) = c.realtime_runtime().filter(|r| *r != 0) {
        out.push(setting("cpu", "cpu.rt_runtime_us", runtime));
    }
    if let Some(idle) = c.idle() {
        out.push(setting("cpu", "cpu.idle", idle));
    }
}

/// memory.limit_in_bytes and memory.memsw.limit_in_bytes are written by
/// [`super::apply_v1_memory_limits`] (their order depends on the current limit); the rest here.
fn v1_memory(m: &LinuxMemory, out: &mut Vec<Setting>) {
    if m.kernel().is_some() {
        // Kernel memory limits are deprecated (5.4) and gone (6.1); runc ignores them too.
        log::warn!("linux.resources.memory.kernel is deprecated and ignored");
    }
    if let Some(r) = m.reservation().filter(|r| *r != 0) {
        out.push(setting("memory", "memory.soft_limit_in_bytes", r));
    }
    if let Some(k) = m.kernel_tcp().filter(|k| *k != 0) {
        out.push(setting("memory", "memory.kmem.tcp.limit_in_bytes", k));
    }
    if let Some(s) = m.swappiness() {
        out.push(setting("memory", "memory.swappiness", s));
    }
    if m.disable_oom_killer() == Some(true) {
        out.push(setting("memory", "memory.oom_control", 1));
    }
}

/// (memory.limit_in_bytes, memory.memsw.limit_in_bytes) values for v1, unset ones None.
pub(super) fn v1_memory_limits(m: &LinuxMemory) -> (Option<i64>, Option<i64>) {
    let limit = m.limit().filter(|l| *l != 0);
    // Unlimited memory with swap not mentioned: memory+swap unlimited too (runc does the same),
    // else the old memsw limit would cap the new unlimited memory.
    let swap = match (limit, m.swap().filter(|s| *s != 0)) {
        (Some(-1), None) => Some(-1),
        (_, s) => s,
    };
    (limit, swap)
}

fn rdma_value(device: &str, limit: &oci_spec::runtime::LinuxRdma) -> Option<String> {
    let mut parts = vec![device.to_string()];
    if let Some(h) = limit.hca_handles() {
        parts.push(format!("hca_handle={h}"));
    }
    if let Some(o) = limit.hca_objects() {
        parts.push(format!("hca_object={o}"));
    }
    (parts.len() > 1).then(|| parts.join(" "))
}

/// What v2 cannot express; refused rather than silently dropped.
fn v2_unsupported(r: &LinuxResources) -> Option<&'static str> {
    let net = r.network().as_ref().is_some_and(|n| {
        n.class_id().is_some() || n.priorities().as_ref().is_some_and(|p| !p.is_empty())
    });
    if net {
        return Some("network classID and priorities (net_cls, net_prio exist only on cgroup v1)");
    }
    if let Some(c) = r.cpu() {
        if c.realtime_runtime().is_some_and(|r| r != 0)
            || c.realtime_period().is_some_and(|p| p != 0)
        {
            return Some(
                "cpu.realtimeRuntime and cpu.realtimePeriod (cgroup v2 has no rt scheduler limits)",
            );
        }
    }
    None
}

/// The v2 writes. v1-only knobs that v2 simply lacks (swappiness, kernel memory, OOM killer
/// switch, leaf weights) are skipped with a warning as runc does; the ones that would change
/// what the container may do (realtime, network classes) are refused.
pub(super) fn v2_settings(r: &LinuxResources) -> Result<Vec<Setting>, CgroupError> {
    validate(r)?;
    if let Some(what) = v2_unsupported(r) {
        return Err(CgroupError::Unsupported {
            what: what.into(),
            reason: "this container's cgroup is cgroup v2".into(),
        });
    }
    let mut out = Vec::new();
    if let Some(c) = r.cpu() {
        if let Some(cpus) = c.cpus().as_deref().filter(|s| !s.is_empty()) {
            out.push(setting("cpuset", "cpuset.cpus", cpus));
        }
        if let Some(mems) = c.mems().as_deref().filter(|s| !s.is_empty()) {
            out.push(setting("cpuset", "cpuset.mems", mems));
        }
        if let Some(shares) = c.shares().filter(|s| *s != 0) {
            out.push(setting("cpu", "cpu.weight", shares_to_weight(shares)));
        }
        if let Some(max) = cpu_max(c.quota(), c.period()) {
            out.push(setting("cpu", "cpu.max", max));
        }
        if let Some(burst) = c.burst() {
            out.push(setting("cpu", "cpu.max.burst", burst));
        }
        if let Some(idle) = c.idle() {
            out.push(setting("cpu", "cpu.idle", idle));
        }
    }
    if let Some(m) = r.memory() {
        let limit = m.limit().filter(|l| *l != 0);
        if let Some(low) = m.reservation().filter(|r| *r != 0) {
            out.push(setting("memory", "memory.low", max_or(low)));
        }
        // memory.swap.max before memory.max does not matter on v2 (they are independent),
        // but the swap value is derived from the limit.
        if let Some(swap) = swap_to_v2(limit, m.swap())? {
            out.push(setting("memory", "memory.swap.max", swap));
        }
        if let Some(limit) = limit {
            out.push(setting("memory", "memory.max", max_or(limit)));
        }
        let ignored: Vec<&str> = [
            ("swappiness", m.swappiness().is_some()),
            ("kernel", m.kernel().is_some()),
            ("kernelTCP", m.kernel_tcp().is_some()),
            ("disableOOMKiller", m.disable_oom_killer() == Some(true)),
        ]
        .iter()
        .filter(|(_, set)| *set)
        .map(|(name, _)| *name)
        .collect();
        if !ignored.is_empty() {
            log::warn!(
                "cgroup v2 has no equivalent of linux.resources.memory {}; ignored",
                ignored.join(", ")
            );
        }
    }
    if let Some(p) = r.pids() {
        out.push(setting("pids", "pids.max", pids_max(p.limit())));
    }
    if let Some(b) = r.block_io() {
        if let Some(w) = b.weight().filter(|w| *w != 0) {
            // BFQ takes the v1 scale as is; io.weight needs the conversion.
            let mut s = setting("io", "io.bfq.weight", w);
            s.fallback = Some((
                "io.weight".into(),
                blkio_weight_to_io_weight(u64::from(w)).to_string(),
            ));
            out.push(s);
        }
        for d in b.weight_device().iter().flatten() {
            if let Some(w) = d.weight().filter(|w| *w != 0) {
                let dev = format!("{}:{}", d.major(), d.minor());
                let mut s = setting("io", "io.bfq.weight", format!("{dev} {w}"));
                let converted = blkio_weight_to_io_weight(u64::from(w));
                s.fallback = Some(("io.weight".into(), format!("{dev} {converted}")));
                out.push(s);
            }
        }
        if b.leaf_weight().is_some()
            || b.weight_device()
                .iter()
                .flatten()
                .any(|d| d.leaf_weight().is_some())
        {
            log::warn!(
                "cgroup v2 has no leaf weights (linux.resources.blockIO leafWeight); ignored"
            );
        }
        for ((_, list), key) in throttles(b)
            .into_iter()
            .zip(["rbps", "wbps", "riops", "wiops"])
        {
            for d in list {
                let value = format!("{}:{} {key}={}", d.major(), d.minor(), d.rate());
                out.push(setting("io", "io.max", value));
            }
        }
    }
    for h in r.hugepage_limits().iter().flatten() {
        let size = hugepage_size(h.page_size())?;
        out.push(setting(
            "hugetlb",
            format!("hugetlb.{size}.max"),
            max_or(h.limit()),
        ));
    }
    for (device, limit) in r.rdma().iter().flatten() {
        if let Some(value) = rdma_value(device, limit) {
            out.push(setting("rdma", "rdma.max", value));
        }
    }
    if let Some(unified) = r.unified() {
        let mut keys: Vec<_> = unified.iter().collect();
        // HashMap order is random; a stable order makes failures reproducible.
        keys.sort();
        for (key, value) in keys {
            let controller = key.split('.').next().unwrap_or_default();
            let controller = if controller == "cgroup" {
                ""
            } else {
                controller
            };
            out.push(setting(controller, key.clone(), value));
        }
    }
    Ok(out)
}

fn max_or(value: i64) -> String {
    if value < 0 {
        "max".to_string()
    } else {
        value.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn res(json: &str) -> LinuxResources {
        serde_json::from_str(json).expect("valid LinuxResources JSON")
    }

    fn pairs(settings: &[Setting]) -> Vec<(String, String)> {
        settings
            .iter()
            .map(|s| (s.file.clone(), s.value.clone()))
            .collect()
    }

    #[test]
    fn shares_convert_like_runc() {
        assert_eq!(shares_to_weight(0), 0);
        assert_eq!(shares_to_weight(2), 1);
        assert_eq!(shares_to_weight(1024), 39);
        assert_eq!(shares_to_weight(262_144), 10_000);
        assert_eq!(shares_to_weight(1), 1, "clamped to the v1 minimum");
        assert_eq!(
            shares_to_weight(1 << 30),
            10_000,
            "clamped to the v1 maximum"
        );
    }

    #[test]
    fn blkio_weight_converts_like_runc() {
        assert_eq!(blkio_weight_to_io_weight(10), 1);
        assert_eq!(blkio_weight_to_io_weight(500), 4950);
        assert_eq!(blkio_weight_to_io_weight(1000), 10_000);
        assert_eq!(blkio_weight_to_io_weight(0), 0);
    }

    #[test]
    fn swap_semantics_differ_between_v1_and_v2() {
        assert_eq!(
            swap_to_v2(Some(100), Some(300)).expect("ok"),
            Some("200".into())
        );
        assert_eq!(
            swap_to_v2(Some(100), Some(100)).expect("ok"),
            Some("0".into())
        );
        assert_eq!(
            swap_to_v2(Some(100), Some(-1)).expect("ok"),
            Some("max".into())
        );
        assert_eq!(swap_to_v2(Some(-1), None).expect("ok"), Some("max".into()));
        assert_eq!(swap_to_v2(Some(100), None).expect("ok"), None);
        assert!(swap_to_v2(None, Some(100)).is_err(), "swap without a limit");
        assert!(
            swap_to_v2(Some(200), Some(100)).is_err(),
            "memsw below limit"
        );

        let m: LinuxMemory = serde_json::from_str(r#"{"limit": -1}"#).expect("json");
        assert_eq!(v1_memory_limits(&m), (Some(-1), Some(-1)));
        let m: LinuxMemory = serde_json::from_str(r#"{"limit": 100, "swap": 300}"#).expect("json");
        assert_eq!(v1_memory_limits(&m), (Some(100), Some(300)));
    }

    #[test]
    fn cpu_max_forms() {
        assert_eq!(
            cpu_max(Some(50_000), Some(100_000)).as_deref(),
            Some("50000 100000")
        );
        assert_eq!(
            cpu_max(Some(-1), Some(100_000)).as_deref(),
            Some("max 100000")
        );
        assert_eq!(cpu_max(None, Some(20_000)).as_deref(), Some("max 20000"));
        assert_eq!(cpu_max(Some(5000), None).as_deref(), Some("5000"));
        assert_eq!(cpu_max(None, None), None);
        assert_eq!(cpu_max(Some(0), Some(0)), None);
    }

    #[test]
    fn pids_limit_zero_or_negative_is_max() {
        assert_eq!(pids_max(0), "max");
        assert_eq!(pids_max(-1), "max");
        assert_eq!(pids_max(32), "32");
    }

    #[test]
    fn v1_mapping_covers_every_controller() {
        let r = res(r#"{
            "memory": {"limit": 1048576, "reservation": 524288, "swappiness": 10,
                       "disableOOMKiller": true, "kernelTCP": 65536},
            "cpu": {"shares": 512, "quota": 20000, "period": 100000, "burst": 1000,
                    "realtimePeriod": 1000000, "realtimeRuntime": 950, "cpus": "0",
                    "mems": "0", "idle": 0},
            "pids": {"limit": 0},
            "blockIO": {"weight": 100, "leafWeight": 50,
                        "weightDevice": [{"major": 8, "minor": 0, "weight": 200}],
                        "throttleReadBpsDevice": [{"major": 8, "minor": 0, "rate": 1000}],
                        "throttleWriteIOPSDevice": [{"major": 8, "minor": 0, "rate": 10}]},
            "hugepageLimits": [{"pageSize": "2MB", "limit": 4194304}],
            "network": {"classID": 1048577, "priorities": [{"name": "eth0", "priority": 5}]},
            "rdma": {"mlx5_1": {"hcaHandles": 3, "hcaObjects": 100}}
        }"#);
        let got = pairs(&v1_settings(&r).expect("maps"));
        let expect = [
            ("cpuset.cpus", "0"),
            ("cpuset.mems", "0"),
            ("cpu.shares", "512"),
            ("cpu.cfs_period_us", "100000"),
            ("cpu.cfs_quota_us", "20000"),
            ("cpu.cfs_burst_us", "1000"),
            ("cpu.rt_period_us", "1000000"),
            ("cpu.rt_runtime_us", "950"),
            ("cpu.idle", "0"),
            ("memory.soft_limit_in_bytes", "524288"),
            ("memory.kmem.tcp.limit_in_bytes", "65536"),
            ("memory.swappiness", "10"),
            ("memory.oom_control", "1"),
            ("pids.max", "max"),
            ("blkio.weight", "100"),
            ("blkio.leaf_weight", "50"),
            ("blkio.weight_device", "8:0 200"),
            ("blkio.throttle.read_bps_device", "8:0 1000"),
            ("blkio.throttle.write_iops_device", "8:0 10"),
            ("hugetlb.2MB.limit_in_bytes", "4194304"),
            ("net_cls.classid", "1048577"),
            ("net_prio.ifpriomap", "eth0 5"),
            ("rdma.max", "mlx5_1 hca_handle=3 hca_object=100"),
        ];
        let expect: Vec<(String, String)> = expect
            .iter()
            .map(|(f, v)| (f.to_string(), v.to_string()))
            .collect();
        assert_eq!(got, expect);
        let bfq = v1_settings(&r).expect("maps")[14].fallback.clone();
        assert_eq!(bfq, Some(("blkio.bfq.weight".into(), "100".into())));
    }

    #[test]
    fn v2_mapping_converts() {
        let r = res(r#"{
            "memory": {"limit": 16777216, "swap": 33554432, "reservation": 8388608,
                       "swappiness": 10},
            "cpu": {"shares": 1024, "quota": 50000, "period": 100000, "burst": 500,
                    "cpus": "0-1", "mems": "0", "idle": 1},
            "pids": {"limit": 64},
            "blockIO": {"weight": 500,
                        "weightDevice": [{"major": 254, "minor": 0, "weight": 10}],
                        "throttleReadBpsDevice": [{"major": 254, "minor": 0, "rate": 1048576}],
                        "throttleWriteIOPSDevice": [{"major": 254, "minor": 0, "rate": 100}]},
            "hugepageLimits": [{"pageSize": "1GB", "limit": -1}],
            "unified": {"memory.high": "12345678", "cgroup.max.depth": "5"}
        }"#);
        let settings = v2_settings(&r).expect("maps");
        let got = pairs(&settings);
        let expect = [
            ("cpuset.cpus", "0-1"),
            ("cpuset.mems", "0"),
            ("cpu.weight", "39"),
            ("cpu.max", "50000 100000"),
            ("cpu.max.burst", "500"),
            ("cpu.idle", "1"),
            ("memory.low", "8388608"),
            ("memory.swap.max", "16777216"),
            ("memory.max", "16777216"),
            ("pids.max", "64"),
            ("io.bfq.weight", "500"),
            ("io.bfq.weight", "254:0 10"),
            ("io.max", "254:0 rbps=1048576"),
            ("io.max", "254:0 wiops=100"),
            ("hugetlb.1GB.max", "max"),
            ("cgroup.max.depth", "5"),
            ("memory.high", "12345678"),
        ];
        let expect: Vec<(String, String)> = expect
            .iter()
            .map(|(f, v)| (f.to_string(), v.to_string()))
            .collect();
        assert_eq!(got, expect);
        assert_eq!(
            settings[10].fallback,
            Some(("io.weight".into(), "4950".into()))
        );
        assert_eq!(
            settings[11].fallback,
            Some(("io.weight".into(), "254:0 1".into()))
        );
        assert_eq!(settings[15].controller, "", "core files need no controller");
        assert_eq!(settings[16].controller, "memory");
    }

    #[test]
    fn v2_refuses_what_it_cannot_express() {
        for json in [
            r#"{"network": {"classID": 1}}"#,
            r#"{"cpu": {"realtimeRuntime": 1000}}"#,
        ] {
            let err = v2_settings(&res(json)).expect_err(json);
            assert!(
                matches!(err, CgroupError::Unsupported { .. }),
                "{json}: {err}"
            );
        }
        let err = v1_settings(&res(r#"{"unified": {"memory.max": "1"}}"#)).expect_err("v1");
        assert!(err.to_string().contains("linux.resources.unified"), "{err}");
    }

    #[test]
    fn bad_values_are_refused_by_field() {
        for (json, field) in [
            (r#"{"cpu": {"period": 0}}"#, "cpu.period"),
            (r#"{"cpu": {"period": 10}}"#, "cpu.period"),
            (r#"{"cpu": {"realtimePeriod": 0}}"#, "cpu.realtimePeriod"),
            (r#"{"cpu": {"quota": -5}}"#, "cpu.quota"),
            (r#"{"cpu": {"cpus": "0-x"}}"#, "cpu.cpus"),
            (r#"{"cpu": {"mems": "3-1"}}"#, "cpu.mems"),
            (r#"{"memory": {"limit": -7}}"#, "memory.limit"),
            (r#"{"memory": {"limit": 200, "swap": 100}}"#, "memory.swap"),
            (r#"{"memory": {"swappiness": 101}}"#, "memory.swappiness"),
            (r#"{"blockIO": {"weight": 5}}"#, "blockIO.weight"),
            (
                r#"{"blockIO": {"throttleReadBpsDevice": [{"major": -1, "minor": 0, "rate": 1}]}}"#,
                "blockIO.throttleReadBpsDevice",
            ),
            (
                r#"{"hugepageLimits": [{"pageSize": "2XB", "limit": 1}]}"#,
                "hugepageLimits.pageSize",
            ),
        ] {
            let err = validate(&res(json)).expect_err(json);
            assert!(
                err.to_string()
                    .starts_with(&format!("invalid linux.resources.{field}")),
                "{json}: {err}"
            );
        }
        let err = validate(&res(r#"{"unified": {"../x": "1"}}"#)).expect_err("slash");
        assert!(err.to_string().contains("unified"), "{err}");
        assert!(validate(&res(r#"{"cpu": {"period": 100000, "quota": -1}}"#)).is_ok());
    }
}
