use std::path::PathBuf;

use super::cgroup::{self, Mounts};
use super::*;

/// A pure cgroup v2 host (the VM of hack/vmtest.sh).
const MOUNTINFO_V2: &str = "\
22 1 0:21 / / rw,relatime - ext4 /dev/vda rw
30 22 0:26 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:9 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot
";

/// A v1/v2 hybrid, cpu and cpuacct mounted apart (this development host) and one mount with a
/// flag besides its controller.
const MOUNTINFO_HYBRID: &str = "\
25 22 0:22 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:5 - tmpfs tmpfs ro,mode=755
26 25 0:23 / /sys/fs/cgroup/unified rw,nosuid,nodev,noexec,relatime shared:6 - cgroup2 cgroup2 rw
27 25 0:24 / /sys/fs/cgroup/systemd rw,nosuid,nodev,noexec,relatime shared:7 - cgroup cgroup rw,xattr,name=systemd
28 25 0:25 / /sys/fs/cgroup/cpu rw,nosuid,nodev,noexec,relatime shared:8 - cgroup cgroup rw,cpu
29 25 0:26 / /sys/fs/cgroup/cpuacct rw,nosuid,nodev,noexec,relatime shared:9 - cgroup cgroup rw,cpuacct
30 25 0:27 / /sys/fs/cgroup/memory rw,nosuid,nodev,noexec,relatime shared:10 - cgroup cgroup rw,memory
31 25 0:28 / /sys/fs/cgroup/pids rw,nosuid,nodev,noexec,relatime shared:11 - cgroup cgroup rw,clone_children,pids
";

const MEMORY_STAT_V2: &str = "\
anon 21254144
file 8380416
kernel 884736
sock 0
shmem 4096
file_mapped 2662400
file_dirty 0
inactive_anon 21250048
active_anon 8192
inactive_file 6307840
active_file 2072576
pgfault 6031
pgmajfault 12
";

const MEMORY_STAT_V1: &str = "\
cache 4096
rss 1000
total_cache 8380416
total_rss 21254144
total_inactive_file 6307840
total_pgfault 6031
total_pgmajfault 12
";

const CPU_STAT_V2: &str = "\
usage_usec 1500000
user_usec 1000000
system_usec 500000
nr_periods 0
nr_throttled 0
throttled_usec 0
";

#[test]
fn v2_memory_working_set_is_usage_minus_inactive_file() {
    let m = cgroup::memory_v2(MEMORY_STAT_V2, 30_000_000, "max\n", Some(0));
    assert_eq!(m.usage, 30_000_000);
    assert_eq!(m.working_set, 30_000_000 - 6_307_840);
    assert_eq!(m.rss, 21_254_144);
    assert_eq!(m.cache, 8_380_416);
    assert_eq!(m.page_faults, 6031);
    assert_eq!(m.major_page_faults, 12);
    assert_eq!(m.limit, None);
    assert_eq!(m.available(), None);
    let limited = cgroup::memory_v2(MEMORY_STAT_V2, 30_000_000, "104857600\n", None);
    assert_eq!(limited.limit, Some(104_857_600));
    assert_eq!(limited.available(), Some(104_857_600 - limited.working_set));
    // Inactive file pages above usage (racy reads) never make the working set wrap.
    assert_eq!(
        cgroup::memory_v2(MEMORY_STAT_V2, 10, "max", None).working_set,
        0
    );
}

#[test]
fn v1_memory_uses_the_hierarchical_totals() {
    let m = cgroup::memory_v1(
        MEMORY_STAT_V1,
        30_000_000,
        Some(0x7FFF_FFFF_FFFF_F000),
        Some(30_001_000),
    );
    assert_eq!(m.working_set, 30_000_000 - 6_307_840);
    assert_eq!(m.rss, 21_254_144);
    assert_eq!(m.limit, None, "the v1 'unlimited' value is no limit");
    assert_eq!(m.swap, Some(1000));
    let m = cgroup::memory_v1(MEMORY_STAT_V1, 30_000_000, Some(1 << 30), None);
    assert_eq!(m.limit, Some(1 << 30));
}

