//! Records → CRI messages, and the List filters.

use k8s_cri::v1 as cri;

use crate::container::labels_match;
use crate::store::{ContainerRecord, ContainerState, SandboxRecord, SandboxState};

pub fn sandbox_state(state: SandboxState) -> cri::PodSandboxState {
    match state {
        SandboxState::Ready => cri::PodSandboxState::SandboxReady,
        SandboxState::Creating | SandboxState::NotReady => cri::PodSandboxState::SandboxNotready,
    }
}

pub fn container_state(state: ContainerState) -> cri::ContainerState {
    match state {
        ContainerState::Creating | ContainerState::Created => cri::ContainerState::ContainerCreated,
        ContainerState::Running => cri::ContainerState::ContainerRunning,
        ContainerState::Exited => cri::ContainerState::ContainerExited,
        ContainerState::Unknown => cri::ContainerState::ContainerUnknown,
    }
}

pub fn pod_sandbox(r: &SandboxRecord) -> cri::PodSandbox {
    cri::PodSandbox {
        id: r.id.clone(),
        metadata: r.config.metadata.clone(),
        state: sandbox_state(r.state) as i32,
        created_at: r.created_at,
        labels: r.config.labels.clone(),
        annotations: r.config.annotations.clone(),
        runtime_handler: r.runtime_handler.clone(),
    }
}

pub fn pod_sandbox_status(r: &SandboxRecord) -> cri::PodSandboxStatus {
    let mut ips = r.ips.iter();
    let network = cri::PodSandboxNetworkStatus {
        ip: ips.next().cloned().unwrap_or_default(),
        additional_ips: ips.map(|ip| cri::PodIp { ip: ip.clone() }).collect(),
    };
    let options = r
        .config
        .linux
        .as_ref()
        .and_then(|l| l.security_context.as_ref())
        .and_then(|s| s.namespace_options.clone())
        .unwrap_or_default();
    cri::PodSandboxStatus {
        id: r.id.clone(),
        metadata: r.config.metadata.clone(),
        state: sandbox_state(r.state) as i32,
        created_at: r.created_at,
        network: Some(network),
        linux: Some(cri::LinuxPodSandboxStatus {
            namespaces: Some(cri::Namespace {
                options: Some(options),
            }),
        }),
        labels: r.config.labels.clone(),
        annotations: r.config.annotations.clone(),
        runtime_handler: r.runtime_handler.clone(),
    }
}

pub fn sandbox_matches(r: &SandboxRecord, filter: &Option<cri::PodSandboxFilter>) -> bool {
    let Some(f) = filter else { return true };
    if !f.id.is_empty() && !r.id.starts_with(&f.id) {
        return false;
    }
    if let Some(state) = &f.state {
        if sandbox_state(r.state) as i32 != state.state {
            return false;
        }
    }
    labels_match(&r.config.labels, &f.label_selector)
}

fn image_spec(r: &ContainerRecord) -> cri::ImageSpec {
    let mut spec = r.config.image.clone().unwrap_or_default();
    if spec.image.is_empty() {
        spec.image = r.image_ref.clone();
    }
    spec
}

pub fn container(r: &ContainerRecord) -> cri::Container {
    cri::Container {
        id: r.id.clone(),
        pod_sandbox_id: r.sandbox_id.clone(),
        metadata: r.config.metadata.clone(),
        image: Some(image_spec(r)),
        image_ref: r.image_id.clone(),
        state: container_state(r.state) as i32,
        created_at: r.created_at,
        labels: r.config.labels.clone(),
        annotations: r.config.annotations.clone(),
        image_id: r.image_id.clone(),
    }
}

pub fn container_status(r: &ContainerRecord) -> cri::ContainerStatus {
    let resources = r
        .config
        .linux
        .as_ref()
        .and_then(|l| l.resources.clone())
        .map(|linux| cri::ContainerResources {
            linux: Some(linux),
            windows: None,
        });
    cri::ContainerStatus {
        id: r.id.clone(),
        metadata: r.config.metadata.clone(),
        state: container_state(r.state) as i32,
        created_at: r.created_at,
        started_at: r.started_at,
        finished_at: r.finished_at,
        exit_code: r.exit_code,
        image: Some(image_spec(r)),
        image_ref: r.image_id.clone(),
        reason: r.reason.clone(),
        message: r.message.clone(),
        labels: r.config.labels.clone(),
        annotations: r.config.annotations.clone(),
        mounts: r.config.mounts.clone(),
        log_path: r
            .log_path
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_default(),
        resources,
        image_id: r.image_id.clone(),
        user: None,
    }
}

pub fn container_matches(r: &ContainerRecord, filter: &Option<cri::ContainerFilter>) -> bool {
    let Some(f) = filter else { return true };
    if !f.id.is_empty() && !r.id.starts_with(&f.id) {
        return false;
    }
    if !f.pod_sandbox_id.is_empty() && !r.sandbox_id.starts_with(&f.pod_sandbox_id) {
        return false;
    }
    if let Some(state) = &f.state {
        if container_state(r.state) as i32 != state.state {
            return false;
        }
    }
    labels_match(&r.config.labels, &f.label_selector)
}
