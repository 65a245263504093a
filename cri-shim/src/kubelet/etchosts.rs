//! The /etc/hosts kubelet gives every container of a pod (kubelet_pods.go: makeMounts,
//! makeHostsMount, ensureHostsFile): a file in the pod's directory, bind-mounted read-write at
//! /etc/hosts, so that the pod's own name resolves without DNS and `hostAliases` can pin names.
//!
//! Pods on the pod network get a file kubelet writes from scratch (localhost lines, the pod IPs
//! with the hostname — and the FQDN when `subdomain` is set — then the hostAliases); host-network
//! pods get the node's /etc/hosts behind a header of its own, with the hostAliases appended.
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use anyhow::Context;
use k8s_cri::v1 as cri;

use super::manifest::{Container, HostAlias, Pod};

/// Where containers see the file, and where the node's own file is read from.
pub const ETC_HOSTS: &str = "/etc/hosts";
/// The file's name in the pod's directory (kubelet's `<pod dir>/etc-hosts`).
pub const FILE_NAME: &str = "etc-hosts";
/// The cluster domain kubelet uses when none is configured (`--cluster-domain`).
pub const DEFAULT_CLUSTER_DOMAIN: &str = "cluster.local";

const MANAGED_HEADER: &str = "# Kubernetes-managed hosts file.\n";
const HOST_NETWORK_HEADER: &str = "# Kubernetes-managed hosts file (host network).\n";

/// The pod's domain as kubelet computes it (GeneratePodHostNameAndDomain): only a pod with a
/// `subdomain` has one, `<subdomain>.<namespace>.svc.<cluster domain>`.
pub fn host_domain(pod: &Pod, cluster_domain: &str) -> Option<String> {
    let sub = pod.spec.subdomain.as_deref().filter(|s| !s.is_empty())?;
    Some(format!(
        "{sub}.{}.svc.{cluster_domain}",
        pod.metadata.namespace
    ))
}

/// The file of a pod on the pod network (managedHostsFileContent): one line per pod IP.
pub fn managed_content(
    pod_ips: &[String],
    hostname: &str,
    domain: Option<&str>,
    aliases: &[HostAlias],
) -> String {
    let mut out = String::from(MANAGED_HEADER);
    out.push_str("127.0.0.1\tlocalhost\n");
    out.push_str("::1\tlocalhost ip6-localhost ip6-loopback\n");
    out.push_str("fe00::0\tip6-localnet\n");
    out.push_str("fe00::0\tip6-mcastprefix\n");
    out.push_str("fe00::1\tip6-allnodes\n");
    out.push_str("fe00::2\tip6-allrouters\n");
    for ip in pod_ips {
        match domain {
            Some(d) => out.push_str(&format!("{ip}\t{hostname}.{d}\t{hostname}\n")),
            None => out.push_str(&format!("{ip}\t{hostname}\n")),
        }
    }
    out.push_str(&aliases_section(aliases));
    out
}

/// The file of a host-network pod (nodeHostsFileContent): the node's file as it is, so the
/// pod resolves what the node resolves, plus the hostAliases (kubelet appends them since 1.8).
pub fn host_network_content(node_hosts: &str, aliases: &[HostAlias]) -> String {
    let mut out = String::from(HOST_NETWORK_HEADER);
    out.push_str(node_hosts);
    out.push_str(&aliases_section(aliases));
    out
}

/// hostsEntriesFromHostAliases: a blank line, a comment, then one line per alias with all its
/// hostnames tab-separated. Nothing at all without aliases.
fn aliases_section(aliases: &[HostAlias]) -> String {
    if aliases.is_empty() {
        return String::new();
    }
    let mut out = String::from("\n# Entries added by HostAliases.\n");
    for a in aliases {
        out.push_str(&format!("{}\t{}\n", a.ip, a.hostnames.join("\t")));
    }
    out
}

/// Writes `<pod_dir>/etc-hosts` for the sandbox just started and returns its path, or None
/// when kubelet would mount none (shouldMountHostsFile: a pod-network pod without an IP yet).
/// Written in place (not renamed over) so that the inode containers already bind-mounted stays
/// the one that changes — what kubelet's os.WriteFile does too.
pub fn write(
    pod: &Pod,
    hostname: &str,
    pod_dir: &Path,
    pod_ips: &[String],
    cluster_domain: &str,
) -> anyhow::Result<Option<PathBuf>> {
    let aliases = &pod.spec.host_aliases;
    let content = if pod.spec.host_network {
        let node = std::fs::read_to_string(ETC_HOSTS)
            .with_context(|| format!("cannot read the node's {ETC_HOSTS}"))?;
        host_network_content(&node, aliases)
    } else if pod_ips.is_empty() {
        return Ok(None);
    } else {
        let domain = host_domain(pod, cluster_domain);
        managed_content(pod_ips, hostname, domain.as_deref(), aliases)
    };
    let path = pod_dir.join(FILE_NAME);
    std::fs::write(&path, content).with_context(|| format!("cannot write {}", path.display()))?;
    // kubelet chmods too: the umask must not make the file unreadable to non-root containers.
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644))
        .with_context(|| format!("cannot chmod {}", path.display()))?;
    Ok(Some(path))
}

/// Whether a container gets the file: not when it mounts something at /etc/hosts itself
/// (kubelet's makeMounts). kubelet's other exception, Windows hostProcess containers, has no
/// Linux counterpart.
pub fn wanted_by(container: &Container) -> bool {
    !container
        .volume_mounts
        .iter()
        .any(|m| Path::new(&m.mount_path) == Path::new(ETC_HOSTS))
}