#[test]
fn cpu_times_in_nanoseconds() {
    let v2 = cgroup::cpu_v2(CPU_STAT_V2).unwrap();
    assert_eq!(v2.usage_ns, 1_500_000_000);
    assert_eq!(v2.user_ns, 1_000_000_000);
    assert_eq!(v2.system_ns, 500_000_000);
    assert!(cgroup::cpu_v2("nr_periods 0\n").is_none());
    let v1 = cgroup::cpu_v1(7, "user 150\nsystem 50\n", 100);
    assert_eq!(v1.usage_ns, 7);
    assert_eq!(v1.user_ns, 1_500_000_000);
    assert_eq!(v1.system_ns, 500_000_000);
}

#[test]
fn a_process_cgroup_is_found_in_each_hierarchy() {
    let v2 = cgroup::parse_mountinfo(MOUNTINFO_V2);
    assert!(v2.v1.is_empty());
    let cg = cgroup::parse_proc_cgroup("0::/kubepods/pod1/abc\n", &v2);
    assert_eq!(
        cg.v2,
        Some(PathBuf::from("/sys/fs/cgroup/kubepods/pod1/abc"))
    );
    assert!(cg.v1.is_empty());

    let hybrid = cgroup::parse_mountinfo(MOUNTINFO_HYBRID);
    let text = "9:name=systemd:/\n8:pids:/rcri-abc\n4:memory:/process_api/x/rcri-abc\n2:cpuacct:/rcri-abc\n1:cpu:/rcri-abc\n0::/\n";
    let cg = cgroup::parse_proc_cgroup(text, &hybrid);
    assert_eq!(
        cg.v1.get("memory"),
        Some(&PathBuf::from(
            "/sys/fs/cgroup/memory/process_api/x/rcri-abc"
        ))
    );
    assert_eq!(
        cg.v1.get("cpuacct"),
        Some(&PathBuf::from("/sys/fs/cgroup/cpuacct/rcri-abc"))
    );
    assert_eq!(
        cg.v1.get("pids"),
        Some(&PathBuf::from("/sys/fs/cgroup/pids/rcri-abc"))
    );
    assert_eq!(cg.v2, Some(PathBuf::from("/sys/fs/cgroup/unified/")));
}

#[test]
fn a_mount_of_a_subtree_strips_its_root() {
    let mounts = Mounts {
        v1: vec![],
        unified: Some((PathBuf::from("/sys/fs/cgroup"), "/outer".into())),
    };
    let cg = cgroup::parse_proc_cgroup("0::/outer/inner\n", &mounts);
    assert_eq!(cg.v2, Some(PathBuf::from("/sys/fs/cgroup/inner")));
    // A path outside what the mount shows cannot be read.
    assert_eq!(
        cgroup::parse_proc_cgroup("0::/elsewhere\n", &mounts).v2,
        None
    );
}

