//! Id-mapped bind mounts (a mount's uidMappings/gidMappings, the idmap option): the container's
//! root sees the host's root-owned files as its own, and what it writes lands on the host with
//! the owner the mapping gives back, where a plain bind mount shows it the host's uids.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};

use anyhow::Result;
use e2e::*;

const MAP: &str = r#"[{"containerID": 0, "hostID": 100000, "size": 65536}]"#;

fn user_namespace(bundle: &mut Bundle) {
    let map: Value = serde_json::from_str(MAP).unwrap();
    bundle
        .namespace("user", None)
        .set("/linux/uidMappings", map.clone())
        .set("/linux/gidMappings", map);
}

#[test]
fn container_root_owns_the_hosts_root_files_through_an_id_mapped_mount() -> Result<()> {
    let mut bundle = Bundle::new()?;
    user_namespace(&mut bundle);
    let shared = bundle.share()?;
    // A host directory only host root may write, with a file of host root's and one of uid 1000,
    // under one only host root may even look into (as kubelet's pod dirs): the source is opened
    // with the host's privileges, not the container's.
    let private = bundle.path().join("private");
    fs::create_dir_all(&private)?;
    fs::set_permissions(&private, fs::Permissions::from_mode(0o700))?;
    let data = private.join("data");
    fs::create_dir_all(&data)?;
    fs::set_permissions(&data, fs::Permissions::from_mode(0o755))?;
    fs::write(data.join("from-host"), "host\n")?;
    fs::write(data.join("of-1000"), "")?;
    std::os::unix::fs::chown(data.join("of-1000"), Some(1000), Some(1000))?;
    for dir in ["data", "plain"] {
        fs::create_dir_all(bundle.rootfs().join(dir))?;
    }
    let map: Value = serde_json::from_str(MAP).unwrap();
    bundle.add_mount(json!({
        "destination": "/data", "type": "bind", "source": data,
        "options": ["rbind", "rw"], "uidMappings": map, "gidMappings": map,
    }));
    let plain = bundle.path().join("plain");
    fs::create_dir_all(&plain)?;
    fs::set_permissions(&plain, fs::Permissions::from_mode(0o755))?;
    fs::write(plain.join("from-host"), "host\n")?;
    bundle.add_mount(json!({
        "destination": "/plain", "type": "bind", "source": plain, "options": ["rbind", "rw"],
    }));
    bundle.capabilities(&["CAP_CHOWN"]).sh(
        "stat -c '%u:%g' /data/from-host /data/of-1000 /plain/from-host > /shared/owners; \
         echo made > /data/by-root && echo ok > /shared/write-idmapped; \
         touch /data/by-1000 && chown 1000:1000 /data/by-1000; \
         touch /plain/refused 2>/dev/null || echo refused > /shared/write-plain; \
         echo made > /shared/by-root",
    );
    let rt = Runtime::new()?;
    let id = unique_id("idmap");
    let out = rt.run(&bundle, &id)?.ok()?;
    let owners = fs::read_to_string(shared.join("owners"))?;
    let owners: Vec<&str> = owners.lines().collect();
    // Host uid 0 is the container's root through the mapping; through the plain bind the
    // container sees the overflow uid, since host 0 is outside its user namespace.
    assert_eq!(owners, ["0:0", "1000:1000", "65534:65534"], "{out}");
    assert_eq!(
        fs::read_to_string(shared.join("write-idmapped"))?.trim(),
        "ok",
        "{out}"
    );
    assert_eq!(
        fs::read_to_string(shared.join("write-plain"))?.trim(),
        "refused",
        "the container's root wrote through a plain bind of a host-root directory: {out}"
    );
    // What the container's root writes is owned on disk by the id the mapping gives back.
    let by_root = fs::metadata(data.join("by-root"))?;
    assert_eq!((by_root.uid(), by_root.gid()), (0, 0));
    assert_eq!(fs::read_to_string(data.join("by-root"))?, "made\n");
    let by_1000 = fs::metadata(data.join("by-1000"))?;
    assert_eq!((by_1000.uid(), by_1000.gid()), (1000, 1000));
    // A plain (not id-mapped) mount shows the container's root as the host uid it really is.
    let plain = fs::metadata(shared.join("by-root"))?;
    assert_eq!((plain.uid(), plain.gid()), (100000, 100000));
    assert!(
        !mountinfo_contains(&data.to_string_lossy()),
        "the id-mapped mount outlived the container"
    );
    Ok(())
}

#[test]
fn the_idmap_option_alone_takes_the_containers_mappings() -> Result<()> {
    let mut bundle = Bundle::new()?;
    user_namespace(&mut bundle);
    let data = bundle.path().join("data");
    fs::create_dir_all(&data)?;
    fs::write(data.join("from-host"), "")?;
    fs::create_dir_all(bundle.rootfs().join("data"))?;
    bundle.add_mount(json!({
        "destination": "/data", "type": "bind", "source": data, "options": ["rbind", "idmap"],
    }));
    bundle.args(&["stat", "-c", "%u:%g", "/data/from-host"]);
    let rt = Runtime::new()?;
    let out = rt.run(&bundle, &unique_id("idmap"))?.ok()?;
    assert_eq!(out.stdout.trim(), "0:0", "{out}");
    Ok(())
}

#[test]
fn id_mapped_mount_without_a_user_namespace_is_refused_and_leaves_nothing() -> Result<()> {
    let mut bundle = Bundle::new()?;
    let data = bundle.path().join("data");
    fs::create_dir_all(&data)?;
    fs::create_dir_all(bundle.rootfs().join("data"))?;
    let map: Value = serde_json::from_str(MAP).unwrap();
    bundle.add_mount(json!({
        "destination": "/data", "type": "bind", "source": data,
        "options": ["rbind"], "uidMappings": map, "gidMappings": map,
    }));
    bundle.args(&["true"]);
    let rt = Runtime::new()?;
    let id = unique_id("idmap-bad");
    let out = rt.create(&bundle, &id)?;
    assert!(!out.success(), "created: {out}");
    assert!(
        out.stderr.contains("/data") && out.stderr.contains("user namespace"),
        "unclear error: {out}"
    );
    assert_nothing_left(&rt, &bundle, &id)
}

#[test]
fn id_mapped_mount_with_only_uid_mappings_is_refused_and_leaves_nothing() -> Result<()> {
    let mut bundle = Bundle::new()?;
    user_namespace(&mut bundle);
    let data = bundle.path().join("data");
    fs::create_dir_all(&data)?;
    fs::create_dir_all(bundle.rootfs().join("data"))?;
    let map: Value = serde_json::from_str(MAP).unwrap();
    bundle.add_mount(json!({
        "destination": "/data", "type": "bind", "source": data,
        "options": ["rbind"], "uidMappings": map,
    }));
    bundle.args(&["true"]);
    let rt = Runtime::new()?;
    let id = unique_id("idmap-bad");
    let out = rt.create(&bundle, &id)?;
    assert!(!out.success(), "created: {out}");
    assert!(out.stderr.contains("gidMappings"), "unclear error: {out}");
    assert_nothing_left(&rt, &bundle, &id)
}
