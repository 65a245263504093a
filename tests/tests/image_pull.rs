//! rcri's PullImage end to end: a docker-registry on 127.0.0.1:5000 inside rcri's own network
//! namespace (so the port is always free and nothing leaves the machine), hack/mkimage.sh's test
//! images pushed to it with skopeo, rcri configured with a docker.io mirror pointing there; then
//! PullImage / ImageStatus over gRPC, and a pod running the pulled image.

use std::fs;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use e2e::cri::{cni_available, container_config, pod_config, v1 as cri, Rcri};

const DOCKER_REGISTRY: &str = "/usr/bin/docker-registry";
const SKOPEO: &str = "/usr/bin/skopeo";
const REGISTRY: &str = "127.0.0.1:5000";

/// The registry process (started by this test; killed by its pid on drop).
struct RegistryProcess(Child);

impl Drop for RegistryProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_registry(rcri: &Rcri, dir: &Path) -> Result<RegistryProcess> {
    let config = dir.join("registry.yml");
    fs::write(
        &config,
        format!(
            "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: {REGISTRY}\n",
            dir.join("registry").display()
        ),
    )?;
    let log = fs::File::create(dir.join("registry.log"))?;
    let child = Command::new("ip")
        .args(["netns", "exec", rcri.netns.name(), DOCKER_REGISTRY, "serve"])
        .arg(&config)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .context("failed to start docker-registry")?;
    Ok(RegistryProcess(child))
}

/// skopeo, inside the namespace, from the test-images layout to the registry.
fn push(rcri: &Rcri, layout: &Path, name: &str, repo: &str) -> Result<()> {
    let src = format!("oci:{}:{name}", layout.display());
    let dst = format!("docker://{REGISTRY}/{repo}:latest");
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let out = rcri.in_netns(&[
            SKOPEO,
            "--insecure-policy",
            "copy",
            "--all",
            "--dest-tls-verify=false",
            &src,
            &dst,
        ])?;
        if out.status.success() {
            return Ok(());
        }
        // The registry may still be starting.
        if Instant::now() > deadline {
            bail!("skopeo copy {src} {dst}: {}", out.stderr);
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn pull_image_through_a_mirror_and_run_a_pod_from_it() -> Result<()> {
    for tool in [DOCKER_REGISTRY, SKOPEO] {
        if !Path::new(tool).is_file() {
            eprintln!("skipped: {tool} missing (hack/setup.sh installs it)");
            return Ok(());
        }
    }
    let image_dir = e2e::image()?;
    let layout = image_dir.join("test-images");
    let dir = e2e::temp_dir("pull")?;
    let config = dir.path().join("rcri.toml");
    // Never docker.io itself: the mirror is the only endpoint.
    fs::write(
        &config,
        format!(
            "[registry]\ninsecure = [\"{REGISTRY}\"]\nconnect_timeout_secs = 2\nread_timeout_secs = 5\n\
             [registry.mirrors.\"docker.io\"]\nendpoints = [\"http://{REGISTRY}\"]\nfallback_to_upstream = false\n"
        ),
    )?;
    let rcri = Rcri::start_with_args(&["--config".as_ref(), config.as_os_str()])?;
    let _registry = start_registry(&rcri, dir.path())?;
    push(&rcri, &layout, "entrypoint", "rcri-test/entrypoint")?;
    push(&rcri, &layout, "layers", "rcri-test/layers")?;

    let mut is = rcri.is();
    let started = Instant::now();
    let pulled = rcri
        .block_on(is.pull_image(cri::PullImageRequest {
            image: Some(cri::ImageSpec {
                image: "rcri-test/layers".into(),
                ..Default::default()
            }),
            ..Default::default()
        }))
        .map_err(|s| anyhow!("PullImage: {s:?}\n{}", rcri.server_log()))?
        .into_inner();
    eprintln!(
        "timing: PullImage of the 5-layer image over gRPC: {:?}",
        started.elapsed()
    );
    assert!(pulled.image_ref.starts_with("sha256:"), "{pulled:?}");
    let status = rcri
        .block_on(is.image_status(cri::ImageStatusRequest {
            image: Some(cri::ImageSpec {
                image: "docker.io/rcri-test/layers:latest".into(),
                ..Default::default()
            }),
            verbose: false,
        }))?
        .into_inner()
        .image
        .ok_or_else(|| anyhow!("pulled image has no status"))?;
    assert_eq!(status.id, pulled.image_ref);
    assert_eq!(status.repo_tags, ["docker.io/rcri-test/layers:latest"]);
    assert!(status.repo_digests[0].starts_with("docker.io/rcri-test/layers@sha256:"));

    // Not there: NotFound, naming the image.
    let err = rcri
        .block_on(is.pull_image(cri::PullImageRequest {
            image: Some(cri::ImageSpec {
                image: "rcri-test/missing:1".into(),
                ..Default::default()
            }),
            ..Default::default()
        }))
        .err()
        .ok_or_else(|| anyhow!("pulling a missing image succeeded"))?;
    assert_eq!(err.code(), tonic::Code::NotFound, "{err:?}");
    assert!(
        err.message().contains("docker.io/rcri-test/missing:1"),
        "{err:?}"
    );

    // A pod from a pulled image: its ENTRYPOINT and CMD run.
    let pulled = rcri
        .block_on(is.pull_image(cri::PullImageRequest {
            image: Some(cri::ImageSpec {
                image: "docker.io/rcri-test/entrypoint:latest".into(),
                ..Default::default()
            }),
            ..Default::default()
        }))
        .map_err(|s| anyhow!("PullImage: {s:?}\n{}", rcri.server_log()))?
        .into_inner();
    if !cni_available() {
        eprintln!("skipped the pod part: CNI plugins missing");
        return Ok(());
    }
    let pod = pod_config("pulled", true, &rcri.log_dir());
    let pod_id = rcri
        .run_pod(&pod)
        .map_err(|s| anyhow!("RunPodSandbox: {s:?}\n{}", rcri.server_log()))?;
    let mut c = container_config("entrypoint", &[]);
    c.image = Some(cri::ImageSpec {
        image: pulled.image_ref.clone(),
        ..Default::default()
    });
    let id = rcri
        .run_container(&pod_id, &c, &pod)
        .map_err(|s| anyhow!("CreateContainer: {s:?}\n{}", rcri.server_log()))?;
    let st = rcri.wait_exited(&id, Duration::from_secs(15))?;
    assert_eq!(st.exit_code, 0, "{st:?}");
    let log = fs::read_to_string(rcri.log_dir().join("entrypoint.log"))?;
    assert!(log.contains("entrypoint default-arg"), "{log}");
    Ok(())
}
