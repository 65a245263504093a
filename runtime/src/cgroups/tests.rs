use super::host::{parse_mountinfo, parse_proc_cgroup, target, Host, Target};
use super::*;
use oci_spec::runtime::{LinuxDeviceCgroup, LinuxMemory, LinuxPids, LinuxResourcesBuilder};
use std::os::unix::process::CommandExt;

/// This sandbox's layout: v1 controllers plus the hybrid's empty cgroup2 `unified` mount.
const HYBRID_MOUNTINFO: &str = "\
23 1 0:21 / /sys rw,nosuid,nodev,noexec,relatime - sysfs sysfs rw
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
34 31 0:31 / /sys/fs/cgroup/cpuset rw,relatime - cgroup cgroup rw,cpuset
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
36 31 0:33 / /sys/fs/cgroup/devices rw,relatime - cgroup cgroup rw,devices
37 31 0:34 / /sys/fs/cgroup/freezer rw,relatime - cgroup cgroup rw,freezer
38 31 0:35 / /sys/fs/cgroup/blkio rw,relatime - cgroup cgroup rw,blkio
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";

const HYBRID_CGROUP: &str = "\
9:name=systemd:/
8:pids:/
7:blkio:/
6:freezer:/
5:devices:/
4:memory:/process_api/343c
3:cpuset:/
2:cpuacct:/
1:cpu:/
0::/
";

const V2_MOUNTINFO: &str = "\
25 30 0:23 / /sys rw,nosuid,nodev,noexec,relatime shared:7 - sysfs sysfs rw
26 25 0:24 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:8 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot
";

fn hybrid() -> Host {
    Host::from_texts(HYBRID_MOUNTINFO, HYBRID_CGROUP).expect("hybrid host parses")
}

fn cgroup_for(host: &Host, path: Option<&str>, id: &str) -> Result<Cgroup, CgroupError> {
    Cgroup::on_host(host, &target(path, id)?)
}

#[test]
fn mountinfo_keeps_only_cgroup_entries() {
    let mounts = parse_mountinfo(HYBRID_MOUNTINFO).expect("parses");
    assert_eq!(mounts.len(), 10);
    assert!(mounts[0].super_options.contains(&"cpu".to_string()));
    assert!(mounts[9].v2);
    assert_eq!(mounts[9].mount_point, Path::new("/sys/fs/cgroup/unified"));
}

#[test]
fn mountinfo_unescapes_and_reports_garbage() {
    let text = "40 31 0:37 /a\\040b /mnt/my\\040cg rw - cgroup cgroup rw,name=x\n";
    let mounts = parse_mountinfo(text).expect("parses");
    assert_eq!(mounts[0].root, Path::new("/a b"));
    assert_eq!(mounts[0].mount_point, Path::new("/mnt/my cg"));
    let err = parse_mountinfo("1 2 3 4 5 6 7\n").expect_err("no separator");
    assert!(err
        .to_string()
        .starts_with("failed to parse /proc/self/mountinfo"));
}

#[test]
fn proc_cgroup_lines() {
    let members = parse_proc_cgroup("4:cpu,cpuacct:/a:b\n0::/x\n").expect("parses");
    assert_eq!(members[0].controllers, vec!["cpu", "cpuacct"]);
    assert_eq!(members[0].path, Path::new("/a:b"));
    assert!(members[1].controllers.is_empty());
    assert!(parse_proc_cgroup("garbage\n").is_err());
    assert!(parse_proc_cgroup("1:cpu:relative\n").is_err());
}

#[test]
fn hybrid_host_uses_every_v1_hierarchy_and_ignores_unified() {
    let host = hybrid();
    assert_eq!(host.version, CgroupVersion::V1);
    assert_eq!(host.hierarchies.len(), 9);
    assert!(host
        .hierarchies
        .iter()
        .all(|h| !h.mount_point.ends_with("unified")));
    let systemd = host
        .hierarchies
        .iter()
        .find(|h| h.controllers == ["name=systemd"])
        .expect("named hierarchy");
    assert_eq!(systemd.mount_point, Path::new("/sys/fs/cgroup/systemd"));
}

