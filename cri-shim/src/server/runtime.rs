//! runtime.v1.RuntimeService.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Arc;

use k8s_cri::v1 as cri;
use k8s_cri::v1::runtime_service_server::RuntimeService;
use tonic::{Request, Response, Status};

use super::{container_status, convert, sandbox_status};
use crate::streaming::backend::{self as streaming, RequestError};
use crate::{container, sandbox, stats, Context};

fn streaming_status(e: RequestError) -> Status {
    match e {
        RequestError::InvalidArgument(m) => Status::invalid_argument(m),
        RequestError::FailedPrecondition(m) => Status::failed_precondition(m),
        RequestError::Container(e) => container_status(e),
        RequestError::Sandbox(e) => sandbox_status(e),
        RequestError::Streaming(e) => Status::unavailable(crate::error_chain(&e)),
        RequestError::Attach(e @ streaming::attach::AttachError::NotRunning(_)) => {
            Status::failed_precondition(crate::error_chain(&e))
        }
        RequestError::Attach(e) => Status::internal(crate::error_chain(&e)),
    }
}

/// The CRI API version this server speaks, and its own name and version.
const CRI_VERSION: &str = "v1";
const RUNTIME_NAME: &str = "rcri";

pub struct Runtime {
    ctx: Arc<Context>,
}

impl Runtime {
    pub fn new(ctx: Arc<Context>) -> Runtime {
        Runtime { ctx }
    }
}

fn required<'a>(value: &'a str, what: &str) -> Result<&'a str, Status> {
    if value.is_empty() {
        Err(Status::invalid_argument(format!("{what} is empty")))
    } else {
        Ok(value)
    }
}

fn not_yet(what: &str) -> Status {
    Status::unimplemented(format!("{what} is not implemented yet in rcri"))
}

type EventStream =
    Pin<Box<dyn tokio_stream::Stream<Item = Result<cri::ContainerEventResponse, Status>> + Send>>;

#[tonic::async_trait]
impl RuntimeService for Runtime {
    async fn version(
        &self,
        _request: Request<cri::VersionRequest>,
    ) -> Result<Response<cri::VersionResponse>, Status> {
        Ok(Response::new(cri::VersionResponse {
            version: "0.1.0".into(),
            runtime_name: RUNTIME_NAME.into(),
            runtime_version: env!("CARGO_PKG_VERSION").into(),
            runtime_api_version: CRI_VERSION.into(),
        }))
    }

    async fn run_pod_sandbox(
        &self,
        request: Request<cri::RunPodSandboxRequest>,
    ) -> Result<Response<cri::RunPodSandboxResponse>, Status> {
        let req = request.into_inner();
        let config = req
            .config
            .ok_or_else(|| Status::invalid_argument("sandbox config is missing"))?;
        let id = sandbox::run(&self.ctx, config, req.runtime_handler)
            .await
            .map_err(sandbox_status)?;
        Ok(Response::new(cri::RunPodSandboxResponse {
            pod_sandbox_id: id,
        }))
    }

    async fn stop_pod_sandbox(
        &self,
        request: Request<cri::StopPodSandboxRequest>,
    ) -> Result<Response<cri::StopPodSandboxResponse>, Status> {
        let id = request.into_inner().pod_sandbox_id;
        required(&id, "pod_sandbox_id")?;
        // CRI: Stop* must not fail when the resources are already gone (kubelet retries a
        // stop after a removal it did not see finish).
        let record = match sandbox::get(&self.ctx, &id) {
            Ok(r) => r,
            Err(sandbox::SandboxError::NotFound(_)) => {
                return Ok(Response::new(cri::StopPodSandboxResponse {}))
            }
            Err(e) => return Err(sandbox_status(e)),
        };
        // kubelet already stopped the containers with their grace periods; what is left is
        // killed (timeout 0), as CRI asks.
        container::stop_all_in(&self.ctx, &record.id, 0)
            .await
            .map_err(container_status)?;
        sandbox::stop(&self.ctx, &record.id)
            .await
            .map_err(sandbox_status)?;
        Ok(Response::new(cri::StopPodSandboxResponse {}))
    }

