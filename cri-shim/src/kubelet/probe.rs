//! Probes and lifecycle handlers as kubelet runs them (pkg/kubelet/prober, pkg/kubelet/lifecycle):
//! exec through the CRI's ExecSync, httpGet and tcpSocket from a thread that joined the pod's
//! network namespace (so "localhost" and the pod IP mean what they mean to the pod, wherever
//! this process runs), sleep for the sleep hook.
use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use k8s_cri::v1 as cri;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use tonic::transport::Channel;

use super::manifest::{Container, HttpGetAction, IntOrString, LifecycleHandler, Probe};

/// What kubelet sends as User-Agent (kube-probe/<major.minor>).
const USER_AGENT: &str = "kube-probe/1.33";

/// Where network probes go: the pod's network namespace and its IP.
#[derive(Debug, Clone, Default)]
pub struct Target {
    /// None: this process's own namespace (host-network pods).
    pub netns: Option<PathBuf>,
    pub pod_ip: String,
}

/// The network namespace of a sandbox from its verbose PodSandboxStatus info: rcri's "netns"
/// key, containerd's OCI spec namespaces, else the infra process's /proc/<pid>/ns/net.
pub fn netns_from_info(info: &HashMap<String, String>) -> Option<PathBuf> {
    let v: serde_json::Value = serde_json::from_str(info.get("info")?).ok()?;
    if let Some(p) = v
        .get("netns")
        .and_then(|p| p.as_str())
        .filter(|p| !p.is_empty())
    {
        return Some(PathBuf::from(p));
    }
    let namespaces = v
        .pointer("/runtimeSpec/linux/namespaces")
        .and_then(|n| n.as_array());
    if let Some(p) = namespaces.into_iter().flatten().find_map(|ns| {
        (ns.get("type")?.as_str()? == "network")
            .then(|| ns.get("path")?.as_str().filter(|p| !p.is_empty()))
            .flatten()
    }) {
        return Some(PathBuf::from(p));
    }
    let pid = v.get("pid").and_then(|p| p.as_u64()).filter(|p| *p > 0)?;
    Some(PathBuf::from(format!("/proc/{pid}/ns/net")))
}

/// A port as a probe names it: a number, or the name of one of the container's ports.
pub fn resolve_port(port: &IntOrString, container: &Container) -> Result<u16, String> {
    let n = match port {
        IntOrString::Int(n) => *n,
        IntOrString::String(s) => match s.parse::<i64>() {
            Ok(n) => n,
            Err(_) => container
                .ports
                .iter()
                .find(|p| p.name.as_deref() == Some(s.as_str()))
                .map(|p| i64::from(p.container_port))
                .ok_or_else(|| format!("port {s:?} not found in container {}", container.name))?,
        },
    };
    u16::try_from(n)
        .ok()
        .filter(|p| *p > 0)
        .ok_or_else(|| format!("invalid port {n}"))
}

/// Runs one probe; Ok(()) is success, Err the failure as kubelet words it.
pub async fn run_probe(
    rt: &RuntimeServiceClient<Channel>,
    container_id: &str,
    container: &Container,
    probe: &Probe,
    target: &Target,
) -> Result<(), String> {
    let timeout = Duration::from_secs(probe.timeout() as u64);
    if let Some(exec) = &probe.exec {
        return exec_sync(rt, container_id, &exec.command, timeout).await;
    }
    if let Some(http) = &probe.http_get {
        return http_get(http, container, target, timeout).await;
    }
    if let Some(tcp) = &probe.tcp_socket {
        let port = resolve_port(&tcp.port, container)?;
        let host = tcp
            .host
            .clone()
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| target.pod_ip.clone());
        return in_netns(target, move || tcp_check(&host, port, timeout)).await;
    }
    Err("probe has no handler (exec, httpGet or tcpSocket)".into())
}

/// Runs a postStart or preStop handler within `timeout`.
pub async fn run_handler(
    rt: &RuntimeServiceClient<Channel>,
    container_id: &str,
    container: &Container,
    handler: &LifecycleHandler,
    target: &Target,
    timeout: Duration,
) -> Result<(), String> {
    if let Some(exec) = &handler.exec {
        return exec_sync(rt, container_id, &exec.command, timeout).await;
    }
    if let Some(http) = &handler.http_get {
        return http_get(http, container, target, timeout).await;
    }
    if let Some(sleep) = &handler.sleep {
        let d = Duration::from_secs(sleep.seconds.max(0) as u64).min(timeout);
        tokio::time::sleep(d).await;
        return Ok(());
    }
    Err("invalid lifecycle handler: only exec, httpGet and sleep are run".into())
}

