//! runtime.v1.RuntimeService.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Arc;

use k8s_cri::v1 as cri;
use k8s_cri::v1::runtime_service_server::RuntimeService;
use tonic::{Request, Response, Status};

use super::{container_status, convert, sandbox_status};
use crate::{container, sandbox, Context};

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
        let record = sandbox::get(&self.ctx, &id).map_err(sandbox_status)?;
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
        container::stop(&self.ctx, &req.container_id, req.timeout)
            .await
            .map_err(container_status)?;
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
        Ok(Response::new(cri::ContainerStatusResponse {
            status: Some(convert::container_status(&record)),
            info,
        }))
    }

    async fn update_container_resources(
        &self,
        _request: Request<cri::UpdateContainerResourcesRequest>,
    ) -> Result<Response<cri::UpdateContainerResourcesResponse>, Status> {
        Err(not_yet("UpdateContainerResources"))
    }

    async fn reopen_container_log(
        &self,
        request: Request<cri::ReopenContainerLogRequest>,
    ) -> Result<Response<cri::ReopenContainerLogResponse>, Status> {
        let id = request.into_inner().container_id;
        required(&id, "container_id")?;
        container::reopen_log(&self.ctx, &id).map_err(container_status)?;
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
        _request: Request<cri::ExecRequest>,
    ) -> Result<Response<cri::ExecResponse>, Status> {
        Err(not_yet("Exec (streaming)"))
    }

    async fn attach(
        &self,
        _request: Request<cri::AttachRequest>,
    ) -> Result<Response<cri::AttachResponse>, Status> {
        Err(not_yet("Attach"))
    }

    async fn port_forward(
        &self,
        _request: Request<cri::PortForwardRequest>,
    ) -> Result<Response<cri::PortForwardResponse>, Status> {
        Err(not_yet("PortForward"))
    }

    async fn container_stats(
        &self,
        _request: Request<cri::ContainerStatsRequest>,
    ) -> Result<Response<cri::ContainerStatsResponse>, Status> {
        Err(not_yet("ContainerStats"))
    }

    async fn list_container_stats(
        &self,
        _request: Request<cri::ListContainerStatsRequest>,
    ) -> Result<Response<cri::ListContainerStatsResponse>, Status> {
        Err(not_yet("ListContainerStats"))
    }

    async fn pod_sandbox_stats(
        &self,
        _request: Request<cri::PodSandboxStatsRequest>,
    ) -> Result<Response<cri::PodSandboxStatsResponse>, Status> {
        Err(not_yet("PodSandboxStats"))
    }

    async fn list_pod_sandbox_stats(
        &self,
        _request: Request<cri::ListPodSandboxStatsRequest>,
    ) -> Result<Response<cri::ListPodSandboxStatsResponse>, Status> {
        Err(not_yet("ListPodSandboxStats"))
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
                    recursive_read_only_mounts: false,
                    user_namespaces: false,
                }),
            }],
            features: Some(cri::RuntimeFeatures {
                supplemental_groups_policy: false,
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
        Err(not_yet("GetContainerEvents"))
    }

    async fn list_metric_descriptors(
        &self,
        _request: Request<cri::ListMetricDescriptorsRequest>,
    ) -> Result<Response<cri::ListMetricDescriptorsResponse>, Status> {
        Ok(Response::new(cri::ListMetricDescriptorsResponse {
            descriptors: vec![],
        }))
    }

    async fn list_pod_sandbox_metrics(
        &self,
        _request: Request<cri::ListPodSandboxMetricsRequest>,
    ) -> Result<Response<cri::ListPodSandboxMetricsResponse>, Status> {
        Ok(Response::new(cri::ListPodSandboxMetricsResponse {
            pod_metrics: vec![],
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