    async fn remove_pod_sandbox(
        &self,
        request: Request<cri::RemovePodSandboxRequest>,
    ) -> Result<Response<cri::RemovePodSandboxResponse>, Status> {
        let id = request.into_inner().pod_sandbox_id;
        required(&id, "pod_sandbox_id")?;
        let record = match sandbox::get(&self.ctx, &id) {
            Ok(r) => r,
            Err(sandbox::SandboxError::NotFound(_)) => {
                return Ok(Response::new(cri::RemovePodSandboxResponse {}))
            }
            Err(e) => return Err(sandbox_status(e)),
        };
        container::remove_all_in(&self.ctx, &record.id)
            .await
            .map_err(container_status)?;
        sandbox::remove(&self.ctx, &record.id)
            .await
            .map_err(sandbox_status)?;
        Ok(Response::new(cri::RemovePodSandboxResponse {}))
    }

    async fn pod_sandbox_status(
        &self,
        request: Request<cri::PodSandboxStatusRequest>,
    ) -> Result<Response<cri::PodSandboxStatusResponse>, Status> {
        let req = request.into_inner();
        required(&req.pod_sandbox_id, "pod_sandbox_id")?;
        let record = sandbox::get(&self.ctx, &req.pod_sandbox_id).map_err(sandbox_status)?;
        let mut info = HashMap::new();
        if req.verbose {
            let verbose = serde_json::json!({
                "pid": record.infra_pid,
                "netns": record.netns,
                "dir": record.dir,
                "cniAttached": record.cni_attached,
                "config": record.config,
            });
            info.insert("info".to_string(), verbose.to_string());
        }
        let containers_statuses = self
            .ctx
            .store
            .containers_of(&record.id)
            .iter()
            .map(convert::container_status)
            .collect();
        Ok(Response::new(cri::PodSandboxStatusResponse {
            status: Some(convert::pod_sandbox_status(&record)),
            info,
            containers_statuses,
            timestamp: crate::monitor::now_nanos(),
        }))
    }

    async fn list_pod_sandbox(
        &self,
        request: Request<cri::ListPodSandboxRequest>,
    ) -> Result<Response<cri::ListPodSandboxResponse>, Status> {
        let filter = request.into_inner().filter;
        let items = sandbox::list(&self.ctx)
            .iter()
            .filter(|r| convert::sandbox_matches(r, &filter))
            .map(convert::pod_sandbox)
            .collect();
        Ok(Response::new(cri::ListPodSandboxResponse { items }))
    }

    async fn create_container(
        &self,
        request: Request<cri::CreateContainerRequest>,
    ) -> Result<Response<cri::CreateContainerResponse>, Status> {
        let req = request.into_inner();
        required(&req.pod_sandbox_id, "pod_sandbox_id")?;
        let config = req
            .config
            .ok_or_else(|| Status::invalid_argument("container config is missing"))?;
        let id = container::create(&self.ctx, &req.pod_sandbox_id, config, req.sandbox_config)
            .await
            .map_err(container_status)?;
        Ok(Response::new(cri::CreateContainerResponse {
            container_id: id,
        }))
    }

    async fn start_container(
        &self,
        request: Request<cri::StartContainerRequest>,
    ) -> Result<Response<cri::StartContainerResponse>, Status> {
        let id = request.into_inner().container_id;
        required(&id, "container_id")?;
        container::start(&self.ctx, &id)
            .await
            .map_err(container_status)?;
        Ok(Response::new(cri::StartContainerResponse {}))
    }

    async fn stop_container(
        &self,
        request: Request<cri::StopContainerRequest>,
    ) -> Result<Response<cri::StopContainerResponse>, Status> {
        let req = request.into_inner();
        required(&req.container_id, "container_id")?;
        match container::stop(&self.ctx, &req.container_id, req.timeout).await {
            // Idempotent, as for StopPodSandbox.
            Ok(()) | Err(container::ContainerError::NotFound(_)) => {}
            Err(e) => return Err(container_status(e)),
        }
        Ok(Response::new(cri::StopContainerResponse {}))
    }

    async fn remove_container(
        &self,
        request: Request<cri::RemoveContainerRequest>,
    ) -> Result<Response<cri::RemoveContainerResponse>, Status> {
        let id = request.into_inner().container_id;
        required(&id, "container_id")?;
        container::remove(&self.ctx, &id)
            .await
            .map_err(container_status)?;
        Ok(Response::new(cri::RemoveContainerResponse {}))
    }

    async fn list_containers(
        &self,
        request: Request<cri::ListContainersRequest>,
    ) -> Result<Response<cri::ListContainersResponse>, Status> {
        let filter = request.into_inner().filter;
        let containers = container::list(&self.ctx)
            .iter()
            .filter(|r| convert::container_matches(r, &filter))
            .map(convert::container)
            .collect();
        Ok(Response::new(cri::ListContainersResponse { containers }))
    }

