use super::*;
use crate::netns;
use std::io::Read;
use std::net::{TcpListener, TcpStream};
use std::time::Duration;

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Where Debian's containernetworking-plugins (or an upstream install) put the plugins.
fn plugin_dirs() -> Vec<PathBuf> {
    vec![PathBuf::from("/opt/cni/bin"), PathBuf::from("/usr/lib/cni")]
}

fn have_plugins() -> bool {
    let c = Cni {
        conf_dir: PathBuf::new(),
        bin_dirs: plugin_dirs(),
    };
    ["bridge", "host-local", "loopback", "portmap"]
        .iter()
        .all(|p| c.find_plugin(p).is_ok())
}

struct TempDir(PathBuf);
impl TempDir {
    fn new(tag: &str) -> TempDir {
        let p = std::env::temp_dir().join(format!("rcri-cni-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
}
impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn load_picks_the_lexically_first_config_and_wraps_a_single_conf() {
    let d = TempDir::new("load");
    let cni = Cni {
        conf_dir: d.0.clone(),
        bin_dirs: vec![],
    };
    assert!(matches!(cni.load(), Err(CniError::NoConfig(_))));
    std::fs::write(
        d.0.join("20-b.conf"),
        r#"{"cniVersion":"0.4.0","name":"single","type":"bridge"}"#,
    )
    .unwrap();
    std::fs::write(d.0.join("README"), "not a config").unwrap();
    let l = cni.load().unwrap();
    assert_eq!(l.name, "single");
    assert_eq!(plugin_types(&l), ["bridge"]);
    std::fs::write(
        d.0.join("10-a.conflist"),
        serde_json::to_string(&default_conflist("net-a", "cni0", "10.88.0.0/16")).unwrap(),
    )
    .unwrap();
    let l = cni.load().unwrap();
    assert_eq!(l.name, "net-a");
    assert_eq!(l.cni_version, "1.0.0");
    assert_eq!(plugin_types(&l), ["bridge", "portmap"]);
    // Plugins are not installed in an empty bin dir list.
    assert!(matches!(cni.check(), Err(CniError::PluginNotFound { .. })));
    // A path as plugin type is refused.
    std::fs::write(
        d.0.join("05-evil.conflist"),
        r#"{"cniVersion":"1.0.0","name":"evil","plugins":[{"type":"../../bin/sh"}]}"#,
    )
    .unwrap();
    // The broken file is skipped in favour of the next good one.
    assert_eq!(cni.load().unwrap().name, "net-a");
}

#[test]
fn stdin_config_carries_name_version_prev_result_and_port_mappings() {
    let list = NetworkConfigList {
        path: PathBuf::from("x"),
        name: "n".into(),
        cni_version: "1.0.0".into(),
        disable_check: false,
        plugins: vec![],
    };
    let mut portmap = Map::new();
    portmap.insert("type".into(), "portmap".into());
    portmap.insert("capabilities".into(), json!({"portMappings": true}));
    let ports = [
        PortMapping {
            host_port: 8080,
            container_port: 80,
            protocol: "TCP".into(),
            host_ip: String::new(),
        },
        PortMapping {
            host_port: 0,
            container_port: 81,
            protocol: "TCP".into(),
            host_ip: String::new(),
        },
    ];
    let prev = json!({"cniVersion":"1.0.0","ips":[]});
    let c = plugin_stdin(&list, &portmap, Some(&prev), &ports);
    assert_eq!(c["name"], "n");
    assert_eq!(c["cniVersion"], "1.0.0");
    assert_eq!(c["prevResult"], prev);
    assert_eq!(
        c["runtimeConfig"]["portMappings"],
        json!([{"hostPort":8080,"containerPort":80,"protocol":"tcp"}])
    );
    // No capability declared: no runtimeConfig.
    let mut bridge = Map::new();
    bridge.insert("type".into(), "bridge".into());
    let c = plugin_stdin(&list, &bridge, None, &ports);
    assert!(c.get("runtimeConfig").is_none());
    assert!(c.get("prevResult").is_none());
}

#[test]
fn result_ips_reads_current_and_old_results() {
    let r = json!({
        "cniVersion": "1.0.0",
        "interfaces": [{"name":"cni0"},{"name":"veth1"},{"name":"eth0","sandbox":"/run/netns/x"}],
        "ips": [{"address":"fd00::5/64","interface":2},{"address":"10.88.0.5/16","gateway":"10.88.0.1","interface":2},
                {"address":"10.88.0.1/16","interface":0}]
    });
    assert_eq!(
        result_ips(&r).unwrap(),
        vec![
            "10.88.0.5".parse::<IpAddr>().unwrap(),
            "fd00::5".parse().unwrap()
        ]
    );
    let old = json!({"cniVersion":"0.2.0","ip4":{"ip":"10.1.2.3/24"}});
    assert_eq!(
        result_ips(&old).unwrap(),
        vec!["10.1.2.3".parse::<IpAddr>().unwrap()]
    );
    assert!(result_ips(&json!({"ips":[{"address":"nope/1"}]})).is_err());
    assert!(version_lt("0.3.1", "0.4.0"));
    assert!(!version_lt("1.0.0", "0.4.0"));
}

fn ip_in(ns: &Path, args: &[&str]) -> String {
    netns::run_in(ns, || {
        Command::new("ip")
            .args(args)
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
    })
    .unwrap()
    .unwrap()
}

/// The real plugins end to end, all inside namespaces this test creates: a "host" namespace
/// where the bridge, IPAM and iptables rules live, and a pod namespace that gets eth0.
#[test]
fn bridge_host_local_portmap_in_private_namespaces() {
    if !is_root() || !have_plugins() {
        eprintln!("skipped: needs root and the CNI plugins (hack/setup.sh)");
        return;
    }
    let d = TempDir::new("e2e");
    let ns_dir = PathBuf::from(format!("/run/rcri-test-cni-{}", std::process::id()));
    let host = netns::create(&ns_dir, "host").unwrap();
    let pod = netns::create(&ns_dir, "pod").unwrap();
    let cleanup = || {
        let _ = netns::remove(&pod);
        let _ = netns::remove(&host);
        let _ = nix::mount::umount2(&ns_dir, nix::mount::MntFlags::MNT_DETACH);
        let _ = std::fs::remove_dir_all(&ns_dir);
    };

    let conf_dir = d.0.join("net.d");
    std::fs::create_dir_all(&conf_dir).unwrap();
    let mut conf = default_conflist("rcri-test", "cni0", "10.88.0.0/16");
    // IPAM leases in the test's own dir, not the host's /var/lib/cni.
    conf["plugins"][0]["ipam"]["dataDir"] =
        Value::from(d.0.join("ipam").to_string_lossy().as_ref());
    std::fs::write(
        conf_dir.join("10-test.conflist"),
        serde_json::to_vec(&conf).unwrap(),
    )
    .unwrap();
    let cni = Cni {
        conf_dir,
        bin_dirs: plugin_dirs(),
    };
    cni.check().unwrap();
    let ports = [PortMapping {
        host_port: 18080,
        container_port: 8080,
        protocol: "TCP".into(),
        host_ip: String::new(),
    }];

    let result = std::panic::catch_unwind(|| {
        let status = netns::run_in(&host, || cni.add("sb1", &pod, "web", "default", &ports))
            .unwrap()
            .unwrap();
        assert_eq!(status.ips.len(), 1, "{status:?}");
        let ip = status.ips[0];
        assert!(ip.to_string().starts_with("10.88."), "{ip}");

        // The pod namespace has eth0 with the address and lo up.
        let addrs = ip_in(&pod, &["-o", "addr", "show"]);
        assert!(
            addrs.contains(&format!("eth0    inet {ip}/16"))
                || addrs.contains(&format!("inet {ip}/16")),
            "{addrs}"
        );
        let lo = ip_in(&pod, &["-o", "link", "show", "lo"]);
        assert!(lo.contains("UP"), "{lo}");
        // The bridge is in the test's host namespace, not in ours.
        assert!(ip_in(&host, &["-o", "link", "show", "cni0"]).contains("cni0"));

        // CHECK agrees with what ADD did. Without the ports: Debian's portmap (1.1.1) fails its
        // own CHECK looking for an IPv6 chain it never made when the pod has only IPv4.
        netns::run_in(&host, || {
            cni.check_pod("sb1", &pod, "web", "default", &[], &status)
        })
        .unwrap()
        .unwrap();

        // Ping from the host namespace.
        let ping = netns::run_in(&host, || {
            Command::new("busybox")
                .args(["ping", "-c", "1", "-W", "3", &ip.to_string()])
                .output()
        })
        .unwrap()
        .unwrap();
        assert!(
            ping.status.success(),
            "{}",
            String::from_utf8_lossy(&ping.stdout)
        );

        // TCP: a listener made in the pod namespace stays there; connect from the host side
        // directly and through the host port (portmap's DNAT on the gateway address).
        let listener = netns::run_in(&pod, || TcpListener::bind("0.0.0.0:8080"))
            .unwrap()
            .unwrap();
        let gw = match ip {
            IpAddr::V4(v4) => {
                let o = v4.octets();
                format!("{}.{}.0.1", o[0], o[1])
            }
            IpAddr::V6(_) => unreachable!("v4 subnet"),
        };
        for target in [format!("{ip}:8080"), format!("{gw}:18080")] {
            let t = target.clone();
            let client = std::thread::spawn({
                let host = host.clone();
                move || {
                    netns::run_in(&host, || -> std::io::Result<String> {
                        let addr = t.parse().map_err(std::io::Error::other)?;
                        let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(3))?;
                        s.set_read_timeout(Some(Duration::from_secs(3)))?;
                        let mut buf = String::new();
                        s.read_to_string(&mut buf)?;
                        Ok(buf)
                    })
                }
            });
            listener.set_nonblocking(false).unwrap();
            let (mut conn, _) = listener.accept().unwrap();
            conn.write_all(b"hello").unwrap();
            drop(conn);
            let got = client.join().unwrap().unwrap();
            assert_eq!(got.unwrap(), "hello", "via {target}");
        }

        // DEL removes eth0 and the port mapping chain; a second DEL is fine too.
        netns::run_in(&host, || cni.del("sb1", &pod, "web", "default", &ports))
            .unwrap()
            .unwrap();
        let addrs = ip_in(&pod, &["-o", "link", "show"]);
        assert!(!addrs.contains("eth0"), "{addrs}");
        netns::run_in(&host, || cni.del("sb1", &pod, "web", "default", &ports))
            .unwrap()
            .unwrap();
        // The lease is released: a new ADD works and gets an address again.
        let again = netns::run_in(&host, || cni.add("sb2", &pod, "web2", "default", &[]))
            .unwrap()
            .unwrap();
        assert_eq!(again.ips.len(), 1);
        netns::run_in(&host, || cni.del("sb2", &pod, "web2", "default", &[]))
            .unwrap()
            .unwrap();
    });
    cleanup();
    if let Err(p) = result {
        std::panic::resume_unwind(p);
    }
}

#[test]
fn add_failure_reports_the_plugin_error() {
    if !is_root() || !have_plugins() {
        eprintln!("skipped: needs root and the CNI plugins");
        return;
    }
    let d = TempDir::new("fail");
    let cni = Cni {
        conf_dir: d.0.clone(),
        bin_dirs: plugin_dirs(),
    };
    std::fs::write(
        d.0.join("10.conflist"),
        r#"{"cniVersion":"1.0.0","name":"bad","plugins":[{"type":"bridge","ipam":{"type":"host-local"}}]}"#,
    )
    .unwrap();
    // Even failing plugins run only inside a namespace of the test's own.
    let ns_dir = PathBuf::from(format!("/run/rcri-test-cnifail-{}", std::process::id()));
    let host = netns::create(&ns_dir, "host").unwrap();
    // A netns path that does not exist: the plugins refuse it with a CNI error object.
    let err = netns::run_in(&host, || {
        cni.add("x", Path::new("/nonexistent/netns"), "p", "ns", &[])
    })
    .unwrap()
    .unwrap_err();
    let _ = netns::remove(&host);
    let _ = nix::mount::umount2(&ns_dir, nix::mount::MntFlags::MNT_DETACH);
    let _ = std::fs::remove_dir_all(&ns_dir);
    assert!(matches!(err, CniError::Plugin { .. }), "{err}");
}
