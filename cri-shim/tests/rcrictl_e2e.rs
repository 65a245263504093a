//! rcrictl against a real rcri: a pod from hack/mkimage.sh's OCI layout, with CNI networking,
//! driven only through rcrictl's commands and crictl-style config files. rcri runs in a network
//! and mount namespace of this test's own (`unshare -n -m`), so the CNI bridge, pod IPs and
//! iptables rules never touch the host's network.
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

struct Rcri {
    child: Child,
    dir: PathBuf,
    sock: PathBuf,
}

impl Rcri {
    fn ctl(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_rcrictl"))
            .arg("-r")
            .arg(format!("unix://{}", self.sock.display()))
            .args(args)
            .output()
            .expect("run rcrictl")
    }

    /// Runs rcrictl and returns its stdout, failing the test when it fails.
    fn ok(&self, args: &[&str]) -> String {
        let o = self.ctl(args);
        assert!(
            o.status.success(),
            "rcrictl {args:?}: {}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    }
}

impl Drop for Rcri {
    fn drop(&mut self) {
        // Whatever a failed test left running goes first (containers, monitors, netns pins),
        // then the server this test started.
        let pods = self.ctl(&["pods", "-q"]);
        for id in String::from_utf8_lossy(&pods.stdout).split_whitespace() {
            let _ = self.ctl(&["rmp", "-f", id]);
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn prerequisites() -> Option<(PathBuf, PathBuf)> {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: needs root");
        return None;
    }
    // rcri runs rcrun from next to itself by default; `cargo test --workspace` builds it.
    let rcri = PathBuf::from(env!("CARGO_BIN_EXE_rcri"));
    let rcrun = rcri.with_file_name("rcrun");
    if !rcrun.is_file() {
        eprintln!(
            "skipped: {} not built (cargo build --workspace)",
            rcrun.display()
        );
        return None;
    }
    if !Path::new("/usr/lib/cni/bridge").exists() && !Path::new("/opt/cni/bin/bridge").exists() {
        eprintln!("skipped: CNI plugins missing (hack/setup.sh)");
        return None;
    }
    let image = repo().join("target/e2e-image");
    let st = Command::new("bash")
        .arg(repo().join("hack/mkimage.sh"))
        .arg(&image)
        .status()
        .ok()?;
    if !st.success() {
        eprintln!("skipped: hack/mkimage.sh failed");
        return None;
    }
    Some((rcri, image.join("oci")))
}

fn start(rcri: &Path, layout: &Path) -> Rcri {
    let dir = std::env::temp_dir().join(format!("rcrictl-e2e-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("net.d")).unwrap();
    let conf = serde_json::json!({
        "cniVersion": "1.0.0", "name": "rcrictl-e2e",
        "plugins": [
            {"type": "bridge", "bridge": "cni0", "isGateway": true, "hairpinMode": true,
             "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.88.0.0/16"}]],
                      "routes": [{"dst": "0.0.0.0/0"}],
                      "dataDir": dir.join("ipam")}},
            {"type": "portmap", "capabilities": {"portMappings": true}}
        ]
    });
    std::fs::write(
        dir.join("net.d/10-e2e.conflist"),
        serde_json::to_vec(&conf).unwrap(),
    )
    .unwrap();
    let sock = dir.join("rcri.sock");
    let d = dir.display();
    let script = format!(
        "ip link set lo up && exec {} serve --listen {d}/rcri.sock --root {d}/root \
         --state {d}/state --runtime-root {d}/rt --cni-conf-dir {d}/net.d \
         --import-layout {} --log-level warn",
        rcri.display(),
        layout.display()
    );
    let child = Command::new("unshare")
        .args(["-n", "-m", "--propagation", "private", "sh", "-c", &script])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("rcri.log")).unwrap())
        .spawn()
        .expect("start rcri");
    let r = Rcri { child, dir, sock };
    let deadline = Instant::now() + Duration::from_secs(30);
    while !r.sock.exists() || !r.ctl(&["version"]).status.success() {
        assert!(
            Instant::now() < deadline,
            "rcri did not come up: {}",
            std::fs::read_to_string(r.dir.join("rcri.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    r
}

/// An HTTP GET from rcri's network namespace (where the CNI bridge is).
fn http_get_in(netns_of_pid: u32, addr: &str, path: &str) -> String {
    let ns = PathBuf::from(format!("/proc/{netns_of_pid}/ns/net"));
    rcri::netns::run_in(&ns, || -> std::io::Result<String> {
        let a = addr.parse().map_err(std::io::Error::other)?;
        let mut s = TcpStream::connect_timeout(&a, Duration::from_secs(3))?;
        s.set_read_timeout(Some(Duration::from_secs(3)))?;
        write!(s, "GET {path} HTTP/1.0\r\n\r\n")?;
        let mut out = String::new();
        s.read_to_string(&mut out)?;
        Ok(out)
    })
    .expect("enter rcri's netns")
    .unwrap_or_else(|e| format!("error: {e}"))
}

#[test]
fn pod_lifecycle_through_rcrictl() {
    let Some((rcri, layout)) = prerequisites() else {
        return;
    };
    let r = start(&rcri, &layout);
    let d = r.dir.clone();

    let v = r.ok(&["version"]);
    assert!(v.contains("RuntimeName:  rcri"), "{v}");
    assert!(v.contains("RuntimeApiVersion:  v1"), "{v}");
    let info: serde_json::Value = serde_json::from_str(&r.ok(&["info"])).unwrap();
    assert!(info["status"]["conditions"].is_array(), "{info}");
    let images = r.ok(&["images"]);
    assert!(
        images
            .lines()
            .nth(1)
            .unwrap_or("")
            .starts_with("docker.io/library/busybox   latest"),
        "{images}"
    );

    // crictl's file shapes: a YAML pod in camelCase, a JSON container in snake_case.
    let pod_yaml = format!(
        "metadata:\n  name: web\n  namespace: e2e\n  uid: web-uid\nlogDirectory: {}\n\
         portMappings:\n- containerPort: 8080\n  hostPort: 18080\n  protocol: TCP\n",
        d.join("logs").display()
    );
    std::fs::write(d.join("pod.yaml"), pod_yaml).unwrap();
    std::fs::write(
        d.join("ctr.json"),
        r#"{"metadata": {"name": "httpd"}, "image": {"image": "busybox"},
            "command": ["sh", "-c", "echo started; echo to-stderr >&2; exec httpd -f -p 8080 -h /etc"],
            "log_path": "httpd.0.log"}"#,
    )
    .unwrap();
    let pod_cfg = d.join("pod.yaml");
    let ctr_cfg = d.join("ctr.json");
    let pod = r
        .ok(&["runp", pod_cfg.to_str().unwrap()])
        .trim()
        .to_string();
    assert_eq!(pod.len(), 64, "{pod}");
    let pods = r.ok(&["pods"]);
    assert!(
        pods.contains("SANDBOX_READY") && pods.contains("web"),
        "{pods}"
    );
    let ip = {
        let v: serde_json::Value = serde_json::from_str(&r.ok(&["inspectp", &pod])).unwrap();
        assert_eq!(v["status"]["state"], "SANDBOX_READY", "{v}");
        assert_eq!(v["status"]["metadata"]["namespace"], "e2e");
        v["status"]["network"]["ip"]
            .as_str()
            .unwrap_or("")
            .to_string()
    };
    assert!(ip.starts_with("10.88."), "pod ip {ip:?}");

    let ctr = r
        .ok(&[
            "create",
            &pod,
            ctr_cfg.to_str().unwrap(),
            pod_cfg.to_str().unwrap(),
        ])
        .trim()
        .to_string();
    assert_eq!(r.ok(&["start", &ctr]).trim(), ctr);
    let ps = r.ok(&["ps"]);
    assert!(
        ps.contains("CONTAINER_RUNNING") && ps.contains("httpd"),
        "{ps}"
    );
    assert_eq!(r.ok(&["ps", "-q", "--pod", &pod]).trim(), ctr);

    // The pod answers on its IP and through the host port, from rcri's namespace.
    let pid = r.child.id();
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut got = String::new();
    while Instant::now() < deadline {
        got = http_get_in(pid, &format!("{ip}:8080"), "/hostname");
        if got.contains("200 OK") {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(got.contains("200 OK"), "{got}");
    let gw = format!("{}.1", ip.rsplit_once('.').map(|p| p.0).unwrap_or(""));
    let via_port = http_get_in(pid, &format!("{gw}:18080"), "/hostname");
    assert!(via_port.contains("200 OK"), "{via_port}");

    // exec: output and exit code pass through.
    let o = r.ctl(&["exec", &ctr, "sh", "-c", "echo out; echo err >&2; exit 7"]);
    assert_eq!(o.status.code(), Some(7));
    assert_eq!(String::from_utf8_lossy(&o.stdout), "out\n");
    assert_eq!(String::from_utf8_lossy(&o.stderr), "err\n");

    // logs: the messages of the CRI log file, each on its stream.
    let o = r.ctl(&["logs", &ctr]);
    assert_eq!(String::from_utf8_lossy(&o.stdout), "started\n");
    assert_eq!(String::from_utf8_lossy(&o.stderr), "to-stderr\n");

    let v: serde_json::Value = serde_json::from_str(&r.ok(&["inspect", &ctr])).unwrap();
    assert_eq!(v["status"]["state"], "CONTAINER_RUNNING", "{v}");
    assert!(v["status"]["logPath"]
        .as_str()
        .unwrap_or("")
        .ends_with("httpd.0.log"));

    r.ok(&["stop", "-t", "2", &ctr]);
    let v: serde_json::Value = serde_json::from_str(&r.ok(&["inspect", &ctr])).unwrap();
    assert_eq!(v["status"]["state"], "CONTAINER_EXITED", "{v}");
    assert!(
        r.ok(&["ps"]).lines().count() == 1,
        "only the header once stopped"
    );
    assert!(r.ok(&["ps", "-a"]).contains("CONTAINER_EXITED"));
    r.ok(&["rm", &ctr]);
    r.ok(&["stopp", &pod]);
    r.ok(&["rmp", &pod]);
    assert_eq!(r.ok(&["pods", "-q"]).trim(), "");

    // An unknown id is a NotFound from the server, shown as crictl shows it.
    let o = r.ctl(&["inspect", "nope"]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("NotFound"));

    r.ok(&["rmi", "busybox"]);
    assert_eq!(r.ok(&["images", "-q"]).trim(), "");
}