#[test]
fn pure_v2_host() {
    let host = Host::from_texts(V2_MOUNTINFO, "0::/user.slice/session-1.scope\n").expect("parses");
    assert_eq!(host.version, CgroupVersion::V2);
    let cg = cgroup_for(&host, None, "c1").expect("resolves");
    assert_eq!(
        cg.paths().dirs,
        vec![PathBuf::from(
            "/sys/fs/cgroup/user.slice/session-1.scope/c1"
        )]
    );
}

#[test]
fn no_cgroup_mounts_is_an_error() {
    let err = Host::from_texts("23 1 0:21 / /sys rw - sysfs sysfs rw\n", "0::/\n")
        .expect_err("nothing mounted");
    assert!(matches!(err, CgroupError::NoHierarchy(_)));
}

#[test]
fn default_path_is_own_cgroup_plus_id() {
    let cg = cgroup_for(&hybrid(), None, "ctr").expect("resolves");
    let dirs = &cg.paths().dirs;
    assert!(dirs.contains(&PathBuf::from("/sys/fs/cgroup/memory/process_api/343c/ctr")));
    assert!(dirs.contains(&PathBuf::from("/sys/fs/cgroup/cpu/ctr")));
    assert!(dirs.contains(&PathBuf::from("/sys/fs/cgroup/systemd/ctr")));
    assert_eq!(
        cgroup_for(&hybrid(), Some(""), "ctr")
            .expect("empty")
            .paths(),
        cg.paths()
    );
}

#[test]
fn relative_and_absolute_paths() {
    let rel = cgroup_for(&hybrid(), Some("pods/./a"), "ignored").expect("relative");
    assert!(rel.paths().dirs.contains(&PathBuf::from(
        "/sys/fs/cgroup/memory/process_api/343c/pods/a"
    )));
    let abs = cgroup_for(&hybrid(), Some("/k8s/pod/../ctr"), "ignored").expect("absolute");
    assert!(abs
        .paths()
        .dirs
        .contains(&PathBuf::from("/sys/fs/cgroup/memory/k8s/ctr")));
    assert!(abs
        .paths()
        .dirs
        .contains(&PathBuf::from("/sys/fs/cgroup/pids/k8s/ctr")));
}

#[test]
fn escaping_and_degenerate_paths_are_rejected() {
    for bad in [
        "../x",
        "a/../../x",
        "a/..",
        "/..",
        "/a/../..",
        "/",
        "/.",
        ".",
    ] {
        let err = target(Some(bad), "id").expect_err(bad);
        assert!(
            matches!(err, CgroupError::InvalidPath { .. }),
            "{bad}: {err}"
        );
    }
    assert!(target(None, "..").is_err());
    assert!(target(None, "").is_err());
}

#[test]
fn systemd_paths_are_refused() {
    let err = target(Some("system.slice:docker:abc"), "id").expect_err("systemd");
    assert!(matches!(err, CgroupError::Systemd(_)));
    assert!(err
        .to_string()
        .starts_with("systemd cgroup paths are not supported"));
    assert_eq!(
        target(Some("/a:b:c"), "id").ok(),
        Some(Target::Absolute(PathBuf::from("/a:b:c")))
    );
}

#[test]
fn mount_showing_a_subtree() {
    // A container without its own cgroup namespace: the mounts show /docker/abc.
    let mountinfo =
        "50 40 0:30 /docker/abc /sys/fs/cgroup/memory ro,relatime - cgroup cgroup rw,memory\n";
    let host = Host::from_texts(mountinfo, "4:memory:/docker/abc\n").expect("parses");
    let own = cgroup_for(&host, None, "ctr").expect("default");
    assert_eq!(
        own.paths().dirs,
        vec![PathBuf::from("/sys/fs/cgroup/memory/ctr")]
    );
    let through = cgroup_for(&host, Some("/docker/abc/x"), "i").expect("spelled from the root");
    assert_eq!(
        through.paths().dirs,
        vec![PathBuf::from("/sys/fs/cgroup/memory/x")]
    );
    let seen = cgroup_for(&host, Some("/kubepods/x"), "i").expect("seen from the mount");
    assert_eq!(
        seen.paths().dirs,
        vec![PathBuf::from("/sys/fs/cgroup/memory/kubepods/x")]
    );

    let err = cgroup_for(&host, Some("/docker/abc"), "i").expect_err("the mount root itself");
    assert!(matches!(err, CgroupError::InvalidPath { .. }));

    let elsewhere = Host::from_texts(mountinfo, "4:memory:/other\n").expect("parses");
    let err = cgroup_for(&elsewhere, None, "ctr").expect_err("own cgroup not visible");
    assert!(matches!(err, CgroupError::NotVisible { .. }));
}

