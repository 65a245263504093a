//! rcri's streaming server end to end: Exec/PortForward URLs driven by rcrictl over SPDY and
//! WebSocket against real pods, the single-use tokens, and the cleanup when a client dies.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use e2e::cri::{cni_available, container_config, pod_config, v1 as cri, Rcri};
use e2e::{run_command, scaled, Output};

const SESSION_TIMEOUT: Duration = Duration::from_secs(30);

/// A pod (on the pod network) with one long-running container.
struct Pod {
    rcri: Rcri,
    pod: String,
    ctr: String,
}

fn pod_with(name: &str, args: &[&str]) -> Result<Option<Pod>> {
    if !cni_available() {
        bail!("CNI plugins missing: run hack/setup.sh (containernetworking-plugins)");
    }
    let rcri = Rcri::start()?;
    let log_dir = rcri.log_dir();
    let pod_cfg = pod_config(name, false, &log_dir);
    let pod = rcri
        .run_pod(&pod_cfg)
        .map_err(|s| anyhow!("RunPodSandbox: {s:?}\n{}", rcri.server_log()))?;
    let ctr = rcri.run_container(&pod, &container_config("main", args), &pod_cfg)?;
    Ok(Some(Pod { rcri, pod, ctr }))
}

/// Runs `cmd` with `input` on its stdin (then closed), within the session timeout.
fn run_with_input(mut cmd: std::process::Command, input: &[u8]) -> Result<Output> {
    let mut out = tempfile::tempfile()?;
    let mut err = tempfile::tempfile()?;
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(out.try_clone()?)
        .stderr(err.try_clone()?)
        .spawn()
        .context("failed to run rcrictl")?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(input)?;
    }
    let status = wait_child(&mut child, SESSION_TIMEOUT)?;
    let mut stdout = String::new();
    let mut stderr = String::new();
    use std::io::Seek;
    out.rewind()?;
    err.rewind()?;
    out.read_to_string(&mut stdout)?;
    err.read_to_string(&mut stderr)?;
    Ok(Output {
        command: format!("{cmd:?}"),
        status,
        stdout,
        stderr,
    })
}

