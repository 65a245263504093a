//! The pod's DNS config as kubelet's dns.Configurer forms it (pkg/kubelet/network/dns). This
//! kubelet has no cluster DNS, so ClusterFirst falls back to Default (the host's resolv.conf),
//! exactly as kubelet does when --cluster-dns is unset.
use std::collections::BTreeMap;

use k8s_cri::v1 as cri;

use crate::kubelet::manifest::{DnsPolicy, Pod};

/// Kubelet's limits (ExpandedDNSConfig, GA): 3 nameservers, 32 search domains, 2048 characters.
const MAX_NAMESERVERS: usize = 3;
const MAX_SEARCHES: usize = 32;
const MAX_SEARCH_CHARS: usize = 2048;
const MAX_SEARCH_LEN: usize = 253;

/// nameservers accumulate; the last `search` and the last `options` line win; a search domain's
/// trailing dot is dropped (kubelet's parseResolvConf).
pub(crate) fn parse_resolv_conf(text: &str) -> cri::DnsConfig {
    let mut out = cri::DnsConfig::default();
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('#') {
            continue;
        }
        let fields: Vec<&str> = line.split_whitespace().collect();
        match fields.first() {
            Some(&"nameserver") if fields.len() >= 2 => out.servers.push(fields[1].to_string()),
            Some(&"search") => {
                out.searches = fields[1..]
                    .iter()
                    .map(|s| s.trim_end_matches('.').to_string())
                    .collect()
            }
            Some(&"options") => out.options = fields[1..].iter().map(|s| s.to_string()).collect(),
            _ => {}
        }
    }
    out
}

fn omit_duplicates(list: Vec<String>) -> Vec<String> {
    let mut seen = std::collections::HashSet::new();
    list.into_iter()
        .filter(|s| seen.insert(s.clone()))
        .collect()
}

/// `host_resolv_conf`: the text of the host's /etc/resolv.conf (None: unreadable, which kubelet
/// treats as an error only when it needs the file).
pub(crate) fn pod_dns_config(
    pod: &Pod,
    host_resolv_conf: Option<&str>,
) -> anyhow::Result<cri::DnsConfig> {
    let policy = pod.spec.dns_policy.unwrap_or_default();
    let mut config = match policy {
        DnsPolicy::None => cri::DnsConfig::default(),
        // No cluster DNS here: ClusterFirst and ClusterFirstWithHostNet fall back to Default.
        DnsPolicy::ClusterFirst | DnsPolicy::ClusterFirstWithHostNet | DnsPolicy::Default => {
            let text = host_resolv_conf.ok_or_else(|| {
                anyhow::anyhow!(
                    "spec.dnsPolicy {policy:?}: cannot read the host's /etc/resolv.conf"
                )
            })?;
            parse_resolv_conf(text)
        }
    };
    if let Some(extra) = &pod.spec.dns_config {
        config.servers = omit_duplicates(
            config
                .servers
                .into_iter()
                .chain(extra.nameservers.iter().cloned())
                .collect(),
        );
        config.searches = omit_duplicates(
            config
                .searches
                .into_iter()
                .chain(extra.searches.iter().cloned())
                .collect(),
        );
        // The pod's options override same-named host options (kubelet's mergeDNSOptions; it
        // iterates a Go map, we keep a stable order).
        let mut options: BTreeMap<String, String> = BTreeMap::new();
        for op in &config.options {
            match op.split_once(':') {
                Some((k, v)) => options.insert(k.to_string(), v.to_string()),
                None => options.insert(op.clone(), String::new()),
            };
        }
        for op in &extra.options {
            options.insert(op.name.clone(), op.value.clone().unwrap_or_default());
        }
        config.options = options
            .into_iter()
            .map(|(k, v)| if v.is_empty() { k } else { format!("{k}:{v}") })
            .collect();
    }
    config.servers.truncate(MAX_NAMESERVERS);
    config.searches.truncate(MAX_SEARCHES);
    config.searches.retain(|s| s.len() <= MAX_SEARCH_LEN);
    while config.searches.join(" ").len() > MAX_SEARCH_CHARS {
        config.searches.pop();
    }
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kubelet::manifest::{PodDnsConfig, PodDnsConfigOption};

    const HOST: &str = "# generated\nnameserver 10.0.0.2\nsearch old.example\nsearch corp.example. lab.example\nnameserver 10.0.0.3\noptions ndots:2 edns0\n";

    #[test]
    fn default_policies_use_the_host_resolv_conf() {
        let mut pod = Pod::default();
        for policy in [
            None,
            Some(DnsPolicy::Default),
            Some(DnsPolicy::ClusterFirst),
        ] {
            pod.spec.dns_policy = policy;
            let c = pod_dns_config(&pod, Some(HOST)).unwrap();
            assert_eq!(c.servers, ["10.0.0.2", "10.0.0.3"]);
            assert_eq!(c.searches, ["corp.example", "lab.example"]);
            assert_eq!(c.options, ["ndots:2", "edns0"]);
        }
        assert!(pod_dns_config(&pod, None)
            .unwrap_err()
            .to_string()
            .contains("resolv.conf"));
    }

    #[test]
    fn dns_config_merges_and_none_starts_empty() {
        let mut pod = Pod::default();
        pod.spec.dns_config = Some(PodDnsConfig {
            nameservers: vec!["10.0.0.3".into(), "1.1.1.1".into(), "8.8.8.8".into()],
            searches: vec!["lab.example".into(), "svc.local".into()],
            options: vec![
                PodDnsConfigOption {
                    name: "ndots".into(),
                    value: Some("5".into()),
                },
                PodDnsConfigOption {
                    name: "rotate".into(),
                    value: None,
                },
            ],
        });
        let c = pod_dns_config(&pod, Some(HOST)).unwrap();
        // Three nameservers at most, duplicates dropped.
        assert_eq!(c.servers, ["10.0.0.2", "10.0.0.3", "1.1.1.1"]);
        assert_eq!(c.searches, ["corp.example", "lab.example", "svc.local"]);
        assert_eq!(c.options, ["edns0", "ndots:5", "rotate"]);

        pod.spec.dns_policy = Some(DnsPolicy::None);
        let c = pod_dns_config(&pod, None).unwrap();
        assert_eq!(c.servers, ["10.0.0.3", "1.1.1.1", "8.8.8.8"]);
        assert_eq!(c.searches, ["lab.example", "svc.local"]);
    }
}
