//! rcri end to end: CRI `tty`, `stdin` and `stdin_once`, and attach sessions through the
//! container's monitor, driven with rcri's attach backend (the streams the HTTP layer would
//! pump), on real pods in the test's network namespace.

use std::fs;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use e2e::cri::{container_config, pod_config, v1 as cri, Rcri};
use rcri::streaming::backend::attach::{attach, AttachError, AttachTarget};
use rcri::streaming::{CommandOutcome, CommandStreams, StreamOptions, TermSize};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

const WAIT: Duration = Duration::from_secs(15);

/// The client's ends of an attach session's streams.
struct Client {
    stdin: Option<DuplexStream>,
    stdout: DuplexStream,
    stderr: Option<DuplexStream>,
    resize: Option<mpsc::Sender<TermSize>>,
    /// What stdout and stderr have carried so far.
    seen: Vec<u8>,
    seen_err: Vec<u8>,
    outcome: JoinHandle<CommandOutcome>,
}

async fn read_until(stream: &mut DuplexStream, seen: &mut Vec<u8>, needle: &str) -> Result<String> {
    let deadline = Instant::now() + WAIT;
    let mut buf = [0u8; 4096];
    loop {
        let text = String::from_utf8_lossy(seen).into_owned();
        if text.contains(needle) {
            return Ok(text);
        }
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, stream.read(&mut buf)).await {
            Err(_) => bail!("no {needle:?} within {WAIT:?}; got {text:?}"),
            Ok(Ok(0)) => bail!("the stream ended without {needle:?}; got {text:?}"),
            Ok(Ok(n)) => seen.extend_from_slice(&buf[..n]),
            Ok(Err(e)) => bail!("reading the stream: {e}"),
        }
    }
}

impl Client {
    /// Reads stdout until its text contains `needle`; returns everything read so far.
    async fn expect(&mut self, needle: &str) -> Result<String> {
        read_until(&mut self.stdout, &mut self.seen, needle).await
    }

    async fn expect_stderr(&mut self, needle: &str) -> Result<String> {
        let stderr = self.stderr.as_mut().ok_or_else(|| anyhow!("no stderr"))?;
        read_until(stderr, &mut self.seen_err, needle).await
    }

    async fn send(&mut self, text: &str) -> Result<()> {
        let stdin = self.stdin.as_mut().ok_or_else(|| anyhow!("no stdin"))?;
        stdin.write_all(text.as_bytes()).await?;
        Ok(())
    }

    /// What the client does when its user closes stdin (the protocol layer shuts its end).
    async fn close_stdin(&mut self) -> Result<()> {
        if let Some(mut stdin) = self.stdin.take() {
            stdin.shutdown().await?;
        }
        Ok(())
    }

    async fn outcome(self) -> Result<CommandOutcome> {
        // Keep our ends open: dropping them is a client going away.
        let Client { outcome, .. } = self;
        Ok(tokio::time::timeout(WAIT, outcome)
            .await
            .context("the attach session did not end")??)
    }
}

/// Starts an attach session the way the streaming server would, with in-memory streams.
fn start(target: &AttachTarget, opts: StreamOptions) -> Result<Client, AttachError> {
    let handler = attach(target.clone(), opts)?;
    let pipe = || tokio::io::duplex(64 * 1024);
    let (stdin_ours, stdin_theirs) = pipe();
    let (stdout_ours, stdout_theirs) = pipe();
    let (stderr_ours, stderr_theirs) = pipe();
    let (resize_tx, resize_rx) = mpsc::channel(4);
    let streams = CommandStreams {
        stdin: opts.stdin.then_some(stdin_theirs),
        stdout: Some(stdout_theirs),
        stderr: (!opts.tty && opts.stderr).then_some(stderr_theirs),
        resize: opts.tty.then_some(resize_rx),
    };
    Ok(Client {
        stdin: opts.stdin.then_some(stdin_ours),
        stdout: stdout_ours,
        stderr: (!opts.tty && opts.stderr).then_some(stderr_ours),
        resize: opts.tty.then_some(resize_tx),
        seen: Vec::new(),
        seen_err: Vec::new(),
        outcome: tokio::spawn(handler(streams)),
    })
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?)
}

