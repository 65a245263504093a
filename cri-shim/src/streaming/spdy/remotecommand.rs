//! The server side of a remotecommand session (exec, attach) over SPDY, as kubelet's
//! `remotecommand/httpstream.go` runs it: the client opens one stream per channel, tagged with a
//! `streamType` header; once the expected set is there the command runs; at the end the error
//! stream carries the outcome and every stream is half-closed.

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

use super::frame::rst;
use super::session::{Connection, IncomingStream, RecvHalf, Role, SendHalf, Stream, MAX_CHUNK};
use super::STREAM_TYPE_HEADER;
use crate::streaming::{
    error_stream_payload, CommandHandler, CommandStreams, Protocol, StreamOptions, TermSize,
};

/// How long the client has to open its streams (kubelet's streamCreationTimeout default).
pub const STREAM_CREATION_TIMEOUT: Duration = Duration::from_secs(30);
/// How long to wait for the client to close the connection after this side has said GOAWAY.
pub const CLOSE_LINGER: Duration = Duration::from_secs(5);
/// The in-memory pipes between the wire and the backend.
const PIPE_SIZE: usize = 64 * 1024;
/// A resize message longer than this is not a terminal size.
const MAX_RESIZE_MESSAGE: usize = 4096;

#[derive(Default)]
struct Channels {
    error: Option<Stream>,
    stdin: Option<Stream>,
    stdout: Option<Stream>,
    stderr: Option<Stream>,
    resize: Option<Stream>,
}

/// Which streams the session waits for: always error; stdin/stdout as asked; stderr unless a
/// tty merges it into stdout; resize with a tty from v3 on.
#[derive(Debug, Clone, Copy)]
struct Expected {
    stdin: bool,
    stdout: bool,
    stderr: bool,
    resize: bool,
}

impl Expected {
    fn new(protocol: Protocol, opts: StreamOptions) -> Self {
        Expected {
            stdin: opts.stdin,
            stdout: opts.stdout,
            stderr: opts.stderr && !opts.tty,
            resize: opts.tty && protocol.has_resize(),
        }
    }

    fn slot<'a>(&self, ch: &'a mut Channels, kind: &str) -> Option<&'a mut Option<Stream>> {
        match kind {
            "error" => Some(&mut ch.error),
            "stdin" if self.stdin => Some(&mut ch.stdin),
            "stdout" if self.stdout => Some(&mut ch.stdout),
            "stderr" if self.stderr => Some(&mut ch.stderr),
            "resize" if self.resize => Some(&mut ch.resize),
            _ => None,
        }
    }

    fn complete(&self, ch: &Channels) -> bool {
        ch.error.is_some()
            && ch.stdin.is_some() == self.stdin
            && ch.stdout.is_some() == self.stdout
            && ch.stderr.is_some() == self.stderr
            && ch.resize.is_some() == self.resize
    }
}

/// Serves one exec or attach session on a connection already upgraded to SPDY/3.1, running
/// `handler` once the client's streams are there. Returns when the session is over and the
/// connection closed.
pub async fn serve_remotecommand<IO>(
    io: IO,
    protocol: Protocol,
    opts: StreamOptions,
    handler: CommandHandler,
) where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    serve_with_timeout(io, protocol, opts, handler, STREAM_CREATION_TIMEOUT).await
}

