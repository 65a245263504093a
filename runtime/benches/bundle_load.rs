//! What every `rcrun create`/`run` pays before touching the host: config.json parsed into an
//! oci-spec `Spec`, validated, and the whole `Bundle::load` (read, parse, rootfs checks,
//! validate). Input: the e2e test bundle's config (hack/mkimage.sh writes
//! target/e2e-image/config.json), or `rcrun spec`'s default, which it is made from, when that
//! has not been built yet.
//!
//!   cargo bench -p rcrun --bench bundle_load [-- --quick]

use std::fs;
use std::hint::black_box;
use std::path::{Path, PathBuf};

use criterion::{criterion_group, criterion_main, Criterion};
use oci_spec::runtime::Spec;
use rcrun::bundle::{self, Bundle};

fn test_config() -> (Vec<u8>, &'static str) {
    let e2e = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/e2e-image/config.json");
    match fs::read(&e2e) {
        Ok(data) => (data, "target/e2e-image/config.json"),
        Err(_) => (
            rcrun::spec::default_config(false)
                .expect("the default spec serializes")
                .into_bytes(),
            "rcrun spec's default",
        ),
    }
}

/// A bundle directory with the config and an empty rootfs, removed on drop.
struct TempBundle(PathBuf);

impl TempBundle {
    fn new(config: &[u8]) -> TempBundle {
        let dir = std::env::temp_dir().join(format!("rcrun-bench-bundle.{}", std::process::id()));
        fs::create_dir_all(dir.join("rootfs")).expect("create the bench bundle");
        fs::write(dir.join("config.json"), config).expect("write the bench config.json");
        TempBundle(dir)
    }
}

impl Drop for TempBundle {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn bench(c: &mut Criterion) {
    let (config, source) = test_config();
    eprintln!("config.json: {source}, {} bytes", config.len());
    let spec: Spec = serde_json::from_slice(&config).expect("the test config parses");
    bundle::validate(&spec).expect("the test config is valid");

    c.bench_function("config.json parse", |b| {
        b.iter(|| serde_json::from_slice::<Spec>(black_box(&config)).expect("parses"))
    });
    c.bench_function("config.json validate", |b| {
        b.iter(|| bundle::validate(black_box(&spec)).expect("valid"))
    });
    c.bench_function("config.json parse + validate", |b| {
        b.iter(|| {
            let spec: Spec = serde_json::from_slice(black_box(&config)).expect("parses");
            bundle::validate(&spec).expect("valid");
            spec
        })
    });
    let dir = TempBundle::new(&config);
    c.bench_function("Bundle::load (read, parse, rootfs checks, validate)", |b| {
        b.iter(|| Bundle::load(black_box(&dir.0)).expect("loads"))
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