    async fn container_status(
        &self,
        request: Request<cri::ContainerStatusRequest>,
    ) -> Result<Response<cri::ContainerStatusResponse>, Status> {
        let req = request.into_inner();
        required(&req.container_id, "container_id")?;
        let record = container::get(&self.ctx, &req.container_id).map_err(container_status)?;
        let mut info = HashMap::new();
        if req.verbose {
            let verbose = serde_json::json!({
                "pid": record.pid,
                "monitorPid": record.monitor_pid,
                "bundle": record.bundle,
                "sandboxID": record.sandbox_id,
                "config": record.config,
            });
            info.insert("info".to_string(), verbose.to_string());
        }
        let mut status = convert::container_status(&record);
        status.user = container::user(&record);
        Ok(Response::new(cri::ContainerStatusResponse {
            status: Some(status),
            info,
        }))
    }

    async fn update_container_resources(
        &self,
        request: Request<cri::UpdateContainerResourcesRequest>,
    ) -> Result<Response<cri::UpdateContainerResourcesResponse>, Status> {
        let req = request.into_inner();
        required(&req.container_id, "container_id")?;
        match req.linux {
            Some(linux) => crate::resources::update(&self.ctx, &req.container_id, linux)
                .await
                .map_err(container_status)?,
            // Only Windows resources: nothing applies here, but the container must exist.
            None => {
                container::get(&self.ctx, &req.container_id).map_err(container_status)?;
            }
        }
        Ok(Response::new(cri::UpdateContainerResourcesResponse {}))
    }

    async fn reopen_container_log(
        &self,
        request: Request<cri::ReopenContainerLogRequest>,
    ) -> Result<Response<cri::ReopenContainerLogResponse>, Status> {
        let id = request.into_inner().container_id;
        required(&id, "container_id")?;
        container::reopen_log(&self.ctx, &id)
            .await
            .map_err(container_status)?;
        Ok(Response::new(cri::ReopenContainerLogResponse {}))
    }

    async fn exec_sync(
        &self,
        request: Request<cri::ExecSyncRequest>,
    ) -> Result<Response<cri::ExecSyncResponse>, Status> {
        let req = request.into_inner();
        required(&req.container_id, "container_id")?;
        let out = container::exec_sync(&self.ctx, &req.container_id, req.cmd, req.timeout)
            .await
            .map_err(container_status)?;
        Ok(Response::new(cri::ExecSyncResponse {
            stdout: out.stdout,
            stderr: out.stderr,
            exit_code: out.exit_code,
        }))
    }

    async fn exec(
        &self,
        request: Request<cri::ExecRequest>,
    ) -> Result<Response<cri::ExecResponse>, Status> {
        let url = streaming::exec_url(&self.ctx, request.into_inner()).map_err(streaming_status)?;
        Ok(Response::new(cri::ExecResponse { url }))
    }

    async fn attach(
        &self,
        request: Request<cri::AttachRequest>,
    ) -> Result<Response<cri::AttachResponse>, Status> {
        let url =
            streaming::attach_url(&self.ctx, request.into_inner()).map_err(streaming_status)?;
        Ok(Response::new(cri::AttachResponse { url }))
    }

    async fn port_forward(
        &self,
        request: Request<cri::PortForwardRequest>,
    ) -> Result<Response<cri::PortForwardResponse>, Status> {
        let url = streaming::port_forward_url(&self.ctx, request.into_inner())
            .map_err(streaming_status)?;
        Ok(Response::new(cri::PortForwardResponse { url }))
    }

    async fn container_stats(
        &self,
        request: Request<cri::ContainerStatsRequest>,
    ) -> Result<Response<cri::ContainerStatsResponse>, Status> {
        let id = request.into_inner().container_id;
        required(&id, "container_id")?;
        let record = container::get(&self.ctx, &id).map_err(container_status)?;
        let stats = off_worker(&self.ctx, move |ctx, mounts| {
            stats::container_stats(ctx, &record, mounts)
        })
        .await?;
        Ok(Response::new(cri::ContainerStatsResponse {
            stats: Some(stats),
        }))
    }

    async fn list_container_stats(
        &self,
        request: Request<cri::ListContainerStatsRequest>,
    ) -> Result<Response<cri::ListContainerStatsResponse>, Status> {
        let filter = request.into_inner().filter;
        let stats = off_worker(&self.ctx, move |ctx, mounts| {
            stats::prune_samples(ctx);
            container::list(ctx)
                .iter()
                .filter(|r| stats::container_matches(r, &filter))
                .map(|r| stats::container_stats(ctx, r, mounts))
                .collect()
        })
        .await?;
        Ok(Response::new(cri::ListContainerStatsResponse { stats }))
    }

