//! rcri end to end: pods and containers through the CRI, as kubelet drives them.

use std::fs;
use std::time::Duration;

use anyhow::{anyhow, Result};
use e2e::cri::{cni_available, container_config, pod_config, v1 as cri, Rcri, TEST_IMAGE};

const EXIT_TIMEOUT: Duration = Duration::from_secs(15);

fn status_code<T: std::fmt::Debug>(r: Result<T, tonic::Status>) -> tonic::Code {
    match r {
        Ok(v) => panic!("expected an error, got {v:?}"),
        Err(s) => s.code(),
    }
}

#[test]
fn version_status_and_runtime_config() -> Result<()> {
    let rcri = Rcri::start()?;
    let mut rs = rcri.rs();
    let v = rcri
        .block_on(rs.version(cri::VersionRequest::default()))?
        .into_inner();
    assert_eq!(v.runtime_name, "rcri");
    assert_eq!(v.runtime_api_version, "v1");
    let status = rcri
        .block_on(rs.status(cri::StatusRequest { verbose: true }))?
        .into_inner();
    let conditions = status
        .status
        .ok_or_else(|| anyhow!("no status"))?
        .conditions;
    let runtime_ready = conditions
        .iter()
        .find(|c| c.r#type == "RuntimeReady")
        .ok_or_else(|| anyhow!("no RuntimeReady"))?;
    assert!(runtime_ready.status, "{runtime_ready:?}");
    let network_ready = conditions
        .iter()
        .find(|c| c.r#type == "NetworkReady")
        .ok_or_else(|| anyhow!("no NetworkReady"))?;
    assert_eq!(network_ready.status, cni_available(), "{network_ready:?}");
    let config = rcri
        .block_on(rs.runtime_config(cri::RuntimeConfigRequest {}))?
        .into_inner();
    assert_eq!(
        config.linux.map(|l| l.cgroup_driver),
        Some(cri::CgroupDriver::Cgroupfs as i32)
    );
    Ok(())
}

#[test]
fn host_network_pod_runs_a_container_and_logs_its_output() -> Result<()> {
    let rcri = Rcri::start()?;
    let pod = pod_config("hostnet", true, &rcri.log_dir());
    let pod_id = rcri
        .run_pod(&pod)
        .map_err(|s| anyhow!("RunPodSandbox: {s:?}\n{}", rcri.server_log()))?;
    let pods = rcri.list_pods(None)?;
    assert_eq!(pods.len(), 1);
    assert_eq!(pods[0].state, cri::PodSandboxState::SandboxReady as i32);

    let c = container_config(
        "echo",
        &["sh", "-c", "echo hello; echo oops >&2; printf tail; exit 3"],
    );
    let t = std::time::Instant::now();
    let id = rcri.run_container(&pod_id, &c, &pod)?;
    eprintln!("TIMING run_container {:?}", t.elapsed());
    let status = rcri.wait_exited(&id, EXIT_TIMEOUT)?;
    eprintln!("TIMING exited {:?}", t.elapsed());
    assert_eq!(status.exit_code, 3);
    assert_eq!(status.reason, "Error");
    assert!(
        status.started_at > 0 && status.finished_at >= status.started_at,
        "{status:?}"
    );
    let log = fs::read_to_string(rcri.log_dir().join("echo.log"))?;
    let lines: Vec<&str> = log.lines().collect();
    assert_eq!(lines.len(), 3, "{log}");
    let mut seen = Vec::new();
    for line in &lines {
        let mut parts = line.splitn(4, ' ');
        let ts = parts.next().unwrap_or("");
        assert!(
            ts.ends_with('Z') && ts.len() == 30,
            "timestamp {ts:?} in {line:?}"
        );
        seen.push(format!(
            "{} {} {}",
            parts.next().unwrap_or(""),
            parts.next().unwrap_or(""),
            parts.next().unwrap_or("")
        ));
    }
    seen.sort();
    assert_eq!(seen, ["stderr F oops", "stdout F hello", "stdout F tail"]);

    // A second container with exit 0 is Completed.
    let ok = rcri.run_container(&pod_id, &container_config("ok", &["true"]), &pod)?;
    let status = rcri.wait_exited(&ok, EXIT_TIMEOUT)?;
    assert_eq!((status.exit_code, status.reason.as_str()), (0, "Completed"));

    let t = std::time::Instant::now();
    rcri.stop_pod(&pod_id)?;
    eprintln!("TIMING stop_pod {:?}", t.elapsed());
    rcri.stop_pod(&pod_id)?;
    let pods = rcri.list_pods(None)?;
    assert_eq!(pods[0].state, cri::PodSandboxState::SandboxNotready as i32);
    rcri.remove_pod(&pod_id)?;
    rcri.remove_pod(&pod_id)?;
    assert!(rcri.list_pods(None)?.is_empty());
    assert!(rcri.list_containers(None)?.is_empty());
    Ok(())
}

#[test]
fn stop_container_escalates_to_sigkill_and_exec_sync_works() -> Result<()> {
    let rcri = Rcri::start()?;
    let pod = pod_config("stopper", true, &rcri.log_dir());
    let pod_id = rcri
        .run_pod(&pod)
        .map_err(|s| anyhow!("RunPodSandbox: {s:?}\n{}", rcri.server_log()))?;
    // trap '' TERM: the shell ignores SIGTERM, so only SIGKILL ends it.
    let c = container_config(
        "stubborn",
        &["sh", "-c", "trap '' TERM; while true; do sleep 1; done"],
    );
    let id = rcri.run_container(&pod_id, &c, &pod)?;
    let status = rcri.container_status(&id)?;
    assert_eq!(status.state, cri::ContainerState::ContainerRunning as i32);

    let out = rcri.exec_sync(&id, &["sh", "-c", "echo out; echo err >&2; exit 7"], 10)?;
    assert_eq!(out.exit_code, 7);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "out\n");
    assert_eq!(String::from_utf8_lossy(&out.stderr), "err\n");

    // A probe that outlives its timeout is killed, and reported as DeadlineExceeded.
    let started = std::time::Instant::now();
    let err = rcri.exec_sync(&id, &["sleep", "1000"], 1);
    assert_eq!(status_code(err), tonic::Code::DeadlineExceeded);
    assert!(started.elapsed() < Duration::from_secs(8));
    // Nothing of it is left: no `sleep 1000` process anywhere.
    std::thread::sleep(Duration::from_millis(300));
    let ps = rcri.exec_sync(&id, &["ps", "-o", "pid,stat,args"], 10)?;
    let ps = String::from_utf8_lossy(&ps.stdout).into_owned();
    assert!(!ps.contains("sleep 1000"), "{ps}");
    assert!(
        !ps.lines().any(|l| l.split_whitespace().nth(1) == Some("Z")),
        "zombie left: {ps}"
    );

    let started = std::time::Instant::now();
    rcri.stop_container(&id, 1)?;
    assert!(started.elapsed() >= Duration::from_secs(1));
    let status = rcri.container_status(&id)?;
    assert_eq!(status.state, cri::ContainerState::ContainerExited as i32);
    assert_eq!(status.exit_code, 137);
    // Idempotent.
    rcri.stop_container(&id, 1)?;
    assert_eq!(
        status_code(rcri.exec_sync(&id, &["true"], 1)),
        tonic::Code::FailedPrecondition
    );
    rcri.remove_container(&id)?;
    rcri.remove_container(&id)?;
    assert_eq!(
        status_code(rcri.container_status(&id)),
        tonic::Code::NotFound
    );
    Ok(())
}

#[test]
fn bad_requests_get_the_right_codes_and_leave_nothing() -> Result<()> {
    let rcri = Rcri::start()?;
    let bogus = "0123456789abcdef";
    assert_eq!(status_code(rcri.pod_status(bogus)), tonic::Code::NotFound);
    // Stop and remove of what is already gone succeed (CRI: idempotent, as critest checks).
    rcri.stop_pod(bogus)?;
    rcri.remove_pod(bogus)?;
    assert_eq!(
        status_code(rcri.container_status(bogus)),
        tonic::Code::NotFound
    );
    assert_eq!(
        status_code(rcri.start_container(bogus)),
        tonic::Code::NotFound
    );
    rcri.stop_container(bogus, 0)?;
    assert_eq!(
        status_code(rcri.exec_sync(bogus, &["true"], 1)),
        tonic::Code::NotFound
    );
    rcri.remove_container(bogus)?;

    let mut no_meta = pod_config("nometa", true, &rcri.log_dir());
    no_meta.metadata = None;
    assert_eq!(
        status_code(rcri.run_pod(&no_meta)),
        tonic::Code::InvalidArgument
    );
    let mut bad_sc = pod_config("badsc", true, &rcri.log_dir());
    if let Some(sc) = bad_sc
        .linux
        .as_mut()
        .and_then(|l| l.security_context.as_mut())
    {
        sc.run_as_group = Some(cri::Int64Value { value: 1000 });
    }
    assert_eq!(
        status_code(rcri.run_pod(&bad_sc)),
        tonic::Code::InvalidArgument
    );

    let pod = pod_config("dup", true, &rcri.log_dir());
    let pod_id = rcri
        .run_pod(&pod)
        .map_err(|s| anyhow!("RunPodSandbox: {s:?}\n{}", rcri.server_log()))?;
    assert_eq!(status_code(rcri.run_pod(&pod)), tonic::Code::AlreadyExists);

    let c = container_config("c", &["sleep", "100"]);
    let id = rcri.create_container(&pod_id, &c, &pod)?;
    assert_eq!(
        status_code(rcri.create_container(&pod_id, &c, &pod)),
        tonic::Code::AlreadyExists
    );
    let mut no_meta = c.clone();
    no_meta.metadata = None;
    assert_eq!(
        status_code(rcri.create_container(&pod_id, &no_meta, &pod)),
        tonic::Code::InvalidArgument
    );
    let mut bad_group = container_config("g", &["true"]);
    bad_group.linux = Some(cri::LinuxContainerConfig {
        security_context: Some(cri::LinuxContainerSecurityContext {
            run_as_group: Some(cri::Int64Value { value: 5 }),
            ..Default::default()
        }),
        resources: None,
    });
    assert_eq!(
        status_code(rcri.create_container(&pod_id, &bad_group, &pod)),
        tonic::Code::InvalidArgument
    );
    assert_eq!(
        status_code(rcri.create_container(bogus, &container_config("x", &["true"]), &pod)),
        tonic::Code::NotFound
    );
    // Only the one good container exists; its bundle is the only one on disk.
    let containers = rcri.list_containers(None)?;
    assert_eq!(containers.len(), 1);
    assert_eq!(containers[0].id, id);
    let bundles = fs::read_dir(rcri.state().join("containers"))?.count();
    assert_eq!(bundles, 1);
    assert_eq!(rcri.list_pods(None)?.len(), 1);
    let sandboxes = fs::read_dir(rcri.state().join("sandboxes"))?.count();
    assert_eq!(sandboxes, 1);
    Ok(())
}

#[test]
fn list_filters_by_id_state_pod_and_labels() -> Result<()> {
    let rcri = Rcri::start()?;
    let pod_a = pod_config("a", true, &rcri.log_dir());
    let pod_b = pod_config("b", true, &rcri.log_dir());
    let a = rcri.run_pod(&pod_a).map_err(|s| anyhow!("{s:?}"))?;
    let b = rcri.run_pod(&pod_b).map_err(|s| anyhow!("{s:?}"))?;
    rcri.stop_pod(&b)?;
    let by_label = |k: &str, v: &str| {
        Some(cri::PodSandboxFilter {
            label_selector: [(k.to_string(), v.to_string())].into_iter().collect(),
            ..Default::default()
        })
    };
    let ids = |pods: Vec<cri::PodSandbox>| pods.into_iter().map(|p| p.id).collect::<Vec<_>>();
    assert_eq!(ids(rcri.list_pods(by_label("app", "a"))?), [a.as_str()]);
    assert!(rcri.list_pods(by_label("app", "zzz"))?.is_empty());
    let ready = Some(cri::PodSandboxFilter {
        state: Some(cri::PodSandboxStateValue {
            state: cri::PodSandboxState::SandboxReady as i32,
        }),
        ..Default::default()
    });
    assert_eq!(ids(rcri.list_pods(ready)?), [a.as_str()]);
    let by_id = Some(cri::PodSandboxFilter {
        id: b[..12].to_string(),
        ..Default::default()
    });
    assert_eq!(ids(rcri.list_pods(by_id)?), [b.as_str()]);

    let c1 = rcri.run_container(&a, &container_config("one", &["sleep", "100"]), &pod_a)?;
    let c2 = rcri.create_container(&a, &container_config("two", &["true"]), &pod_a)?;
    let cids = |cs: Vec<cri::Container>| cs.into_iter().map(|c| c.id).collect::<Vec<_>>();
    let running = Some(cri::ContainerFilter {
        state: Some(cri::ContainerStateValue {
            state: cri::ContainerState::ContainerRunning as i32,
        }),
        ..Default::default()
    });
    assert_eq!(cids(rcri.list_containers(running)?), [c1.as_str()]);
    let created = Some(cri::ContainerFilter {
        state: Some(cri::ContainerStateValue {
            state: cri::ContainerState::ContainerCreated as i32,
        }),
        ..Default::default()
    });
    assert_eq!(cids(rcri.list_containers(created)?), [c2.as_str()]);
    let labelled = Some(cri::ContainerFilter {
        label_selector: [("name".to_string(), "two".to_string())]
            .into_iter()
            .collect(),
        pod_sandbox_id: a.clone(),
        ..Default::default()
    });
    assert_eq!(cids(rcri.list_containers(labelled)?), [c2.as_str()]);
    let other_pod = Some(cri::ContainerFilter {
        pod_sandbox_id: b.clone(),
        ..Default::default()
    });
    assert!(rcri.list_containers(other_pod)?.is_empty());
    Ok(())
}

#[test]
fn the_imported_image_is_listed_and_its_status_known() -> Result<()> {
    let rcri = Rcri::start()?;
    let mut is = rcri.is();
    let images = rcri
        .block_on(is.list_images(cri::ListImagesRequest::default()))?
        .into_inner()
        .images;
    assert!(
        images
            .iter()
            .any(|i| i.repo_tags.iter().any(|t| t == TEST_IMAGE)),
        "{images:?}"
    );
    let status = rcri
        .block_on(is.image_status(cri::ImageStatusRequest {
            image: Some(cri::ImageSpec {
                image: "busybox".into(),
                ..Default::default()
            }),
            verbose: false,
        }))?
        .into_inner();
    assert!(status.image.is_some_and(|i| i.id.starts_with("sha256:")));
    let missing = rcri
        .block_on(is.image_status(cri::ImageStatusRequest {
            image: Some(cri::ImageSpec {
                image: "nothere:1".into(),
                ..Default::default()
            }),
            verbose: false,
        }))?
        .into_inner();
    assert!(missing.image.is_none());
    Ok(())
}

#[test]
fn memory_limit_oom_kill_is_reported_as_oomkilled_137() -> Result<()> {
    let rcri = Rcri::start()?;
    let pod = pod_config("oom", true, &rcri.log_dir());
    let pod_id = rcri
        .run_pod(&pod)
        .map_err(|s| anyhow!("RunPodSandbox: {s:?}\n{}", rcri.server_log()))?;
    let mut c = container_config(
        "hog",
        // Doubles a shell variable until the 16 MiB limit kills it.
        &[
            "sh",
            "-c",
            "x=0123456789abcdef; while true; do x=$x$x; done",
        ],
    );
    c.linux = Some(cri::LinuxContainerConfig {
        resources: Some(cri::LinuxContainerResources {
            memory_limit_in_bytes: 16 << 20,
            ..Default::default()
        }),
        security_context: None,
    });
    let id = rcri.run_container(&pod_id, &c, &pod)?;
    let status = rcri.wait_exited(&id, Duration::from_secs(60))?;
    assert_eq!(status.exit_code, 137, "{status:?}");
    assert_eq!(status.reason, "OOMKilled", "{status:?}");
    Ok(())
}

#[test]
fn security_context_user_capabilities_readonly_rootfs_and_shared_pid() -> Result<()> {
    let rcri = Rcri::start()?;
    let mut pod = pod_config("secure", true, &rcri.log_dir());
    if let Some(ns) = pod
        .linux
        .as_mut()
        .and_then(|l| l.security_context.as_mut())
        .and_then(|s| s.namespace_options.as_mut())
    {
        ns.pid = cri::NamespaceMode::Pod as i32;
    }
    let pod_id = rcri
        .run_pod(&pod)
        .map_err(|s| anyhow!("RunPodSandbox: {s:?}\n{}", rcri.server_log()))?;
    let mut c = container_config("locked", &["sleep", "1000"]);
    c.envs = vec![cri::KeyValue {
        key: "GREETING".into(),
        value: "hi".into(),
    }];
    c.linux = Some(cri::LinuxContainerConfig {
        security_context: Some(cri::LinuxContainerSecurityContext {
            run_as_user: Some(cri::Int64Value { value: 1000 }),
            supplemental_groups: vec![4242],
            readonly_rootfs: true,
            no_new_privs: true,
            capabilities: Some(cri::Capability {
                drop_capabilities: vec!["ALL".into()],
                add_capabilities: vec!["NET_BIND_SERVICE".into()],
                ..Default::default()
            }),
            namespace_options: Some(cri::NamespaceOption {
                pid: cri::NamespaceMode::Pod as i32,
                network: cri::NamespaceMode::Node as i32,
                ..Default::default()
            }),
            ..Default::default()
        }),
        resources: None,
    });
    let id = rcri.run_container(&pod_id, &c, &pod)?;
    let sh = |script: &str| -> Result<(i32, String)> {
        let out = rcri
            .exec_sync(&id, &["sh", "-c", script], 10)
            .map_err(|s| anyhow!("ExecSync {script:?}: {s:?}"))?;
        Ok((
            out.exit_code,
            String::from_utf8_lossy(&out.stdout).trim().to_string(),
        ))
    };
    // uid 1000 is `user` in the image's /etc/passwd, whose primary group is 1000.
    assert_eq!(sh("id -u; id -g")?.1, "1000\n1000");
    assert!(sh("id -G")?.1.split_whitespace().any(|g| g == "4242"));
    assert_eq!(sh("echo $GREETING")?.1, "hi");
    // Only CAP_NET_BIND_SERVICE (bit 10) is in the bounding set.
    assert_eq!(
        sh("grep CapBnd /proc/self/status")?.1,
        "CapBnd:\t0000000000000400"
    );
    assert_eq!(sh("grep NoNewPrivs /proc/self/status")?.1, "NoNewPrivs:\t1");
    assert_ne!(sh("touch /should-fail")?.0, 0);
    // The pod's PID namespace is shared: the infra process is visible.
    assert!(sh("ps -o args")?.1.contains("/rcri pause"));
    // Masked by default.
    assert_eq!(sh("cat /proc/kcore | wc -c")?.1, "0");
    Ok(())
}

#[test]
fn seccomp_runtime_default_filters_and_unconfined_does_not() -> Result<()> {
    let rcri = Rcri::start()?;
    let pod = pod_config("seccomp", true, &rcri.log_dir());
    let pod_id = rcri
        .run_pod(&pod)
        .map_err(|s| anyhow!("RunPodSandbox: {s:?}\n{}", rcri.server_log()))?;
    let with_profile = |name: &str, args: &[&str], kind: cri::security_profile::ProfileType| {
        let mut c = container_config(name, args);
        c.linux = Some(cri::LinuxContainerConfig {
            security_context: Some(cri::LinuxContainerSecurityContext {
                seccomp: Some(cri::SecurityProfile {
                    profile_type: kind as i32,
                    localhost_ref: String::new(),
                }),
                ..Default::default()
            }),
            resources: None,
        });
        c
    };
    use cri::security_profile::ProfileType;

    // The container's own process runs under the filter: a pipeline, ls, cat work; creating a
    // mount namespace does not.
    let script = "set -e; grep -q 'Seccomp:.2' /proc/self/status; ls / | grep -q bin; \
                  cat /etc/hostname >/dev/null; if unshare -m true; then exit 9; fi; echo ok";
    let one_shot = with_profile(
        "oneshot",
        &["sh", "-c", script],
        ProfileType::RuntimeDefault,
    );
    let id = rcri.run_container(&pod_id, &one_shot, &pod)?;
    let status = rcri.wait_exited(&id, EXIT_TIMEOUT)?;
    let log = fs::read_to_string(rcri.log_dir().join("oneshot.log")).unwrap_or_default();
    assert_eq!(status.exit_code, 0, "{status:?}\n{log}");
    assert!(log.contains("stdout F ok"), "{log}");

    let confined = with_profile("confined", &["sleep", "1000"], ProfileType::RuntimeDefault);
    let id = rcri
        .run_container(&pod_id, &confined, &pod)
        .map_err(|e| anyhow!("{e:?}\n{}", rcri.server_log()))?;
    let sh = |id: &str, script: &str| -> Result<(i32, String, String)> {
        let out = rcri
            .exec_sync(id, &["sh", "-c", script], 10)
            .map_err(|s| anyhow!("ExecSync {script:?}: {s:?}"))?;
        Ok((
            out.exit_code,
            String::from_utf8_lossy(&out.stdout).trim().to_string(),
            String::from_utf8_lossy(&out.stderr).trim().to_string(),
        ))
    };
    assert_eq!(sh(&id, "grep Seccomp: /proc/self/status")?.1, "Seccomp:\t2");
    let (code, out, err) = sh(
        &id,
        "ls / | sort | head -n 1; cat /etc/hostname; sleep 0.1; echo done",
    )?;
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.ends_with("done"), "{out}\n{err}");
    let (code, out, err) = sh(&id, "unshare -m true")?;
    assert_ne!(code, 0, "unshare succeeded under RuntimeDefault: {out}");
    assert!(
        err.contains("Operation not permitted") || err.contains("Function not implemented"),
        "{err}"
    );

    let free = with_profile("free", &["sleep", "1000"], ProfileType::Unconfined);
    let id = rcri.run_container(&pod_id, &free, &pod)?;
    assert_eq!(sh(&id, "grep Seccomp: /proc/self/status")?.1, "Seccomp:\t0");
    Ok(())
}

