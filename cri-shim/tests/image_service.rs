//! The image side of a real rcri, driven through rcrictl: images pulled over the CRI from a
//! docker-registry, their config honoured by the containers made from them (StopSignal), and
//! ImageFsInfo's numbers following what the store and the containers hold.
//!
//! rcri runs in a mount and network namespace of this test's own (`unshare -n -m`); the
//! registry runs inside that network namespace on 127.0.0.1:5000 and is filled with skopeo
//! from hack/mkimage.sh's test images. Pods use the node's network, which is that private
//! namespace: no CNI, nothing on the host's network. Needs root, docker-registry and skopeo
//! (hack/setup.sh); skips itself without.
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

const DOCKER_REGISTRY: &str = "/usr/bin/docker-registry";
const SKOPEO: &str = "/usr/bin/skopeo";
const REGISTRY: &str = "127.0.0.1:5000";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// hack/mkimage.sh's test-images layout, or None (with the reason printed) when this machine
/// cannot run these tests.
fn prerequisites(test: &str) -> Option<PathBuf> {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped {test}: needs root");
        return None;
    }
    for tool in [DOCKER_REGISTRY, SKOPEO] {
        if !Path::new(tool).is_file() {
            eprintln!("skipped {test}: {tool} missing (hack/setup.sh installs it)");
            return None;
        }
    }
    let rcrun = PathBuf::from(env!("CARGO_BIN_EXE_rcri")).with_file_name("rcrun");
    if !rcrun.is_file() {
        eprintln!("skipped {test}: {} not built", rcrun.display());
        return None;
    }
    let image = match std::env::var_os("RCRUN_TEST_IMAGE") {
        Some(p) => PathBuf::from(p),
        None => repo().join("target/e2e-image"),
    };
    let st = Command::new("bash")
        .arg(repo().join("hack/mkimage.sh"))
        .arg(&image)
        .status()
        .expect("run hack/mkimage.sh");
    assert!(st.success(), "hack/mkimage.sh failed");
    Some(image.join("test-images"))
}

/// rcri and its registry; both stopped (by pid) and their files removed on drop, after the
/// pods a failed test left.
struct Rcri {
    child: Child,
    registry: Option<Child>,
    dir: PathBuf,
    sock: PathBuf,
}

