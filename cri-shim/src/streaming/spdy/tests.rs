//! Client ↔ server round trips over in-memory pipes and loopback sockets, and the wire-level
//! behaviours a Go peer relies on, checked against a hand-driven raw peer.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio::net::{TcpListener, TcpStream};

use super::client::{decode_outcome, ClientError, PortForwardClient, RemoteCommandClient};
use super::frame::{self, parse_head, Frame, Head, Setting, SETTINGS_INITIAL_WINDOW_SIZE};
use super::session::{Connection, Role};
use super::zlib::{HeaderCompressor, HeaderDecompressor};
use super::{serve_portforward, serve_remotecommand};
use crate::streaming::{
    CommandHandler, CommandOutcome, CommandStreams, PortConnector, Protocol, StreamOptions,
    TermSize,
};

const T: Duration = Duration::from_secs(20);

/// A peer driven frame by frame, standing in for a Go client or server.
struct RawPeer {
    io: DuplexStream,
    z: HeaderCompressor,
    d: HeaderDecompressor,
}

impl RawPeer {
    fn new(io: DuplexStream) -> Self {
        RawPeer {
            io,
            z: HeaderCompressor::new().unwrap(),
            d: HeaderDecompressor::default(),
        }
    }

    async fn send(&mut self, f: Frame) {
        let mut buf = Vec::new();
        f.encode(&mut self.z, &mut buf).unwrap();
        self.io.write_all(&buf).await.unwrap();
    }

    async fn next(&mut self) -> Option<Frame> {
        let mut head = [0u8; 8];
        self.io.read_exact(&mut head).await.ok()?;
        let len = match parse_head(head) {
            Head::Control { len, .. } | Head::Data { len, .. } => len,
        };
        let mut buf = head.to_vec();
        buf.resize(8 + len, 0);
        self.io.read_exact(&mut buf[8..]).await.ok()?;
        Some(frame::decode(&buf, &mut self.d).unwrap().0)
    }

    /// The next frame that is not part of the server's greeting.
    async fn next_skipping_hello(&mut self) -> Option<Frame> {
        loop {
            match self.next().await? {
                Frame::Settings { .. } | Frame::WindowUpdate { stream_id: 0, .. } => continue,
                f => return Some(f),
            }
        }
    }
}

fn hdrs(pairs: &[(&str, &str)]) -> frame::Headers {
    pairs
        .iter()
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect()
}

async fn read_until(peer: &mut RawPeer, want: usize) -> usize {
    let mut n = 0;
    while n < want {
        match peer.next().await {
            Some(Frame::Data { data, .. }) => n += data.len(),
            other => panic!("unexpected {other:?}"),
        }
    }
    n
}

#[tokio::test]
async fn sender_stops_at_the_peers_window_and_resumes_on_window_update() {
    let (ours, theirs) = tokio::io::duplex(1 << 20);
    let (_conn, mut incoming) = Connection::start(ours, Role::Server).unwrap();
    let mut peer = RawPeer::new(theirs);
    peer.send(Frame::Settings {
        clear: false,
        settings: vec![Setting {
            flags: 0,
            id: SETTINGS_INITIAL_WINDOW_SIZE,
            value: 1000,
        }],
    })
    .await;
    peer.send(Frame::SynStream {
        stream_id: 1,
        associated_to: 0,
        priority: 0,
        flags: 0,
        headers: hdrs(&[("streamtype", "stdout")]),
    })
    .await;
    let s = incoming.recv().await.unwrap();
    let mut stream = s.accept().await.unwrap();
    let sender = tokio::spawn(async move {
        stream.send.send(&[7u8; 5000]).await.unwrap();
        stream.send.finish().await.unwrap();
    });
    assert!(matches!(
        peer.next_skipping_hello().await,
        Some(Frame::SynReply { stream_id: 1, .. })
    ));
    let mut got = 0;
    got += read_until(&mut peer, 1000).await;
    assert_eq!(got, 1000);
    // The window is used up: nothing more comes until the peer opens it.
    assert!(
        tokio::time::timeout(Duration::from_millis(300), peer.next())
            .await
            .is_err()
    );
    peer.send(Frame::WindowUpdate {
        stream_id: 1,
        delta: 1500,
    })
    .await;
    got += read_until(&mut peer, 1500).await;
    assert_eq!(got, 2500);
    assert!(
        tokio::time::timeout(Duration::from_millis(300), peer.next())
            .await
            .is_err()
    );
    peer.send(Frame::WindowUpdate {
        stream_id: 1,
        delta: 100_000,
    })
    .await;
    got += read_until(&mut peer, 2500).await;
    assert_eq!(got, 5000);
    assert!(
        matches!(peer.next().await, Some(Frame::Data { fin: true, ref data, .. }) if data.is_empty())
    );
    sender.await.unwrap();
}