pub(super) async fn serve_with_timeout<IO>(
    io: IO,
    protocol: Protocol,
    opts: StreamOptions,
    handler: CommandHandler,
    creation_timeout: Duration,
) where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (conn, mut incoming) = match Connection::start(io, Role::Server) {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(error = %e, "spdy remotecommand: cannot start the session");
            return;
        }
    };
    let expected = Expected::new(protocol, opts);
    let mut ch = Channels::default();
    let deadline = tokio::time::Instant::now() + creation_timeout;
    while !expected.complete(&ch) {
        let next = tokio::select! {
            s = incoming.recv() => s,
            _ = tokio::time::sleep_until(deadline) => {
                tracing::warn!(protocol = protocol.name(), "spdy remotecommand: timed out waiting for the client to create streams");
                if let Some(err) = ch.error.take() {
                    let mut send = err.send;
                    let _ = send.send(b"timed out waiting for client to create streams").await;
                    let _ = send.finish().await;
                }
                conn.close(CLOSE_LINGER).await;
                return;
            }
        };
        let Some(s) = next else {
            tracing::info!("spdy remotecommand: the client left before creating its streams");
            return;
        };
        accept_channel(&expected, &mut ch, s).await;
    }
    // Streams opened from now on have no place in the session.
    let refuser = tokio::spawn(async move {
        while let Some(s) = incoming.recv().await {
            tracing::debug!(
                stream = s.id,
                "spdy remotecommand: refusing a stream opened after setup"
            );
            s.refuse(rst::REFUSED_STREAM);
        }
    });

    let mut keep: Vec<SendHalf> = Vec::new();
    let (stdin, stdin_pump) = match ch.stdin.take() {
        Some(s) => {
            let (backend, ours) = tokio::io::duplex(PIPE_SIZE);
            keep.push(s.send);
            (
                Some(backend),
                Some(tokio::spawn(until_closed(
                    conn.clone(),
                    pump_in(s.recv, ours),
                ))),
            )
        }
        None => (None, None),
    };
    let mut outputs = Vec::new();
    let mut output = |s: Option<Stream>| {
        s.map(|s| {
            let (backend, ours) = tokio::io::duplex(PIPE_SIZE);
            outputs.push(tokio::spawn(until_closed(
                conn.clone(),
                pump_out(ours, s.send),
            )));
            backend
        })
    };
    let stdout = output(ch.stdout.take());
    let stderr = output(ch.stderr.take());
    let (resize, resize_pump) = match ch.resize.take() {
        Some(s) => {
            let (tx, rx) = mpsc::channel(16);
            keep.push(s.send);
            (Some(rx), Some(tokio::spawn(pump_resize(s.recv, tx))))
        }
        None => (None, None),
    };

    let outcome = handler(CommandStreams {
        stdin,
        stdout,
        stderr,
        resize,
    })
    .await;

    // The backend has dropped its ends: send what is left of the output before the outcome,
    // which the client reads only after its output streams ended.
    for p in outputs {
        let _ = p.await;
    }
    for p in [stdin_pump, resize_pump].into_iter().flatten() {
        p.abort();
    }
    if let Some(err) = ch.error.take() {
        let mut send = err.send;
        if let Some(payload) = error_stream_payload(protocol, &outcome) {
            if let Err(e) = send.send(&payload).await {
                tracing::info!(error = %e, "spdy remotecommand: cannot deliver the outcome; the client is gone");
            }
        }
        let _ = send.finish().await;
    }
    for s in keep {
        let _ = s.finish().await;
    }
    refuser.abort();
    conn.close(CLOSE_LINGER).await;
}

/// Runs a pump until it ends or the connection does: dropping the pump's pipe end at once tells
/// the backend (EOF on stdin, EPIPE on output) that the client is gone, instead of at the next
/// write.
async fn until_closed(conn: Connection, pump: impl std::future::Future<Output = ()>) {
    tokio::select! {
        _ = pump => {}
        _ = conn.closed() => {}
    }
}

async fn accept_channel(expected: &Expected, ch: &mut Channels, s: IncomingStream) {
    let kind = s.header(STREAM_TYPE_HEADER).unwrap_or_default().to_string();
    let Some(slot) = expected.slot(ch, &kind) else {
        tracing::warn!(
            stream = s.id,
            kind,
            "spdy remotecommand: unexpected stream type"
        );
        s.refuse(rst::REFUSED_STREAM);
        return;
    };
    if slot.is_some() {
        tracing::warn!(
            stream = s.id,
            kind,
            "spdy remotecommand: a second stream of one type"
        );
        s.refuse(rst::PROTOCOL_ERROR);
        return;
    }
    match s.accept().await {
        Ok(stream) => *slot = Some(stream),
        Err(e) => tracing::info!(error = %e, "spdy remotecommand: cannot reply to a stream"),
    }
}

