//! Registry pulls against Debian's `docker-registry` server, started on 127.0.0.1 (a free
//! port) by each test, with hack/mkimage.sh's test images pushed to it. Needs root (layers
//! carry device nodes and ownership) and the packages of hack/setup.sh; skips itself without.
use std::collections::BTreeMap;
use std::fs;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::secrets::RegistryAuth;
use rcri::image::{Auth, ImageError, ImageStore, Mirror, RegistryConfig};
use serde_json::Value;
use tonic::Code;

const DOCKER_REGISTRY: &str = "/usr/bin/docker-registry";

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// hack/mkimage.sh's test-images layout, or why not.
fn test_images() -> Result<PathBuf, String> {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let out = match std::env::var_os("RCRUN_TEST_IMAGE") {
        Some(p) => PathBuf::from(p),
        None => repo.join("target/e2e-image"),
    };
    if !out.join("test-images/index.json").is_file() {
        let st = Command::new("bash")
            .arg(repo.join("hack/mkimage.sh"))
            .arg(&out)
            .status()
            .map_err(|e| format!("hack/mkimage.sh: {e}"))?;
        if !st.success() {
            return Err(format!("hack/mkimage.sh failed: {st}"));
        }
    }
    Ok(out.join("test-images"))
}

/// Why this machine cannot run these tests, if it cannot.
fn unsupported() -> Option<String> {
    if !is_root() {
        return Some("needs root".into());
    }
    if !Path::new(DOCKER_REGISTRY).is_file() {
        return Some(format!(
            "{DOCKER_REGISTRY} missing (hack/setup.sh installs docker-registry)"
        ));
    }
    None
}

macro_rules! require {
    () => {
        if let Some(why) = unsupported() {
            eprintln!("skipped: {why}");
            return;
        }
    };
}

