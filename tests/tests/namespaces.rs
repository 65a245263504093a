//! Namespaces: new ones, joined ones (by path), the user namespace with its id mappings.

use std::fs;
use std::os::unix::fs::MetadataExt;

use anyhow::{Context, Result};
use e2e::*;

#[test]
fn hostname_comes_from_the_config() -> Result<()> {
    let mut bundle = Bundle::new()?;
    bundle.hostname("e2e-hostname").args(&["hostname"]);
    let rt = Runtime::new()?;
    let out = rt.run(&bundle, &unique_id("ns"))?.ok()?;
    assert_eq!(out.stdout.trim(), "e2e-hostname", "{out}");
    Ok(())
}

#[test]
fn init_is_pid_1_in_a_new_pid_namespace() -> Result<()> {
    let mut bundle = Bundle::new()?;
    bundle.sh("echo $$");
    let rt = Runtime::new()?;
    let out = rt.run(&bundle, &unique_id("ns"))?.ok()?;
    assert_eq!(out.stdout.trim(), "1", "{out}");
    Ok(())
}

#[test]
fn new_namespaces_differ_from_the_hosts() -> Result<()> {
    let mut bundle = Bundle::new()?;
    bundle.namespace("cgroup", None).args(&["sleep", "60"]);
    let rt = Runtime::new()?;
    let id = unique_id("ns");
    rt.start_detached(&bundle, &id)?;
    let pid = rt.pid(&id)?.to_string();
    for kind in ["uts", "ipc", "net", "mnt", "pid", "cgroup"] {
        let host = ns_of("self", kind)?;
        let container = ns_of(&pid, kind)?;
        assert_ne!(host, container, "{kind} namespace is the host's");
    }
    // Not asked for: shared with the host.
    assert_eq!(ns_of("self", "user")?, ns_of(&pid, "user")?);
    Ok(())
}

#[test]
fn no_namespace_in_the_config_means_the_hosts() -> Result<()> {
    let mut bundle = Bundle::new()?;
    bundle.remove_namespace("network").args(&["sleep", "60"]);
    let rt = Runtime::new()?;
    let id = unique_id("ns");
    rt.start_detached(&bundle, &id)?;
    let pid = rt.pid(&id)?.to_string();
    assert_eq!(ns_of("self", "net")?, ns_of(&pid, "net")?);
    assert_ne!(ns_of("self", "mnt")?, ns_of(&pid, "mnt")?);
    Ok(())
}

#[test]
fn a_network_namespace_is_joined_by_path() -> Result<()> {
    let netns = NetNs::new()?;
    let inode = fs::metadata(netns.path())?.ino();
    let mut bundle = Bundle::new()?;
    bundle
        .namespace("network", Some(&netns.path()))
        .sh("ip link set lo up 2>/dev/null; cat /proc/net/dev; sleep 60");
    let rt = Runtime::new()?;
    let id = unique_id("ns");
    rt.start_detached(&bundle, &id)?;
    let pid = rt.pid(&id)?.to_string();
    assert_eq!(
        ns_of(&pid, "net")?,
        format!("net:[{inode}]"),
        "not in the netns {}",
        netns.name()
    );
    Ok(())
}

#[test]
fn namespaces_of_another_container_are_joined_by_path() -> Result<()> {
    let rt = Runtime::new()?;
    let mut first = Bundle::new()?;
    first.hostname("first").args(&["sleep", "60"]);
    let first_id = unique_id("ns");
    rt.start_detached(&first, &first_id)?;
    let first_pid = rt.pid(&first_id)?.to_string();

    let mut second = Bundle::new()?;
    let shared = second.share()?;
    second.remove("/hostname");
    for (kind, link) in [
        ("pid", "pid"),
        ("ipc", "ipc"),
        ("uts", "uts"),
        ("network", "net"),
    ] {
        second.namespace(kind, Some(&format!("/proc/{first_pid}/ns/{link}")));
    }
    second.sh("echo $$ > /shared/pid; hostname > /shared/hostname; sleep 60");
    let second_id = unique_id("ns");
    rt.start_detached(&second, &second_id)?;
    let second_pid = rt.pid(&second_id)?.to_string();
    wait_for("the second container's output", WAIT_TIMEOUT, || {
        Ok(fs::read_to_string(shared.join("hostname")).is_ok_and(|s| s.ends_with('\n')))
    })?;

    for kind in ["pid", "ipc", "uts", "net"] {
        assert_eq!(
            ns_of(&first_pid, kind)?,
            ns_of(&second_pid, kind)?,
            "{kind} namespace not shared"
        );
    }
    assert_ne!(ns_of(&first_pid, "mnt")?, ns_of(&second_pid, "mnt")?);
    let pid_inside = fs::read_to_string(shared.join("pid"))?;
    assert_ne!(pid_inside.trim(), "1", "the joiner became pid 1");
    assert_eq!(fs::read_to_string(shared.join("hostname"))?.trim(), "first");
    Ok(())
}

