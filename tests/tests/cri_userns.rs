//! Pods with their own user namespace (Kubernetes hostUsers: false), through the CRI: the
//! containers run as the root of the pod's mapping, own their rootfs and their volumes through
//! id-mapped mounts, share the pod's user namespace, and bad options are refused up front.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::time::Duration;

use anyhow::{anyhow, bail, Result};
use e2e::cri::{cni_available, container_config, pod_config, v1 as cri, Rcri};

const EXIT_TIMEOUT: Duration = Duration::from_secs(30);
const HOST_ID: u32 = 200000;
const LENGTH: u32 = 65536;

fn mapping(container_id: u32, host_id: u32, length: u32) -> cri::IdMapping {
    cri::IdMapping {
        container_id,
        host_id,
        length,
    }
}

fn with_userns(pod: &mut cri::PodSandboxConfig, userns: cri::UserNamespace) {
    if let Some(o) = pod
        .linux
        .as_mut()
        .and_then(|l| l.security_context.as_mut())
        .and_then(|s| s.namespace_options.as_mut())
    {
        o.userns_options = Some(userns);
    }
}

fn pod_userns() -> cri::UserNamespace {
    cri::UserNamespace {
        mode: cri::NamespaceMode::Pod as i32,
        uids: vec![mapping(0, HOST_ID, LENGTH)],
        gids: vec![mapping(0, HOST_ID, LENGTH)],
    }
}

/// The containers inherit the pod's namespace options, as kubelet passes them.
fn in_pod(mut c: cri::ContainerConfig, pod: &cri::PodSandboxConfig) -> cri::ContainerConfig {
    let options = pod
        .linux
        .as_ref()
        .and_then(|l| l.security_context.as_ref())
        .and_then(|s| s.namespace_options.clone());
    let linux = c.linux.get_or_insert_with(Default::default);
    linux
        .security_context
        .get_or_insert_with(Default::default)
        .namespace_options = options;
    c
}

