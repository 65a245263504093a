//! rcri's CreateContainer checks and the pure parts of its CRI → OCI conversion
//! (cri-shim/src/container.rs): arbitrary bytes decoded as a protobuf `ContainerConfig` (what
//! the kubelet sends), then validation (mount and device paths, ids, capabilities), the
//! command/args merge with the image's ENTRYPOINT/CMD, the environment merge and the
//! resources → OCI `linux.resources` mapping. The whole `build_spec` needs a running server's
//! Context and an unpacked image, so it is not reachable here.
//! Properties: no panic; an accepted config yields a non-empty argv whose first element comes
//! from the config or the image; the merged environment has every key at most once.
#![no_main]

use k8s_cri::v1::ContainerConfig;
use libfuzzer_sys::fuzz_target;
use prost::Message;
use rcri::image::ImageConfig;
use std::collections::HashSet;

fuzz_target!(|data: &[u8]| {
    let Ok(config) = ContainerConfig::decode(data) else {
        return;
    };
    if rcri::container::validate(&config).is_err() {
        return;
    }
    let image = ImageConfig {
        entrypoint: vec!["/bin/sh".into(), "-c".into()],
        cmd: vec!["echo hi".into()],
        env: vec!["PATH=/usr/bin".into(), "LANG=C".into()],
        ..Default::default()
    };
    let args = rcri::container::process_args(&image, &config)
        .expect("the image has an ENTRYPOINT, so there is always a command");
    assert!(!args.is_empty());
    if !config.command.is_empty() {
        assert_eq!(args[0], config.command[0]);
    } else {
        assert_eq!(args[0], "/bin/sh");
    }
    let env = rcri::container::merge_env(&image, &config, "host");
    let mut keys = HashSet::new();
    for e in &env {
        let key = e.split('=').next().unwrap_or("");
        assert!(keys.insert(key), "key {key:?} twice in {env:?}");
    }
    if let Some(r) = config.linux.as_ref().and_then(|l| l.resources.as_ref()) {
        let _ = rcri::container::resources(r);
    }
});