#[tokio::test]
async fn a_peer_without_flow_control_gets_everything_like_spdystream_expects() {
    // moby/spdystream never sends SETTINGS or WINDOW_UPDATE: holding to the 64 KiB default
    // would hang every exec with more output than that.
    let (ours, theirs) = tokio::io::duplex(1 << 16);
    let (_conn, mut incoming) = Connection::start(ours, Role::Server).unwrap();
    let mut peer = RawPeer::new(theirs);
    peer.send(Frame::SynStream {
        stream_id: 1,
        associated_to: 0,
        priority: 0,
        flags: 0,
        headers: hdrs(&[("streamtype", "stdout")]),
    })
    .await;
    let mut stream = incoming.recv().await.unwrap().accept().await.unwrap();
    let total = 300 * 1024;
    tokio::spawn(async move {
        stream.send.send(&vec![1u8; total]).await.unwrap();
        stream.send.finish().await.unwrap();
    });
    let mut n = 0;
    loop {
        match tokio::time::timeout(T, peer.next_skipping_hello())
            .await
            .unwrap()
        {
            Some(Frame::SynReply { .. }) => {}
            Some(Frame::Data { data, fin, .. }) => {
                n += data.len();
                if fin {
                    break;
                }
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(n, total);
}

#[tokio::test]
async fn window_updates_follow_consumption_and_pings_are_answered() {
    let (ours, theirs) = tokio::io::duplex(1 << 20);
    let (_conn, mut incoming) = Connection::start(ours, Role::Server).unwrap();
    let mut peer = RawPeer::new(theirs);
    peer.send(Frame::SynStream {
        stream_id: 1,
        associated_to: 0,
        priority: 0,
        flags: 0,
        headers: hdrs(&[("streamtype", "stdin")]),
    })
    .await;
    let mut stream = incoming.recv().await.unwrap().accept().await.unwrap();
    // Greeting: our window announced, then the reply.
    let mut saw_settings = false;
    loop {
        match peer.next().await.unwrap() {
            Frame::Settings { settings, .. } => {
                saw_settings = settings.iter().any(|s| {
                    s.id == SETTINGS_INITIAL_WINDOW_SIZE && s.value == super::session::RECV_WINDOW
                })
            }
            Frame::SynReply { stream_id: 1, .. } => break,
            _ => {}
        }
    }
    assert!(saw_settings);
    for _ in 0..10 {
        peer.send(Frame::Data {
            stream_id: 1,
            fin: false,
            data: Bytes::from(vec![0u8; 16 * 1024]),
        })
        .await;
    }
    let mut n = 0;
    while n < 160 * 1024 {
        n += stream.recv.read().await.unwrap().unwrap().len();
    }
    peer.send(Frame::Ping { id: 5 }).await;
    let mut window_update = None;
    loop {
        match peer.next().await.unwrap() {
            Frame::WindowUpdate {
                stream_id: 1,
                delta,
            } => window_update = Some(delta),
            Frame::Ping { id: 5 } => break,
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(window_update.is_some_and(|d| d >= super::session::RECV_WINDOW / 2));
}

#[tokio::test]
async fn a_peer_sending_past_the_window_is_held_back_not_buffered() {
    let (ours, theirs) = tokio::io::duplex(64 * 1024);
    let (_conn, mut incoming) = Connection::start(ours, Role::Server).unwrap();
    let (mut rd, wr) = tokio::io::split(theirs);
    tokio::spawn(async move {
        // Drain what the server says; this test looks at what it reads.
        let mut sink = vec![0u8; 4096];
        while rd.read(&mut sink).await.is_ok_and(|n| n > 0) {}
    });
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Frame>(8);
    let mut z = HeaderCompressor::new().unwrap();
    let writer = tokio::spawn(async move {
        let mut wr = wr;
        while let Some(f) = rx.recv().await {
            let mut buf = Vec::new();
            f.encode(&mut z, &mut buf).unwrap();
            wr.write_all(&buf).await.unwrap();
        }
    });
    tx.send(Frame::SynStream {
        stream_id: 1,
        associated_to: 0,
        priority: 0,
        flags: 0,
        headers: hdrs(&[("streamtype", "stdin")]),
    })
    .await
    .unwrap();
    let mut stream = incoming.recv().await.unwrap().accept().await.unwrap();
    // Twice the advertised window, as spdystream would send it, then a second stream.
    let chunk = 16 * 1024;
    let total = 2 * super::session::RECV_WINDOW as usize;
    let sender = tokio::spawn(async move {
        for _ in 0..total / chunk {
            tx.send(Frame::Data {
                stream_id: 1,
                fin: false,
                data: Bytes::from(vec![9u8; chunk]),
            })
            .await
            .unwrap();
        }
        tx.send(Frame::SynStream {
            stream_id: 3,
            associated_to: 0,
            priority: 0,
            flags: 0,
            headers: hdrs(&[("streamtype", "stdout")]),
        })
        .await
        .unwrap();
    });
    // Nobody reads stream 1: the reader waits for its budget, so stream 3 is not seen.
    assert!(
        tokio::time::timeout(Duration::from_millis(300), incoming.recv())
            .await
            .is_err()
    );
    let mut n = 0;
    while n < total {
        n += stream.recv.read().await.unwrap().unwrap().len();
    }
    let third = tokio::time::timeout(T, incoming.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(third.id, 3);
    sender.await.unwrap();
    writer.abort();
}

#[tokio::test]
async fn a_malformed_frame_ends_the_connection_with_goaway() {
    let (ours, theirs) = tokio::io::duplex(1 << 16);
    let (conn, _incoming) = Connection::start(ours, Role::Server).unwrap();
    let mut peer = RawPeer::new(theirs);
    // RST_STREAM whose length says 4 instead of 8.
    peer.io
        .write_all(&[0x80, 3, 0, 3, 0, 0, 0, 4, 0, 0, 0, 1])
        .await
        .unwrap();
    tokio::time::timeout(T, conn.closed()).await.unwrap();
    assert!(matches!(
        peer.next_skipping_hello().await,
        Some(Frame::GoAway {
            status: frame::goaway::PROTOCOL_ERROR,
            ..
        })
    ));
    // And a SYN_STREAM whose header block is not zlib.
    let (ours, theirs) = tokio::io::duplex(1 << 16);
    let (conn, _incoming) = Connection::start(ours, Role::Server).unwrap();
    let mut raw = theirs;
    raw.write_all(&[
        0x80, 3, 0, 1, 0, 0, 0, 14, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4,
    ])
    .await
    .unwrap();
    tokio::time::timeout(T, conn.closed()).await.unwrap();
}

/// Echoes stdin to stdout, says something on stderr, reports the first resize, exits 3.
fn echo_handler(sizes: Arc<Mutex<Vec<TermSize>>>, outcome: CommandOutcome) -> CommandHandler {
    Box::new(move |s: CommandStreams| {
        Box::pin(async move {
            let CommandStreams {
                stdin,
                stdout,
                stderr,
                resize,
            } = s;
            let mut stdout = stdout.unwrap();
            if let Some(mut e) = stderr {
                e.write_all(b"to stderr\n").await.unwrap();
            }
            if let Some(mut r) = resize {
                let size = r.recv().await.unwrap();
                sizes.lock().unwrap().push(size);
                stdout
                    .write_all(format!("size {}x{}\n", size.width, size.height).as_bytes())
                    .await
                    .unwrap();
            }
            if let Some(mut i) = stdin {
                tokio::io::copy(&mut i, &mut stdout).await.unwrap();
            }
            outcome
        })
    })
}

async fn run_exec(
    protocol: Protocol,
    opts: StreamOptions,
    input: Vec<u8>,
    outcome: CommandOutcome,
) -> (
    Vec<u8>,
    Vec<u8>,
    Result<CommandOutcome, ClientError>,
    Vec<TermSize>,
) {
    let (a, b) = tokio::io::duplex(64 * 1024);
    let sizes = Arc::new(Mutex::new(Vec::new()));
    let server = tokio::spawn(serve_remotecommand(
        a,
        protocol,
        opts,
        echo_handler(sizes.clone(), outcome),
    ));
    let mut c = RemoteCommandClient::start(b, protocol, opts).await.unwrap();
    if let Some(r) = c.resize.take() {
        r.send(TermSize {
            width: 100,
            height: 40,
        })
        .await
        .unwrap();
    }
    let mut stdin = c.stdin.take().unwrap();
    let writer = tokio::spawn(async move {
        stdin.write_all(&input).await.unwrap();
        stdin.shutdown().await.unwrap();
    });
    let mut out = Vec::new();
    let mut err = Vec::new();
    let mut stdout = c.stdout.take().unwrap();
    let stderr = c.stderr.take();
    let read_err = async {
        if let Some(mut e) = stderr {
            e.read_to_end(&mut err).await.unwrap();
        }
    };
    tokio::time::timeout(T, async {
        tokio::join!(stdout.read_to_end(&mut out), read_err)
    })
    .await
    .unwrap()
    .0
    .unwrap();
    writer.await.unwrap();
    let outcome = tokio::time::timeout(T, c.outcome()).await.unwrap();
    tokio::time::timeout(T, server).await.unwrap().unwrap();
    let sizes = sizes.lock().unwrap().clone();
    (out, err, outcome, sizes)
}

fn pattern(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i * 7 % 251) as u8).collect()
}

#[tokio::test]
async fn exec_v4_echoes_a_megabyte_and_reports_exit_code_3() {
    let opts = StreamOptions {
        stdin: true,
        stdout: true,
        stderr: true,
        tty: false,
    };
    let input = pattern(1 << 20);
    let (out, err, outcome, _) =
        run_exec(Protocol::V4, opts, input.clone(), CommandOutcome::Exited(3)).await;
    assert_eq!(out.len(), input.len());
    assert!(out == input, "stdout differs from stdin");
    assert_eq!(err, b"to stderr\n");
    assert_eq!(outcome.unwrap(), CommandOutcome::Exited(3));
}

#[tokio::test]
async fn exec_v4_with_a_tty_gets_resizes_and_no_stderr() {
    let opts = StreamOptions {
        stdin: true,
        stdout: true,
        stderr: true,
        tty: true,
    };
    let (out, err, outcome, sizes) = run_exec(
        Protocol::V4,
        opts,
        b"abc".to_vec(),
        CommandOutcome::Exited(0),
    )
    .await;
    assert_eq!(out, b"size 100x40\nabc");
    assert!(err.is_empty());
    assert_eq!(
        sizes,
        vec![TermSize {
            width: 100,
            height: 40
        }]
    );
    assert_eq!(outcome.unwrap(), CommandOutcome::Exited(0));
}

#[tokio::test]
async fn exec_v1_and_v2_carry_the_exit_code_as_text() {
    let opts = StreamOptions {
        stdin: true,
        stdout: true,
        stderr: true,
        tty: false,
    };
    for p in [Protocol::V1, Protocol::V2, Protocol::V3] {
        let (out, err, outcome, _) =
            run_exec(p, opts, b"hi".to_vec(), CommandOutcome::Exited(3)).await;
        assert_eq!(out, b"hi", "{p:?}");
        assert_eq!(err, b"to stderr\n", "{p:?}");
        assert_eq!(outcome.unwrap(), CommandOutcome::Exited(3), "{p:?}");
    }
    let (_, _, outcome, _) = run_exec(Protocol::V2, opts, vec![], CommandOutcome::Exited(0)).await;
    assert_eq!(outcome.unwrap(), CommandOutcome::Exited(0));
}

#[tokio::test]
async fn a_failed_command_reaches_the_client_as_its_message() {
    let opts = StreamOptions {
        stdin: true,
        stdout: true,
        stderr: false,
        tty: false,
    };
    let (_, _, outcome, _) = run_exec(
        Protocol::V4,
        opts,
        vec![],
        CommandOutcome::Failed("no such binary".into()),
    )
    .await;
    assert_eq!(
        outcome.unwrap(),
        CommandOutcome::Failed("no such binary".into())
    );
}

#[test]
fn outcomes_decode_like_client_go() {
    assert_eq!(
        decode_outcome(Protocol::V4, r#"{"metadata":{},"status":"Success"}"#),
        CommandOutcome::Exited(0)
    );
    let status =
        crate::streaming::error_stream_payload(Protocol::V4, &CommandOutcome::Exited(137)).unwrap();
    assert_eq!(
        decode_outcome(Protocol::V4, std::str::from_utf8(&status).unwrap()),
        CommandOutcome::Exited(137)
    );
    assert_eq!(decode_outcome(Protocol::V2, ""), CommandOutcome::Exited(0));
    assert_eq!(
        decode_outcome(Protocol::V1, "container not running"),
        CommandOutcome::Failed("container not running".into())
    );
}

#[tokio::test]
async fn streams_are_awaited_with_a_timeout_and_a_missing_one_fails_the_session() {
    let (a, b) = tokio::io::duplex(1 << 16);
    let opts = StreamOptions {
        stdin: true,
        stdout: true,
        stderr: false,
        tty: false,
    };
    let called = Arc::new(Mutex::new(false));
    let flag = called.clone();
    let handler: CommandHandler = Box::new(move |_| {
        *flag.lock().unwrap() = true;
        Box::pin(async { CommandOutcome::Exited(0) })
    });
    let server = tokio::spawn(super::remotecommand::serve_with_timeout(
        a,
        Protocol::V4,
        opts,
        handler,
        Duration::from_millis(300),
    ));
    // Only the error stream: stdin and stdout never come.
    let mut peer = RawPeer::new(b);
    peer.send(Frame::SynStream {
        stream_id: 1,
        associated_to: 0,
        priority: 0,
        flags: 0,
        headers: hdrs(&[("streamtype", "error")]),
    })
    .await;
    let mut text = Vec::new();
    loop {
        match peer.next_skipping_hello().await {
            Some(Frame::Data { data, fin, .. }) => {
                text.extend_from_slice(&data);
                if fin {
                    break;
                }
            }
            Some(_) => {}
            None => break,
        }
    }
    assert_eq!(text, b"timed out waiting for client to create streams");
    drop(peer);
    server.await.unwrap();
    assert!(!*called.lock().unwrap());
}

async fn echo_server() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            tokio::spawn(async move {
                let (mut r, mut w) = s.into_split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
                let _ = w.shutdown().await;
            });
        }
    });
    port
}

fn connector(echo_port: u16) -> PortConnector {
    Arc::new(move |port| {
        Box::pin(async move {
            if port == echo_port {
                TcpStream::connect(("127.0.0.1", echo_port)).await
            } else {
                Err(std::io::Error::new(
                    std::io::ErrorKind::ConnectionRefused,
                    "connection refused by the pod",
                ))
            }
        })
    })
}

#[tokio::test]
async fn port_forward_runs_two_requests_at_once_and_reports_a_refused_port() {
    let echo = echo_server().await;
    let (a, b) = tokio::io::duplex(64 * 1024);
    let server = tokio::spawn(serve_portforward(a, connector(echo)));
    let client = PortForwardClient::start(b).unwrap();
    let one = client.forward(echo).await.unwrap();
    let two = client.forward(echo).await.unwrap();
    let run = |fwd: super::client::ForwardedPort, seed: usize| async move {
        let data: Vec<u8> = (0..200_000).map(|i| ((i + seed) % 253) as u8).collect();
        let (mut r, mut w) = tokio::io::split(fwd.data);
        let expect = data.clone();
        let writer = tokio::spawn(async move {
            w.write_all(&data).await.unwrap();
            w.shutdown().await.unwrap();
        });
        let mut got = Vec::new();
        r.read_to_end(&mut got).await.unwrap();
        writer.await.unwrap();
        assert!(got == expect, "echo {seed} differs");
        assert_eq!(fwd.error.text().await, None);
    };
    tokio::time::timeout(T, async { tokio::join!(run(one, 1), run(two, 2)) })
        .await
        .unwrap();

    let mut refused = client.forward(1).await.unwrap();
    let mut got = Vec::new();
    tokio::time::timeout(T, refused.data.read_to_end(&mut got))
        .await
        .unwrap()
        .unwrap();
    assert!(got.is_empty());
    let text = tokio::time::timeout(T, refused.error.text())
        .await
        .unwrap()
        .unwrap();
    assert!(
        text.contains("error forwarding port 1") && text.contains("refused by the pod"),
        "{text}"
    );

    client.close().await;
    tokio::time::timeout(T, server).await.unwrap().unwrap();
}

#[tokio::test]
async fn port_forward_rejects_a_stream_without_a_port() {
    let (a, b) = tokio::io::duplex(1 << 16);
    tokio::spawn(serve_portforward(a, connector(1)));
    let mut peer = RawPeer::new(b);
    peer.send(Frame::SynStream {
        stream_id: 1,
        associated_to: 0,
        priority: 0,
        flags: 0,
        headers: hdrs(&[("streamtype", "data")]),
    })
    .await;
    assert!(matches!(
        peer.next_skipping_hello().await,
        Some(Frame::RstStream { stream_id: 1, .. })
    ));
}

/// A stand-in for server.rs: answers the upgrade with 101 and hands the socket to SPDY.
async fn upgrade_server(
    status: &'static str,
    protocol: Protocol,
) -> (u16, tokio::task::JoinHandle<String>) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    let task = tokio::spawn(async move {
        let (mut s, _) = l.accept().await.unwrap();
        let mut head = Vec::new();
        while !head.ends_with(b"\r\n\r\n") {
            head.push(s.read_u8().await.unwrap());
        }
        let head = String::from_utf8(head).unwrap();
        if status != "101" {
            let body = "404 page not found";
            s.write_all(
                format!(
                    "HTTP/1.1 404 Not Found\r\nContent-Length: {}\r\n\r\n{body}",
                    body.len()
                )
                .as_bytes(),
            )
            .await
            .unwrap();
            return head;
        }
        s.write_all(
            format!(
                "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\nX-Stream-Protocol-Version: {}\r\n\r\n",
                protocol.name()
            )
            .as_bytes(),
        )
        .await
        .unwrap();
        let opts = StreamOptions {
            stdin: true,
            stdout: true,
            stderr: false,
            tty: false,
        };
        serve_remotecommand(
            s,
            protocol,
            opts,
            echo_handler(Arc::default(), CommandOutcome::Exited(0)),
        )
        .await;
        head
    });
    (port, task)
}

