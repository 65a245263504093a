//! rcri end to end: recursive read-only mounts (CRI Mount.recursive_read_only → OCI `rro`) and
//! SupplementalGroupsPolicy (Merge / Strict), with the identity ContainerStatus.user reports.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{anyhow, Result};
use e2e::cri::{container_config, pod_config, v1 as cri, Rcri};
use e2e::temp_dir;

/// A tmpfs mounted on the host at `at`, unmounted (lazily) when dropped.
struct HostSubmount(PathBuf);

impl HostSubmount {
    fn new(at: PathBuf) -> Result<HostSubmount> {
        fs::create_dir_all(&at)?;
        nix::mount::mount(
            Some("tmpfs"),
            &at,
            Some("tmpfs"),
            nix::mount::MsFlags::empty(),
            Some("size=1m,mode=777"),
        )?;
        Ok(HostSubmount(at))
    }
}

impl Drop for HostSubmount {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(&self.0, nix::mount::MntFlags::MNT_DETACH);
    }
}

fn start_pod(rcri: &Rcri, name: &str) -> Result<(String, cri::PodSandboxConfig)> {
    let pod = pod_config(name, true, &rcri.log_dir());
    let id = rcri
        .run_pod(&pod)
        .map_err(|s| anyhow!("RunPodSandbox: {s:?}\n{}", rcri.server_log()))?;
    Ok((id, pod))
}

fn volume(
    host: &Path,
    readonly: bool,
    rro: bool,
    propagation: cri::MountPropagation,
) -> cri::Mount {
    cri::Mount {
        container_path: "/mnt".into(),
        host_path: host.display().to_string(),
        readonly,
        recursive_read_only: rro,
        propagation: propagation as i32,
        ..Default::default()
    }
}

/// `sh -c script` in the container: (exit code, stdout + stderr).
fn sh(rcri: &Rcri, id: &str, script: &str) -> Result<(i32, String)> {
    let out = rcri
        .exec_sync(id, &["sh", "-c", script], 10)
        .map_err(|s| anyhow!("ExecSync {script:?}: {s:?}"))?;
    Ok((
        out.exit_code,
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    ))
}

const WRITE_BOTH: &str = "(touch /mnt/top) 2>&1; echo top=$?; (touch /mnt/sub/f) 2>&1; echo sub=$?";

#[test]
fn status_reports_rro_and_supplemental_groups_policy() -> Result<()> {
    let rcri = Rcri::start()?;
    let mut rs = rcri.rs();
    for verbose in [false, true] {
        let status = rcri
            .block_on(rs.status(cri::StatusRequest { verbose }))?
            .into_inner();
        let handler = status
            .runtime_handlers
            .iter()
            .find(|h| h.name.is_empty())
            .ok_or_else(|| anyhow!("no default runtime handler: {status:?}"))?;
        let features = handler
            .features
            .as_ref()
            .ok_or_else(|| anyhow!("{status:?}"))?;
        // rcrun lists rro in `rcrun features` on this kernel.
        assert!(features.recursive_read_only_mounts, "{status:?}");
        assert!(
            status
                .features
                .as_ref()
                .is_some_and(|f| f.supplemental_groups_policy),
            "{status:?}"
        );
    }
    Ok(())
}

#[test]
fn rro_mount_is_read_only_all_the_way_down_where_readonly_is_not() -> Result<()> {
    let src = temp_dir("cri-rro")?;
    let sub = HostSubmount::new(src.path().join("sub"))?;
    let rcri = Rcri::start()?;
    let (pod_id, pod) = start_pod(&rcri, "rro")?;

    let mut c = container_config("rro", &["sleep", "1000"]);
    c.mounts = vec![volume(
        src.path(),
        true,
        true,
        cri::MountPropagation::PropagationPrivate,
    )];
    let id = rcri.run_container(&pod_id, &c, &pod)?;
    let (_, out) = sh(&rcri, &id, WRITE_BOTH)?;
    assert!(out.contains("top=1") && out.contains("sub=1"), "{out}");
    assert_eq!(out.matches("Read-only file system").count(), 2, "{out}");
    let (_, mountinfo) = sh(&rcri, &id, "grep ' /mnt/sub ' /proc/self/mountinfo")?;
    assert!(
        mountinfo
            .split_whitespace()
            .nth(5)
            .is_some_and(|o| o.split(',').any(|o| o == "ro")),
        "{mountinfo}"
    );
    assert!(!src.path().join("top").exists() && !sub.0.join("f").exists());

    // Plain readonly: the top is read-only, the submount rbind brought along is not.
    let mut c = container_config("ro", &["sleep", "1000"]);
    c.mounts = vec![volume(
        src.path(),
        true,
        false,
        cri::MountPropagation::PropagationPrivate,
    )];
    let id = rcri.run_container(&pod_id, &c, &pod)?;
    let (_, out) = sh(&rcri, &id, WRITE_BOTH)?;
    assert!(out.contains("top=1") && out.contains("sub=0"), "{out}");
    assert!(sub.0.join("f").exists());
    rcri.stop_pod(&pod_id)
        .map_err(|s| anyhow!("StopPodSandbox: {s:?}"))?;
    rcri.remove_pod(&pod_id)
        .map_err(|s| anyhow!("RemovePodSandbox: {s:?}"))?;
    Ok(())
}

