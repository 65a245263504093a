//! The channel between rcrun and the container's init: a SOCK_SEQPACKET socketpair, one
//! JSON message per packet, so message boundaries need no framing.
use nix::sys::socket::{
    recv, recvmsg, send, sendmsg, socketpair, AddressFamily, ControlMessage, ControlMessageOwned,
    MsgFlags, SockFlag, SockType,
};
use serde::{Deserialize, Serialize};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error("failed to create the sync socketpair")]
    Pair(#[source] nix::Error),
    #[error("failed to send {0} to the other side")]
    Send(&'static str, #[source] nix::Error),
    #[error("failed to receive from the other side")]
    Recv(#[source] nix::Error),
    #[error("malformed sync message")]
    Decode(#[source] serde_json::Error),
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub enum Message {
    /// The child unshared its user namespace and waits for its id maps.
    UsernsReady,
    /// The parent wrote the maps.
    MappingDone,
    /// The container's init, as seen from the parent's pid namespace.
    InitPid(i32),
    /// The init made its mounts and waits while the parent runs prestart and createRuntime
    /// hooks.
    CreateHooks,
    /// The runtime-side hooks ran; carries the state JSON for the container-side ones.
    HooksDone(String),
    /// The init loaded a seccomp filter with NOTIFY rules; its listener fd rides along
    /// (SCM_RIGHTS) for the parent to forward to listenerPath with the container's state.
    SeccompFd,
    /// The parent forwarded the seccomp fd.
    SeccompDone,
    /// The init is set up and about to wait on the exec fifo (or to exec).
    Ready,
    /// The parent moved the process into its (frozen) cgroup; it may exec when thawed.
    Go,
    Error(String),
}

impl Message {
    fn name(&self) -> &'static str {
        match self {
            Message::UsernsReady => "userns-ready",
            Message::MappingDone => "mapping-done",
            Message::InitPid(_) => "init-pid",
            Message::CreateHooks => "create-hooks",
            Message::HooksDone(_) => "hooks-done",
            Message::SeccompFd => "seccomp-fd",
            Message::SeccompDone => "seccomp-done",
            Message::Ready => "ready",
            Message::Go => "go",
            Message::Error(_) => "error",
        }
    }
}

pub struct Channel(OwnedFd);

impl AsRawFd for Channel {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.0.as_raw_fd()
    }
}

impl Channel {
    pub fn pair() -> Result<(Channel, Channel), SyncError> {
        let (a, b) = socketpair(
            AddressFamily::Unix,
            SockType::SeqPacket,
            None,
            SockFlag::SOCK_CLOEXEC,
        )
        .map_err(SyncError::Pair)?;
        Ok((Channel(a), Channel(b)))
    }

    pub fn send(&self, msg: &Message) -> Result<(), SyncError> {
        let data = serde_json::to_vec(msg).map_err(SyncError::Decode)?;
        // MSG_NOSIGNAL: a peer that died must give us EPIPE, not kill us with SIGPIPE.
        send(self.0.as_raw_fd(), &data, MsgFlags::MSG_NOSIGNAL)
            .map(|_| ())
            .map_err(|e| SyncError::Send(msg.name(), e))
    }

    /// Sends `msg` with `fd` attached (SCM_RIGHTS).
    pub fn send_fd(&self, msg: &Message, fd: BorrowedFd<'_>) -> Result<(), SyncError> {
        let data = serde_json::to_vec(msg).map_err(SyncError::Decode)?;
        let fds = [fd.as_raw_fd()];
        sendmsg::<()>(
            self.0.as_raw_fd(),
            &[std::io::IoSlice::new(&data)],
            &[ControlMessage::ScmRights(&fds)],
            MsgFlags::MSG_NOSIGNAL,
            None,
        )
        .map(|_| ())
        .map_err(|e| SyncError::Send(msg.name(), e))
    }

    /// Like [`Channel::recv`], and also returns the fd that came with the message, if any.
    pub fn recv_with_fd(&self) -> Result<(Option<Message>, Option<OwnedFd>), SyncError> {
        let mut buf = vec![0u8; 64 * 1024];
        let mut space = nix::cmsg_space!([std::os::fd::RawFd; 1]);
        loop {
            let mut iov = [std::io::IoSliceMut::new(&mut buf)];
            let (n, fd) = match recvmsg::<()>(
                self.0.as_raw_fd(),
                &mut iov,
                Some(&mut space),
                MsgFlags::MSG_CMSG_CLOEXEC,
            ) {
                Ok(msg) => {
                    let mut fd = None;
                    for c in msg.cmsgs().map_err(SyncError::Recv)? {
                        if let ControlMessageOwned::ScmRights(fds) = c {
                            for raw in fds {
                                // SAFETY: SCM_RIGHTS just installed this fd in our table;
                                // nothing else refers to it. Extra fds are closed on drop.
                                let owned = unsafe { OwnedFd::from_raw_fd(raw) };
                                fd.get_or_insert(owned);
                            }
                        }
                    }
                    (msg.bytes, fd)
                }
                Err(nix::Error::EINTR) => continue,
                Err(e) => return Err(SyncError::Recv(e)),
            };
            if n == 0 {
                return Ok((None, fd));
            }
            let msg = serde_json::from_slice(&buf[..n]).map_err(SyncError::Decode)?;
            return Ok((Some(msg), fd));
        }
    }

    /// The next message, or `None` once every peer has closed its end.
    pub fn recv(&self) -> Result<Option<Message>, SyncError> {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match recv(self.0.as_raw_fd(), &mut buf, MsgFlags::empty()) {
                Ok(0) => return Ok(None),
                Ok(n) => {
                    return serde_json::from_slice(&buf[..n])
                        .map(Some)
                        .map_err(SyncError::Decode)
                }
                Err(nix::Error::EINTR) => continue,
                Err(e) => return Err(SyncError::Recv(e)),
            }
        }
    }
}
