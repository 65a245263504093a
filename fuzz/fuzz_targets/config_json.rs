//! rcrun's config.json path as `rcrun create` takes it (runtime/src/bundle.rs `Bundle::load`),
//! minus the filesystem: bytes → oci-spec `Spec` (and, on a parse error, the JSON path the
//! error message names) → `bundle::validate`. Property: any input ends in Ok or an error, never
//! a panic or a hang.
#![no_main]

use libfuzzer_sys::fuzz_target;
use oci_spec::runtime::Spec;

fuzz_target!(|data: &[u8]| {
    match serde_json::from_slice::<Spec>(data) {
        Ok(spec) => {
            let _ = rcrun::bundle::validate(&spec);
        }
        Err(e) => {
            let _ = rcrun::json_path::at(data, &e);
        }
    }
});