    async fn pod_sandbox_stats(
        &self,
        request: Request<cri::PodSandboxStatsRequest>,
    ) -> Result<Response<cri::PodSandboxStatsResponse>, Status> {
        let id = request.into_inner().pod_sandbox_id;
        required(&id, "pod_sandbox_id")?;
        let record = sandbox::get(&self.ctx, &id).map_err(sandbox_status)?;
        let stats = off_worker(&self.ctx, move |ctx, mounts| {
            let containers: Vec<_> = container::list(ctx)
                .into_iter()
                .filter(|c| c.sandbox_id == record.id)
                .collect();
            stats::sandbox_stats(ctx, &record, &containers, mounts)
        })
        .await?;
        Ok(Response::new(cri::PodSandboxStatsResponse {
            stats: Some(stats),
        }))
    }

    async fn list_pod_sandbox_stats(
        &self,
        request: Request<cri::ListPodSandboxStatsRequest>,
    ) -> Result<Response<cri::ListPodSandboxStatsResponse>, Status> {
        let filter = request.into_inner().filter;
        let stats = off_worker(&self.ctx, move |ctx, mounts| {
            stats::prune_samples(ctx);
            let containers = container::list(ctx);
            sandbox::list(ctx)
                .iter()
                .filter(|s| stats::sandbox_matches(s, &filter))
                .map(|s| {
                    let own: Vec<_> = containers
                        .iter()
                        .filter(|c| c.sandbox_id == s.id)
                        .cloned()
                        .collect();
                    stats::sandbox_stats(ctx, s, &own, mounts)
                })
                .collect()
        })
        .await?;
        Ok(Response::new(cri::ListPodSandboxStatsResponse { stats }))
    }

    async fn update_runtime_config(
        &self,
        request: Request<cri::UpdateRuntimeConfigRequest>,
    ) -> Result<Response<cri::UpdateRuntimeConfigResponse>, Status> {
        let cidr = request
            .into_inner()
            .runtime_config
            .and_then(|c| c.network_config)
            .map(|n| n.pod_cidr)
            .unwrap_or_default();
        if !cidr.is_empty() {
            tracing::info!(pod_cidr = %cidr, "pod CIDR updated");
            *self.ctx.pod_cidr.lock().unwrap_or_else(|p| p.into_inner()) = cidr;
        }
        Ok(Response::new(cri::UpdateRuntimeConfigResponse {}))
    }

    async fn status(
        &self,
        request: Request<cri::StatusRequest>,
    ) -> Result<Response<cri::StatusResponse>, Status> {
        let verbose = request.into_inner().verbose;
        let runtime = self.ctx.runtime.version().await;
        let runtime_ready = cri::RuntimeCondition {
            r#type: "RuntimeReady".into(),
            status: runtime.is_ok(),
            reason: if runtime.is_ok() {
                String::new()
            } else {
                "OCIRuntimeNotReady".into()
            },
            message: match &runtime {
                Ok(_) => String::new(),
                Err(e) => crate::error_chain(e),
            },
        };
        let cni = self.ctx.cni.clone();
        let network = tokio::task::spawn_blocking(move || cni.check())
            .await
            .map_err(|e| Status::internal(e.to_string()))?;
        let network_ready = cri::RuntimeCondition {
            r#type: "NetworkReady".into(),
            status: network.is_ok(),
            reason: if network.is_ok() {
                String::new()
            } else {
                "NetworkPluginNotReady".into()
            },
            message: match &network {
                Ok(()) => String::new(),
                Err(e) => crate::error_chain(e),
            },
        };
        let mut info = HashMap::new();
        if verbose {
            let config = &self.ctx.config;
            let detail = serde_json::json!({
                "runtime": self.ctx.runtime.binary,
                "runtimeVersion": runtime.as_ref().ok(),
                "runtimeRoot": self.ctx.runtime.root,
                "rootDir": config.root_dir,
                "stateDir": config.state_dir,
                "cniConfDir": config.cni_conf_dir,
                "cniBinDirs": config.cni_bin_dirs,
                "podCIDR": *self.ctx.pod_cidr.lock().unwrap_or_else(|p| p.into_inner()),
            });
            info.insert("config".to_string(), detail.to_string());
        }
        Ok(Response::new(cri::StatusResponse {
            status: Some(cri::RuntimeStatus {
                conditions: vec![runtime_ready, network_ready],
            }),
            info,
            runtime_handlers: vec![cri::RuntimeHandler {
                name: String::new(),
                features: Some(cri::RuntimeHandlerFeatures {
                    recursive_read_only_mounts: container::runtime_supports_rro(&self.ctx).await,
                    user_namespaces: crate::sandbox::runtime_supports_userns(&self.ctx).await,
                }),
            }],
            features: Some(cri::RuntimeFeatures {
                supplemental_groups_policy: true,
            }),
        }))
    }

