//! The writer task: the only place frames are encoded, so header blocks go through the one
//! compressor in the order they reach the wire.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Weak};

use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, watch};

use super::{
    mark_dead, Out, Shared, DEFAULT_WINDOW, MAX_STREAMS, RECV_WINDOW, SESSION_RECV_WINDOW,
};
use crate::streaming::spdy::frame::{
    Frame, FrameError, Setting, SETTINGS_INITIAL_WINDOW_SIZE, SETTINGS_MAX_CONCURRENT_STREAMS,
};
use crate::streaming::spdy::zlib::HeaderCompressor;

pub(super) struct Writer<W> {
    pub(super) w: W,
    pub(super) z: HeaderCompressor,
    pub(super) out_rx: mpsc::Receiver<Out>,
    pub(super) ctrl_rx: mpsc::UnboundedReceiver<Frame>,
    pub(super) ctrl_queued: Arc<AtomicUsize>,
    pub(super) shared: Weak<Shared>,
}

impl<W: AsyncWrite + Unpin> Writer<W> {
    /// Writes until told to shut down or stopped (the connection handle dropped); the
    /// `alive` sender is dropped on return, which `close` waits for.
    pub(super) async fn run(mut self, mut stop: watch::Receiver<bool>, alive: watch::Sender<()>) {
        tokio::select! {
            _ = stop.wait_for(|s| *s) => {}
            _ = self.write_all() => {}
        }
        drop(alive);
    }

    async fn write_all(&mut self) {
        let mut buf = Vec::with_capacity(64 * 1024);
        // Announce this side's windows first: spdystream ignores both frames, a peer that does
        // flow control learns it may send more than the 64 KiB default.
        let hello = [
            Frame::Settings {
                clear: false,
                settings: vec![
                    Setting {
                        flags: 0,
                        id: SETTINGS_MAX_CONCURRENT_STREAMS,
                        value: MAX_STREAMS as u32,
                    },
                    Setting {
                        flags: 0,
                        id: SETTINGS_INITIAL_WINDOW_SIZE,
                        value: RECV_WINDOW,
                    },
                ],
            },
            Frame::WindowUpdate {
                stream_id: 0,
                delta: SESSION_RECV_WINDOW - DEFAULT_WINDOW as u32,
            },
        ];
        let mut failed = false;
        for f in hello {
            failed |= self.encode(&f, &mut buf).is_err();
        }
        let mut shutdown = false;
        while !shutdown && !failed {
            let first = tokio::select! {
                biased;
                Some(f) = self.ctrl_rx.recv() => {
                    self.ctrl_queued.fetch_sub(1, Ordering::SeqCst);
                    Some(f)
                }
                o = self.out_rx.recv() => match o {
                    Some(Out::Frame(f)) => Some(f),
                    Some(Out::Shutdown) | None => None,
                },
            };
            match first {
                Some(f) => failed |= self.encode(&f, &mut buf).is_err(),
                None => shutdown = true,
            }
            // Batch what is already queued into one write.
            while !shutdown && !failed && buf.len() < 64 * 1024 {
                if let Ok(f) = self.ctrl_rx.try_recv() {
                    self.ctrl_queued.fetch_sub(1, Ordering::SeqCst);
                    failed |= self.encode(&f, &mut buf).is_err();
                    continue;
                }
                match self.out_rx.try_recv() {
                    Ok(Out::Frame(f)) => failed |= self.encode(&f, &mut buf).is_err(),
                    Ok(Out::Shutdown) => shutdown = true,
                    Err(_) => break,
                }
            }
            if !buf.is_empty() {
                if let Err(e) = self.w.write_all(&buf).await {
                    tracing::debug!(error = %e, "spdy: writing to the peer failed");
                    failed = true;
                }
                buf.clear();
            }
        }
        if failed {
            if let Some(s) = self.shared.upgrade() {
                mark_dead(&s);
            }
        }
        let _ = self.w.flush().await;
        let _ = self.w.shutdown().await;
    }

    fn encode(&mut self, f: &Frame, buf: &mut Vec<u8>) -> Result<(), FrameError> {
        f.encode(&mut self.z, buf).inspect_err(|e| {
            tracing::warn!(error = %e, "spdy: cannot encode a frame; closing the connection");
        })
    }
}