#[test]
fn unmounted_controllers_are_skipped() {
    let host =
        Host::from_texts(HYBRID_MOUNTINFO, "10:net_cls,net_prio:/\n8:pids:/\n").expect("parses");
    assert_eq!(host.hierarchies.len(), 1);
    assert_eq!(host.hierarchies[0].controllers, ["pids"]);
}

#[test]
fn hierarchy_of_a_recorded_dir() {
    let host = hybrid();
    let h = host
        .hierarchy_of(Path::new("/sys/fs/cgroup/cpuset/a/b"))
        .expect("found");
    assert_eq!(h.controllers, ["cpuset"]);
    assert!(host.hierarchy_of(Path::new("/tmp/x")).is_none());
}

#[test]
fn resources_are_checked_against_the_host() {
    assert!(check_supported(None).is_ok());
    let empty_memory = LinuxResourcesBuilder::default()
        .memory(LinuxMemory::default())
        .hugepage_limits(Vec::new())
        .build()
        .expect("builds");
    assert!(check_supported(Some(&empty_memory)).is_ok());

    let mut memory = LinuxMemory::default();
    memory.set_limit(Some(1 << 20));
    let mut pids = LinuxPids::default();
    pids.set_limit(10);
    let limits = LinuxResourcesBuilder::default()
        .memory(memory)
        .pids(pids)
        .build()
        .expect("builds");
    let v1 = cgroup_for(&hybrid(), None, "c").expect("resolves");
    assert!(v1.check_applicable(Some(&limits)).is_ok());
    let v2_host = Host::from_texts(V2_MOUNTINFO, "0::/\n").expect("parses");
    let v2 = cgroup_for(&v2_host, None, "c").expect("resolves");
    assert!(v2.check_applicable(Some(&limits)).is_ok());

    // The hybrid host mounts no hugetlb, net_cls or rdma hierarchy.
    let json: LinuxResources =
        serde_json::from_str(r#"{"hugepageLimits":[{"pageSize":"2MB","limit":2097152}]}"#)
            .expect("deserializes");
    let err = v1
        .check_applicable(Some(&json))
        .expect_err("no hugetlb hierarchy");
    assert!(
        matches!(err, CgroupError::ControllerMissing { .. }),
        "{err}"
    );
    assert!(err.to_string().contains("hugetlb"), "{err}");
    let no_memory = Host::from_texts(HYBRID_MOUNTINFO, "8:pids:/\n").expect("parses");
    let err = cgroup_for(&no_memory, None, "c")
        .expect("resolves")
        .check_applicable(Some(&limits))
        .expect_err("memory limit without a memory hierarchy");
    assert!(err.to_string().contains("memory"), "{err}");

    let unified: LinuxResources =
        serde_json::from_str(r#"{"unified":{"memory.high":"1G"}}"#).expect("deserializes");
    assert!(v2.check_applicable(Some(&unified)).is_ok());
    let err = v1
        .check_applicable(Some(&unified))
        .expect_err("v2 keys on v1");
    assert!(err.to_string().contains("linux.resources.unified"), "{err}");

    let zero_period: LinuxResources =
        serde_json::from_str(r#"{"cpu":{"period":0,"quota":1000}}"#).expect("deserializes");
    let err = check_supported(Some(&zero_period)).expect_err("zero period");
    assert_eq!(
        err.to_string(),
        "invalid linux.resources.cpu.period: it must be positive"
    );
}

#[test]
fn device_rules_need_a_devices_controller_or_v2() {
    let rules = LinuxResourcesBuilder::default()
        .devices(vec![LinuxDeviceCgroup::default()])
        .build()
        .expect("builds");
    let host = Host::from_texts(V2_MOUNTINFO, "0::/\n").expect("parses");
    let cg = cgroup_for(&host, None, "c").expect("resolves");
    assert!(cg.check_applicable(Some(&rules)).is_ok(), "v2 uses eBPF");
    assert!(cg.check_applicable(None).is_ok());

    let no_devices = Host::from_texts(HYBRID_MOUNTINFO, "8:pids:/\n").expect("parses");
    let cg = cgroup_for(&no_devices, None, "c").expect("resolves");
    assert!(matches!(
        cg.check_applicable(Some(&rules)),
        Err(CgroupError::NoDevicesController)
    ));
    assert!(cgroup_for(&hybrid(), None, "c")
        .expect("resolves")
        .check_applicable(Some(&rules))
        .is_ok());
}

fn scratch_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("rcrun-cg-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}

#[test]
fn mkdir_levels_records_only_what_it_made() {
    let mount = scratch_dir("mkdir");
    std::fs::create_dir(mount.join("existing")).expect("existing level");
    let leaf = mount.join("existing/a/b");
    let mut created = Vec::new();
    mkdir_levels(&leaf, &mount, &mut created).expect("mkdir -p");
    assert_eq!(created, vec![mount.join("existing/a"), leaf.clone()]);
    let mut again = Vec::new();
    mkdir_levels(&leaf, &mount, &mut again).expect("idempotent");
    assert!(again.is_empty());

    std::fs::create_dir_all(leaf.join("sub/subsub")).expect("nested cgroups");
    let tree = subtree(&leaf).expect("walk");
    assert_eq!(tree.first(), Some(&leaf));
    assert_eq!(tree.len(), 3);
    remove_tree(&leaf, Instant::now()).expect("remove");
    assert!(!leaf.exists());
    assert!(mount.join("existing/a").exists(), "parents stay");
    remove_tree(&leaf, Instant::now()).expect("missing is fine");
    let _ = std::fs::remove_dir_all(&mount);
}

#[test]
fn destroy_refuses_what_is_not_a_cgroup() {
    let dir = scratch_dir("not-a-cgroup");
    let cg = Cgroup::from_paths(CgroupPaths {
        dirs: vec![dir.clone()],
    });
    assert!(matches!(cg.destroy(), Err(CgroupError::NotACgroup(_))));
    assert!(dir.exists());
    let gone = Cgroup::from_paths(CgroupPaths {
        dirs: vec![dir.join("missing")],
    });
    assert!(gone.destroy().is_ok());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn hierarchy_roots_are_not_removable() {
    // Checked through the guard alone: a test that called destroy() here would, if the guard
    // ever broke, walk and remove every cgroup on the machine.
    let Ok(host) = Host::probe() else {
        return;
    };
    for h in &host.hierarchies {
        assert!(
            matches!(
                ensure_removable(&h.mount_point),
                Err(CgroupError::NotACgroup(_))
            ),
            "{}",
            h.mount_point.display()
        );
    }
    assert!(matches!(
        ensure_removable(Path::new("/sys/fs/cgroup/no-such-rcrun-dir")),
        Ok(false)
    ));
}

/// Kills the test's child and removes the test's cgroup even when an assertion fails.
struct Cleanup {
    child: Option<std::process::Child>,
    cgroup: Cgroup,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = self.cgroup.destroy();
    }
}

/// As root: a child cgroup below this test process's own cgroup in every hierarchy, a
/// process that enters it from a forked child, then removal of everything.
#[test]
fn root_create_enter_pids_destroy() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipping root_create_enter_pids_destroy: needs root");
        return;
    }
    let id = format!("rcrun-test-{}", std::process::id());
    let host = Host::probe().expect("probe host");
    let cg = Cgroup::resolve(None, &id).expect("resolve");
    let dirs = cg.paths().dirs.clone();
    assert_eq!(dirs.len(), host.hierarchies.len());
    for (dir, h) in dirs.iter().zip(&host.hierarchies) {
        assert_eq!(dir, &h.own_dir().expect("own dir").join(&id));
        assert!(
            !dir.exists(),
            "{} exists already; refusing to touch it",
            dir.display()
        );
    }
    let mut cleanup = Cleanup {
        child: None,
        cgroup: Cgroup::from_paths(cg.paths().clone()),
    };

    let v1 = host.version == CgroupVersion::V1;
    let mut deny_all = LinuxDeviceCgroup::default();
    deny_all.set_access(Some("rwm".to_string()));
    let resources = LinuxResourcesBuilder::default()
        .devices(vec![deny_all])
        .build()
        .expect("builds");
    cg.create(v1.then_some(&resources)).expect("create");
    cg.create(v1.then_some(&resources))
        .expect("create is idempotent");
    assert!(dirs.iter().all(|d| d.is_dir()));

    let layout = cg.layout().expect("layout").into_owned();
    for p in &layout.placements {
        if v1 && p.has("cpuset") {
            let cpus = std::fs::read_to_string(p.dir.join("cpuset.cpus")).expect("cpus");
            assert!(!cpus.trim().is_empty(), "cpuset.cpus inherited");
        }
        if v1 && p.has("devices") {
            let list = std::fs::read_to_string(p.dir.join("devices.list")).expect("list");
            assert!(list.lines().any(|l| l == "c 1:3 rwm"), "{list}");
            assert!(list.lines().any(|l| l == "c 136:* rwm"), "{list}");
            assert!(
                !list.lines().any(|l| l == "a *:* rwm"),
                "deny-all applied: {list}"
            );
        }
    }

    let entering = Cgroup::from_paths(cg.paths().clone());
    let mut command = std::process::Command::new("sleep");
    command.arg("30");
    // SAFETY: the closure runs in the forked child before exec and only writes cgroup files;
    // glibc keeps malloc usable after fork, and a failure just makes spawn fail.
    unsafe {
        command.pre_exec(move || entering.enter().map_err(std::io::Error::other));
    }
    let child = command.spawn().expect("spawn sleep in the cgroup");
    let pid = Pid::from_raw(i32::try_from(child.id()).expect("pid fits"));
    cleanup.child = Some(child);

    let membership = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).expect("cgroup");
    for h in &host.hierarchies {
        let expected = h.own.join(&id);
        let found = membership.lines().any(|line| {
            let mut f = line.splitn(3, ':');
            let (_, ctrls, path) = (f.next(), f.next().unwrap_or(""), f.next().unwrap_or(""));
            let ctrls: Vec<&str> = ctrls.split(',').filter(|c| !c.is_empty()).collect();
            ctrls.len() == h.controllers.len()
                && h.controllers.iter().all(|c| ctrls.contains(&c.as_str()))
                && Path::new(path) == expected
        });
        assert!(found, "{:?} not in {membership}", h.controllers);
    }
    assert!(cg.pids().expect("pids").contains(&pid));

    // A sub-cgroup as a container with its own cgroup namespace might make.
    let nested = dirs[0].join("nested");
    std::fs::create_dir(&nested).expect("nested cgroup");

    if let Some(child) = cleanup.child.as_mut() {
        child.kill().expect("kill sleep");
        child.wait().expect("reap sleep");
    }
    cleanup.child = None;
    cg.destroy().expect("destroy");
    assert!(dirs.iter().all(|d| !d.exists()), "all dirs removed");
    assert!(cg.pids().expect("pids of a removed cgroup").is_empty());
    cg.destroy().expect("destroy again is fine");
    for h in &host.hierarchies {
        assert!(
            h.own_dir().expect("own dir").is_dir(),
            "own cgroup untouched"
        );
    }
}

/// As root on a hybrid host: the v2 back-end, for real, on the cgroup2 `unified` mount,
/// below this test process's own v2 cgroup (the mount carries no controllers, so the
/// placement is all there is to test).
#[test]
fn root_v2_placement_on_hybrid_unified_mount() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipping root_v2_placement_on_hybrid_unified_mount: needs root");
        return;
    }
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    let proc_cgroup = std::fs::read_to_string("/proc/self/cgroup").expect("cgroup");
    let mounts = parse_mountinfo(&mountinfo).expect("parses");
    if !(mounts.iter().any(|m| m.v2) && mounts.iter().any(|m| !m.v2)) {
        eprintln!("skipping root_v2_placement_on_hybrid_unified_mount: not a hybrid host");
        return;
    }
    let only_v2: String = mountinfo
        .lines()
        .filter(|l| l.contains(" - cgroup2 "))
        .map(|l| format!("{l}\n"))
        .collect();
    let only_v2_member: String = proc_cgroup
        .lines()
        .filter(|l| l.starts_with("0::"))
        .map(|l| format!("{l}\n"))
        .collect();
    let host = Host::from_texts(&only_v2, &only_v2_member).expect("v2 view");
    assert_eq!(host.version, CgroupVersion::V2);
    let id = format!("rcrun-test-v2-{}", std::process::id());
    let cg = cgroup_for(&host, None, &id).expect("resolve");
    let dir = cg.paths().dirs[0].clone();
    assert_eq!(dir, host.hierarchies[0].own_dir().expect("own").join(&id));
    assert!(
        !dir.exists(),
        "{} exists already; refusing to touch it",
        dir.display()
    );
    let mut cleanup = Cleanup {
        child: None,
        cgroup: cg.clone(),
    };

    let mut deny_all = LinuxDeviceCgroup::default();
    deny_all.set_access(Some("rwm".to_string()));
    let rules = LinuxResourcesBuilder::default()
        .devices(vec![deny_all])
        .build()
        .expect("builds");
    let mut bad_rule = LinuxDeviceCgroup::default();
    bad_rule.set_access(Some("rx".to_string()));
    let bad = LinuxResourcesBuilder::default()
        .devices(vec![bad_rule])
        .build()
        .expect("builds");
    assert!(matches!(
        cg.create(Some(&bad)),
        Err(CgroupError::InvalidDeviceRule { .. })
    ));
    assert!(!dir.exists(), "a refused create leaves nothing behind");

    // The eBPF device filter, for real: deny-all plus the default allow list lets a process
    // in the cgroup read /dev/null but not /dev/kmsg (c 1:11); the unified mount needs no
    // controller for this.
    cg.create(Some(&rules))
        .expect("create with the device filter");
    let probe = |cg: &Cgroup| {
        let entering = cg.clone();
        let mut command = std::process::Command::new("sh");
        command.args([
            "-c",
            "head -c0 /dev/null && echo null-ok; head -c0 /dev/kmsg && echo kmsg-ok",
        ]);
        // SAFETY: as in root_create_enter_pids_destroy: the closure only writes cgroup files.
        unsafe {
            command.pre_exec(move || entering.enter().map_err(std::io::Error::other));
        }
        let out = command.output().expect("run sh in the cgroup");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    if Path::new("/dev/kmsg").exists() {
        let out = probe(&cg);
        assert!(out.contains("null-ok"), "{out}");
        assert!(!out.contains("kmsg-ok"), "{out}");
    }

    let child = std::process::Command::new("sleep")
        .arg("30")
        .spawn()
        .expect("spawn sleep");
    let pid = Pid::from_raw(i32::try_from(child.id()).expect("pid fits"));
    cleanup.child = Some(child);
    cg.add_task(pid).expect("add task");
    let membership = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).expect("cgroup");
    let expected = format!("0::{}", host.hierarchies[0].own.join(&id).display());
    assert!(membership.lines().any(|l| l == expected), "{membership}");
    assert_eq!(cg.pids().expect("pids"), vec![pid]);

    if let Some(child) = cleanup.child.as_mut() {
        child.kill().expect("kill sleep");
        child.wait().expect("reap sleep");
    }
    cleanup.child = None;
    cg.destroy().expect("destroy");
    assert!(!dir.exists());
}