    async fn checkpoint_container(
        &self,
        _request: Request<cri::CheckpointContainerRequest>,
    ) -> Result<Response<cri::CheckpointContainerResponse>, Status> {
        Err(not_yet("CheckpointContainer"))
    }

    type GetContainerEventsStream = EventStream;

    async fn get_container_events(
        &self,
        _request: Request<cri::GetEventsRequest>,
    ) -> Result<Response<Self::GetContainerEventsStream>, Status> {
        use tokio::sync::broadcast::error::RecvError;
        let receiver = self.ctx.events.subscribe();
        crate::events::watch_exits(&self.ctx);
        let stream = futures_util::stream::unfold(receiver, |mut receiver| async move {
            loop {
                match receiver.recv().await {
                    Ok(event) => return Some((Ok(event_response(event)), receiver)),
                    Err(RecvError::Lagged(missed)) => {
                        tracing::warn!(missed, "a GetContainerEvents client fell behind");
                    }
                    Err(RecvError::Closed) => return None,
                }
            }
        });
        Ok(Response::new(Box::pin(stream)))
    }

    async fn list_metric_descriptors(
        &self,
        _request: Request<cri::ListMetricDescriptorsRequest>,
    ) -> Result<Response<cri::ListMetricDescriptorsResponse>, Status> {
        Ok(Response::new(cri::ListMetricDescriptorsResponse {
            descriptors: stats::metrics::descriptors(),
        }))
    }

    async fn list_pod_sandbox_metrics(
        &self,
        _request: Request<cri::ListPodSandboxMetricsRequest>,
    ) -> Result<Response<cri::ListPodSandboxMetricsResponse>, Status> {
        let pod_metrics = off_worker(&self.ctx, move |ctx, mounts| {
            let containers = container::list(ctx);
            sandbox::list(ctx)
                .iter()
                .map(|s| {
                    let own: Vec<_> = containers
                        .iter()
                        .filter(|c| c.sandbox_id == s.id)
                        .cloned()
                        .collect();
                    stats::metrics::pod_metrics(s, &own, mounts)
                })
                .collect()
        })
        .await?;
        Ok(Response::new(cri::ListPodSandboxMetricsResponse {
            pod_metrics,
        }))
    }

    async fn runtime_config(
        &self,
        _request: Request<cri::RuntimeConfigRequest>,
    ) -> Result<Response<cri::RuntimeConfigResponse>, Status> {
        Ok(Response::new(cri::RuntimeConfigResponse {
            linux: Some(cri::LinuxRuntimeConfiguration {
                cgroup_driver: cri::CgroupDriver::Cgroupfs as i32,
            }),
        }))
    }
}

/// Runs stats collection (file reads, directory walks, a thread per network namespace) on the
/// blocking pool, with the cgroup mount table read once for the whole call.
async fn off_worker<T: Send + 'static>(
    ctx: &Arc<Context>,
    f: impl FnOnce(&Context, &stats::cgroup::Mounts) -> T + Send + 'static,
) -> Result<T, Status> {
    let ctx = ctx.clone();
    tokio::task::spawn_blocking(move || f(&ctx, &stats::cgroup::Mounts::of_self()))
        .await
        .map_err(|e| Status::internal(format!("stats collection failed: {e}")))
}

fn event_response(event: crate::events::ContainerEvent) -> cri::ContainerEventResponse {
    use crate::events::EventKind;
    let kind = match event.kind {
        EventKind::Created => cri::ContainerEventType::ContainerCreatedEvent,
        EventKind::Started => cri::ContainerEventType::ContainerStartedEvent,
        EventKind::Stopped => cri::ContainerEventType::ContainerStoppedEvent,
        EventKind::Deleted => cri::ContainerEventType::ContainerDeletedEvent,
    };
    cri::ContainerEventResponse {
        container_id: event.container_id,
        container_event_type: kind as i32,
        created_at: event.created_at,
        pod_sandbox_status: event.sandbox.as_ref().map(convert::pod_sandbox_status),
        containers_statuses: event
            .containers
            .iter()
            .map(convert::container_status)
            .collect(),
    }
}