#[tokio::test]
async fn client_upgrades_over_http_and_runs_a_session() {
    let (port, server) = upgrade_server("101", Protocol::V3).await;
    let opts = StreamOptions {
        stdin: true,
        stdout: true,
        stderr: false,
        tty: false,
    };
    let url = format!("http://127.0.0.1:{port}/exec/tok");
    let mut c = RemoteCommandClient::connect(
        &url,
        opts,
        &[Protocol::V4, Protocol::V3, Protocol::V2, Protocol::V1],
    )
    .await
    .unwrap();
    assert_eq!(c.protocol, Protocol::V3);
    let mut stdin = c.stdin.take().unwrap();
    stdin.write_all(b"over tcp").await.unwrap();
    drop(stdin);
    let mut out = Vec::new();
    tokio::time::timeout(T, c.stdout.take().unwrap().read_to_end(&mut out))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(out, b"over tcp");
    assert_eq!(c.outcome().await.unwrap(), CommandOutcome::Exited(0));
    let head = tokio::time::timeout(T, server).await.unwrap().unwrap();
    assert!(head.starts_with("POST /exec/tok HTTP/1.1\r\n"));
    for line in [
        "Connection: Upgrade",
        "Upgrade: SPDY/3.1",
        "X-Stream-Protocol-Version: v4.channel.k8s.io",
        "X-Stream-Protocol-Version: channel.k8s.io",
    ] {
        assert!(
            head.contains(&format!("{line}\r\n")),
            "{line} missing in {head}"
        );
    }

    let (port, _server) = upgrade_server("404", Protocol::V4).await;
    let err = RemoteCommandClient::connect(
        &format!("http://127.0.0.1:{port}/exec/x"),
        opts,
        &[Protocol::V4],
    )
    .await
    .err()
    .unwrap();
    assert!(
        matches!(&err, ClientError::Refused { status: 404, body } if body == "404 page not found"),
        "{err:?}"
    );
    assert!(matches!(
        RemoteCommandClient::connect("https://127.0.0.1:1/x", opts, &[Protocol::V4]).await,
        Err(ClientError::TlsNotImplemented(_))
    ));
}