struct TempDir(PathBuf);
impl TempDir {
    fn new(tag: &str) -> TempDir {
        static N: AtomicU64 = AtomicU64::new(0);
        let p = std::env::temp_dir().join(format!(
            "rcri-pull-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = fs::remove_dir_all(&p);
        fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
}
impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A docker-registry process on 127.0.0.1; killed (by its pid) on drop.
struct Registry {
    child: Child,
    port: u16,
    dir: TempDir,
}

impl Registry {
    /// `htpasswd`: (user, password) for a registry that demands them.
    fn start(htpasswd: Option<(&str, &str)>) -> Registry {
        let mut dir = TempDir::new("registry");
        let auth = match htpasswd {
            Some((u, p)) => {
                let out = Command::new("htpasswd")
                    .args(["-nbB", u, p])
                    .output()
                    .expect("htpasswd (apache2-utils) runs");
                assert!(out.status.success());
                fs::write(dir.0.join("htpasswd"), &out.stdout).unwrap();
                format!(
                    "auth:\n  htpasswd:\n    realm: rcri-test\n    path: {}\n",
                    dir.0.join("htpasswd").display()
                )
            }
            None => String::new(),
        };
        for _ in 0..5 {
            let port = free_port();
            let config = format!(
                "version: 0.1\nlog:\n  level: info\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n{auth}",
                dir.0.join("storage").display()
            );
            let cfg = dir.0.join("config.yml");
            fs::write(&cfg, config).unwrap();
            let log = fs::File::create(dir.0.join("registry.log")).unwrap();
            let child = Command::new(DOCKER_REGISTRY)
                .arg("serve")
                .arg(&cfg)
                .stdin(Stdio::null())
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .spawn()
                .expect("docker-registry starts");
            let mut reg = Registry { child, port, dir };
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = reg.child.try_wait() {
                    break; // port taken meanwhile: try another
                }
                if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    return reg;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = reg.child.kill();
            let _ = reg.child.wait();
            dir = std::mem::replace(&mut reg.dir, TempDir(PathBuf::new()));
        }
        panic!("docker-registry did not start");
    }

    fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The file the registry keeps a blob's content in.
    fn blob_file(&self, digest: &str) -> PathBuf {
        let hex = digest.strip_prefix("sha256:").unwrap();
        self.dir
            .0
            .join("storage/docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .join("data")
    }

    /// Requests the registry served for `path` (from its log).
    fn requests_for(&self, path: &str) -> usize {
        fs::read_to_string(self.dir.0.join("registry.log"))
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains("response completed") && l.contains("GET") && l.contains(path))
            .count()
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---- pushing the test layout -----------------------------------------------------------

struct Layout(PathBuf);

impl Layout {
    fn blob(&self, digest: &str) -> Vec<u8> {
        let hex = digest.strip_prefix("sha256:").unwrap();
        fs::read(self.0.join("blobs/sha256").join(hex)).unwrap()
    }
    /// ref name → (media type, digest).
    fn refs(&self) -> BTreeMap<String, (String, String)> {
        let idx: Value =
            serde_json::from_slice(&fs::read(self.0.join("index.json")).unwrap()).unwrap();
        idx["manifests"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| {
                (
                    m["annotations"]["org.opencontainers.image.ref.name"]
                        .as_str()
                        .unwrap()
                        .to_string(),
                    (
                        m["mediaType"].as_str().unwrap().to_string(),
                        m["digest"].as_str().unwrap().to_string(),
                    ),
                )
            })
            .collect()
    }
}

fn push_client() -> oci_client::Client {
    oci_client::Client::try_from(ClientConfig {
        protocol: ClientProtocol::Http,
        ..Default::default()
    })
    .unwrap()
}

/// Pushes a document (and what it references) of the layout to `target` (by its tag, or by
/// digest when `target` has none).
fn push_document<'a>(
    client: &'a oci_client::Client,
    layout: &'a Layout,
    media_type: &'a str,
    digest: &'a str,
    target: &'a oci_client::Reference,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + 'a>> {
    Box::pin(async move {
        let bytes = layout.blob(digest);
        let doc: Value = serde_json::from_slice(&bytes).unwrap();
        if let Some(children) = doc["manifests"].as_array() {
            for c in children {
                let child = target.clone_with_digest(c["digest"].as_str().unwrap().to_string());
                push_document(
                    client,
                    layout,
                    c["mediaType"].as_str().unwrap(),
                    c["digest"].as_str().unwrap(),
                    &child,
                )
                .await;
            }
        } else {
            let mut blobs = vec![doc["config"]["digest"].as_str().unwrap().to_string()];
            for l in doc["layers"].as_array().unwrap() {
                blobs.push(l["digest"].as_str().unwrap().to_string());
            }
            for b in blobs {
                push_blob(client, target, layout.blob(&b), &b).await;
            }
        }
        client
            .push_manifest_raw(
                target,
                bytes,
                reqwest::header::HeaderValue::from_str(media_type).unwrap(),
            )
            .await
            .unwrap();
    })
}

async fn push_blob(
    client: &oci_client::Client,
    target: &oci_client::Reference,
    data: Vec<u8>,
    digest: &str,
) {
    if !client.blob_exists(target, digest).await.unwrap_or(false) {
        client.push_blob(target, data, digest).await.unwrap();
    }
}

/// Pushes every test image as `<host>/rcri-test/<ref>:latest`, busybox also as
/// `<host>/library/busybox:latest` (what `busybox` means through a docker.io mirror).
/// Returns ref name → the digest its tag points at.
async fn push_test_images(reg: &Registry, creds: Option<(&str, &str)>) -> BTreeMap<String, String> {
    let layout = Layout(test_images().unwrap());
    let client = push_client();
    let auth = match creds {
        Some((u, p)) => RegistryAuth::Basic(u.into(), p.into()),
        None => RegistryAuth::Anonymous,
    };
    client.store_auth_if_needed(&reg.host(), &auth).await;
    let mut out = BTreeMap::new();
    for (name, (mt, digest)) in layout.refs() {
        let mut targets = vec![format!("{}/rcri-test/{name}:latest", reg.host())];
        if name == "busybox" {
            targets.push(format!("{}/library/busybox:latest", reg.host()));
        }
        for t in targets {
            let r: oci_client::Reference = t.parse().unwrap();
            push_document(&client, &layout, &mt, &digest, &r).await;
        }
        out.insert(name, digest);
    }
    out
}

/// A config that reaches `reg` over http, with short timeouts.
fn direct(reg_host: &str) -> RegistryConfig {
    RegistryConfig {
        insecure: vec![reg_host.to_string()],
        connect_timeout_secs: 2,
        read_timeout_secs: 2,
        ..Default::default()
    }
}

fn store(t: &TempDir) -> ImageStore {
    ImageStore::open(&t.0.join("store")).unwrap()
}

/// No temp files, and no blob or snapshot that no image uses (an index's platform
/// manifests count as used by the index).
fn assert_clean(s: &ImageStore) {
    let mut referenced = std::collections::HashSet::new();
    for img in s.list().unwrap() {
        referenced.insert(img.id.clone());
        let tops = img
            .repo_digests
            .iter()
            .filter_map(|d| d.rsplit_once('@'))
            .map(|(_, d)| d.to_string());
        for top in tops.chain([img.manifest_digest.clone()]) {
            let file = s
                .root
                .join("blobs/sha256")
                .join(top.trim_start_matches("sha256:"));
            if let Ok(doc) = serde_json::from_slice::<Value>(&fs::read(file).unwrap_or_default()) {
                for m in doc["manifests"].as_array().into_iter().flatten() {
                    referenced.insert(m["digest"].as_str().unwrap_or_default().to_string());
                }
            }
            referenced.insert(top);
        }
        for l in &img.layers {
            referenced.insert(l.digest.clone());
            referenced.insert(l.diff_id.clone());
        }
    }
    for sub in ["blobs/sha256", "snapshots"] {
        for e in fs::read_dir(s.root.join(sub)).unwrap().flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            assert!(
                !name.starts_with(".tmp-"),
                "left behind: {}",
                e.path().display()
            );
            assert!(
                referenced.contains(&format!("sha256:{name}")),
                "unreferenced {sub}/{name} left behind"
            );
        }
    }
}

fn expect_err(r: Result<rcri::image::Image, ImageError>) -> ImageError {
    match r {
        Ok(img) => panic!("pull succeeded: {img:?}"),
        Err(e) => e,
    }
}

/// Runs `f` with an overlay mount of `image`'s rootfs at a temp dir.
fn with_rootfs(s: &ImageStore, image: &str, f: impl FnOnce(&Path)) {
    let t = TempDir::new("rootfs");
    let target = t.0.join("rootfs");
    let cid = format!("c{}", std::process::id());
    s.mount_rootfs(image, &cid, &target).unwrap();
    f(&target);
    s.remove_rootfs(&cid, &target).unwrap();
}

// ---- the tests -------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pulls_every_kind_of_image_directly() {
    require!();
    let reg = Registry::start(None);
    let digests = push_test_images(&reg, None).await;
    let t = TempDir::new("direct");
    let s = store(&t);
    let cfg = direct(&reg.host());
    let h = reg.host();

    // OCI manifest, gzip layer; the tag and repo digest as given.
    let started = Instant::now();
    let bb = s
        .pull(&format!("{h}/rcri-test/busybox"), None, &cfg)
        .await
        .unwrap();
    eprintln!(
        "timing: busybox (1 layer) pulled in {:?}",
        started.elapsed()
    );
    assert_eq!(bb.repo_tags, [format!("{h}/rcri-test/busybox:latest")]);
    assert_eq!(
        bb.repo_digests,
        [format!("{h}/rcri-test/busybox@{}", digests["busybox"])]
    );
    assert_eq!(bb.config.cmd, ["sh"]);
    assert!(bb.size > 100_000);
    with_rootfs(&s, &bb.id, |root| {
        assert!(root.join("bin/busybox").is_file());
        assert!(root.join("etc/passwd").is_file());
    });

    // Docker schema2: the same config, so the same image id, one more tag.
    let d = s
        .pull(&format!("{h}/rcri-test/busybox-docker:latest"), None, &cfg)
        .await
        .unwrap();
    assert_eq!(d.id, bb.id);
    assert_eq!(d.repo_tags.len(), 2, "{:?}", d.repo_tags);

    // ENTRYPOINT and USER from the image config.
    let e = s
        .pull(&format!("{h}/rcri-test/entrypoint"), None, &cfg)
        .await
        .unwrap();
    assert_eq!(e.config.entrypoint, ["/bin/echo", "entrypoint"]);
    assert_eq!(e.config.cmd, ["default-arg"]);
    let u = s
        .pull(&format!("{h}/rcri-test/user"), None, &cfg)
        .await
        .unwrap();
    assert_eq!(u.username(), "user");
    assert_eq!(u.uid(), None);
    assert_eq!(u.config.working_dir, "/home/user");

    // Five layers: gzip, zstd, uncompressed; whiteouts and an opaque dir.
    let started = Instant::now();
    let l = s
        .pull(&format!("{h}/rcri-test/layers"), None, &cfg)
        .await
        .unwrap();
    eprintln!(
        "timing: layers (5 layers, base already present) pulled in {:?}",
        started.elapsed()
    );
    assert_eq!(l.layers.len(), 5);
    let kinds: Vec<&str> = l.layers.iter().map(|l| l.media_type.as_str()).collect();
    assert!(kinds.iter().any(|k| k.ends_with("+zstd")), "{kinds:?}");
    assert!(kinds.iter().any(|k| k.ends_with(".tar")), "{kinds:?}");
    with_rootfs(&s, &l.id, |root| {
        for present in [
            "data/b",
            "data/c",
            "data/dir/z",
            "data/keep-dir/k",
            "etc/layers-ok",
            "bin/sh",
        ] {
            assert!(root.join(present).exists(), "{present} missing");
        }
        for gone in ["data/a", "data/gone", "data/dir/x", "data/dir/y"] {
            assert!(!root.join(gone).exists(), "{gone} not whited out");
        }
    });

    // An OCI index and a Docker manifest list: this machine's platform, the index's digest
    // as repo digest.
    let m = s
        .pull(&format!("{h}/rcri-test/multiarch"), None, &cfg)
        .await
        .unwrap();
    assert_eq!(m.id, bb.id);
    assert!(m
        .repo_digests
        .contains(&format!("{h}/rcri-test/multiarch@{}", digests["multiarch"])));
    let md = s
        .pull(&format!("{h}/rcri-test/multiarch-docker"), None, &cfg)
        .await
        .unwrap();
    assert_eq!(md.id, bb.id);

    // By digest: no new tag, the repo digest recorded, found by that name afterwards.
    let by_digest = format!("{h}/rcri-test/entrypoint@{}", digests["entrypoint"]);
    let e2 = s.pull(&by_digest, None, &cfg).await.unwrap();
    assert_eq!(e2.id, e.id);
    assert_eq!(s.get(&by_digest).unwrap().id, e.id);

    // A pull of what is there re-reads only the manifest.
    let layer = &l.layers[1].digest;
    let before = reg.requests_for(layer);
    let started = Instant::now();
    s.pull(&format!("{h}/rcri-test/layers"), None, &cfg)
        .await
        .unwrap();
    eprintln!(
        "timing: layers again (all present) in {:?}",
        started.elapsed()
    );
    assert_eq!(reg.requests_for(layer), before);
    assert_clean(&s);

    // After removal and GC, nothing of it is left; a new pull works.
    for img in s.list().unwrap() {
        s.remove(&img.id).unwrap();
    }
    assert_eq!(fs::read_dir(s.root.join("snapshots")).unwrap().count(), 0);
    let started = Instant::now();
    s.pull(&format!("{h}/rcri-test/layers"), None, &cfg)
        .await
        .unwrap();
    eprintln!(
        "timing: layers (5 layers, empty store) pulled in {:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pulls_through_mirrors_keep_the_names_asked_for() {
    require!();
    let reg = Registry::start(None);
    push_test_images(&reg, None).await;
    let t = TempDir::new("mirror");
    let s = store(&t);
    let mut cfg = direct(&reg.host());
    // Never the real registries: this test must not leave the machine.
    for upstream in ["docker.io", "registry.k8s.io"] {
        cfg.mirrors.insert(
            upstream.to_string(),
            Mirror {
                endpoints: vec![format!("http://{}", reg.host())],
                fallback_to_upstream: false,
            },
        );
    }
    let bb = s.pull("busybox", None, &cfg).await.unwrap();
    assert_eq!(bb.repo_tags, ["docker.io/library/busybox:latest"]);
    assert!(bb.repo_digests[0].starts_with("docker.io/library/busybox@sha256:"));
    assert_eq!(s.get("busybox:latest").unwrap().id, bb.id);
    let l = s.pull("rcri-test/layers", None, &cfg).await.unwrap();
    assert_eq!(l.repo_tags, ["docker.io/rcri-test/layers:latest"]);
    let k = s
        .pull("registry.k8s.io/rcri-test/user:latest", None, &cfg)
        .await
        .unwrap();
    assert_eq!(k.repo_tags, ["registry.k8s.io/rcri-test/user:latest"]);

    // A mirror that is down, then a working one: the second serves.
    let dead = free_port();
    cfg.mirrors.get_mut("docker.io").unwrap().endpoints = vec![
        format!("http://127.0.0.1:{dead}"),
        format!("http://{}", reg.host()),
    ];
    let e = s.pull("rcri-test/entrypoint", None, &cfg).await.unwrap();
    assert_eq!(e.repo_tags, ["docker.io/rcri-test/entrypoint:latest"]);

    // An image no mirror has: not found, naming the image, and docker.io never asked.
    let err = expect_err(s.pull("rcri-test/nope", None, &cfg).await);
    assert_eq!(err.grpc_code(), Code::NotFound, "{err}");
    assert!(
        err.to_string().contains("docker.io/rcri-test/nope:latest"),
        "{err}"
    );
    assert_clean(&s);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_pulls_of_one_image_fetch_each_blob_once() {
    require!();
    let reg = Registry::start(None);
    push_test_images(&reg, None).await;
    let t = TempDir::new("concurrent");
    let s = store(&t);
    let cfg = direct(&reg.host());
    let name = format!("{}/rcri-test/layers", reg.host());
    let other = format!("{}/rcri-test/entrypoint", reg.host());
    let (a, b, c, d) = tokio::join!(
        s.pull(&name, None, &cfg),
        s.pull(&name, None, &cfg),
        s.pull(&name, None, &cfg),
        // Another image sharing the base layer, at the same time.
        s.pull(&other, None, &cfg),
    );
    let (a, b, c, d) = (a.unwrap(), b.unwrap(), c.unwrap(), d.unwrap());
    assert_eq!(a.id, b.id);
    assert_eq!(a.id, c.id);
    assert_eq!(d.layers[0].diff_id, a.layers[0].diff_id);
    for l in &a.layers {
        assert_eq!(
            reg.requests_for(&format!("/blobs/{}", l.digest)),
            1,
            "layer {} fetched more than once",
            l.digest
        );
    }
    assert_clean(&s);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_are_checked() {
    require!();
    let reg = Registry::start(Some(("rcri", "s3cret")));
    push_test_images(&reg, Some(("rcri", "s3cret"))).await;
    let t = TempDir::new("auth");
    let s = store(&t);
    let cfg = direct(&reg.host());
    let name = format!("{}/rcri-test/busybox", reg.host());

    let err = expect_err(s.pull(&name, None, &cfg).await);
    assert_eq!(err.grpc_code(), Code::Unauthenticated, "{err}");
    assert!(err.to_string().contains(&name), "{err}");
    let wrong = Auth::Basic {
        username: "rcri".into(),
        password: "wrong".into(),
    };
    let err = expect_err(s.pull(&name, Some(wrong), &cfg).await);
    assert_eq!(err.grpc_code(), Code::Unauthenticated, "{err}");
    eprintln!("wrong credentials: {err}");
    assert_clean(&s);

    // Right ones, as kubelet sends them in `auth` (base64 user:password).
    let cri = k8s_cri::v1::AuthConfig {
        auth: "cmNyaTpzM2NyZXQ=".into(),
        server_address: reg.host(),
        ..Default::default()
    };
    let auth = Auth::from_cri(&cri).unwrap();
    let img = s.pull_with_server(&name, auth, &cfg).await.unwrap();
    assert_eq!(img.repo_tags, [format!("{name}:latest")]);
}

/// Pulls that fail on bad content, and pass again once the content is good.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damaged_blobs_are_refused_and_leave_nothing_behind() {
    require!();
    let reg = Registry::start(None);
    push_test_images(&reg, None).await;
    let layout = Layout(test_images().unwrap());
    let cfg = direct(&reg.host());
    let name = format!("{}/rcri-test/layers", reg.host());
    // The zstd layer (3rd) of the layers image.
    let manifest: Value = serde_json::from_slice(&layout.blob(&layout.refs()["layers"].1)).unwrap();
    let digest = manifest["layers"][2]["digest"]
        .as_str()
        .unwrap()
        .to_string();
    let file = reg.blob_file(&digest);
    let good = fs::read(&file).unwrap();

    // Same size, other content.
    let mut bad = good.clone();
    let mid = bad.len() / 2;
    bad[mid] ^= 0xff;
    fs::write(&file, &bad).unwrap();
    let t = TempDir::new("tampered");
    let s = store(&t);
    let err = expect_err(s.pull(&name, None, &cfg).await);
    eprintln!("tampered: {err}");
    assert_eq!(err.grpc_code(), Code::DataLoss, "{err}");
    assert!(
        err.to_string().contains(&name) && err.to_string().contains(&digest),
        "{err}"
    );
    assert_clean(&s);

    // Truncated.
    fs::write(&file, &good[..good.len() / 2]).unwrap();
    let err = expect_err(s.pull(&name, None, &cfg).await);
    eprintln!("truncated: {err}");
    assert_eq!(err.grpc_code(), Code::DataLoss, "{err}");
    assert!(err.to_string().contains(&name), "{err}");
    assert_clean(&s);

    // Repaired: the same store pulls it.
    fs::write(&file, &good).unwrap();
    let img = s.pull(&name, None, &cfg).await.unwrap();
    assert_eq!(img.layers.len(), 5);
    assert_clean(&s);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_gzip_layer_is_refused() {
    require!();
    let reg = Registry::start(None);
    let client = push_client();
    let target: oci_client::Reference = format!("{}/rcri-test/corrupt:1", reg.host())
        .parse()
        .unwrap();
    // A gzip header, then garbage: the blob matches its digest, the stream is bad.
    let mut layer = vec![0x1f, 0x8b, 0x08, 0, 0, 0, 0, 0, 0, 0x03];
    layer.extend((0..4096u32).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8));
    let layer_digest = sha256(&layer);
    let config = format!(
        r#"{{"architecture":"{}","os":"linux","config":{{}},"rootfs":{{"type":"layers","diff_ids":["sha256:{}"]}}}}"#,
        host_arch(),
        "0".repeat(64)
    );
    let config_digest = sha256(config.as_bytes());
    let manifest = format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{config_digest}","size":{}}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"{layer_digest}","size":{}}}]}}"#,
        config.len(),
        layer.len()
    );
    push_blob(&client, &target, layer, &layer_digest).await;
    push_blob(&client, &target, config.into_bytes(), &config_digest).await;
    client
        .push_manifest_raw(
            &target,
            manifest.into_bytes(),
            reqwest::header::HeaderValue::from_static("application/vnd.oci.image.manifest.v1+json"),
        )
        .await
        .unwrap();
    let t = TempDir::new("corrupt");
    let s = store(&t);
    let name = format!("{}/rcri-test/corrupt:1", reg.host());
    let err = expect_err(s.pull(&name, None, &direct(&reg.host())).await);
    eprintln!("corrupt gzip: {err}");
    assert_eq!(err.grpc_code(), Code::DataLoss, "{err}");
    assert!(
        err.to_string().contains(&name) && err.to_string().contains(&layer_digest),
        "{err}"
    );
    assert_clean(&s);
    assert_eq!(fs::read_dir(s.root.join("snapshots")).unwrap().count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_images_other_platforms_and_dead_registries_fail_clearly() {
    require!();
    let reg = Registry::start(None);
    push_test_images(&reg, None).await;
    let t = TempDir::new("bad");
    let s = store(&t);
    let cfg = direct(&reg.host());
    let h = reg.host();

    for (name, code) in [
        (format!("{h}/rcri-test/no-such-image"), Code::NotFound),
        (format!("{h}/rcri-test/busybox:no-such-tag"), Code::NotFound),
        (
            format!("{h}/rcri-test/busybox@sha256:{}", "0".repeat(64)),
            Code::NotFound,
        ),
        (format!("{h}/rcri-test/other-arch-only"), Code::NotFound),
        ("Not A Reference".to_string(), Code::InvalidArgument),
    ] {
        let err = expect_err(s.pull(&name, None, &cfg).await);
        eprintln!("{name}: {err}");
        assert_eq!(err.grpc_code(), code, "{name}: {err}");
        assert!(
            err.to_string().contains(&name)
                || err.to_string().contains(name.split(':').next().unwrap()),
            "{err}"
        );
        assert_clean(&s);
    }
    let err = expect_err(
        s.pull(&format!("{h}/rcri-test/other-arch-only"), None, &cfg)
            .await,
    );
    assert!(err.to_string().contains("linux/"), "{err}");

    // Down: nothing listens on the port.
    let dead = format!("127.0.0.1:{}", free_port());
    let err = expect_err(s.pull(&format!("{dead}/x/y"), None, &direct(&dead)).await);
    eprintln!("down: {err}");
    assert_eq!(err.grpc_code(), Code::Unavailable, "{err}");
    assert!(err.to_string().contains(&format!("{dead}/x/y")), "{err}");

    // Times out: accepts, never answers.
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_host = silent.local_addr().unwrap().to_string();
    let holder = std::thread::spawn(move || {
        let mut held = Vec::new();
        silent.set_nonblocking(true).unwrap();
        let until = Instant::now() + Duration::from_secs(10);
        while Instant::now() < until {
            if let Ok((c, _)) = silent.accept() {
                held.push(c);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        // Drain nothing: a peer that says nothing until the client gives up.
        let _ = held.iter_mut().map(|c| c.read(&mut [0u8; 1])).count();
    });
    let started = Instant::now();
    let err = expect_err(
        s.pull(&format!("{silent_host}/x/y"), None, &direct(&silent_host))
            .await,
    );
    eprintln!("silent: {err} after {:?}", started.elapsed());
    assert_eq!(err.grpc_code(), Code::DeadlineExceeded, "{err}");
    assert!(started.elapsed() < Duration::from_secs(8));
    assert_clean(&s);
    drop(holder);

    // After all that, the store still pulls.
    s.pull(&format!("{h}/rcri-test/busybox"), None, &cfg)
        .await
        .unwrap();
    assert_clean(&s);
    let _ = std::io::stderr().flush();
}

fn sha256(b: &[u8]) -> String {
    use sha2::Digest;
    let d = sha2::Sha256::digest(b);
    format!(
        "sha256:{}",
        d.iter().map(|b| format!("{b:02x}")).collect::<String>()
    )
}

fn host_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

// ---- token auth --------------------------------------------------------------------------

/// A registry with token auth (the distribution token protocol, as Docker Hub, GCR, ACR and
/// Harbor speak it) in front of a plain docker-registry: a small HTTP/1.1 proxy on 127.0.0.1
/// that answers requests without the access token with 401 and a Bearer challenge, serves the
/// token endpoint at `/token`, and passes authorized requests on to the registry.
///
/// The token endpoint gives the access token for the right user and password (GET, as
/// oci-client asks with Basic credentials) and for the right refresh token (POST
/// `grant_type=refresh_token`, the OAuth2 exchange of an identity token).
struct TokenRegistry {
    port: u16,
    /// Token-endpoint requests seen: "GET <query>" or "POST <form>".
    token_requests: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

const ACCESS_TOKEN: &str = "access-7f3a";
const REFRESH_TOKEN: &str = "refresh-91bc";
const TOKEN_SERVICE: &str = "rcri-test-registry";

impl TokenRegistry {
    fn start(backend: u16, user: (&'static str, &'static str)) -> TokenRegistry {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let token_requests = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (seen, stopping) = (token_requests.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            for conn in listener.incoming() {
                if stopping.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let seen = seen.clone();
                std::thread::spawn(move || {
                    let _ = serve_token_conn(conn, port, backend, user, &seen);
                });
            }
        });
        TokenRegistry {
            port,
            token_requests,
            stop,
            thread: Some(thread),
        }
    }

    fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn token_requests(&self) -> Vec<String> {
        self.token_requests.lock().unwrap().clone()
    }
}

impl Drop for TokenRegistry {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wakes the accept loop, which then sees `stop`.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// One request per connection (answers say `Connection: close`).
fn serve_token_conn(
    mut conn: TcpStream,
    port: u16,
    backend: u16,
    user: (&str, &str),
    seen: &std::sync::Mutex<Vec<String>>,
) -> std::io::Result<()> {
    conn.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = conn.read(&mut chunk)?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let request_line = lines.next().unwrap_or_default().to_string();
    let mut parts = request_line.split(' ');
    let (method, target) = (
        parts.next().unwrap_or_default().to_string(),
        parts.next().unwrap_or_default().to_string(),
    );
    let headers: Vec<(String, String)> = lines
        .filter(|l| !l.is_empty())
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let header = |name: &str| {
        headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    };
    let length: usize = header("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    while buf.len() < head_end + length {
        let n = conn.read(&mut chunk)?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let body = buf[head_end..].to_vec();
    let respond = |conn: &mut TcpStream, status: &str, extra: &str, body: &str| {
        write!(
            conn,
            "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n{extra}\r\n{body}",
            body.len()
        )
    };

    if let Some(query) = target.strip_prefix("/token") {
        let query = query.trim_start_matches('?').to_string();
        let granted = if method == "POST" {
            let form = String::from_utf8_lossy(&body).into_owned();
            seen.lock().unwrap().push(format!("POST {form}"));
            form.split('&').any(|kv| kv == "grant_type=refresh_token")
                && form
                    .split('&')
                    .any(|kv| kv == format!("refresh_token={REFRESH_TOKEN}"))
        } else {
            seen.lock().unwrap().push(format!("GET {query}"));
            let want = format!(
                "Basic {}",
                base64_encode(format!("{}:{}", user.0, user.1).as_bytes())
            );
            header("authorization").as_deref() == Some(want.as_str())
        };
        return if granted {
            respond(
                &mut conn,
                "200 OK",
                "",
                &format!(
                    r#"{{"token":"{ACCESS_TOKEN}","access_token":"{ACCESS_TOKEN}","expires_in":300}}"#
                ),
            )
        } else {
            respond(
                &mut conn,
                "401 Unauthorized",
                "",
                r#"{"error":"invalid_grant"}"#,
            )
        };
    }

    if header("authorization").as_deref() != Some(format!("Bearer {ACCESS_TOKEN}").as_str()) {
        let scope = target
            .strip_prefix("/v2/")
            .and_then(|p| p.rsplit_once("/manifests/").or(p.rsplit_once("/blobs/")))
            .map(|(repo, _)| format!(",scope=\"repository:{repo}:pull\""))
            .unwrap_or_default();
        let challenge = format!(
            "WWW-Authenticate: Bearer realm=\"http://127.0.0.1:{port}/token\",service=\"{TOKEN_SERVICE}\"{scope}\r\n"
        );
        return respond(
            &mut conn,
            "401 Unauthorized",
            &challenge,
            r#"{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}"#,
        );
    }
    // Authorized: the same request to the registry, which needs no credentials.
    let mut up = TcpStream::connect(("127.0.0.1", backend))?;
    let mut req = format!("{request_line}\r\n");
    for (k, v) in &headers {
        if k != "authorization" && k != "connection" {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
    }
    req.push_str("Connection: close\r\n\r\n");
    up.write_all(req.as_bytes())?;
    up.write_all(&body)?;
    std::io::copy(&mut up, &mut conn)?;
    Ok(())
}

fn base64_encode(b: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for c in b.chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
            | u32::from(*c.get(2).unwrap_or(&0));
        for i in 0..4 {
            if i <= c.len() {
                out.push(T[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// CRI's registry_token (a bearer token used as is) and identity_token (a refresh token
/// traded at the registry's token service) against a registry that speaks token auth; and
/// the username/password path through the same token service.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registry_and_identity_tokens_are_used() {
    require!();
    let reg = Registry::start(None);
    push_test_images(&reg, None).await;
    let tokens = TokenRegistry::start(reg.port, ("rcri", "s3cret"));
    let t = TempDir::new("token");
    let s = store(&t);
    let cfg = direct(&tokens.host());
    let name = format!("{}/rcri-test/busybox", tokens.host());
    let cri_auth = |registry_token: &str, identity_token: &str| {
        let a = k8s_cri::v1::AuthConfig {
            registry_token: registry_token.into(),
            identity_token: identity_token.into(),
            server_address: tokens.host(),
            ..Default::default()
        };
        Auth::from_cri(&a).unwrap()
    };

    // Anonymous: the token service gives nothing.
    let err = expect_err(s.pull(&name, None, &cfg).await);
    assert_eq!(err.grpc_code(), Code::Unauthenticated, "{err}");

    // registry_token: sent to the registry as the bearer token, no token service involved.
    let before = tokens.token_requests().len();
    let err = expect_err(s.pull_with_server(&name, cri_auth("wrong", ""), &cfg).await);
    assert_eq!(err.grpc_code(), Code::Unauthenticated, "{err}");
    assert_clean(&s);
    let img = s
        .pull_with_server(&name, cri_auth(ACCESS_TOKEN, ""), &cfg)
        .await
        .unwrap();
    assert_eq!(img.repo_tags, [format!("{name}:latest")]);
    assert_eq!(tokens.token_requests().len(), before, "token service asked");
    s.remove(&img.id).unwrap();

    // identity_token: traded (POST, refresh_token grant, this repository's pull scope).
    let err = expect_err(s.pull_with_server(&name, cri_auth("", "stale"), &cfg).await);
    assert_eq!(err.grpc_code(), Code::Unauthenticated, "{err}");
    assert!(
        err.to_string().contains("refused the identity token"),
        "{err}"
    );
    assert_clean(&s);
    let img = s
        .pull_with_server(&name, cri_auth("", REFRESH_TOKEN), &cfg)
        .await
        .unwrap();
    assert_eq!(img.repo_tags, [format!("{name}:latest")]);
    let posts: Vec<String> = tokens
        .token_requests()
        .into_iter()
        .filter(|r| r.starts_with("POST ") && r.contains(REFRESH_TOKEN))
        .collect();
    assert_eq!(posts.len(), 1, "{:?}", tokens.token_requests());
    let form = &posts[0];
    for want in [
        "grant_type=refresh_token",
        &format!("service={TOKEN_SERVICE}"),
        "scope=repository%3Arcri-test%2Fbusybox%3Apull",
    ] {
        assert!(form.contains(want), "{want} not in {form}");
    }
    with_rootfs(&s, &img.id, |root| {
        assert!(root.join("bin/busybox").is_file());
    });
    s.remove(&img.id).unwrap();

    // Username and password: traded at the token service too (GET with Basic).
    let basic = Auth::Basic {
        username: "rcri".into(),
        password: "s3cret".into(),
    };
    let img = s.pull(&name, Some(basic), &cfg).await.unwrap();
    assert!(tokens
        .token_requests()
        .iter()
        .any(|r| r.starts_with("GET ") && r.contains("rcri-test%2Fbusybox")));
    assert_eq!(img.repo_tags, [format!("{name}:latest")]);
    assert_clean(&s);
}