/// The CRI mount kubelet adds (read-write: containers may add entries; relabelled like
/// kubelet asks, which runtimes without SELinux ignore).
pub fn mount(host_path: &Path) -> cri::Mount {
    cri::Mount {
        container_path: ETC_HOSTS.into(),
        host_path: host_path.display().to_string(),
        readonly: false,
        selinux_relabel: true,
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kubelet::manifest::VolumeMount;

    /// A fresh directory, removed by the caller.
    fn temp_dir(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "rcri-etchosts-{tag}-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn alias(ip: &str, names: &[&str]) -> HostAlias {
        HostAlias {
            ip: ip.into(),
            hostnames: names.iter().map(|s| s.to_string()).collect(),
        }
    }

    const BOILERPLATE: &str = "# Kubernetes-managed hosts file.\n\
        127.0.0.1\tlocalhost\n\
        ::1\tlocalhost ip6-localhost ip6-loopback\n\
        fe00::0\tip6-localnet\n\
        fe00::0\tip6-mcastprefix\n\
        fe00::1\tip6-allnodes\n\
        fe00::2\tip6-allrouters\n";

    #[test]
    fn managed_file_without_subdomain_or_aliases() {
        let got = managed_content(&["10.0.0.4".into()], "nginx", None, &[]);
        assert_eq!(got, format!("{BOILERPLATE}10.0.0.4\tnginx\n"));
    }

    #[test]
    fn managed_file_with_fqdn_for_every_ip_and_aliases() {
        let got = managed_content(
            &["10.0.0.4".into(), "fd00::4".into()],
            "web",
            Some("sub.ns.svc.cluster.local"),
            &[
                alias("127.0.0.1", &["foo.local", "bar.local"]),
                alias("10.1.2.3", &["foo.remote"]),
            ],
        );
        assert_eq!(
            got,
            format!(
                "{BOILERPLATE}10.0.0.4\tweb.sub.ns.svc.cluster.local\tweb\n\
                 fd00::4\tweb.sub.ns.svc.cluster.local\tweb\n\
                 \n# Entries added by HostAliases.\n\
                 127.0.0.1\tfoo.local\tbar.local\n\
                 10.1.2.3\tfoo.remote\n"
            )
        );
    }

    #[test]
    fn host_network_file_is_the_nodes_with_aliases_appended() {
        let node = "127.0.0.1 localhost\n192.168.1.2 node1\n";
        assert_eq!(
            host_network_content(node, &[]),
            format!("# Kubernetes-managed hosts file (host network).\n{node}")
        );
        assert_eq!(
            host_network_content(node, &[alias("1.2.3.4", &["a", "b"])]),
            format!(
                "# Kubernetes-managed hosts file (host network).\n{node}\
                 \n# Entries added by HostAliases.\n1.2.3.4\ta\tb\n"
            )
        );
    }

    #[test]
    fn domain_only_with_a_subdomain() {
        let mut pod = Pod::default();
        pod.metadata.namespace = "team".into();
        assert_eq!(host_domain(&pod, "cluster.local"), None);
        pod.spec.subdomain = Some(String::new());
        assert_eq!(host_domain(&pod, "cluster.local"), None);
        pod.spec.subdomain = Some("examples".into());
        assert_eq!(
            host_domain(&pod, "example.org").as_deref(),
            Some("examples.team.svc.example.org")
        );
    }

    #[test]
    fn written_with_mode_0644_and_only_once_an_ip_is_known() {
        let dir = temp_dir("managed");
        let mut pod = Pod::default();
        pod.metadata.namespace = "default".into();
        pod.spec.subdomain = Some("s".into());
        pod.spec.host_aliases = vec![alias("10.9.9.9", &["db"])];
        assert_eq!(write(&pod, "h", dir.as_path(), &[], "c.l").unwrap(), None);
        assert!(!dir.as_path().join(FILE_NAME).exists());
        let path = write(&pod, "h", dir.as_path(), &["10.0.0.9".into()], "c.l")
            .unwrap()
            .unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            text.contains("10.0.0.9\th.s.default.svc.c.l\th\n"),
            "{text}"
        );
        assert!(text.ends_with("10.9.9.9\tdb\n"), "{text}");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o7777, 0o644);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn host_network_pods_get_the_file_without_an_ip() {
        let dir = temp_dir("hostnet");
        let mut pod = Pod::default();
        pod.spec.host_network = true;
        let path = write(&pod, "", dir.as_path(), &[], "cluster.local")
            .unwrap()
            .unwrap();
        let text = std::fs::read_to_string(path).unwrap();
        let node = std::fs::read_to_string(ETC_HOSTS).unwrap();
        assert_eq!(text, format!("{HOST_NETWORK_HEADER}{node}"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_container_mounting_etc_hosts_keeps_its_own() {
        let mut c = Container::default();
        assert!(wanted_by(&c));
        c.volume_mounts.push(VolumeMount {
            name: "v".into(),
            mount_path: "/etc/hostsx".into(),
            ..Default::default()
        });
        assert!(wanted_by(&c));
        c.volume_mounts.push(VolumeMount {
            name: "h".into(),
            mount_path: "/etc/hosts".into(),
            ..Default::default()
        });
        assert!(!wanted_by(&c));
        let m = mount(Path::new("/r/etc-hosts"));
        assert_eq!(m.container_path, "/etc/hosts");
        assert_eq!(m.host_path, "/r/etc-hosts");
        assert!(!m.readonly);
    }
}