#[test]
fn v2_files_are_read_from_a_cgroup_dir() {
    let dir = std::env::temp_dir().join(format!("rcri-stats-v2-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("memory.stat"), MEMORY_STAT_V2).unwrap();
    std::fs::write(dir.join("memory.current"), "30000000\n").unwrap();
    std::fs::write(dir.join("memory.max"), "max\n").unwrap();
    std::fs::write(dir.join("cpu.stat"), CPU_STAT_V2).unwrap();
    std::fs::write(dir.join("cgroup.procs"), "12\n13\n14\n").unwrap();
    let cg = cgroup::Cgroup {
        v1: Default::default(),
        v2: Some(dir.clone()),
    };
    let m = cg.memory().unwrap();
    assert_eq!(m.working_set, 30_000_000 - 6_307_840);
    assert_eq!(cg.cpu().unwrap().usage_ns, 1_500_000_000);
    assert_eq!(cg.processes(), Some(3));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn net_dev_counters() {
    let text = "\
Inter-|   Receive                                                |  Transmit
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed
    lo:     100       2    0    0    0     0          0         0      100       2    0    0    0     0       0          0
  eth0:   12345      67    1    2    0     0          0         0     6789      45    3    4    0     0       0          0
";
    let parsed = netdev::parse(text);
    assert_eq!(parsed.len(), 2);
    let eth0 = &parsed[1];
    assert_eq!(eth0.name, "eth0");
    assert_eq!(
        (
            eth0.rx_bytes,
            eth0.rx_packets,
            eth0.rx_errors,
            eth0.rx_dropped
        ),
        (12345, 67, 1, 2)
    );
    assert_eq!(
        (
            eth0.tx_bytes,
            eth0.tx_packets,
            eth0.tx_errors,
            eth0.tx_dropped
        ),
        (6789, 45, 3, 4)
    );
}

#[test]
fn nano_cores_come_from_two_samples() {
    let s = CpuSampler::default();
    const SEC: i64 = 1_000_000_000;
    const USEC: u64 = 1_000_000_000;
    assert_eq!(s.nano_cores("c", 0, 10 * SEC), None);
    // Half a core over two seconds.
    assert_eq!(s.nano_cores("c", USEC, 12 * SEC), Some(USEC / 2));
    // Too close to the last sample: the last rate again, the sample kept.
    assert_eq!(s.nano_cores("c", 2 * USEC, 12 * SEC + 1000), Some(USEC / 2));
    assert_eq!(s.nano_cores("c", 3 * USEC, 14 * SEC), Some(USEC));
    // A counter going back starts over.
    assert_eq!(s.nano_cores("c", 0, 15 * SEC), None);
    s.retain(&HashSet::new());
    assert_eq!(s.nano_cores("c", 5, 16 * SEC), None);
}

#[test]
fn disk_usage_counts_blocks_and_inodes_once() {
    let dir = std::env::temp_dir().join(format!("rcri-stats-du-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("sub")).unwrap();
    std::fs::write(dir.join("sub/a"), vec![1u8; 64 * 1024]).unwrap();
    std::fs::hard_link(dir.join("sub/a"), dir.join("b")).unwrap();
    let (bytes, inodes) = disk_usage(&dir);
    // dir, sub, a (b is the same inode).
    assert_eq!(inodes, 3);
    assert!(bytes >= 64 * 1024, "{bytes}");
    assert!(
        bytes < 2 * 64 * 1024 + 64 * 1024,
        "counted the hard link twice: {bytes}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!(disk_usage(&dir), (0, 0));
}

#[test]
fn every_metric_has_a_descriptor_with_id_name_image_first() {
    let descriptors = metrics::descriptors();
    assert!(descriptors.len() >= 20);
    for d in &descriptors {
        assert_eq!(&d.label_keys[..3], ["id", "name", "image"], "{}", d.name);
    }
    assert!(descriptors
        .iter()
        .any(|d| d.name == "container_network_receive_bytes_total"
            && d.label_keys.last().map(String::as_str) == Some("interface")));
}

#[test]
fn a_cgroup_parent_is_found_in_every_hierarchy_that_has_it() {
    let top = std::env::temp_dir().join(format!("rcri-stats-parent-{}", std::process::id()));
    std::fs::create_dir_all(top.join("memory/kubepods/pod1")).unwrap();
    std::fs::create_dir_all(top.join("cpu,cpuacct/kubepods/pod1")).unwrap();
    std::fs::create_dir_all(top.join("unified")).unwrap();
    let mounts = Mounts {
        v1: vec![
            (vec!["memory".into()], top.join("memory"), "/".into()),
            (
                vec!["cpu".into(), "cpuacct".into()],
                top.join("cpu,cpuacct"),
                "/".into(),
            ),
        ],
        unified: Some((top.join("unified"), "/".into())),
    };
    let cg = cgroup::at_path("/kubepods/pod1", &mounts).unwrap();
    assert_eq!(cg.v1.get("memory"), Some(&top.join("memory/kubepods/pod1")));
    assert_eq!(
        cg.v1.get("cpuacct"),
        Some(&top.join("cpu,cpuacct/kubepods/pod1"))
    );
    // Not in the (empty) unified hierarchy of a hybrid host.
    assert_eq!(cg.v2, None);
    assert!(cgroup::at_path("/kubepods/other", &mounts).is_none());
    std::fs::remove_dir_all(&top).unwrap();
}