#[tokio::test]
async fn through_the_real_http_server_exec_and_port_forward() {
    use crate::streaming::server::{start, Session, Streaming};
    let streaming = Arc::new(Streaming::new());
    start(streaming.clone(), "127.0.0.1:0").await.unwrap();
    let opts = StreamOptions {
        stdin: true,
        stdout: true,
        stderr: true,
        tty: false,
    };
    let url = streaming
        .insert(Session::Exec {
            opts,
            handler: echo_handler(Arc::default(), CommandOutcome::Exited(3)),
        })
        .unwrap();
    let all = [Protocol::V4, Protocol::V3, Protocol::V2, Protocol::V1];
    let mut c = RemoteCommandClient::connect(&url, opts, &all)
        .await
        .unwrap();
    assert_eq!(c.protocol, Protocol::V4);
    let mut stdin = c.stdin.take().unwrap();
    let input = pattern(200_000);
    let expect = input.clone();
    tokio::spawn(async move {
        stdin.write_all(&input).await.unwrap();
    });
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let (mut so, mut se) = (c.stdout.take().unwrap(), c.stderr.take().unwrap());
    let (a, b) = tokio::time::timeout(T, async {
        tokio::join!(so.read_to_end(&mut out), se.read_to_end(&mut err))
    })
    .await
    .unwrap();
    a.unwrap();
    b.unwrap();
    assert!(out == expect);
    assert_eq!(err, b"to stderr\n");
    assert_eq!(c.outcome().await.unwrap(), CommandOutcome::Exited(3));
    // The token was single-use.
    let again = RemoteCommandClient::connect(&url, opts, &all)
        .await
        .err()
        .unwrap();
    assert!(
        matches!(again, ClientError::Refused { status: 404, .. }),
        "{again:?}"
    );

    let echo = echo_server().await;
    let url = streaming
        .insert(Session::PortForward {
            connector: connector(echo),
        })
        .unwrap();
    let client = PortForwardClient::connect(&url).await.unwrap();
    let mut fwd = client.forward(echo).await.unwrap();
    fwd.data.write_all(b"ping").await.unwrap();
    fwd.data.shutdown().await.unwrap();
    let mut back = Vec::new();
    tokio::time::timeout(T, fwd.data.read_to_end(&mut back))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(back, b"ping");
    client.close().await;
}