fn wait_child(child: &mut Child, timeout: Duration) -> Result<std::process::ExitStatus> {
    let deadline = Instant::now() + scaled(timeout);
    loop {
        if let Some(s) = child.try_wait()? {
            return Ok(s);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!("rcrictl did not finish within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn exec_pipes_and_exit_code(transport: &str) -> Result<()> {
    let Some(p) = pod_with("stream-exec", &["sleep", "3600"])? else {
        return Ok(());
    };
    let cmd = p.rcri.rcrictl(&[
        "exec",
        "-i",
        "--transport",
        transport,
        &p.ctr,
        "sh",
        "-c",
        "cat; echo to-stderr >&2; exit 7",
    ]);
    let out = run_with_input(cmd, b"hello through stdin\n")?;
    assert_eq!(out.code(), 7, "{out}\n{}", p.rcri.server_log());
    assert_eq!(out.stdout, "hello through stdin\n", "{out}");
    assert!(out.stderr.contains("to-stderr"), "{out}");

    // Success, and a command that reads no stdin.
    let cmd = p.rcri.rcrictl(&[
        "exec",
        "-i",
        "--transport",
        transport,
        &p.ctr,
        "echo",
        "done",
    ]);
    let out = run_with_input(cmd, b"")?;
    assert_eq!(out.code(), 0, "{out}");
    assert_eq!(out.stdout, "done\n", "{out}");
    assert_no_exec_files(&p.rcri)?;
    Ok(())
}

#[test]
fn exec_pipes_and_exit_code_over_websocket() -> Result<()> {
    exec_pipes_and_exit_code("websocket")
}

#[test]
fn exec_pipes_and_exit_code_over_spdy() -> Result<()> {
    exec_pipes_and_exit_code("spdy")
}

fn exec_tty(transport: &str) -> Result<()> {
    let Some(p) = pod_with("stream-tty", &["sleep", "3600"])? else {
        return Ok(());
    };
    // The resize travels separately from the exec: wait until it has landed.
    let script = "for i in $(seq 100); do [ \"$(stty size)\" = '30 100' ] && break; sleep 0.05; done; tty; stty size; exit 3";
    let cmd = p.rcri.rcrictl(&[
        "exec",
        "-t",
        "--term-size",
        "100x30",
        "--transport",
        transport,
        &p.ctr,
        "sh",
        "-c",
        script,
    ]);
    let out = run_with_input(cmd, b"")?;
    assert_eq!(out.code(), 3, "{out}\n{}", p.rcri.server_log());
    assert!(out.stdout.contains("/dev/pts/"), "{out}");
    assert!(out.stdout.contains("30 100"), "{out}");
    // A terminal turns \n into \r\n: proof the output went through one.
    assert!(out.stdout.contains("\r\n"), "{out}");
    assert_no_exec_files(&p.rcri)?;
    Ok(())
}

#[test]
fn exec_tty_and_resize_over_websocket() -> Result<()> {
    exec_tty("websocket")
}

#[test]
fn exec_tty_and_resize_over_spdy() -> Result<()> {
    exec_tty("spdy")
}

/// GETs `/index.html` from 127.0.0.1:`port` inside the test's netns.
fn http_get(rcri: &Rcri, port: u16) -> Result<String> {
    rcri.in_netns_thread(move || -> Result<String> {
        let mut s = TcpStream::connect(("127.0.0.1", port))?;
        s.set_read_timeout(Some(scaled(Duration::from_secs(10))))?;
        s.write_all(b"GET /index.html HTTP/1.0\r\nHost: pod\r\n\r\n")?;
        let mut reply = String::new();
        s.read_to_string(&mut reply)?;
        Ok(reply)
    })?
}

fn port_forward(transport: &str) -> Result<()> {
    port_forward_to(transport, "127.0.0.1:8080")
}

/// A server on the pod's IPv6 loopback only: the forward falls back from 127.0.0.1 to ::1, as
/// kubelet's does.
#[test]
fn port_forward_reaches_an_ipv6_only_listener() -> Result<()> {
    port_forward_to("spdy", "[::1]:8080")
}

fn port_forward_to(transport: &str, listen: &str) -> Result<()> {
    // httpd on the pod's loopback only: reachable only from inside the pod's netns.
    let script = format!(
        "mkdir -p /www && echo hello-from-pod > /www/index.html && exec httpd -f -p {listen} -h /www"
    );
    let script = script.as_str();
    let Some(p) = pod_with("stream-pf", &["sh", "-c", script])? else {
        return Ok(());
    };
    let mut child = p
        .rcri
        .rcrictl(&["port-forward", "--transport", transport, &p.pod, "0:8080"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()?;
    let result = (|| -> Result<()> {
        let stdout = child.stdout.take().ok_or_else(|| anyhow!("no stdout"))?;
        let mut reader = BufReader::new(stdout);
        let mut line = String::new();
        reader.read_line(&mut line)?;
        // rcrictl reports every connection: keep its stdout drained.
        std::thread::spawn(move || std::io::copy(&mut reader, &mut std::io::sink()));
        // "Forwarding from 127.0.0.1:PORT -> 8080"
        let port: u16 = line
            .split("127.0.0.1:")
            .nth(1)
            .and_then(|r| r.split_whitespace().next())
            .and_then(|p| p.parse().ok())
            .ok_or_else(|| anyhow!("unexpected first line {line:?}"))?;
        // httpd may still be starting: retry until it answers.
        let deadline = Instant::now() + scaled(Duration::from_secs(15));
        let reply = loop {
            match http_get(&p.rcri, port) {
                Ok(r) if r.contains("hello-from-pod") => break r,
                other if Instant::now() > deadline => {
                    bail!(
                        "no reply through the forward: {other:?}\n{}",
                        p.rcri.server_log()
                    )
                }
                _ => std::thread::sleep(Duration::from_millis(200)),
            }
        };
        assert!(reply.starts_with("HTTP/1."), "{reply}");
        // A second connection through the same forward.
        let again = http_get(&p.rcri, port)?;
        assert!(again.contains("hello-from-pod"), "{again}");
        Ok(())
    })();
    let _ = child.kill();
    let _ = child.wait();
    result
}

/// crictl's `--transport websocket`: SPDY tunneled in a WebSocket (SPDY/3.1+portforward.k8s.io).
#[test]
fn port_forward_over_websocket() -> Result<()> {
    port_forward("websocket")
}

/// kubelet's older WebSocket port-forward: a channel pair per port, one session per connection.
#[test]
fn port_forward_over_websocket_channels() -> Result<()> {
    port_forward("websocket-channels")
}

#[test]
fn port_forward_over_spdy() -> Result<()> {
    port_forward("spdy")
}

/// The status code of a plain GET of `path` on the streaming server at `authority`.
fn get_status(rcri: &Rcri, authority: &str, path: &str) -> Result<u16> {
    get_status_with(rcri, authority, path, "Connection: close\r\n")
}

/// The status code of a GET of `path` with `headers` (CRLF-terminated lines).
fn get_status_with(rcri: &Rcri, authority: &str, path: &str, headers: &str) -> Result<u16> {
    let authority = authority.to_string();
    let request = format!("GET {path} HTTP/1.1\r\nHost: {authority}\r\n{headers}\r\n");
    rcri.in_netns_thread(move || -> Result<u16> {
        let mut s = TcpStream::connect(&authority)?;
        s.set_read_timeout(Some(Duration::from_secs(10)))?;
        s.write_all(request.as_bytes())?;
        let mut line = String::new();
        BufReader::new(s).read_line(&mut line)?;
        line.split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .ok_or_else(|| anyhow!("bad status line {line:?}"))
    })?
}

#[test]
fn tokens_are_single_use_and_requests_are_validated() -> Result<()> {
    let Some(p) = pod_with("stream-token", &["sleep", "3600"])? else {
        return Ok(());
    };
    let mut rs = p.rcri.rs();
    let exec = |rs: &mut cri::runtime_service_client::RuntimeServiceClient<_>,
                req: cri::ExecRequest| p.rcri.block_on(rs.exec(req));
    let good = cri::ExecRequest {
        container_id: p.ctr.clone(),
        cmd: vec!["true".into()],
        stdout: true,
        ..Default::default()
    };
    let url = exec(&mut rs, good.clone())?.into_inner().url;
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| anyhow!("url {url}"))?;
    let (authority, path) = rest.split_once('/').ok_or_else(|| anyhow!("url {url}"))?;
    assert!(authority.starts_with("127.0.0.1:"), "{url}");
    assert!(path.starts_with("exec/"), "{url}");
    let path = format!("/{path}");
    // Without upgrade headers: refused, and the token is spent.
    assert_eq!(get_status(&p.rcri, authority, &path)?, 400);
    assert_eq!(get_status(&p.rcri, authority, &path)?, 404);
    assert_eq!(get_status(&p.rcri, authority, "/exec/not-a-token")?, 404);
    assert_eq!(get_status(&p.rcri, authority, "/nothing")?, 404);
    // A token is only good on its own path.
    let url = exec(&mut rs, good.clone())?.into_inner().url;
    let attach_path = format!("/attach/{}", url.rsplit('/').next().unwrap_or(""));
    assert_eq!(get_status(&p.rcri, authority, &attach_path)?, 404);

    // Upgrades whose protocol cannot be agreed on: refused, naming what is accepted.
    let spend = |rs: &mut cri::runtime_service_client::RuntimeServiceClient<_>| -> Result<String> {
        let url = exec(rs, good.clone())?.into_inner().url;
        Ok(format!("/exec/{}", url.rsplit('/').next().unwrap_or("")))
    };
    let ws = "Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n";
    let path = spend(&mut rs)?;
    let bogus = format!("{ws}Sec-WebSocket-Protocol: v9.channel.k8s.io\r\n");
    assert_eq!(get_status_with(&p.rcri, authority, &path, &bogus)?, 403);
    let spdy = "Connection: Upgrade\r\nUpgrade: SPDY/3.1\r\n";
    let path = spend(&mut rs)?;
    let bogus = format!("{spdy}X-Stream-Protocol-Version: v5.channel.k8s.io\r\n");
    assert_eq!(get_status_with(&p.rcri, authority, &path, &bogus)?, 403);
    let path = spend(&mut rs)?;
    assert_eq!(get_status_with(&p.rcri, authority, &path, spdy)?, 400);
    // A good WebSocket upgrade switches protocols.
    let path = spend(&mut rs)?;
    let good_ws = format!("{ws}Sec-WebSocket-Protocol: v4.channel.k8s.io\r\n");
    assert_eq!(get_status_with(&p.rcri, authority, &path, &good_ws)?, 101);

    let code = |r: Result<tonic::Response<cri::ExecResponse>, tonic::Status>| match r {
        Ok(v) => panic!("expected an error, got {v:?}"),
        Err(s) => s.code(),
    };
    let bad = |f: &dyn Fn(&mut cri::ExecRequest)| {
        let mut r = good.clone();
        f(&mut r);
        r
    };
    assert_eq!(
        code(exec(&mut rs, bad(&|r| r.cmd.clear()))),
        tonic::Code::InvalidArgument
    );
    assert_eq!(
        code(exec(&mut rs, bad(&|r| r.stdout = false))),
        tonic::Code::InvalidArgument
    );
    assert_eq!(
        code(exec(
            &mut rs,
            bad(&|r| {
                r.tty = true;
                r.stderr = true;
            })
        )),
        tonic::Code::InvalidArgument
    );
    assert_eq!(
        code(exec(&mut rs, bad(&|r| r.container_id = "nope".into()))),
        tonic::Code::NotFound
    );
    let pf = p.rcri.block_on(rs.port_forward(cri::PortForwardRequest {
        pod_sandbox_id: "nope".into(),
        port: vec![80],
    }));
    assert_eq!(pf.err().map(|s| s.code()), Some(tonic::Code::NotFound));
    Ok(())
}

fn killed_client_kills_the_process(transport: &str, tty: bool) -> Result<()> {
    let Some(p) = pod_with("stream-kill", &["sleep", "3600"])? else {
        return Ok(());
    };
    let mut child = p
        .rcri
        .rcrictl(&[
            "exec",
            if tty { "-it" } else { "-i" },
            "--transport",
            transport,
            &p.ctr,
            "sh",
            "-c",
            "echo started; exec sleep 4242",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()?;
    let stdout = child.stdout.take().ok_or_else(|| anyhow!("no stdout"))?;
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line)?;
    assert_eq!(line.trim_end(), "started");
    let ps = || -> Result<String> {
        let r = p
            .rcri
            .exec_sync(&p.ctr, &["ps", "-o", "pid,args"], 10)
            .map_err(|s| anyhow!("ExecSync ps: {s:?}"))?;
        Ok(String::from_utf8_lossy(&r.stdout).into_owned())
    };
    assert!(ps()?.contains("sleep 4242"), "{}", ps()?);
    child.kill()?;
    child.wait()?;
    let deadline = Instant::now() + scaled(Duration::from_secs(10));
    loop {
        let procs = ps()?;
        if !procs.contains("sleep 4242") {
            break;
        }
        if Instant::now() > deadline {
            bail!(
                "the exec'd process outlived its client:\n{procs}\n{}",
                p.rcri.server_log()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let deadline = Instant::now() + scaled(Duration::from_secs(5));
    while assert_no_exec_files(&p.rcri).is_err() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_no_exec_files(&p.rcri)
}

#[test]
fn killed_client_kills_the_process_over_websocket() -> Result<()> {
    killed_client_kills_the_process("websocket", false)
}

#[test]
fn killed_tty_client_kills_the_process_over_websocket() -> Result<()> {
    killed_client_kills_the_process("websocket", true)
}

#[test]
fn killed_client_kills_the_process_over_spdy() -> Result<()> {
    killed_client_kills_the_process("spdy", false)
}

/// No exec process/pid file is left in any bundle.
fn assert_no_exec_files(rcri: &Rcri) -> Result<()> {
    let out = run_command(
        std::process::Command::new("find").args([
            &rcri.state().display().to_string(),
            "-name",
            "exec-*",
        ]),
        Duration::from_secs(10),
    )?;
    if !out.stdout.trim().is_empty() {
        bail!("exec files left behind:\n{}", out.stdout);
    }
    Ok(())
}

fn attach_sees_the_output(transport: &str) -> Result<()> {
    let Some(p) = pod_with(
        "stream-attach",
        &["sh", "-c", "while true; do echo tick; sleep 0.2; done"],
    )?
    else {
        return Ok(());
    };
    let mut child = p
        .rcri
        .rcrictl(&["attach", "--transport", transport, &p.ctr])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()?;
    let stdout = child.stdout.take().ok_or_else(|| anyhow!("no stdout"))?;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    let line = rx.recv_timeout(scaled(Duration::from_secs(15)));
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(
        line.ok().as_deref(),
        Some("tick\n"),
        "{}",
        p.rcri.server_log()
    );
    // The container runs on after its client left.
    let st = p.rcri.container_status(&p.ctr)?;
    assert_eq!(st.state, cri::ContainerState::ContainerRunning as i32);
    Ok(())
}

#[test]
fn attach_sees_the_output_over_websocket() -> Result<()> {
    attach_sees_the_output("websocket")
}

#[test]
fn attach_sees_the_output_over_spdy() -> Result<()> {
    attach_sees_the_output("spdy")
}
