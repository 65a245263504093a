//! rcri's image documents (cri-shim/src/image/): the same bytes parsed as an OCI/Docker index,
//! a manifest and an image config, then what rcri derives from them: platform matching,
//! digests checked and turned into blob paths, the image reference names, the stop signal and
//! the user. Property: no panic on any input; an accepted digest is `sha256:` + 64 hex digits.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rcri::image::{oci, reference, stop_signal, Image, ImageConfig};

fn check_descriptor(d: &oci::Descriptor) {
    let _ = oci::is_index(&d.media_type) || oci::is_manifest(&d.media_type);
    if let Ok(hex) = rcri::image::digest_hex(&d.digest) {
        assert!(
            reference::is_hex64(hex),
            "digest_hex accepted {:?}",
            d.digest
        );
    }
    for name in d.annotations.values() {
        let _ = reference::normalize(name);
    }
    if let Some(p) = &d.platform {
        let _ = oci::platform_matches(p, &oci::host_platform());
    }
}

fuzz_target!(|data: &[u8]| {
    if let Ok(index) = serde_json::from_slice::<oci::Index>(data) {
        let _ = oci::is_index(&index.media_type);
        index.manifests.iter().for_each(check_descriptor);
    }
    if let Ok(manifest) = serde_json::from_slice::<oci::Manifest>(data) {
        check_descriptor(&manifest.config);
        manifest.layers.iter().for_each(check_descriptor);
    }
    if let Ok(file) = serde_json::from_slice::<oci::ImageConfigFile>(data) {
        for id in &file.rootfs.diff_ids {
            let _ = rcri::image::digest_hex(id);
        }
        let rc = file.config.unwrap_or_default();
        if let Some(s) = &rc.stop_signal {
            let _ = stop_signal::runtime_signal(s);
        }
        let image = Image {
            config: ImageConfig {
                user: rc.user.unwrap_or_default(),
                ..Default::default()
            },
            ..Default::default()
        };
        let _ = (image.uid(), image.username());
    }
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(r) = reference::normalize(text) {
            let _ = (r.name(), r.tagged(), r.digested());
        }
    }
});