/// Client → backend: data until the client half-closes, then EOF for the backend.
pub(super) async fn pump_in<W: AsyncWrite + Unpin>(mut recv: RecvHalf, mut to: W) {
    // A reset or a dropped connection ends the input like a FIN: kubelet resets its streams
    // as it closes, after the last data.
    while let Ok(Some(b)) = recv.read().await {
        if to.write_all(&b).await.is_err() {
            return;
        }
    }
    let _ = to.shutdown().await;
}

/// Backend → client: data until the backend's end is dropped, then FIN.
pub(super) async fn pump_out<R: AsyncRead + Unpin>(mut from: R, mut send: SendHalf) {
    let mut buf = vec![0u8; MAX_CHUNK];
    loop {
        match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if send.send(&buf[..n]).await.is_err() {
                    return;
                }
            }
        }
    }
    let _ = send.finish().await;
}

/// Terminal sizes: JSON objects, one after another (client-go puts a newline after each).
async fn pump_resize(mut recv: RecvHalf, tx: mpsc::Sender<TermSize>) {
    let mut buf: Vec<u8> = Vec::new();
    while let Ok(Some(b)) = recv.read().await {
        buf.extend_from_slice(&b);
        let (sizes, used) = match split_sizes(&buf) {
            Ok(parsed) => parsed,
            Err(e) => {
                tracing::warn!(error = %e, "spdy remotecommand: malformed terminal size; ignoring further resizes");
                return;
            }
        };
        for size in sizes {
            if tx.send(size).await.is_err() {
                return;
            }
        }
        buf.drain(..used);
        if buf.len() > MAX_RESIZE_MESSAGE {
            tracing::warn!(
                "spdy remotecommand: oversized terminal size message; ignoring further resizes"
            );
            return;
        }
    }
}

/// The complete terminal sizes at the start of `buf`, and how many bytes they took; an
/// incomplete one at the end waits for more.
fn split_sizes(buf: &[u8]) -> Result<(Vec<TermSize>, usize), serde_json::Error> {
    let mut it = serde_json::Deserializer::from_slice(buf).into_iter::<TermSize>();
    let mut sizes = Vec::new();
    let mut used = 0;
    loop {
        match it.next() {
            Some(Ok(size)) => {
                sizes.push(size);
                used = it.byte_offset();
            }
            Some(Err(e)) if e.is_eof() => return Ok((sizes, used)),
            Some(Err(e)) => return Err(e),
            None => return Ok((sizes, it.byte_offset())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn terminal_sizes_back_to_back_split_and_partial() {
        let size = |w, h| TermSize {
            width: w,
            height: h,
        };
        let (s, used) =
            split_sizes(b"{\"Width\":80,\"Height\":24}{\"Width\":1,\"Height\":2}\n{\"Wid").unwrap();
        assert_eq!(s, vec![size(80, 24), size(1, 2)]);
        assert_eq!(used, 46);
        let (s, used) = split_sizes(b"  \n").unwrap();
        assert!(s.is_empty());
        assert_eq!(used, 3);
        assert!(split_sizes(b"nope").is_err());
        assert!(split_sizes(b"{\"Width\":-1,\"Height\":2}").is_err());
    }

    #[test]
    fn expected_streams_follow_the_protocol() {
        let tty = StreamOptions {
            stdin: true,
            stdout: true,
            stderr: true,
            tty: true,
        };
        let e = Expected::new(Protocol::V4, tty);
        assert!(e.resize && !e.stderr && e.stdin && e.stdout);
        let e = Expected::new(Protocol::V2, tty);
        assert!(!e.resize);
        let plain = StreamOptions { tty: false, ..tty };
        let e = Expected::new(Protocol::V3, plain);
        assert!(e.stderr && !e.resize);
    }
}