#[test]
fn user_namespace_maps_container_root_to_a_host_uid() -> Result<()> {
    let mut bundle = Bundle::new()?;
    let shared = bundle.share()?;
    bundle
        .namespace("user", None)
        .set(
            "/linux/uidMappings",
            json!([{"containerID": 0, "hostID": 100000, "size": 65536}]),
        )
        .set(
            "/linux/gidMappings",
            json!([{"containerID": 0, "hostID": 100000, "size": 65536}]),
        )
        .sh("cat /proc/self/uid_map > /shared/uid_map; id -u > /shared/uid; id -g > /shared/gid; sleep 60");
    let rt = Runtime::new()?;
    let id = unique_id("userns");
    rt.start_detached(&bundle, &id)?;
    let pid = rt.pid(&id)?;
    wait_for("the container's output", WAIT_TIMEOUT, || {
        Ok(fs::read_to_string(shared.join("gid")).is_ok_and(|s| s.ends_with('\n')))
    })?;
    let uid_map = fs::read_to_string(shared.join("uid_map"))?;
    let fields: Vec<&str> = uid_map.split_whitespace().collect();
    assert_eq!(
        fields,
        ["0", "100000", "65536"],
        "uid_map inside: {uid_map}"
    );
    assert_eq!(fs::read_to_string(shared.join("uid"))?.trim(), "0");
    assert_eq!(fs::read_to_string(shared.join("gid"))?.trim(), "0");
    let host_uid = proc_status(pid, "Uid")?;
    assert_eq!(
        host_uid.split_whitespace().next(),
        Some("100000"),
        "host view of the owner: {host_uid}"
    );
    let host_gid = proc_status(pid, "Gid")?;
    assert_eq!(host_gid.split_whitespace().next(), Some("100000"));
    assert_ne!(ns_of("self", "user")?, ns_of(&pid.to_string(), "user")?);
    let host_map = fs::read_to_string(format!("/proc/{pid}/uid_map")).context("uid_map")?;
    assert!(host_map.contains("100000"), "{host_map}");
    Ok(())
}

#[test]
fn a_new_time_namespace_is_created() -> Result<()> {
    let mut bundle = Bundle::new()?;
    bundle.namespace("time", None).args(&["sleep", "60"]);
    let rt = Runtime::new()?;
    let id = unique_id("ns");
    rt.start_detached(&bundle, &id)?;
    let pid = rt.pid(&id)?.to_string();
    assert_ne!(ns_of("self", "time")?, ns_of(&pid, "time")?);
    Ok(())
}

#[test]
fn time_offsets_shift_the_containers_clocks() -> Result<()> {
    let mut bundle = Bundle::new()?;
    bundle
        .namespace("time", None)
        .set(
            "/linux/timeOffsets",
            serde_json::json!({"boottime": {"secs": 100000}, "monotonic": {"secs": 7, "nanosecs": 5}}),
        )
        .sh("cut -d. -f1 /proc/uptime; cat /proc/self/timens_offsets");
    let rt = Runtime::new()?;
    let out = rt.run(&bundle, &unique_id("ns"))?;
    let stdout = &out.stdout;
    let uptime: u64 = stdout
        .lines()
        .next()
        .unwrap_or("")
        .trim()
        .parse()
        .unwrap_or(0);
    let host: f64 = fs::read_to_string("/proc/uptime")?
        .split('.')
        .next()
        .unwrap_or("0")
        .parse()
        .unwrap_or(0.0);
    assert!(
        uptime as f64 >= host + 99_000.0,
        "uptime {uptime} vs host {host}: {stdout}"
    );
    let monotonic: Vec<&str> = stdout
        .lines()
        .find(|l| l.starts_with("monotonic"))
        .map(|l| l.split_whitespace().collect())
        .unwrap_or_default();
    assert_eq!(monotonic, ["monotonic", "7", "5"], "{stdout}");
    Ok(())
}