/// Containers of one pod share its /dev/shm (POSIX shared memory between a process and its
/// sidecar), which lives exactly as long as the pod; a host-IPC pod sees the host's.
#[test]
fn containers_of_a_pod_share_its_dev_shm() -> Result<()> {
    let rcri = Rcri::start()?;
    let pod = pod_config("shm", true, &rcri.log_dir());
    let pod_id = rcri
        .run_pod(&pod)
        .map_err(|s| anyhow!("RunPodSandbox: {s:?}\n{}", rcri.server_log()))?;
    let writer = rcri.run_container(
        &pod_id,
        &container_config(
            "writer",
            &["sh", "-c", "echo from-writer >/dev/shm/note; sleep 300"],
        ),
        &pod,
    )?;
    let reader = rcri.run_container(
        &pod_id,
        &container_config("reader", &["sleep", "300"]),
        &pod,
    )?;
    let deadline = std::time::Instant::now() + EXIT_TIMEOUT;
    let seen = loop {
        let r = rcri.exec_sync(&reader, &["cat", "/dev/shm/note"], 10)?;
        if r.exit_code == 0 || std::time::Instant::now() > deadline {
            break r;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(
        String::from_utf8_lossy(&seen.stdout).trim(),
        "from-writer",
        "{}",
        String::from_utf8_lossy(&seen.stderr)
    );
    // It is a tmpfs of the pod's, not the host's /dev/shm.
    assert!(!std::path::Path::new("/dev/shm/note").exists());
    let df = rcri.exec_sync(&writer, &["sh", "-c", "grep ' /dev/shm ' /proc/mounts"], 10)?;
    let line = String::from_utf8_lossy(&df.stdout).to_string();
    assert!(
        line.contains("tmpfs")
            && line.contains("nosuid")
            && line.contains("nodev")
            && line.contains("noexec"),
        "{line}"
    );

    let shm_mounts = || {
        e2e::mounts_under(&rcri.state())
            .into_iter()
            .filter(|m| m.ends_with("shm"))
            .count()
    };
    assert_eq!(
        shm_mounts(),
        1,
        "the pod's shm is mounted under rcri's state dir"
    );
    rcri.stop_pod(&pod_id)?;
    assert_eq!(shm_mounts(), 0, "StopPodSandbox unmounts the pod's shm");
    rcri.remove_pod(&pod_id)?;

    // A pod in the host's IPC namespace uses the host's /dev/shm.
    let mut host_ipc = pod_config("hostipc", true, &rcri.log_dir());
    if let Some(opts) = host_ipc
        .linux
        .as_mut()
        .and_then(|l| l.security_context.as_mut())
        .and_then(|s| s.namespace_options.as_mut())
    {
        opts.ipc = cri::NamespaceMode::Node as i32;
    } else {
        return Err(anyhow!("pod_config has no namespace options to set"));
    }
    let pod_id = rcri.run_pod(&host_ipc).map_err(|s| anyhow!("{s:?}"))?;
    assert_eq!(shm_mounts(), 0, "a host-IPC pod has no shm of its own");
    let marker = format!("/dev/shm/rcri-e2e-{}", std::process::id());
    fs::write(&marker, "host")?;
    let c = rcri.run_container(
        &pod_id,
        &container_config("c", &["sleep", "300"]),
        &host_ipc,
    )?;
    let r = rcri.exec_sync(&c, &["cat", &marker], 10);
    let _ = fs::remove_file(&marker);
    assert_eq!(String::from_utf8_lossy(&r?.stdout), "host");
    rcri.stop_pod(&pod_id)?;
    rcri.remove_pod(&pod_id)?;
    Ok(())
}

/// Privileged and add-ALL containers get every capability rcri itself may hand out: on a host
/// (or in a container) whose bounding set lacks some, asking for those would fail the start.
#[test]
fn privileged_and_add_all_get_the_capabilities_rcri_holds() -> Result<()> {
    let bounding = fs::read_to_string("/proc/self/status")?
        .lines()
        .find_map(|l| l.strip_prefix("CapBnd:").map(|v| v.trim().to_string()))
        .ok_or_else(|| anyhow!("no CapBnd"))?;
    let rcri = Rcri::start()?;
    let pod = pod_config("caps", true, &rcri.log_dir());
    let pod_id = rcri
        .run_pod(&pod)
        .map_err(|s| anyhow!("RunPodSandbox: {s:?}\n{}", rcri.server_log()))?;
    for (name, privileged, add_all) in [("priv", true, false), ("addall", false, true)] {
        let mut c = container_config(name, &["sleep", "300"]);
        c.linux = Some(cri::LinuxContainerConfig {
            security_context: Some(cri::LinuxContainerSecurityContext {
                privileged,
                capabilities: add_all.then(|| cri::Capability {
                    add_capabilities: vec!["ALL".into()],
                    ..Default::default()
                }),
                ..Default::default()
            }),
            resources: None,
        });
        let id = rcri
            .run_container(&pod_id, &c, &pod)
            .map_err(|e| anyhow!("{name}: {e:?}\n{}", rcri.server_log()))?;
        let out = rcri.exec_sync(&id, &["grep", "CapEff", "/proc/self/status"], 10)?;
        let eff = String::from_utf8_lossy(&out.stdout).to_string();
        assert_eq!(
            eff.trim().trim_start_matches("CapEff:").trim(),
            bounding,
            "{name}: the container's effective set is rcri's bounding set"
        );
    }
    rcri.stop_pod(&pod_id)?;
    rcri.remove_pod(&pod_id)?;
    Ok(())
}