async fn exec_sync(
    rt: &RuntimeServiceClient<Channel>,
    container_id: &str,
    cmd: &[String],
    timeout: Duration,
) -> Result<(), String> {
    let mut rt = rt.clone();
    let req = cri::ExecSyncRequest {
        container_id: container_id.to_string(),
        cmd: cmd.to_vec(),
        timeout: timeout.as_secs().max(1) as i64,
    };
    // The runtime enforces the timeout; ours only guards against a runtime that does not.
    let call = tokio::time::timeout(timeout + Duration::from_secs(5), rt.exec_sync(req));
    let resp = match call.await {
        Err(_) => return Err(format!("command {cmd:?} timed out after {timeout:?}")),
        Ok(Err(s)) if s.code() == tonic::Code::DeadlineExceeded => {
            return Err(format!("command {cmd:?} timed out after {timeout:?}"))
        }
        Ok(Err(s)) => return Err(format!("exec {cmd:?} failed: {}", s.message())),
        Ok(Ok(r)) => r.into_inner(),
    };
    if resp.exit_code == 0 {
        return Ok(());
    }
    let mut out = String::from_utf8_lossy(&resp.stdout).into_owned();
    out.push_str(&String::from_utf8_lossy(&resp.stderr));
    let out = out.trim();
    if out.is_empty() {
        Err(format!("command {cmd:?} exited with {}", resp.exit_code))
    } else {
        Err(format!(
            "command {cmd:?} exited with {}: {}",
            resp.exit_code,
            truncate(out, 200)
        ))
    }
}

fn truncate(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        return s.to_string();
    }
    let mut t: String = s.chars().take(n).collect();
    t.push('…');
    t
}

async fn in_netns<F>(target: &Target, f: F) -> Result<(), String>
where
    F: FnOnce() -> Result<(), String> + Send + 'static,
{
    let netns = target.netns.clone();
    let task = tokio::task::spawn_blocking(move || match netns {
        Some(path) => crate::netns::run_in(&path, f)
            .map_err(|e| format!("cannot enter the pod network namespace: {e}"))?,
        None => f(),
    });
    task.await
        .map_err(|e| format!("probe thread failed: {e}"))?
}

async fn http_get(
    action: &HttpGetAction,
    container: &Container,
    target: &Target,
    timeout: Duration,
) -> Result<(), String> {
    let scheme = action.scheme.as_deref().unwrap_or("HTTP");
    if !scheme.eq_ignore_ascii_case("HTTP") {
        return Err(format!(
            "httpGet scheme {scheme:?} is not supported (only HTTP)"
        ));
    }
    let port = resolve_port(&action.port, container)?;
    let host = action
        .host
        .clone()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| target.pod_ip.clone());
    let mut path = action.path.clone().unwrap_or_default();
    if !path.starts_with('/') {
        path.insert(0, '/');
    }
    let headers: Vec<(String, String)> = action
        .http_headers
        .iter()
        .map(|h| (h.name.clone(), h.value.clone()))
        .collect();
    in_netns(target, move || {
        let code = http_status(&host, port, &path, &headers, timeout)?;
        if (200..400).contains(&code) {
            Ok(())
        } else {
            Err(format!("HTTP probe failed with statuscode: {code}"))
        }
    })
    .await
}

fn resolve(host: &str, port: u16) -> Result<SocketAddr, String> {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = bare.parse::<std::net::IpAddr>() {
        return Ok(SocketAddr::new(ip, port));
    }
    (host, port)
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {host}: {e}"))?
        .next()
        .ok_or_else(|| format!("cannot resolve {host}: no address"))
}