#[test]
fn userns_pod_runs_as_its_mapped_root_owning_rootfs_and_volume() -> Result<()> {
    if !cni_available() {
        bail!("CNI plugins missing: run hack/setup.sh (containernetworking-plugins)");
    }
    let rcri = Rcri::start()?;
    let mut rs = rcri.rs();
    let status = rcri
        .block_on(rs.status(cri::StatusRequest { verbose: false }))?
        .into_inner();
    let default_handler = status
        .runtime_handlers
        .iter()
        .find(|h| h.name.is_empty())
        .ok_or_else(|| anyhow!("no default runtime handler: {status:?}"))?;
    assert!(
        default_handler
            .features
            .as_ref()
            .is_some_and(|f| f.user_namespaces),
        "{default_handler:?}"
    );

    let mut pod = pod_config("userns", false, &rcri.log_dir());
    with_userns(&mut pod, pod_userns());
    // A net sysctl with ids in it: set by the infra in a network namespace of the pod's user
    // namespace, its group ids are the pod's.
    if let Some(linux) = pod.linux.as_mut() {
        linux
            .sysctls
            .insert("net.ipv4.ping_group_range".into(), "0 65535".into());
    }
    let pod_id = rcri
        .run_pod(&pod)
        .map_err(|s| anyhow!("RunPodSandbox: {s:?}\n{}", rcri.server_log()))?;

    // A volume only host root may write, holding a file of host root's.
    let vol = rcri.dir.path().join("vol");
    fs::create_dir_all(&vol)?;
    fs::set_permissions(&vol, fs::Permissions::from_mode(0o755))?;
    fs::write(vol.join("from-host"), "host\n")?;

    let script = "cat /proc/self/uid_map; cat /proc/self/gid_map; \
         echo uid=$(id -u) gid=$(id -g); \
         echo volume-owner=$(stat -c %u:%g /vol/from-host); \
         echo rootfs > /written && echo rootfs-owner=$(stat -c %u /written); \
         echo image-owner=$(stat -c %u /bin); \
         echo volume > /vol/by-root && touch /vol/by-1000 && chown 1000:1000 /vol/by-1000 \
           && echo volume-written; \
         test -s /etc/hosts && test -r /etc/resolv.conf && echo hostname=$(cat /etc/hostname); \
         echo userns=$(readlink /proc/self/ns/user); \
         echo ping=$(cat /proc/sys/net/ipv4/ping_group_range); \
         echo sys-net=$(ls /sys/class/net | sort | tr '\n' ' '); \
         echo proc-net=$(sed -n '3,$p' /proc/net/dev | cut -d: -f1 | tr -d ' ' | sort | tr '\n' ' ')";
    let mut c = in_pod(container_config("main", &["sh", "-c", script]), &pod);
    c.mounts.push(cri::Mount {
        container_path: "/vol".into(),
        host_path: vol.display().to_string(),
        ..Default::default()
    });
    let id = rcri.run_container(&pod_id, &c, &pod)?;
    let st = rcri.wait_exited(&id, EXIT_TIMEOUT)?;
    let log = fs::read_to_string(rcri.log_dir().join("main.log"))?;
    assert_eq!(st.exit_code, 0, "{log}\n{}", rcri.server_log());
    eprintln!("container output:\n{log}");
    let lines: Vec<&str> = log
        .lines()
        .filter_map(|l| l.splitn(4, ' ').nth(3))
        .collect();
    let fields = |l: &str| l.split_whitespace().map(String::from).collect::<Vec<_>>();
    let want = vec!["0".to_string(), HOST_ID.to_string(), LENGTH.to_string()];
    assert_eq!(fields(lines[0]), want, "uid_map: {log}");
    assert_eq!(fields(lines[1]), want, "gid_map: {log}");
    for expected in [
        "uid=0 gid=0",
        // Host root's file is the pod root's through the id-mapped volume...
        "volume-owner=0:0",
        // ...and so are the image's files and what it writes in its rootfs.
        "rootfs-owner=0",
        "image-owner=0",
        "volume-written",
        "hostname=userns",
        "ping=0 65535",
    ] {
        assert!(lines.contains(&expected), "no {expected:?} in:\n{log}");
    }
    // What the pod's root wrote in the volume is host root's again, uid 1000's is 1000's: the
    // files keep the owners the pod sees, not the pod's host range.
    let by_root = fs::metadata(vol.join("by-root"))?;
    assert_eq!((by_root.uid(), by_root.gid()), (0, 0));
    assert_eq!(fs::read_to_string(vol.join("by-root"))?, "volume\n");
    let by_1000 = fs::metadata(vol.join("by-1000"))?;
    assert_eq!((by_1000.uid(), by_1000.gid()), (1000, 1000));
    // /sys is the pod's own sysfs, showing the pod's interfaces, not a bind of the host's.
    let sys_net = lines.iter().find_map(|l| l.strip_prefix("sys-net="));
    let proc_net = lines.iter().find_map(|l| l.strip_prefix("proc-net="));
    assert!(
        sys_net.is_some_and(|s| s.contains("eth0")) && sys_net == proc_net,
        "{log}"
    );
    let userns = lines
        .iter()
        .find_map(|l| l.strip_prefix("userns="))
        .ok_or_else(|| anyhow!("no userns line: {log}"))?
        .to_string();
    assert_ne!(
        userns,
        fs::read_link("/proc/self/ns/user")?.display().to_string(),
        "the container runs in the host's user namespace"
    );

    // A second container of the pod is in the same user namespace, its process on the host
    // owned by the pod's host range.
    let c2 = in_pod(
        container_config(
            "peer",
            &["sh", "-c", "readlink /proc/self/ns/user; exec sleep 60"],
        ),
        &pod,
    );
    let id2 = rcri.run_container(&pod_id, &c2, &pod)?;
    let log2 = rcri.log_dir().join("peer.log");
    let deadline = std::time::Instant::now() + EXIT_TIMEOUT;
    let peer_ns = loop {
        let text = fs::read_to_string(&log2).unwrap_or_default();
        if let Some(ns) = text.lines().find_map(|l| l.splitn(4, ' ').nth(3)) {
            break ns.to_string();
        }
        if std::time::Instant::now() > deadline {
            bail!("peer wrote nothing\n{}", rcri.server_log());
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(
        peer_ns, userns,
        "the pod's containers are in different user namespaces"
    );
    let sleeping = fs::read_dir("/proc")?
        .flatten()
        .filter(|e| {
            fs::read_link(e.path().join("ns/user")).is_ok_and(|l| l.display().to_string() == userns)
        })
        .filter_map(|e| fs::metadata(e.path()).ok())
        .map(|m| m.uid())
        .collect::<Vec<_>>();
    assert!(
        !sleeping.is_empty() && sleeping.iter().all(|&u| u == HOST_ID),
        "owners on the host of the pod's processes: {sleeping:?}"
    );

    // An exec joins it too (the runtime enters the pod's network namespace, owned by the host,
    // before the user namespace that could no longer enter it).
    let exec = rcri
        .exec_sync(
            &id2,
            &["sh", "-c", "id -u; readlink /proc/self/ns/user"],
            10,
        )
        .map_err(|s| anyhow!("ExecSync: {s:?}\n{}", rcri.server_log()))?;
    let exec_out = String::from_utf8_lossy(&exec.stdout);
    assert_eq!(exec.exit_code, 0, "{exec:?}");
    assert_eq!(
        exec_out.lines().collect::<Vec<_>>(),
        ["0", userns.as_str()],
        "{exec:?}"
    );

    rcri.stop_container(&id2, 0)
        .map_err(|s| anyhow!("StopContainer: {s:?}"))?;
    rcri.remove_container(&id2)
        .map_err(|s| anyhow!("RemoveContainer: {s:?}"))?;
    rcri.remove_container(&id)
        .map_err(|s| anyhow!("RemoveContainer: {s:?}"))?;
    rcri.stop_pod(&pod_id)
        .map_err(|s| anyhow!("StopPodSandbox: {s:?}"))?;
    rcri.remove_pod(&pod_id)
        .map_err(|s| anyhow!("RemovePodSandbox: {s:?}"))?;
    let root = rcri.root().display().to_string();
    assert!(
        !e2e::mountinfo_contains(&root),
        "mounts left under {root} (id-mapped layers?)"
    );
    Ok(())
}

#[test]
fn bad_userns_options_are_invalid_argument_and_leave_nothing() -> Result<()> {
    let rcri = Rcri::start()?;
    let full = mapping(0, HOST_ID, LENGTH);
    let pod_mode = cri::NamespaceMode::Pod as i32;
    let cases: Vec<(&str, cri::UserNamespace, bool)> = vec![
        (
            "two mappings",
            cri::UserNamespace {
                mode: pod_mode,
                uids: vec![full, mapping(LENGTH, HOST_ID + LENGTH, 10)],
                gids: vec![full],
            },
            false,
        ),
        (
            "root not mapped",
            cri::UserNamespace {
                mode: pod_mode,
                uids: vec![mapping(1, HOST_ID, LENGTH)],
                gids: vec![mapping(1, HOST_ID, LENGTH)],
            },
            false,
        ),
        (
            "no gid mapping",
            cri::UserNamespace {
                mode: pod_mode,
                uids: vec![full],
                gids: vec![],
            },
            false,
        ),
        (
            "empty mapping",
            cri::UserNamespace {
                mode: pod_mode,
                uids: vec![mapping(0, HOST_ID, 0)],
                gids: vec![full],
            },
            false,
        ),
        (
            "mode CONTAINER",
            cri::UserNamespace {
                mode: cri::NamespaceMode::Container as i32,
                ..Default::default()
            },
            false,
        ),
        (
            "mode TARGET",
            cri::UserNamespace {
                mode: cri::NamespaceMode::Target as i32,
                ..Default::default()
            },
            false,
        ),
        ("host network", pod_userns(), true),
    ];
    for (what, userns, host_network) in cases {
        let mut pod = pod_config("baduserns", host_network, &rcri.log_dir());
        with_userns(&mut pod, userns);
        match rcri.run_pod(&pod) {
            Ok(id) => panic!("{what}: pod {id} was created"),
            Err(s) => assert_eq!(s.code(), tonic::Code::InvalidArgument, "{what}: {s:?}"),
        }
    }
    assert!(rcri.list_pods(None)?.is_empty());
    for dir in ["sandboxes", "netns"] {
        let left = fs::read_dir(rcri.state().join(dir))
            .map(|d| d.count())
            .unwrap_or(0);
        assert_eq!(left, 0, "{dir} left behind");
    }
    assert!(!e2e::mountinfo_contains(&rcri.root().display().to_string()));
    Ok(())
}