fn target(rcri: &Rcri, id: &str, config: &cri::ContainerConfig) -> AttachTarget {
    AttachTarget {
        container_id: id.to_string(),
        bundle: bundle(rcri, id),
        tty: config.tty,
        stdin: config.stdin,
        stdin_once: config.stdin_once,
    }
}

/// Where rcri keeps a container's bundle (and so its monitor's files).
fn bundle(rcri: &Rcri, id: &str) -> PathBuf {
    rcri.state().join("containers").join(id)
}

fn monitor_rss_kb(rcri: &Rcri, id: &str) -> Result<u64> {
    let pid = fs::read_to_string(bundle(rcri, id).join("monitor.pid"))?;
    let status = fs::read_to_string(format!("/proc/{}/status", pid.trim()))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or_else(|| anyhow!("no VmRSS for monitor {pid}"))
}

fn start_pod(rcri: &Rcri, name: &str) -> Result<(String, cri::PodSandboxConfig)> {
    let pod = pod_config(name, true, &rcri.log_dir());
    let id = rcri
        .run_pod(&pod)
        .map_err(|s| anyhow!("RunPodSandbox: {s:?}\n{}", rcri.server_log()))?;
    Ok((id, pod))
}

fn with_stdio(
    mut config: cri::ContainerConfig,
    tty: bool,
    stdin: bool,
    stdin_once: bool,
) -> cri::ContainerConfig {
    config.tty = tty;
    config.stdin = stdin;
    config.stdin_once = stdin_once;
    config
}

fn wait_running(rcri: &Rcri, id: &str) -> Result<()> {
    let status = rcri
        .container_status(id)
        .map_err(|s| anyhow!("ContainerStatus: {s:?}"))?;
    if status.state != cri::ContainerState::ContainerRunning as i32 {
        bail!("container {id} is not running: {status:?}");
    }
    Ok(())
}

fn log_text(rcri: &Rcri, name: &str) -> String {
    fs::read_to_string(rcri.log_dir().join(format!("{name}.log"))).unwrap_or_default()
}