fn host_port(host: &str, port: u16) -> String {
    if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// A plain HTTP/1.1 GET; returns the status code. Blocking, bounded by `timeout` overall.
pub fn http_status(
    host: &str,
    port: u16,
    path: &str,
    headers: &[(String, String)],
    timeout: Duration,
) -> Result<u16, String> {
    let deadline = Instant::now() + timeout;
    let addr = resolve(host, port)?;
    let hp = host_port(host, port);
    let mut stream = TcpStream::connect_timeout(&addr, timeout)
        .map_err(|e| format!("Get \"http://{hp}{path}\": dial tcp {addr}: {e}"))?;
    let left = || {
        deadline
            .saturating_duration_since(Instant::now())
            .max(Duration::from_millis(1))
    };
    let mut req = format!("GET {path} HTTP/1.1\r\n");
    let has = |n: &str| headers.iter().any(|(k, _)| k.eq_ignore_ascii_case(n));
    if !has("host") {
        req.push_str(&format!("Host: {hp}\r\n"));
    }
    if !has("user-agent") {
        req.push_str(&format!("User-Agent: {USER_AGENT}\r\n"));
    }
    if !has("accept") {
        req.push_str("Accept: */*\r\n");
    }
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("Connection: close\r\n\r\n");
    let io_err = |e: std::io::Error| format!("Get \"http://{hp}{path}\": {e}");
    stream.set_write_timeout(Some(left())).map_err(io_err)?;
    stream.write_all(req.as_bytes()).map_err(io_err)?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 512];
    while !buf.windows(2).any(|w| w == b"\r\n") {
        stream.set_read_timeout(Some(left())).map_err(io_err)?;
        let n = stream.read(&mut chunk).map_err(io_err)?;
        if n == 0 || buf.len() > 8192 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let text = String::from_utf8_lossy(&buf);
    let line = text.lines().next().unwrap_or("");
    let mut parts = line.split_whitespace();
    match (
        parts.next(),
        parts.next().and_then(|c| c.parse::<u16>().ok()),
    ) {
        (Some(v), Some(code)) if v.starts_with("HTTP/") => Ok(code),
        _ => Err(format!(
            "Get \"http://{hp}{path}\": malformed HTTP response {:?}",
            truncate(line, 80)
        )),
    }
}

/// Connects and closes: kubelet's tcpSocket probe.
pub fn tcp_check(host: &str, port: u16, timeout: Duration) -> Result<(), String> {
    let addr = resolve(host, port)?;
    TcpStream::connect_timeout(&addr, timeout)
        .map(drop)
        .map_err(|e| format!("dial tcp {addr}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kubelet::manifest::ContainerPort;
    use std::net::TcpListener;

    fn serve_once(response: &'static str) -> u16 {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        std::thread::spawn(move || {
            if let Ok((mut s, _)) = l.accept() {
                let mut b = [0u8; 1024];
                let _ = s.read(&mut b);
                let _ = s.write_all(response.as_bytes());
            }
        });
        port
    }

    #[test]
    fn http_status_codes() {
        let p = serve_once("HTTP/1.1 204 No Content\r\n\r\n");
        assert_eq!(
            http_status("127.0.0.1", p, "/", &[], Duration::from_secs(2)),
            Ok(204)
        );
        let p = serve_once("HTTP/1.0 500 Oops\r\n\r\n");
        assert_eq!(
            http_status("127.0.0.1", p, "/x", &[], Duration::from_secs(2)),
            Ok(500)
        );
        let p = serve_once("garbage\r\n");
        assert!(http_status("127.0.0.1", p, "/", &[], Duration::from_secs(2)).is_err());
    }

    #[test]
    fn tcp_check_refused_and_ok() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        assert!(tcp_check("127.0.0.1", port, Duration::from_secs(1)).is_ok());
        drop(l);
        assert!(tcp_check("127.0.0.1", port, Duration::from_secs(1)).is_err());
    }

    #[test]
    fn named_ports_and_netns_info() {
        let c = Container {
            name: "app".into(),
            ports: vec![ContainerPort {
                name: Some("http".into()),
                container_port: 8080,
                ..Default::default()
            }],
            ..Default::default()
        };
        assert_eq!(
            resolve_port(&IntOrString::String("http".into()), &c),
            Ok(8080)
        );
        assert_eq!(resolve_port(&IntOrString::Int(80), &c), Ok(80));
        assert!(resolve_port(&IntOrString::String("nope".into()), &c).is_err());
        let mut info = HashMap::new();
        info.insert(
            "info".to_string(),
            r#"{"pid":42,"netns":"/run/x/ns"}"#.to_string(),
        );
        assert_eq!(netns_from_info(&info), Some(PathBuf::from("/run/x/ns")));
        info.insert("info".to_string(), r#"{"pid":42,"netns":""}"#.to_string());
        assert_eq!(
            netns_from_info(&info),
            Some(PathBuf::from("/proc/42/ns/net"))
        );
        info.insert(
            "info".to_string(),
            r#"{"runtimeSpec":{"linux":{"namespaces":[{"type":"pid"},{"type":"network","path":"/var/run/netns/cni-1"}]}}}"#.to_string(),
        );
        assert_eq!(
            netns_from_info(&info),
            Some(PathBuf::from("/var/run/netns/cni-1"))
        );
    }
}
