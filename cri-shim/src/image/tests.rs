use super::*;
use serde_json::json;
use sha2::{Digest, Sha256};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::process::Command;

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

fn sha(data: &[u8]) -> String {
    unpack::hex_digest(Sha256::digest(data).as_slice())
}

struct TempDir(PathBuf);
impl TempDir {
    fn new(tag: &str) -> TempDir {
        use std::sync::atomic::{AtomicU64, Ordering};
        static N: AtomicU64 = AtomicU64::new(0);
        let p = std::env::temp_dir().join(format!(
            "rcri-image-{tag}-{}-{}",
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
        // Unmount anything a failed test left mounted below, then remove.
        if let Ok(info) = fs::read_to_string("/proc/self/mountinfo") {
            let me = self.0.to_string_lossy().into_owned();
            for l in info.lines().rev() {
                if let Some(m) = l.split(' ').nth(4) {
                    if m.starts_with(&me) {
                        let _ = umount2(m, MntFlags::MNT_DETACH);
                    }
                }
            }
        }
        let _ = fs::remove_dir_all(&self.0);
    }
}

// ---- building tar layers -------------------------------------------------------------

/// A tar builder that can also write what a hostile archive would hold (raw names).
struct Tar(tar::Builder<Vec<u8>>);

impl Tar {
    fn new() -> Self {
        Tar(tar::Builder::new(Vec::new()))
    }
    fn header(kind: tar::EntryType, mode: u32) -> tar::Header {
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(1_000_000);
        h.set_size(0);
        h
    }
    /// Sets the name bytes directly: the tar crate refuses `..` in set_path.
    fn raw_name(h: &mut tar::Header, name: &str) {
        let n = &mut h.as_old_mut().name;
        n.fill(0);
        n[..name.len()].copy_from_slice(name.as_bytes());
    }
    fn dir(&mut self, name: &str, mode: u32) -> &mut Self {
        let mut h = Self::header(tar::EntryType::Directory, mode);
        Self::raw_name(&mut h, name);
        h.set_cksum();
        self.0.append(&h, io::empty()).unwrap();
        self
    }
    fn file(&mut self, name: &str, data: &[u8], mode: u32, uid: u64) -> &mut Self {
        let mut h = Self::header(tar::EntryType::Regular, mode);
        h.set_size(data.len() as u64);
        h.set_uid(uid);
        h.set_gid(uid);
        Self::raw_name(&mut h, name);
        h.set_cksum();
        self.0.append(&h, data).unwrap();
        self
    }
    fn link(&mut self, kind: tar::EntryType, name: &str, target: &str) -> &mut Self {
        let mut h = Self::header(kind, 0o777);
        Self::raw_name(&mut h, name);
        let l = &mut h.as_old_mut().linkname;
        l.fill(0);
        l[..target.len()].copy_from_slice(target.as_bytes());
        h.set_cksum();
        self.0.append(&h, io::empty()).unwrap();
        self
    }
    fn dev(&mut self, kind: tar::EntryType, name: &str, major: u32, minor: u32) -> &mut Self {
        let mut h = Self::header(kind, 0o666);
        h.set_device_major(major).unwrap();
        h.set_device_minor(minor).unwrap();
        Self::raw_name(&mut h, name);
        h.set_cksum();
        self.0.append(&h, io::empty()).unwrap();
        self
    }
    fn xattr_file(&mut self, name: &str, key: &str, value: &[u8]) -> &mut Self {
        self.0
            .append_pax_extensions([(format!("SCHILY.xattr.{key}").as_str(), value)])
            .unwrap();
        self.file(name, b"x", 0o644, 0)
    }
    fn finish(&mut self) -> Vec<u8> {
        let b = std::mem::replace(&mut self.0, tar::Builder::new(Vec::new()));
        b.into_inner().unwrap()
    }
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

fn unpack_to(layer: &[u8], dir: &Path) -> Result<unpack::Unpacked, UnpackError> {
    fs::create_dir_all(dir).unwrap();
    unpack::unpack_layer(layer, dir)
}

#[test]
fn unpack_translates_whiteouts_and_keeps_file_kinds_and_metadata() {
    if !is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let t = TempDir::new("kinds");
    let layer = Tar::new()
        .dir("etc/", 0o755)
        .file("etc/passwd", b"root:x:0:0::/:/bin/sh\n", 0o644, 0)
        .file("bin/su", b"suid", 0o4755, 1000)
        .link(tar::EntryType::Symlink, "bin/sh", "/bin/busybox")
        .link(tar::EntryType::Link, "etc/passwd-", "etc/passwd")
        .dev(tar::EntryType::Char, "dev/null", 1, 3)
        .dev(tar::EntryType::Fifo, "run/fifo", 0, 0)
        .file("gone/.wh.old", b"", 0o644, 0)
        .file("opaque/.wh..wh..opq", b"", 0o644, 0)
        .file(".wh..wh.plnk", b"", 0o644, 0)
        .xattr_file("attr", "user.rcri", b"yes")
        .finish();
    let dir = t.0.join("snap");
    let u = unpack_to(&layer, &dir).unwrap();
    assert_eq!(u.diff_id, sha(&layer));
    assert_eq!(u.size, layer.len() as u64);

    let m = fs::metadata(dir.join("bin/su")).unwrap();
    assert_eq!(
        m.permissions().mode() & 0o7777,
        0o4755,
        "setuid kept after chown"
    );
    assert_eq!((m.uid(), m.gid()), (1000, 1000));
    assert_eq!(m.mtime(), 1_000_000);
    assert_eq!(
        fs::read_link(dir.join("bin/sh")).unwrap(),
        Path::new("/bin/busybox")
    );
    assert_eq!(
        fs::metadata(dir.join("etc/passwd-")).unwrap().ino(),
        fs::metadata(dir.join("etc/passwd")).unwrap().ino()
    );
    let null = fs::metadata(dir.join("dev/null")).unwrap();
    assert!(null.file_type().is_char_device());
    assert_eq!(null.rdev(), nix::sys::stat::makedev(1, 3));
    assert!(fs::metadata(dir.join("run/fifo"))
        .unwrap()
        .file_type()
        .is_fifo());
    // `.wh.old` became an overlay whiteout named `old`.
    let wh = fs::symlink_metadata(dir.join("gone/old")).unwrap();
    assert!(wh.file_type().is_char_device() && wh.rdev() == 0);
    assert!(!dir.join("gone/.wh.old").exists());
    // The opaque marker became the overlay xattr on its directory.
    assert_eq!(
        xattr(&dir.join("opaque"), "trusted.overlay.opaque"),
        Some(b"y".to_vec())
    );
    assert!(!dir.join(".wh..wh.plnk").exists());
    assert_eq!(xattr(&dir.join("attr"), "user.rcri"), Some(b"yes".to_vec()));
}

fn xattr(p: &Path, name: &str) -> Option<Vec<u8>> {
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt;
    let cp = CString::new(p.as_os_str().as_bytes()).ok()?;
    let cn = CString::new(name).ok()?;
    let mut buf = vec![0u8; 256];
    // SAFETY: valid strings and a buffer of the given size.
    let n =
        unsafe { libc::lgetxattr(cp.as_ptr(), cn.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    (n >= 0).then(|| buf[..n as usize].to_vec())
}

#[test]
fn unpack_refuses_path_traversal_and_symlink_escapes() {
    let t = TempDir::new("evil");
    let outside = t.0.join("outside");
    fs::create_dir_all(&outside).unwrap();
    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "dotdot",
            Tar::new().file("../escaped", b"x", 0o644, 0).finish(),
        ),
        (
            "dotdot-deep",
            Tar::new().file("a/../../escaped", b"x", 0o644, 0).finish(),
        ),
        (
            "symlink-parent",
            Tar::new()
                .link(tar::EntryType::Symlink, "evil", outside.to_str().unwrap())
                .file("evil/escaped", b"x", 0o644, 0)
                .finish(),
        ),
        (
            "hardlink-out",
            Tar::new()
                .link(tar::EntryType::Link, "pw", "../outside/target")
                .finish(),
        ),
        (
            "hardlink-absolute",
            // An absolute target names a path inside the layer, which does not have it.
            Tar::new()
                .link(tar::EntryType::Link, "pw", "/etc/passwd")
                .finish(),
        ),
        (
            "hardlink-through-symlink",
            Tar::new()
                .link(tar::EntryType::Symlink, "evil", outside.to_str().unwrap())
                .link(tar::EntryType::Link, "pw", "evil/target")
                .finish(),
        ),
    ];
    fs::write(outside.join("target"), b"secret").unwrap();
    for (name, layer) in cases {
        let dir = t.0.join(name);
        let r = unpack_to(&layer, &dir);
        assert!(
            matches!(r, Err(UnpackError::Unsafe { .. })),
            "{name}: {r:?}"
        );
        assert!(!t.0.join("escaped").exists(), "{name}");
        assert!(!outside.join("escaped").exists(), "{name}");
    }
    assert_eq!(fs::read(outside.join("target")).unwrap(), b"secret");
}

#[test]
fn unpack_reads_gzip_and_zstd_and_hashes_the_uncompressed_tar() {
    let t = TempDir::new("comp");
    let layer = Tar::new().file("hello", b"world", 0o644, 0).finish();
    let diff_id = sha(&layer);
    let z = zstd::stream::encode_all(&layer[..], 3).unwrap();
    for (name, blob) in [("plain", layer.clone()), ("gz", gzip(&layer)), ("zst", z)] {
        let dir = t.0.join(name);
        let u = if is_root() {
            unpack_to(&blob, &dir).unwrap()
        } else {
            // chown needs root; the digest part still works for this root-owned file.
            unpack_to(&blob, &dir).unwrap()
        };
        assert_eq!(u.diff_id, diff_id, "{name}");
        assert_eq!(fs::read(dir.join("hello")).unwrap(), b"world");
    }
    // A corrupt gzip stream is an error, not a short layer.
    let mut bad = gzip(&layer);
    let n = bad.len();
    bad.truncate(n / 2);
    assert!(unpack_to(&bad, &t.0.join("bad")).is_err());
}

// ---- building OCI layouts ------------------------------------------------------------

struct Layout {
    dir: PathBuf,
    manifests: Vec<serde_json::Value>,
}

impl Layout {
    fn new(dir: &Path) -> Self {
        fs::create_dir_all(dir.join("blobs/sha256")).unwrap();
        fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
        Layout {
            dir: dir.to_path_buf(),
            manifests: Vec::new(),
        }
    }
    fn blob(&self, data: &[u8]) -> (String, usize) {
        let d = sha(data);
        fs::write(
            self.dir.join("blobs/sha256").join(digest_hex(&d).unwrap()),
            data,
        )
        .unwrap();
        (d, data.len())
    }
    /// Writes an image (layers given as uncompressed tars, gzipped here) and returns the
    /// manifest descriptor.
    fn image(
        &self,
        layers: &[Vec<u8>],
        config: serde_json::Value,
        arch: &str,
    ) -> serde_json::Value {
        let mut ldesc = Vec::new();
        let mut diff_ids = Vec::new();
        for l in layers {
            diff_ids.push(sha(l));
            let (d, n) = self.blob(&gzip(l));
            ldesc.push(json!({"mediaType": oci::OCI_MANIFEST.replace("manifest.v1+json", "layer.v1.tar+gzip"), "digest": d, "size": n}));
        }
        let cfg = json!({"architecture": arch, "os": "linux", "config": config,
                         "rootfs": {"type": "layers", "diff_ids": diff_ids}});
        let (cd, cn) = self.blob(&serde_json::to_vec(&cfg).unwrap());
        let m = json!({"schemaVersion": 2, "mediaType": oci::OCI_MANIFEST,
                       "config": {"mediaType": oci::OCI_CONFIG, "digest": cd, "size": cn},
                       "layers": ldesc});
        let (md, mn) = self.blob(&serde_json::to_vec(&m).unwrap());
        json!({"mediaType": oci::OCI_MANIFEST, "digest": md, "size": mn,
               "platform": {"os": "linux", "architecture": arch}})
    }
    fn index_of(&self, descs: Vec<serde_json::Value>) -> serde_json::Value {
        let idx = json!({"schemaVersion": 2, "mediaType": oci::OCI_INDEX, "manifests": descs});
        let (d, n) = self.blob(&serde_json::to_vec(&idx).unwrap());
        json!({"mediaType": oci::OCI_INDEX, "digest": d, "size": n})
    }
    fn add(&mut self, mut desc: serde_json::Value, ref_name: &str) {
        desc["annotations"] = json!({ oci::ANNOTATION_REF_NAME: ref_name });
        self.manifests.push(desc);
    }
    fn write_index(&self) {
        fs::write(
            self.dir.join("index.json"),
            serde_json::to_vec(&json!({"schemaVersion": 2, "manifests": self.manifests})).unwrap(),
        )
        .unwrap();
    }
}

fn host_arch() -> String {
    oci::host_platform().architecture
}

#[test]
fn layers_stack_with_whiteouts_and_are_unpacked_once() {
    if !is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let t = TempDir::new("stack");
    let mut lay = Layout::new(&t.0.join("layout"));
    let base = Tar::new()
        .file("keep", b"base", 0o644, 0)
        .file("del", b"base", 0o644, 0)
        .file("dir/old", b"base", 0o644, 0)
        .finish();
    let top = Tar::new()
        .file(".wh.del", b"", 0o644, 0)
        .dir("dir/", 0o755)
        .file("dir/.wh..wh..opq", b"", 0o644, 0)
        .file("dir/new", b"top", 0o644, 0)
        .finish();
    let a = lay.image(&[base.clone(), top], json!({"Cmd": ["sh"]}), &host_arch());
    lay.add(a, "example.com/stack:1");
    // A second image sharing the base layer.
    let b = lay.image(
        &[base],
        json!({"Cmd": ["true"], "User": "1000:50"}),
        &host_arch(),
    );
    lay.add(b, "example.com/base:1");
    lay.write_index();

    let store = ImageStore::open(&t.0.join("store")).unwrap();
    let imgs = store.import_oci_layout(&lay.dir).unwrap();
    assert_eq!(imgs.len(), 2);
    assert_eq!(
        fs::read_dir(store.snapshot_dir()).unwrap().count(),
        2,
        "base unpacked once"
    );
    let base_img = store.get("example.com/base:1").unwrap();
    assert_eq!(base_img.uid(), Some(1000));
    assert_eq!(base_img.username(), "");

    let rootfs = t.0.join("rootfs");
    store
        .mount_rootfs("example.com/stack:1", "c1", &rootfs)
        .unwrap();
    let names = |p: &Path| -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(p)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    };
    assert_eq!(names(&rootfs), ["dir", "keep"]);
    assert_eq!(names(&rootfs.join("dir")), ["new"]);
    store.remove_rootfs("c1", &rootfs).unwrap();

    // Removing one image keeps the shared snapshot; removing both collects everything.
    store.remove("example.com/stack:1").unwrap();
    assert_eq!(fs::read_dir(store.snapshot_dir()).unwrap().count(), 1);
    store.remove(&base_img.id).unwrap();
    assert_eq!(fs::read_dir(store.snapshot_dir()).unwrap().count(), 0);
    assert_eq!(fs::read_dir(store.blob_dir()).unwrap().count(), 0);
}

#[test]
fn index_selects_the_host_platform_or_fails_cleanly() {
    let t = TempDir::new("platform");
    let mut lay = Layout::new(&t.0.join("layout"));
    let l = Tar::new().file("f", b"x", 0o644, 0).finish();
    let other = if host_arch() == "arm64" {
        "amd64"
    } else {
        "arm64"
    };
    let mine = lay.image(
        std::slice::from_ref(&l),
        json!({"Cmd": ["mine"]}),
        &host_arch(),
    );
    let theirs = lay.image(std::slice::from_ref(&l), json!({"Cmd": ["theirs"]}), other);
    let multi = lay.index_of(vec![theirs.clone(), mine]);
    let multi_digest = multi["digest"].as_str().unwrap().to_string();
    lay.add(multi, "multi");
    lay.write_index();
    if !is_root() {
        eprintln!("skipped the unpacking part: needs root");
        return;
    }
    let store = ImageStore::open(&t.0.join("store")).unwrap();
    let imgs = store.import_oci_layout(&lay.dir).unwrap();
    assert_eq!(imgs[0].config.cmd, ["mine"]);
    assert_eq!(imgs[0].repo_tags, ["docker.io/library/multi:latest"]);
    assert_eq!(
        imgs[0].repo_digests,
        [format!("docker.io/library/multi@{multi_digest}")]
    );
    assert_eq!(store.get(&multi_digest).unwrap().id, imgs[0].id);
    // GC keeps the platform manifest that the kept index points at.
    store.collect_garbage().unwrap();
    let again = ImageStore::open(&t.0.join("store")).unwrap();
    assert_eq!(again.list().unwrap().len(), 1);

    let mut only_other = Layout::new(&t.0.join("layout2"));
    let idx = only_other.index_of(vec![theirs]);
    // The blobs the index points at live in the first layout: copy them over.
    for e in fs::read_dir(lay.dir.join("blobs/sha256")).unwrap() {
        let e = e.unwrap();
        let _ = fs::copy(
            e.path(),
            only_other.dir.join("blobs/sha256").join(e.file_name()),
        );
    }
    only_other.add(idx, "foreign");
    only_other.write_index();
    let err = store.import_oci_layout(&only_other.dir).unwrap_err();
    assert!(
        matches!(err, ImageError::NoMatchingPlatform { .. }),
        "{err}"
    );
    assert!(err.to_string().contains("foreign"), "{err}");
    assert!(store.get("foreign").is_err());
}

#[test]
fn corrupt_blobs_are_refused_and_leave_nothing_behind() {
    let t = TempDir::new("corrupt");
    let mut lay = Layout::new(&t.0.join("layout"));
    let l = Tar::new().file("f", b"x", 0o644, 0).finish();
    let desc = lay.image(&[l], json!({}), &host_arch());
    lay.add(desc, "corrupt");
    lay.write_index();
    // Flip a byte of the layer blob (the largest file).
    let mut blobs: Vec<_> = fs::read_dir(lay.dir.join("blobs/sha256"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    blobs.sort_by_key(|p| fs::metadata(p).unwrap().len());
    let layer = blobs.last().unwrap().clone();
    let mut data = fs::read(&layer).unwrap();
    data[20] ^= 0xff;
    fs::write(&layer, &data).unwrap();

    let store = ImageStore::open(&t.0.join("store")).unwrap();
    let err = store.import_oci_layout(&lay.dir).unwrap_err();
    assert!(matches!(err, ImageError::DigestMismatch { .. }), "{err}");
    assert!(store.list().unwrap().is_empty());
    assert_eq!(fs::read_dir(store.snapshot_dir()).unwrap().count(), 0);
    let leftovers: Vec<_> = fs::read_dir(store.blob_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    // Not a layout at all.
    assert!(matches!(
        store.import_oci_layout(&t.0),
        Err(ImageError::BadLayout { .. })
    ));
}

/// hack/mkimage.sh's OCI layout (the busybox test image).
fn mkimage_layout() -> Option<PathBuf> {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let out = repo.join("target/e2e-image");
    let st = Command::new("bash")
        .arg(repo.join("hack/mkimage.sh"))
        .arg(&out)
        .status()
        .ok()?;
    st.success().then(|| out.join("oci"))
}

#[test]
fn busybox_layout_imports_mounts_and_keeps_its_snapshot_clean() {
    if !is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let Some(layout) = mkimage_layout() else {
        eprintln!("skipped: hack/mkimage.sh failed (busybox-static missing?)");
        return;
    };
    let t = TempDir::new("busybox");
    let store = ImageStore::open(&t.0.join("store")).unwrap();
    let imgs = store.import_oci_layout(&layout).unwrap();
    assert_eq!(imgs.len(), 1);
    let img = &imgs[0];
    assert_eq!(img.repo_tags, ["docker.io/library/busybox:latest"]);
    assert_eq!(img.config.cmd, ["sh"]);
    assert_eq!(img.config.working_dir, "/");
    assert!(img.config.env[0].starts_with("PATH="));
    assert!(img.size > 100_000);
    // Every way to name it.
    let hex = img.id.strip_prefix("sha256:").unwrap();
    for r in [
        "busybox",
        "busybox:latest",
        "library/busybox",
        "docker.io/library/busybox:latest",
        img.id.as_str(),
        hex,
        &hex[..12],
        img.manifest_digest.as_str(),
        &format!("busybox@{}", img.manifest_digest),
    ] {
        assert_eq!(store.get(r).unwrap().id, img.id, "{r}");
    }
    assert!(matches!(
        store.get("busybox:other"),
        Err(ImageError::NotFound(_))
    ));
    // Importing again is a no-op that keeps the one record.
    store.import_oci_layout(&layout).unwrap();
    assert_eq!(store.list().unwrap().len(), 1);

    let rootfs = t.0.join("bundle/rootfs");
    store.mount_rootfs("busybox", "ctr-1", &rootfs).unwrap();
    // Mounting again (rcri restarted mid-create) is fine.
    store.mount_rootfs("busybox", "ctr-1", &rootfs).unwrap();
    assert!(rootfs.join("bin/busybox").is_file());
    let out = Command::new("chroot")
        .arg(&rootfs)
        .args(["/bin/busybox", "echo", "hi from the rootfs"])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hi from the rootfs\n");

    // Writes go to the container's upper dir, never into the shared snapshot.
    fs::write(rootfs.join("etc/hostname"), "changed").unwrap();
    fs::write(rootfs.join("new-file"), "new").unwrap();
    fs::remove_file(rootfs.join("bin/ls")).unwrap();
    let snap = store.snapshot_path(&img.layers[0].diff_id).unwrap();
    assert_eq!(
        fs::read_to_string(snap.join("etc/hostname")).unwrap(),
        "rcrun\n"
    );
    assert!(!snap.join("new-file").exists());
    assert!(fs::symlink_metadata(snap.join("bin/ls")).is_ok());
    let upper = store.root.join("containers/ctr-1/upper");
    assert_eq!(fs::read_to_string(upper.join("new-file")).unwrap(), "new");

    // A second container sees the pristine image.
    let rootfs2 = t.0.join("bundle2/rootfs");
    store.mount_rootfs(&img.id, "ctr-2", &rootfs2).unwrap();
    assert!(!rootfs2.join("new-file").exists());
    assert!(fs::symlink_metadata(rootfs2.join("bin/ls")).is_ok());

    // In use: not removable.
    assert!(matches!(
        store.remove("busybox"),
        Err(ImageError::InUse { .. })
    ));
    store.remove_rootfs("ctr-1", &rootfs).unwrap();
    store.remove_rootfs("ctr-2", &rootfs2).unwrap();
    store.remove_rootfs("ctr-2", &rootfs2).unwrap();
    assert!(!upper.exists());
    assert!(!is_mount_point(&rootfs));
    assert!(matches!(
        store.mount_rootfs("busybox", "../evil", &rootfs),
        Err(ImageError::InvalidContainerId(_))
    ));

    // The records survive a restart.
    drop(store);
    let store = ImageStore::open(&t.0.join("store")).unwrap();
    assert_eq!(store.get("busybox").unwrap().id, img.id);
    store.remove("docker.io/library/busybox:latest").unwrap();
    assert!(store.list().unwrap().is_empty());
    assert!(matches!(
        store.remove("busybox"),
        Err(ImageError::NotFound(_))
    ));
    assert_eq!(fs::read_dir(store.blob_dir()).unwrap().count(), 0);
}

/// shared/critest-images/oci: many images in one index, refs in annotations.
fn critest_layout() -> Option<PathBuf> {
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    [
        here.join("../../shared/critest-images/oci"),
        here.join("../shared/critest-images/oci"),
        PathBuf::from("/work/shared/critest-images/oci"),
    ]
    .into_iter()
    .find(|p| p.join("index.json").is_file())
}

#[test]
fn critest_layout_imports_with_its_registry_names() {
    if !is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let Some(layout) = critest_layout() else {
        eprintln!("skipped: shared/critest-images not found");
        return;
    };
    let t = TempDir::new("critest");
    let store = ImageStore::open(&t.0.join("store")).unwrap();
    // images.txt maps each layout ref to the names critest pulls (from registry.k8s.io).
    let map_text = fs::read_to_string(layout.join("../images.txt")).unwrap_or_default();
    let mut map: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for line in map_text.lines().filter(|l| !l.starts_with('#')) {
        let mut it = line.split_whitespace();
        if let (Some(r), Some(n)) = (it.next(), it.next()) {
            map.entry(r.to_string())
                .or_default()
                .push(format!("registry.k8s.io/{n}"));
        }
    }
    let imgs = store
        .import_oci_layout_with(&layout, &|names: &[String]| {
            names
                .first()
                .and_then(|n| map.get(n))
                .cloned()
                .unwrap_or_default()
        })
        .unwrap();
    let idx: oci::Index =
        serde_json::from_slice(&fs::read(layout.join("index.json")).unwrap()).unwrap();
    assert!(imgs.len() >= idx.manifests.len() - 1, "{}", imgs.len());
    let pause = store.get("registry.k8s.io/pause:3.6").unwrap();
    assert_eq!(pause.config.user, "65535:65535");
    assert_eq!(pause.uid(), Some(65535));
    let same = store
        .get("registry.k8s.io/k8s-staging-cri-tools/test-image-tags:2")
        .unwrap();
    assert_eq!(same.repo_tags.len(), 3, "{:?}", same.repo_tags);
    let named = store
        .get("registry.k8s.io/k8s-staging-cri-tools/test-image-user-username:latest")
        .unwrap();
    assert_eq!(named.username(), "www-data");
    // And the plain import normalizes the bare ref names.
    let store2 = ImageStore::open(&t.0.join("store2")).unwrap();
    store2.import_oci_layout(&layout).unwrap();
    assert!(store2.get("busybox-1.29-2").is_ok());
    let rootfs = t.0.join("rootfs");
    store
        .mount_rootfs(
            "registry.k8s.io/e2e-test-images/busybox:1.29-2",
            "c",
            &rootfs,
        )
        .unwrap();
    assert!(rootfs.join("bin/sh").exists());
    store.remove_rootfs("c", &rootfs).unwrap();
}

/// What a crash leaves between a pull's renames and its sync + record (content under final
/// names that no record references, possibly incomplete) is collected on open; recorded
/// images keep theirs, and the lower dir of layerless images stays.
#[test]
fn open_collects_content_no_image_references() {
    if !is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let Some(layout) = mkimage_layout() else {
        eprintln!("skipped: hack/mkimage.sh failed (busybox-static missing?)");
        return;
    };
    let t = TempDir::new("reopen");
    let root = t.0.join("store");
    let store = ImageStore::open(&root).unwrap();
    let img = store.import_oci_layout(&layout).unwrap().remove(0);
    drop(store);
    let orphan_blob = root.join("blobs/sha256").join("ab".repeat(32));
    let orphan_snap = root.join("snapshots").join("cd".repeat(32));
    fs::write(&orphan_blob, b"half a layer").unwrap();
    fs::create_dir_all(orphan_snap.join("bin")).unwrap();
    fs::write(orphan_snap.join("bin/empty-after-crash"), b"").unwrap();
    fs::create_dir_all(root.join("snapshots/empty")).unwrap();

    let store = ImageStore::open(&root).unwrap();
    assert!(!orphan_blob.exists(), "unreferenced blob kept");
    assert!(!orphan_snap.exists(), "unreferenced snapshot kept");
    assert!(root.join("snapshots/empty").is_dir());
    let kept = store.get("busybox").unwrap();
    assert_eq!(kept.id, img.id);
    for l in &kept.layers {
        assert!(store.blob_path(&l.digest).unwrap().is_file());
        assert!(store.snapshot_path(&l.diff_id).unwrap().is_dir());
    }
    assert!(store.blob_path(&kept.id).unwrap().is_file());
    assert!(store.blob_path(&kept.manifest_digest).unwrap().is_file());
}

/// Found by fuzzing (fuzz/fuzz_targets/tar_unpack.rs): a 95-byte gzip layer holding a GNU
/// sparse entry that declares 1 GiB of holes would have been written out as 1 GiB of zeros.
#[test]
fn a_sparse_entry_is_refused_instead_of_expanded() {
    let hex = "1f8b08000000000002034b63a03d300002331313300d04e834986d686a6c606062666e6064ca6060686c6062c8a0104c07b731941697241629283014e5e797e05347489e6c6088140ac82142130b46c1281805a3000e00e88970cb00060000";
    let bytes: Vec<u8> = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex"))
        .collect();
    let dir = TempDir::new("sparse");
    let dest = dir.0.join("dest");
    std::fs::create_dir(&dest).expect("dest");
    let err = crate::image::unpack::unpack_layer(&bytes[..], &dest)
        .expect_err("a sparse entry must be refused");
    assert!(err.to_string().contains("sparse"), "{err}");
    let written: u64 = std::fs::read_dir(&dest)
        .expect("read dest")
        .flatten()
        .filter_map(|e| e.metadata().ok())
        .map(|m| m.len())
        .sum();
    assert!(written <= bytes.len() as u64, "{written} bytes written");
}