/// Waits until the CRI log of `name` has a line containing `needle`.
fn wait_log(rcri: &Rcri, name: &str, needle: &str) -> Result<String> {
    let deadline = Instant::now() + WAIT;
    loop {
        let text = log_text(rcri, name);
        if text.contains(needle) {
            return Ok(text);
        }
        if Instant::now() > deadline {
            bail!("{needle:?} not in the log of {name}: {text:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn tty_shell_answers_on_its_terminal_and_follows_resizes() -> Result<()> {
    let rcri = Rcri::start()?;
    let rt = runtime()?;
    let (pod_id, pod) = start_pod(&rcri, "tty")?;
    let config = with_stdio(container_config("shell", &["sh"]), true, true, false);
    let id = rcri.run_container(&pod_id, &config, &pod)?;
    let spec: serde_json::Value =
        serde_json::from_slice(&fs::read(bundle(&rcri, &id).join("config.json"))?)?;
    assert_eq!(spec["process"]["terminal"], true);
    eprintln!(
        "monitor VmRSS, tty container: {} kB",
        monitor_rss_kb(&rcri, &id)?
    );

    let target = target(&rcri, &id, &config);
    let opts = StreamOptions {
        stdin: true,
        stdout: true,
        stderr: false,
        tty: true,
    };
    let outcome = rt.block_on(async {
        let mut client = start(&target, opts)?;
        let resize = client.resize.clone().ok_or_else(|| anyhow!("no resize"))?;
        client.send("echo hi; tty\n").await?;
        // The tty echoes the command line too; the answers follow it, with the tty's CRLF.
        client.expect("hi\r\n/dev/pts/0\r\n").await?;
        resize
            .send(TermSize {
                width: 123,
                height: 45,
            })
            .await?;
        client.send("stty size\n").await?;
        client.expect("45 123\r\n").await?;
        client.send("exit 3\n").await?;
        client.outcome().await
    })?;
    assert_eq!(outcome, CommandOutcome::Exited(3));
    let status = rcri.wait_exited(&id, WAIT)?;
    assert_eq!(status.exit_code, 3);
    // The terminal's output is the container's stdout in the CRI log.
    let log = log_text(&rcri, "shell");
    assert!(
        log.lines().any(|l| l.contains(" stdout F /dev/pts/0")),
        "{log}"
    );
    assert!(!log.contains(" stderr "), "{log}");
    // The console socket was only needed during create; the attach socket goes with the monitor.
    assert!(!bundle(&rcri, &id).join("console.sock").exists());
    assert!(!bundle(&rcri, &id).join("attach").exists());
    Ok(())
}

#[test]
fn stdin_reaches_cat_from_every_session_and_survives_an_rcri_restart() -> Result<()> {
    let mut rcri = Rcri::start()?;
    let rt = runtime()?;
    let (pod_id, pod) = start_pod(&rcri, "cat")?;
    let config = with_stdio(container_config("cat", &["cat"]), false, true, false);
    let id = rcri.run_container(&pod_id, &config, &pod)?;
    eprintln!(
        "monitor VmRSS, non-tty container: {} kB",
        monitor_rss_kb(&rcri, &id)?
    );
    // The container's stdin is the pipe the monitor holds (not /dev/null).
    let init = fs::read_to_string(bundle(&rcri, &id).join("init.pid"))?;
    let stdin = fs::read_link(format!("/proc/{}/fd/0", init.trim()))?;
    assert!(stdin.to_string_lossy().starts_with("pipe:"), "{stdin:?}");
    let target = target(&rcri, &id, &config);
    let all = StreamOptions {
        stdin: true,
        stdout: true,
        stderr: true,
        tty: false,
    };
    let watch = StreamOptions {
        stdin: false,
        stdout: true,
        stderr: true,
        tty: false,
    };
    let first = rt.block_on(async {
        let mut a = start(&target, all)?;
        let mut b = start(&target, watch)?;
        a.send("hello cat\n").await?;
        a.expect("hello cat\n").await?;
        // Output goes to every session: b sees what a made cat print.
        b.expect("hello cat\n").await?;
        // Without stdin_once, the client closing stdin ends its session, not cat's stdin.
        a.close_stdin().await?;
        let a_outcome = a.outcome().await?;
        Ok::<_, anyhow::Error>((a_outcome, b))
    });
    let (a_outcome, b) = first?;
    assert_eq!(a_outcome, CommandOutcome::Exited(0));
    wait_log(&rcri, "cat", "stdout F hello cat")?;
    wait_running(&rcri, &id)?;
    drop(b);

    // The socket is found from the bundle: a restarted rcri (or none at all) changes nothing.
    rcri.kill9()?;
    rcri.spawn()?;
    let again = rt.block_on(async {
        let mut c = start(&target, all)?;
        c.send("again\n").await?;
        c.expect("again\n").await?;
        c.close_stdin().await?;
        c.outcome().await
    })?;
    assert_eq!(again, CommandOutcome::Exited(0));
    wait_log(&rcri, "cat", "stdout F again")?;
    wait_running(&rcri, &id)?;
    let socket = bundle(&rcri, &id).join("attach");
    rcri.stop_container(&id, 0)
        .map_err(|s| anyhow!("StopContainer: {s:?}"))?;
    let deadline = Instant::now() + WAIT;
    while socket.exists() {
        assert!(
            Instant::now() < deadline,
            "{} outlived the monitor",
            socket.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

#[test]
fn stdin_once_closes_stdin_when_the_first_session_ends() -> Result<()> {
    let rcri = Rcri::start()?;
    let rt = runtime()?;
    let (pod_id, pod) = start_pod(&rcri, "once")?;
    let config = with_stdio(
        container_config(
            "once",
            &["sh", "-c", "cat; echo cat-saw-eof; echo to-stderr >&2"],
        ),
        false,
        true,
        true,
    );
    let id = rcri.run_container(&pod_id, &config, &pod)?;
    let target = target(&rcri, &id, &config);
    let opts = StreamOptions {
        stdin: true,
        stdout: true,
        stderr: true,
        tty: false,
    };
    let outcome = rt.block_on(async {
        let mut client = start(&target, opts)?;
        client.send("only once\n").await?;
        client.expect("only once\n").await?;
        client.close_stdin().await?;
        // cat sees EOF, the shell goes on, the session follows the container to its end.
        client.expect("cat-saw-eof\n").await?;
        client.expect_stderr("to-stderr\n").await?;
        client.outcome().await
    })?;
    assert_eq!(outcome, CommandOutcome::Exited(0));
    let status = rcri.wait_exited(&id, WAIT)?;
    assert_eq!(status.exit_code, 0);
    wait_log(&rcri, "once", "stdout F cat-saw-eof")?;
    Ok(())
}

#[test]
fn attach_to_a_container_that_is_not_running_fails_clearly() -> Result<()> {
    let rcri = Rcri::start()?;
    let _rt = runtime()?;
    let (pod_id, pod) = start_pod(&rcri, "gone")?;
    let opts = StreamOptions {
        stdin: false,
        stdout: true,
        stderr: true,
        tty: false,
    };
    let config = container_config("done", &["sh", "-c", "echo bye"]);
    let id = rcri.run_container(&pod_id, &config, &pod)?;
    rcri.wait_exited(&id, WAIT)?;
    match start(&target(&rcri, &id, &config), opts) {
        Err(e @ AttachError::NotRunning(_)) => {
            assert_eq!(e.to_string(), format!("container {id} is not running"))
        }
        Err(e) => bail!("unexpected error: {e}"),
        Ok(_) => bail!("attach to an exited container succeeded"),
    }
    // Created but never started: no monitor, no socket.
    let config = container_config("idle", &["sleep", "30"]);
    let idle = rcri
        .create_container(&pod_id, &config, &pod)
        .map_err(|s| anyhow!("CreateContainer: {s:?}"))?;
    assert!(matches!(
        start(&target(&rcri, &idle, &config), opts),
        Err(AttachError::NotRunning(_))
    ));
    Ok(())
}

#[test]
fn a_session_that_stops_reading_never_stalls_the_log() -> Result<()> {
    let rcri = Rcri::start()?;
    let rt = runtime()?;
    let (pod_id, pod) = start_pod(&rcri, "flood")?;
    // ~3.4 MB of output, far beyond what the session's pipe and socket buffers hold.
    let config = container_config(
        "flood",
        &["sh", "-c", "sleep 1; seq 1 500000; echo flood-done"],
    );
    let id = rcri.run_container(&pod_id, &config, &pod)?;
    let opts = StreamOptions {
        stdin: false,
        stdout: true,
        stderr: true,
        tty: false,
    };
    let target = target(&rcri, &id, &config);
    // A client that does not read its stdout for now.
    let mut client = rt.block_on(async { start(&target, opts) })?;
    let status = rcri.wait_exited(&id, WAIT)?;
    assert_eq!(status.exit_code, 0);
    let log = wait_log(&rcri, "flood", "stdout F flood-done")?;
    assert!(log.contains("stdout F 500000\n"), "the log lost output");

    // The monitor dropped the stalled session: what the client gets is a head of the output,
    // then the end of the session (no hang).
    let text = rt.block_on(async {
        let mut text = Vec::new();
        tokio::time::timeout(WAIT, client.stdout.read_to_end(&mut text))
            .await
            .context("the dropped session's stdout did not end")??;
        Ok::<_, anyhow::Error>(String::from_utf8_lossy(&text).into_owned())
    })?;
    assert!(
        text.starts_with("1\n2\n3\n"),
        "{:?}",
        &text[..text.len().min(100)]
    );
    assert!(
        !text.contains("flood-done"),
        "the stalled session got all the output"
    );
    rt.block_on(client.outcome())?;
    Ok(())
}
