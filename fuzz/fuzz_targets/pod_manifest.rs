//! `rcrictl run`'s input (cri-shim/src/kubelet/): any text parsed as manifest documents, then
//! for each Pod what rcrictl derives from it before a single CRI call — defaults, validation,
//! the sandbox config and every container's config (env expansion, valueFrom, resources, security
//! context). Property: no panic on any input, and a pod that passed validation converts or fails
//! with an error, never a panic.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use rcri::kubelet::convert::{self, PodRuntimeInfo};
use rcri::kubelet::manifest::{self, Object};
use rcri::kubelet::sources::ConfigSources;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok((objects, _warnings)) = manifest::parse_objects(text, "fuzz.yaml") else {
        return;
    };
    let Ok(sources) = ConfigSources::load(None, &objects) else {
        return;
    };
    let info = PodRuntimeInfo {
        pod_ip: "10.88.0.2".into(),
        pod_ips: vec!["10.88.0.2".into()],
        host_ip: "192.0.2.1".into(),
        node_name: "node".into(),
    };
    for object in &objects {
        let Object::Pod(pod) = object else { continue };
        let mut pod = (**pod).clone();
        convert::apply_defaults(&mut pod);
        if convert::validate(&pod).is_err() {
            continue;
        }
        let _ = convert::sandbox_config(&pod, 0, Path::new("/nonexistent/logs"));
        for container in pod.spec.init_containers.iter().chain(&pod.spec.containers) {
            let _ = convert::image_spec(container);
            let _ = convert::container_config(&pod, container, 0, &info, &sources, Vec::new());
        }
    }
});