#[test]
fn rro_needs_readonly_and_private_propagation() -> Result<()> {
    let src = temp_dir("cri-rro-bad")?;
    let rcri = Rcri::start()?;
    let (pod_id, pod) = start_pod(&rcri, "rro-bad")?;
    for (readonly, propagation) in [
        (false, cri::MountPropagation::PropagationPrivate),
        (true, cri::MountPropagation::PropagationHostToContainer),
        (true, cri::MountPropagation::PropagationBidirectional),
    ] {
        let mut c = container_config("bad", &["true"]);
        c.mounts = vec![volume(src.path(), readonly, true, propagation)];
        match rcri.create_container(&pod_id, &c, &pod) {
            Ok(id) => panic!("readonly {readonly}, {propagation:?}: created {id}"),
            Err(s) => assert_eq!(
                s.code(),
                tonic::Code::InvalidArgument,
                "readonly {readonly}, {propagation:?}: {s:?}"
            ),
        }
    }
    // Nothing was made: no container, no bundle.
    assert!(rcri.list_containers(None)?.is_empty());
    let bundles = rcri.state().join("containers");
    assert!(
        !bundles.exists() || fs::read_dir(&bundles)?.next().is_none(),
        "bundles left in {}",
        bundles.display()
    );
    Ok(())
}

/// Polls ContainerStatus until the container runs and its log has a line; returns the status.
fn wait_running_with_log(rcri: &Rcri, id: &str, log: &Path) -> Result<cri::ContainerStatus> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let status = rcri
            .container_status(id)
            .map_err(|s| anyhow!("ContainerStatus: {s:?}"))?;
        let logged = fs::read_to_string(log).is_ok_and(|l| !l.is_empty());
        if status.state == cri::ContainerState::ContainerRunning as i32 && logged {
            return Ok(status);
        }
        if Instant::now() > deadline {
            return Err(anyhow!(
                "not running with a log line: {status:?}\n{}",
                rcri.server_log()
            ));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn sorted_user(status: &cri::ContainerStatus) -> Option<(i64, i64, Vec<i64>)> {
    let linux = status.user.as_ref()?.linux.as_ref()?;
    let mut groups = linux.supplemental_groups.clone();
    groups.sort();
    Some((linux.uid, linux.gid, groups))
}

#[test]
fn supplemental_groups_policy_merge_and_strict() -> Result<()> {
    let rcri = Rcri::start()?;
    let (pod_id, pod) = start_pod(&rcri, "groups")?;
    // uid 1000 is `user`, primary group 1000, and a member of 50000 in the image's /etc/group.
    for (policy, groups) in [
        (
            cri::SupplementalGroupsPolicy::Merge,
            vec![1000, 1234, 50000],
        ),
        (cri::SupplementalGroupsPolicy::Strict, vec![1000, 1234]),
    ] {
        let name = format!("groups-{}", policy.as_str_name().to_lowercase());
        let mut c = container_config(&name, &["sh", "-c", "id -G; sleep 1000"]);
        c.linux = Some(cri::LinuxContainerConfig {
            security_context: Some(cri::LinuxContainerSecurityContext {
                run_as_user: Some(cri::Int64Value { value: 1000 }),
                supplemental_groups: vec![1234],
                supplemental_groups_policy: policy as i32,
                ..Default::default()
            }),
            resources: None,
        });
        let id = rcri.run_container(&pod_id, &c, &pod)?;
        let log = rcri.log_dir().join(format!("{name}.log"));
        let status = wait_running_with_log(&rcri, &id, &log)?;
        let want: Vec<String> = groups.iter().map(i64::to_string).collect();
        let want = want.join(" ");
        assert_eq!(
            sorted_user(&status),
            Some((1000, 1000, groups.clone())),
            "{policy:?}: {status:?}"
        );
        let first = fs::read_to_string(&log)?;
        assert!(
            first.trim_end().ends_with(&format!(" {want}")),
            "{policy:?}: {first}"
        );
        let (code, exec) = sh(&rcri, &id, "id -G")?;
        assert_eq!((code, exec.trim()), (0, want.as_str()), "{policy:?}");
        // Exited, the container keeps reporting who it ran as.
        rcri.stop_container(&id, 0)
            .map_err(|s| anyhow!("StopContainer: {s:?}"))?;
        let status = rcri.wait_exited(&id, Duration::from_secs(15))?;
        assert_eq!(
            sorted_user(&status),
            Some((1000, 1000, groups)),
            "{policy:?} exited: {status:?}"
        );
    }
    Ok(())
}
