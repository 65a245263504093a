//! runtime.v1.ImageService, over the image store (`crate::image`).

use std::sync::Arc;

use k8s_cri::v1 as cri;
use k8s_cri::v1::image_service_server::ImageService;
use tonic::{Request, Response, Status};

use crate::image::{Image, ImageError};
use crate::Context;

pub struct Images {
    ctx: Arc<Context>,
}

impl Images {
    pub fn new(ctx: Arc<Context>) -> Images {
        Images { ctx }
    }
}

fn to_cri(image: &Image) -> cri::Image {
    // The image's USER as kubelet wants it: a numeric uid, or a name it checks against
    // runAsNonRoot.
    let user = image.config.user.split(':').next().unwrap_or("");
    let (uid, username) = match user.parse::<i64>() {
        Ok(uid) => (Some(cri::Int64Value { value: uid }), String::new()),
        Err(_) => (None, user.to_string()),
    };
    cri::Image {
        id: image.id.clone(),
        repo_tags: image.repo_tags.clone(),
        repo_digests: image.repo_digests.clone(),
        size: image.size,
        uid,
        username,
        spec: Some(cri::ImageSpec {
            image: image.id.clone(),
            ..Default::default()
        }),
        pinned: false,
    }
}

fn image_status(e: ImageError) -> Status {
    match e {
        ImageError::NotFound(r) => Status::not_found(format!("image {r:?} not found")),
        other => Status::internal(crate::error_chain(&other)),
    }
}

/// The image store works on files; keep it off the async worker threads.
async fn blocking<T: Send + 'static>(
    ctx: &Arc<Context>,
    f: impl FnOnce(&Context) -> Result<T, ImageError> + Send + 'static,
) -> Result<T, Status> {
    let ctx = ctx.clone();
    tokio::task::spawn_blocking(move || f(&ctx))
        .await
        .map_err(|e| Status::internal(e.to_string()))?
        .map_err(image_status)
}

#[tonic::async_trait]
impl ImageService for Images {
    async fn list_images(
        &self,
        request: Request<cri::ListImagesRequest>,
    ) -> Result<Response<cri::ListImagesResponse>, Status> {
        let wanted = request
            .into_inner()
            .filter
            .and_then(|f| f.image)
            .map(|s| s.image)
            .unwrap_or_default();
        let images = blocking(&self.ctx, |ctx| ctx.images.list()).await?;
        let wanted_id = if wanted.is_empty() {
            None
        } else {
            let w = wanted.clone();
            blocking(&self.ctx, move |ctx| ctx.images.get(&w))
                .await
                .ok()
                .map(|i| i.id)
        };
        let images = images
            .iter()
            .filter(|i| wanted.is_empty() || wanted_id.as_deref() == Some(i.id.as_str()))
            .map(to_cri)
            .collect();
        Ok(Response::new(cri::ListImagesResponse { images }))
    }

    async fn image_status(
        &self,
        request: Request<cri::ImageStatusRequest>,
    ) -> Result<Response<cri::ImageStatusResponse>, Status> {
        let reference = request
            .into_inner()
            .image
            .map(|s| s.image)
            .unwrap_or_default();
        if reference.is_empty() {
            return Err(Status::invalid_argument("image is empty"));
        }
        // CRI: an unknown image is not an error, just an empty status.
        let image = match blocking(&self.ctx, move |ctx| ctx.images.get(&reference)).await {
            Ok(image) => Some(to_cri(&image)),
            Err(s) if s.code() == tonic::Code::NotFound => None,
            Err(s) => return Err(s),
        };
        Ok(Response::new(cri::ImageStatusResponse {
            image,
            info: Default::default(),
        }))
    }

    async fn pull_image(
        &self,
        request: Request<cri::PullImageRequest>,
    ) -> Result<Response<cri::PullImageResponse>, Status> {
        let request = request.into_inner();
        let reference = request.image.map(|s| s.image).unwrap_or_default();
        if reference.is_empty() {
            return Err(Status::invalid_argument("image is empty"));
        }
        // Registry pull (image module): mirrors and plain-http registries from `[registry]`.
        let auth = match request.auth.as_ref().map(crate::image::Auth::from_cri) {
            Some(Ok(auth)) => auth,
            Some(Err(e)) => return Err(Status::invalid_argument(e.to_string())),
            None => None,
        };
        let image = self
            .ctx
            .images
            .pull_with_server(&reference, auth, &self.ctx.config.registry)
            .await
            .map_err(|e| Status::new(e.grpc_code(), crate::sandbox::crate_error_chain(&e)))?;
        Ok(Response::new(cri::PullImageResponse {
            image_ref: image.id,
        }))
    }

    async fn remove_image(
        &self,
        request: Request<cri::RemoveImageRequest>,
    ) -> Result<Response<cri::RemoveImageResponse>, Status> {
        let reference = request
            .into_inner()
            .image
            .map(|s| s.image)
            .unwrap_or_default();
        if reference.is_empty() {
            return Err(Status::invalid_argument("image is empty"));
        }
        // Idempotent, as CRI asks.
        match blocking(&self.ctx, move |ctx| ctx.images.remove(&reference)).await {
            Ok(()) => {}
            Err(s) if s.code() == tonic::Code::NotFound => {}
            Err(s) => return Err(s),
        }
        Ok(Response::new(cri::RemoveImageResponse {}))
    }

    async fn image_fs_info(
        &self,
        _request: Request<cri::ImageFsInfoRequest>,
    ) -> Result<Response<cri::ImageFsInfoResponse>, Status> {
        // A walk of the store (du): real blocks and inodes, hard links counted once.
        let (images, containers) = blocking(&self.ctx, |ctx| ctx.images.fs_usage()).await?;
        let timestamp = crate::monitor::now_nanos();
        let usage = |dir: std::path::PathBuf, u: crate::image::FsUsage| cri::FilesystemUsage {
            timestamp,
            fs_id: Some(cri::FilesystemIdentifier {
                mountpoint: dir.display().to_string(),
            }),
            used_bytes: Some(cri::UInt64Value { value: u.bytes }),
            inodes_used: Some(cri::UInt64Value { value: u.inodes }),
        };
        Ok(Response::new(cri::ImageFsInfoResponse {
            image_filesystems: vec![usage(self.ctx.images.root.clone(), images)],
            // The containers' writable layers live beside the images, on the same file
            // system: kubelet (through cadvisor) sees the same device and no split.
            container_filesystems: vec![usage(self.ctx.images.containers_root(), containers)],
        }))
    }
}
