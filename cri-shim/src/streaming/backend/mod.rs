//! The container side of streaming: what an exec, attach or port-forward session runs, and the
//! checks the CRI calls make before handing out a token for one.

pub mod attach;
pub mod exec;
pub mod portforward;

use k8s_cri::v1 as cri;

use super::server::{Session, StreamingError};
use super::StreamOptions;
use crate::container::{self, ContainerError};
use crate::sandbox::{self, SandboxError};
use crate::store::{ContainerState, SandboxState};
use crate::Context;

#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    #[error("{0}")]
    InvalidArgument(String),
    #[error("{0}")]
    FailedPrecondition(String),
    #[error(transparent)]
    Container(#[from] ContainerError),
    #[error(transparent)]
    Sandbox(#[from] SandboxError),
    #[error("streaming server")]
    Streaming(#[from] StreamingError),
    #[error(transparent)]
    Attach(#[from] attach::AttachError),
}

/// kubelet's validation of the streams of an exec or attach request.
fn stream_options(
    stdin: bool,
    stdout: bool,
    stderr: bool,
    tty: bool,
) -> Result<StreamOptions, RequestError> {
    if tty && stderr {
        // A terminal has one output: stderr cannot be told from stdout.
        return Err(RequestError::InvalidArgument(
            "tty and stderr cannot both be true".into(),
        ));
    }
    if !stdin && !stdout && !stderr {
        return Err(RequestError::InvalidArgument(
            "one of stdin, stdout, or stderr must be set".into(),
        ));
    }
    Ok(StreamOptions {
        stdin,
        stdout,
        stderr,
        tty,
    })
}

fn running_container(
    ctx: &Context,
    id: &str,
) -> Result<crate::store::ContainerRecord, RequestError> {
    if id.is_empty() {
        return Err(RequestError::InvalidArgument(
            "missing required container_id".into(),
        ));
    }
    let record = container::get(ctx, id)?;
    if record.state != ContainerState::Running {
        return Err(RequestError::FailedPrecondition(format!(
            "container {} is not running",
            record.id
        )));
    }
    Ok(record)
}

/// Exec: checks the request and returns the URL that runs it.
pub fn exec_url(ctx: &Context, req: cri::ExecRequest) -> Result<String, RequestError> {
    let opts = stream_options(req.stdin, req.stdout, req.stderr, req.tty)?;
    if req.cmd.is_empty() {
        return Err(RequestError::InvalidArgument("cmd is empty".into()));
    }
    let record = running_container(ctx, &req.container_id)?;
    let handler = exec::handler(ctx.runtime.clone(), &record, req.cmd, opts);
    Ok(ctx.streaming.insert(Session::Exec { opts, handler })?)
}

/// Attach: checks the request and returns the URL that attaches to the container's stdio.
pub fn attach_url(ctx: &Context, req: cri::AttachRequest) -> Result<String, RequestError> {
    let opts = stream_options(req.stdin, req.stdout, req.stderr, req.tty)?;
    let record = running_container(ctx, &req.container_id)?;
    let handler = attach::attach(attach::AttachTarget::of(&record), opts)?;
    Ok(ctx.streaming.insert(Session::Attach { opts, handler })?)
}

/// PortForward: checks that the pod is ready and returns the URL that connects into it.
pub fn port_forward_url(
    ctx: &Context,
    req: cri::PortForwardRequest,
) -> Result<String, RequestError> {
    if req.pod_sandbox_id.is_empty() {
        return Err(RequestError::InvalidArgument(
            "missing required pod_sandbox_id".into(),
        ));
    }
    if let Some(bad) = req.port.iter().find(|p| !(1..=65535).contains(*p)) {
        return Err(RequestError::InvalidArgument(format!(
            "port {bad} is out of range"
        )));
    }
    let record = sandbox::get(ctx, &req.pod_sandbox_id)?;
    if record.state != SandboxState::Ready {
        return Err(RequestError::FailedPrecondition(format!(
            "pod sandbox {} is not ready",
            record.id
        )));
    }
    let connector = portforward::connector(record.id.clone(), record.netns.clone());
    Ok(ctx.streaming.insert(Session::PortForward { connector })?)
}
