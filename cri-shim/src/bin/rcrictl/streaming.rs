//! rcrictl's streaming commands (`exec -i/-t`, `attach`, `port-forward`): the URL a CRI call
//! returned, driven over SPDY (crictl's default) or WebSocket, with the local terminal in raw
//! mode and its resizes sent along when there is a tty.

use std::os::fd::AsFd;

use anyhow::{bail, Context, Result};
use k8s_cri::v1 as cri;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use rcri::streaming::{CommandOutcome, TermSize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use tonic::transport::Channel;

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    Spdy,
    /// As crictl: remotecommand over WebSocket channels; port-forward as SPDY tunneled in a
    /// WebSocket.
    Websocket,
    /// Port-forward over kubelet's older channel-per-port WebSocket protocol (one session per
    /// connection); exec and attach as `websocket`.
    WebsocketChannels,
}

/// The local side of a session: our stdio, and a tty's sizes.
pub struct Local {
    pub stdin: bool,
    pub tty: bool,
    /// The size to announce when stdin is not a terminal (tests, scripts).
    pub size: Option<TermSize>,
}

/// The terminal in raw mode while the session runs; restored on drop.
struct RawMode(Option<nix::sys::termios::Termios>);

impl RawMode {
    fn enter() -> RawMode {
        use nix::sys::termios::{cfmakeraw, tcgetattr, tcsetattr, SetArg};
        let stdin = std::io::stdin();
        let Ok(orig) = tcgetattr(stdin.as_fd()) else {
            return RawMode(None);
        };
        let mut raw = orig.clone();
        cfmakeraw(&mut raw);
        if tcsetattr(stdin.as_fd(), SetArg::TCSANOW, &raw).is_err() {
            return RawMode(None);
        }
        RawMode(Some(orig))
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        if let Some(t) = &self.0 {
            let _ = nix::sys::termios::tcsetattr(
                std::io::stdin().as_fd(),
                nix::sys::termios::SetArg::TCSANOW,
                t,
            );
        }
    }
}

fn stdin_is_tty() -> bool {
    nix::unistd::isatty(std::io::stdin().as_fd()).unwrap_or(false)
}

fn terminal_size() -> Option<TermSize> {
    let mut ws = std::mem::MaybeUninit::<libc::winsize>::zeroed();
    for fd in [libc::STDIN_FILENO, libc::STDOUT_FILENO] {
        // SAFETY: TIOCGWINSZ fills one winsize.
        if unsafe { libc::ioctl(fd, libc::TIOCGWINSZ, ws.as_mut_ptr()) } == 0 {
            // SAFETY: filled by the successful ioctl.
            let ws = unsafe { ws.assume_init() };
            return Some(TermSize {
                width: ws.ws_col,
                height: ws.ws_row,
            });
        }
    }
    None
}

/// Parses `WIDTHxHEIGHT`.
pub fn parse_size(s: &str) -> Result<TermSize, String> {
    let (w, h) = s
        .split_once('x')
        .ok_or_else(|| format!("{s:?} is not WIDTHxHEIGHT"))?;
    let num = |v: &str| v.trim().parse::<u16>().map_err(|e| format!("{v:?}: {e}"));
    Ok(TermSize {
        width: num(w)?,
        height: num(h)?,
    })
}

/// The sizes to send: the terminal's now and on every SIGWINCH, or the given one once.
fn resizes(local: &Local) -> Option<mpsc::Receiver<TermSize>> {
    if !local.tty {
        return None;
    }
    let (tx, rx) = mpsc::channel(8);
    if stdin_is_tty() {
        tokio::spawn(async move {
            if let Some(size) = terminal_size() {
                let _ = tx.send(size).await;
            }
            let Ok(mut winch) =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::window_change())
            else {
                return;
            };
            while winch.recv().await.is_some() {
                if let Some(size) = terminal_size() {
                    if tx.send(size).await.is_err() {
                        return;
                    }
                }
            }
        });
    } else if let Some(size) = local.size {
        let _ = tx.try_send(size);
    }
    Some(rx)
}

type Input = Box<dyn AsyncRead + Unpin + Send>;
type Output = Box<dyn AsyncWrite + Unpin + Send>;

/// Runs an exec/attach session on `url`; returns the command's exit code.
pub async fn remotecommand(url: &str, transport: Transport, local: Local) -> Result<i32> {
    let _raw = (local.tty && stdin_is_tty()).then(RawMode::enter);
    let stdin: Option<Input> = local.stdin.then(|| Box::new(tokio::io::stdin()) as Input);
    let stdout: Output = Box::new(tokio::io::stdout());
    let stderr: Option<Output> = (!local.tty).then(|| Box::new(tokio::io::stderr()) as Output);
    let resize = resizes(&local);
    let outcome = match transport {
        Transport::Websocket | Transport::WebsocketChannels => {
            rcri::streaming::ws::client::remotecommand(
                url,
                rcri::streaming::ws::client::LocalStreams {
                    stdin,
                    stdout: Some(stdout),
                    stderr,
                    resize,
                },
            )
            .await
            .context("streaming over WebSocket failed")?
        }
        Transport::Spdy => {
            spdy_remotecommand(url, stdin, stdout, stderr, resize, local.tty).await?
        }
    };
    drop(_raw);
    match outcome {
        CommandOutcome::Exited(code) => Ok(code),
        CommandOutcome::Failed(msg) => bail!("{msg}"),
    }
}