impl Rcri {
    fn start(test: &str) -> Rcri {
        let dir = std::env::temp_dir().join(format!("rcri-imgsvc-{test}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("logs")).unwrap();
        std::fs::write(
            dir.join("rcri.toml"),
            format!("[registry]\ninsecure = [\"{REGISTRY}\"]\n"),
        )
        .unwrap();
        let sock = dir.join("rcri.sock");
        let d = dir.display();
        let script = format!(
            "ip link set lo up && exec {} serve --config {d}/rcri.toml --listen {d}/rcri.sock \
             --root {d}/root --state {d}/state --runtime-root {d}/rt --cni-conf-dir {d}/net.d \
             --log-level info",
            env!("CARGO_BIN_EXE_rcri")
        );
        // unshare without --fork execs sh, which execs rcri: the child's pid is rcri's.
        let child = Command::new("unshare")
            .args(["-n", "-m", "--propagation", "private", "sh", "-c", &script])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("rcri.log")).unwrap())
            .spawn()
            .expect("start rcri");
        let mut r = Rcri {
            child,
            registry: None,
            dir,
            sock,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while !r.sock.exists() || !r.ctl(&["version"]).status.success() {
            assert!(
                Instant::now() < deadline,
                "rcri did not come up: {}",
                r.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        r.start_registry();
        r
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("rcri.log")).unwrap_or_default()
    }

    fn netns(&self) -> String {
        format!("--net=/proc/{}/ns/net", self.child.id())
    }

    fn start_registry(&mut self) {
        let cfg = self.dir.join("registry.yml");
        std::fs::write(
            &cfg,
            format!(
                "version: 0.1\nlog:\n  level: warn\n  accesslog:\n    disabled: true\n\
                 storage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: {REGISTRY}\n",
                self.dir.join("registry").display()
            ),
        )
        .unwrap();
        let log = std::fs::File::create(self.dir.join("registry.log")).unwrap();
        self.registry = Some(
            Command::new("nsenter")
                .arg(self.netns())
                .args([DOCKER_REGISTRY, "serve"])
                .arg(&cfg)
                .stdin(Stdio::null())
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .spawn()
                .expect("start docker-registry"),
        );
    }

    /// Pushes test image `name` as 127.0.0.1:5000/rcri-test/<name>:latest and returns that.
    fn push(&self, layout: &Path, name: &str) -> String {
        let src = format!("oci:{}:{name}", layout.display());
        let dst = format!("{REGISTRY}/rcri-test/{name}:latest");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let out = Command::new("nsenter")
                .arg(self.netns())
                .args([
                    SKOPEO,
                    "--insecure-policy",
                    "copy",
                    "--dest-tls-verify=false",
                ])
                .arg(&src)
                .arg(format!("docker://{dst}"))
                .output()
                .expect("run skopeo");
            if out.status.success() {
                return dst;
            }
            // The registry may still be starting.
            assert!(
                Instant::now() < deadline,
                "skopeo copy {src}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn ctl(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_rcrictl"))
            .arg("-r")
            .arg(format!("unix://{}", self.sock.display()))
            .args(args)
            .output()
            .expect("run rcrictl")
    }

    /// Runs rcrictl and returns its stdout, failing the test (with rcri's log) when it fails.
    fn ok(&self, args: &[&str]) -> String {
        let o = self.ctl(args);
        assert!(
            o.status.success(),
            "rcrictl {args:?}: {}{}\n--- rcri log ---\n{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr),
            self.log()
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    fn json(&self, args: &[&str]) -> Value {
        let out = self.ok(args);
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("rcrictl {args:?}: {e}: {out}"))
    }

    /// A pod on the node's network (this test's namespace); returns (pod id, its config file).
    fn pod(&self, name: &str) -> (String, PathBuf) {
        let cfg = self.dir.join(format!("pod-{name}.json"));
        let pod = serde_json::json!({
            "metadata": {"name": name, "namespace": "e2e", "uid": format!("{name}-uid")},
            "log_directory": self.dir.join("logs"),
            "linux": {"security_context": {"namespace_options": {"network": "NODE"}}}
        });
        std::fs::write(&cfg, serde_json::to_vec(&pod).unwrap()).unwrap();
        let id = self.ok(&["runp", cfg.to_str().unwrap()]).trim().to_string();
        (id, cfg)
    }

    /// Creates and starts a container; returns its id.
    fn run(&self, pod: &(String, PathBuf), name: &str, image: &str, command: &[&str]) -> String {
        let cfg = self.dir.join(format!("ctr-{name}.json"));
        let mut ctr = serde_json::json!({
            "metadata": {"name": name},
            "image": {"image": image},
            "log_path": format!("{name}.log"),
            // Its own PID namespace, as kubelet gives by default: the command is PID 1.
            "linux": {"security_context": {"namespace_options": {"pid": "CONTAINER"}}},
        });
        if !command.is_empty() {
            ctr["command"] = serde_json::json!(command);
        }
        std::fs::write(&cfg, serde_json::to_vec(&ctr).unwrap()).unwrap();
        let id = self
            .ok(&[
                "create",
                &pod.0,
                cfg.to_str().unwrap(),
                pod.1.to_str().unwrap(),
            ])
            .trim()
            .to_string();
        self.ok(&["start", &id]);
        id
    }

    fn exit_code(&self, ctr: &str) -> i64 {
        let v = self.json(&["inspect", ctr]);
        assert_eq!(v["status"]["state"], "CONTAINER_EXITED", "{v}");
        v["status"]["exitCode"].as_i64().unwrap_or(0)
    }

    /// (image fs, container fs) as (bytes, inodes), from ImageFsInfo.
    fn fs_info(&self) -> ((u64, u64), (u64, u64)) {
        let v = self.json(&["imagefsinfo"]);
        let get = |key: &str| {
            let fs = &v[key][0];
            let num = |k: &str| {
                fs[k]["value"]
                    .as_u64()
                    .or_else(|| fs[k]["value"].as_str().and_then(|s| s.parse().ok()))
                    .unwrap_or_else(|| panic!("no {key}[0].{k}.value in {v}"))
            };
            (num("usedBytes"), num("inodesUsed"))
        };
        (get("imageFilesystems"), get("containerFilesystems"))
    }
}

impl Drop for Rcri {
    fn drop(&mut self) {
        let pods = self.ctl(&["pods", "-q"]);
        for id in String::from_utf8_lossy(&pods.stdout).split_whitespace() {
            let _ = self.ctl(&["rmp", "-f", id]);
        }
        if let Some(mut reg) = self.registry.take() {
            let _ = reg.kill();
            let _ = reg.wait();
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// StopContainer sends the image's StopSignal (SIGUSR1 here, which the image's shell answers
/// with exit 42) instead of SIGTERM, at once rather than after the grace period. The control:
/// the same shell from an image without StopSignal gets SIGTERM, which PID 1 ignores, and is
/// killed after its grace period.
#[test]
fn stop_container_sends_the_image_stop_signal() {
    let Some(layout) = prerequisites("stop_signal") else {
        return;
    };
    let r = Rcri::start("stop");
    let stopsignal = r.push(&layout, "stopsignal");
    let busybox = r.push(&layout, "busybox");
    r.ok(&["pull", &stopsignal]);
    r.ok(&["pull", &busybox]);
    let pod = r.pod("sig");

    let ctr = r.run(&pod, "usr1", &stopsignal, &[]);
    // The trap is set once the shell runs its first command.
    std::thread::sleep(Duration::from_millis(500));
    let t0 = Instant::now();
    r.ok(&["stop", "-t", "20", &ctr]);
    let took = t0.elapsed();
    assert_eq!(r.exit_code(&ctr), 42, "the container did not get SIGUSR1");
    assert!(
        took < Duration::from_secs(10),
        "stop took {took:?}: the signal was not the one the image asks for"
    );

    let script = "trap 'exit 42' USR1; while :; do sleep 1 & wait $!; done";
    let ctr = r.run(&pod, "term", &busybox, &["sh", "-c", script]);
    std::thread::sleep(Duration::from_millis(500));
    let t0 = Instant::now();
    r.ok(&["stop", "-t", "2", &ctr]);
    assert!(
        t0.elapsed() >= Duration::from_secs(2),
        "SIGTERM ended PID 1?"
    );
    assert_eq!(r.exit_code(&ctr), 137, "SIGKILL after the grace period");
    r.ok(&["rmp", "-f", &pod.0]);
}

/// An image whose StopSignal is no signal is refused at CreateContainer, and leaves nothing.
#[test]
fn a_bad_stop_signal_is_refused_at_create() {
    let Some(layout) = prerequisites("bad_stop_signal") else {
        return;
    };
    // A copy of the test layout with one more image: busybox with StopSignal SIGNOPE.
    let r = Rcri::start("badsig");
    let bad = r.dir.join("bad-layout");
    std::fs::create_dir_all(bad.join("blobs/sha256")).unwrap();
    let index: Value =
        serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
    let entry = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["annotations"]["org.opencontainers.image.ref.name"] == "busybox")
        .unwrap()
        .clone();
    let blob = |d: &str| {
        std::fs::read(
            layout
                .join("blobs/sha256")
                .join(d.trim_start_matches("sha256:")),
        )
        .unwrap()
    };
    let put = |bytes: &[u8]| -> (String, usize) {
        use sha2::Digest;
        let hex = format!("{:x}", sha2::Sha256::digest(bytes));
        std::fs::write(bad.join("blobs/sha256").join(&hex), bytes).unwrap();
        (format!("sha256:{hex}"), bytes.len())
    };
    let mut manifest: Value =
        serde_json::from_slice(&blob(entry["digest"].as_str().unwrap())).unwrap();
    let mut config: Value =
        serde_json::from_slice(&blob(manifest["config"]["digest"].as_str().unwrap())).unwrap();
    for l in manifest["layers"].as_array().unwrap() {
        put(&blob(l["digest"].as_str().unwrap()));
    }
    config["config"]["StopSignal"] = "SIGNOPE".into();
    let (cd, cs) = put(&serde_json::to_vec(&config).unwrap());
    manifest["config"]["digest"] = cd.into();
    manifest["config"]["size"] = cs.into();
    let (md, ms) = put(&serde_json::to_vec(&manifest).unwrap());
    let index = serde_json::json!({"schemaVersion": 2, "manifests": [{
        "mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": md, "size": ms,
        "annotations": {"org.opencontainers.image.ref.name": "badsig"}}]});
    std::fs::write(bad.join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
    std::fs::write(bad.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();

    let image = r.push(&bad, "badsig");
    r.ok(&["pull", &image]);
    let pod = r.pod("badsig");
    let cfg = r.dir.join("ctr-bad.json");
    std::fs::write(
        &cfg,
        serde_json::to_vec(
            &serde_json::json!({"metadata": {"name": "bad"}, "image": {"image": image}}),
        )
        .unwrap(),
    )
    .unwrap();
    let o = r.ctl(&[
        "create",
        &pod.0,
        cfg.to_str().unwrap(),
        pod.1.to_str().unwrap(),
    ]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success(),
        "created: {}",
        String::from_utf8_lossy(&o.stdout)
    );
    assert!(
        err.contains("InvalidArgument") && err.contains("SIGNOPE"),
        "{err}"
    );
    assert_eq!(
        r.ok(&["ps", "-a", "-q"]).trim(),
        "",
        "a container record was left"
    );
    let containers = r.dir.join("root/images/containers");
    let left: Vec<_> = std::fs::read_dir(&containers)
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "left behind: {left:?}");
    r.ok(&["rmp", "-f", &pod.0]);
}

/// ImageFsInfo reports what the store really uses: a pull raises the image file system's bytes
/// and inodes by about what the image unpacks to; a container writing into its rootfs raises
/// the container file system's bytes; removing both brings the numbers back down.
#[test]
fn image_fs_info_follows_pulls_and_container_writes() {
    let Some(layout) = prerequisites("image_fs_info") else {
        return;
    };
    let r = Rcri::start("fsinfo");
    let layers = r.push(&layout, "layers");
    let busybox = r.push(&layout, "busybox");

    let ((b0, i0), (cb0, _)) = r.fs_info();
    r.ok(&["pull", &layers]);
    let ((b1, i1), _) = r.fs_info();
    // busybox alone unpacks to ~1 MiB and ~400 entries (its applet links).
    assert!(b1 >= b0 + 1_000_000, "bytes {b0} -> {b1} after the pull");
    assert!(i1 >= i0 + 300, "inodes {i0} -> {i1} after the pull");
    // The image fs holds the store and nothing else: no more than ~2x the blobs + unpacked.
    assert!(b1 < 64 << 20, "{b1} bytes for a few-MiB image");

    r.ok(&["pull", &busybox]);
    let pod = r.pod("fs");
    r.run(
        &pod,
        "writer",
        &busybox,
        &[
            "sh",
            "-c",
            "dd if=/dev/zero of=/big bs=1M count=4 && sync && touch /written && sleep 600",
        ],
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    let cb1 = loop {
        let (_, (cb, _)) = r.fs_info();
        if cb >= cb0 + 4 * 1024 * 1024 {
            break cb;
        }
        assert!(
            Instant::now() < deadline,
            "container fs stayed at {cb} bytes (was {cb0}) with a 4 MiB file written"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    r.ok(&["rmp", "-f", &pod.0]);
    let (_, (cb2, _)) = r.fs_info();
    assert!(
        cb2 < cb1 - 4 * 1024 * 1024,
        "{cb1} -> {cb2} after removing the container"
    );
    r.ok(&["rmi", &layers]);
    let ((b3, i3), _) = r.fs_info();
    assert!(b3 < b1 && i3 < i1, "({b1}, {i1}) -> ({b3}, {i3}) after rmi");
}
