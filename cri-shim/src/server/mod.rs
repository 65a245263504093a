//! The gRPC face of rcri: `runtime.v1.RuntimeService` and `runtime.v1.ImageService` on a unix
//! socket. Handlers are thin: they validate the request's shape, call `sandbox`/`container`/
//! `image`, and map domain errors to gRPC codes.

mod convert;
mod image;
mod runtime;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;

use k8s_cri::v1::image_service_server::ImageServiceServer;
use k8s_cri::v1::runtime_service_server::RuntimeServiceServer;
use tokio::net::UnixListener;
use tokio_stream::wrappers::UnixListenerStream;
use tonic::{Code, Status};

use crate::container::ContainerError;
use crate::error_chain;
use crate::sandbox::SandboxError;
use crate::Context;

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("failed to {action} {path}")]
    Socket {
        action: &'static str,
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("gRPC server failed")]
    Transport(#[from] tonic::transport::Error),
}

/// Serves until `shutdown` resolves, then removes the socket.
pub async fn serve(
    ctx: Arc<Context>,
    socket: &Path,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> Result<(), ServerError> {
    let sock_err = |action, source| ServerError::Socket {
        action,
        path: socket.to_path_buf(),
        source,
    };
    if let Some(parent) = socket.parent() {
        std::fs::create_dir_all(parent).map_err(|e| sock_err("create the directory of", e))?;
    }
    // A socket file left by a previous (crashed) rcri makes bind fail with EADDRINUSE although
    // nobody listens on it.
    match std::fs::remove_file(socket) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(sock_err("remove the stale socket", e)),
    }
    let listener = UnixListener::bind(socket).map_err(|e| sock_err("listen on", e))?;
    // Whoever can talk to the CRI socket can run privileged containers: root only.
    std::fs::set_permissions(socket, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| sock_err("chmod", e))?;
    tracing::info!(socket = %socket.display(), "serving CRI");
    let result = tonic::transport::Server::builder()
        .add_service(RuntimeServiceServer::new(runtime::Runtime::new(
            ctx.clone(),
        )))
        .add_service(ImageServiceServer::new(image::Images::new(ctx)))
        .serve_with_incoming_shutdown(UnixListenerStream::new(listener), shutdown)
        .await;
    let _ = std::fs::remove_file(socket);
    result.map_err(ServerError::from)
}

fn status(code: Code, e: &dyn std::error::Error) -> Status {
    Status::new(code, error_chain(e))
}

pub(crate) fn sandbox_status(e: SandboxError) -> Status {
    let code = match &e {
        SandboxError::InvalidArgument(_) => Code::InvalidArgument,
        SandboxError::NotFound(_) => Code::NotFound,
        SandboxError::AlreadyExists { .. } => Code::AlreadyExists,
        SandboxError::FailedPrecondition(_) => Code::FailedPrecondition,
        SandboxError::Store(crate::store::StoreError::Ambiguous { .. }) => Code::InvalidArgument,
        _ => Code::Internal,
    };
    if code == Code::Internal {
        tracing::error!(error = %error_chain(&e), "request failed");
    }
    status(code, &e)
}

pub(crate) fn container_status(e: ContainerError) -> Status {
    let code = match &e {
        ContainerError::InvalidArgument(_) => Code::InvalidArgument,
        ContainerError::NotFound(_) => Code::NotFound,
        ContainerError::AlreadyExists { .. } => Code::AlreadyExists,
        ContainerError::FailedPrecondition(_) => Code::FailedPrecondition,
        ContainerError::DeadlineExceeded(_) => Code::DeadlineExceeded,
        ContainerError::Store(crate::store::StoreError::Ambiguous { .. }) => Code::InvalidArgument,
        ContainerError::Sandbox(s) => return sandbox_status_ref(s, &e),
        _ => Code::Internal,
    };
    if code == Code::Internal {
        tracing::error!(error = %error_chain(&e), "request failed");
    }
    status(code, &e)
}

fn sandbox_status_ref(s: &SandboxError, whole: &ContainerError) -> Status {
    let code = match s {
        SandboxError::InvalidArgument(_) => Code::InvalidArgument,
        SandboxError::NotFound(_) => Code::NotFound,
        SandboxError::AlreadyExists { .. } => Code::AlreadyExists,
        SandboxError::FailedPrecondition(_) => Code::FailedPrecondition,
        _ => Code::Internal,
    };
    status(code, whole)
}