async fn spdy_remotecommand(
    url: &str,
    stdin: Option<Input>,
    stdout: Output,
    stderr: Option<Output>,
    resize: Option<mpsc::Receiver<TermSize>>,
    tty: bool,
) -> Result<CommandOutcome> {
    use rcri::streaming::spdy::client::RemoteCommandClient;
    use rcri::streaming::{Protocol, StreamOptions};
    let opts = StreamOptions {
        stdin: stdin.is_some(),
        stdout: true,
        stderr: stderr.is_some(),
        tty,
    };
    let protocols = [Protocol::V4, Protocol::V3, Protocol::V2, Protocol::V1];
    let mut client = RemoteCommandClient::connect(url, opts, &protocols)
        .await
        .context("streaming over SPDY failed")?;
    let mut helpers = Vec::new();
    if let (Some(mut from), Some(mut to)) = (stdin, client.stdin.take()) {
        helpers.push(tokio::spawn(async move {
            let _ = tokio::io::copy(&mut from, &mut to).await;
            let _ = to.shutdown().await;
        }));
    }
    if let (Some(mut sizes), Some(tx)) = (resize, client.resize.take()) {
        helpers.push(tokio::spawn(async move {
            while let Some(size) = sizes.recv().await {
                if tx.send(size).await.is_err() {
                    return;
                }
            }
        }));
    }
    let mut outputs = Vec::new();
    for (from, to) in [
        (client.stdout.take(), Some(stdout)),
        (client.stderr.take(), stderr),
    ] {
        if let (Some(mut from), Some(mut to)) = (from, to) {
            outputs.push(tokio::spawn(async move {
                let mut buf = vec![0u8; 32 * 1024];
                loop {
                    match from.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => {
                            if to.write_all(&buf[..n]).await.is_err() {
                                return;
                            }
                            let _ = to.flush().await;
                        }
                    }
                }
            }));
        }
    }
    for o in outputs {
        let _ = o.await;
    }
    let outcome = client.outcome().await.context("streaming over SPDY failed");
    for h in helpers {
        h.abort();
    }
    outcome
}

/// Asks for a port-forward URL of `pod`.
async fn port_forward_url(
    rt: &mut RuntimeServiceClient<Channel>,
    pod: &str,
    remote: u16,
) -> Result<String> {
    let resp = rt
        .port_forward(cri::PortForwardRequest {
            pod_sandbox_id: pod.to_string(),
            port: vec![i32::from(remote)],
        })
        .await
        .map_err(|s| anyhow::anyhow!("PortForward failed: {}", s.message()))?
        .into_inner();
    Ok(resp.url)
}

/// Listens on 127.0.0.1:`local` and forwards every connection to `remote` in the pod, until
/// interrupted.
pub async fn port_forward(
    mut rt: RuntimeServiceClient<Channel>,
    pod: &str,
    transport: Transport,
    local: u16,
    remote: u16,
) -> Result<i32> {
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", local))
        .await
        .with_context(|| format!("cannot listen on 127.0.0.1:{local}"))?;
    let bound = listener.local_addr()?;
    match transport {
        Transport::Spdy | Transport::Websocket => {
            // One SPDY connection carries every forwarded connection (a stream pair each).
            use rcri::streaming::spdy::client::PortForwardClient;
            let url = port_forward_url(&mut rt, pod, remote).await?;
            let client = if transport == Transport::Spdy {
                PortForwardClient::connect(&url).await
            } else {
                let io = rcri::streaming::ws::client::spdy_tunnel(&url)
                    .await
                    .context("port-forward over WebSocket failed")?;
                PortForwardClient::start(io)
            }
            .context("port-forward over SPDY failed")?;
            let client = std::sync::Arc::new(client);
            println!("Forwarding from {bound} -> {remote}");
            loop {
                let (mut conn, _) = listener.accept().await.context("accept failed")?;
                println!("Handling connection for {remote}");
                let forwarded = client
                    .forward(remote)
                    .await
                    .context("port-forward over SPDY failed")?;
                tokio::spawn(async move {
                    let mut data = forwarded.data;
                    let _ = tokio::io::copy_bidirectional(&mut conn, &mut data).await;
                    if let Some(text) = forwarded.error.text().await {
                        eprintln!("rcrictl: port-forward: {text}");
                    }
                });
            }
        }
        Transport::WebsocketChannels => {
            println!("Forwarding from {bound} -> {remote}");
            loop {
                let (conn, _) = listener.accept().await.context("accept failed")?;
                // A WebSocket session forwards one connection per port and a token is single
                // use: every connection gets a URL of its own.
                let url = match port_forward_url(&mut rt, pod, remote).await {
                    Ok(u) => u,
                    Err(e) => {
                        eprintln!("rcrictl: {e:#}");
                        continue;
                    }
                };
                println!("Handling connection for {remote}");
                tokio::spawn(async move {
                    if let Err(e) =
                        rcri::streaming::ws::client::forward_connection(&url, remote, conn).await
                    {
                        eprintln!("rcrictl: port-forward over WebSocket failed: {e}");
                    }
                });
            }
        }
    }
}
