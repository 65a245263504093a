//! These tests mount tmpfs, so they run as root (as the project's tests do).
use super::*;
use crate::kubelet::convert::apply_defaults;
use crate::kubelet::manifest::{parse_objects, Object};
use std::os::unix::fs::MetadataExt;

struct TempDir(PathBuf);
impl TempDir {
    fn new(tag: &str) -> TempDir {
        let p = PathBuf::from(format!("/tmp/rcri-volumes-{tag}-{}", std::process::id()));
        drop(TempDir(p.clone()));
        fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
}
impl Drop for TempDir {
    /// Unmounts whatever a failed test left below the directory before removing it, so that
    /// nothing is removed through a mount and nothing stays mounted.
    fn drop(&mut self) {
        let Ok(root) = fs::canonicalize(&self.0) else {
            return;
        };
        let mut left: Vec<PathBuf> = mount_points()
            .unwrap_or_default()
            .into_iter()
            .filter(|m| m.starts_with(&root))
            .collect();
        left.sort_by_key(|m| std::cmp::Reverse(m.components().count()));
        for m in &left {
            let _ = nix::mount::umount2(m, MntFlags::MNT_DETACH);
        }
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn load(yaml: &str) -> (Pod, ConfigSources) {
    let (objects, _) = parse_objects(yaml, "test.yaml").unwrap();
    let mut pod = None;
    for o in &objects {
        if let Object::Pod(p) = o {
            pod = Some((**p).clone());
        }
    }
    let mut pod = pod.unwrap();
    apply_defaults(&mut pod);
    crate::kubelet::convert::validate(&pod).unwrap();
    (pod, ConfigSources::load(None, &objects).unwrap())
}

fn mode(p: &Path) -> u32 {
    fs::metadata(p).unwrap().permissions().mode() & 0o7777
}

fn mounted(p: &Path) -> bool {
    is_mount_point(&fs::canonicalize(p).unwrap()).unwrap()
}

fn pod_yaml(host: &Path) -> String {
    format!(
        r#"
apiVersion: v1
kind: ConfigMap
metadata: {{name: cfg}}
data: {{greeting: hello, mode: fast}}
---
apiVersion: v1
kind: Secret
metadata: {{name: pw}}
stringData: {{password: s3cret, user: admin}}
---
apiVersion: v1
kind: Pod
metadata: {{name: web, labels: {{app: web, tier: front}}}}
spec:
  securityContext: {{fsGroup: 2345}}
  containers:
  - name: app
    image: busybox
    resources: {{limits: {{memory: 64Mi}}}}
    volumeMounts:
    - {{name: scratch, mountPath: /scratch}}
    - {{name: mem, mountPath: /mem, readOnly: true}}
    - {{name: cfg, mountPath: /etc/cfg}}
    - {{name: cfg, mountPath: /etc/greeting, subPath: greeting}}
    - {{name: pw, mountPath: /etc/pw}}
    - {{name: host, mountPath: /host, mountPropagation: HostToContainer}}
    - {{name: info, mountPath: /info}}
    - {{name: all, mountPath: /all}}
    - {{name: scratch, mountPath: /logs, subPath: logs/app}}
  volumes:
  - {{name: scratch, emptyDir: {{}}}}
  - {{name: mem, emptyDir: {{medium: Memory, sizeLimit: 2Mi}}}}
  - name: cfg
    configMap:
      name: cfg
      items: [{{key: greeting, path: greeting}}, {{key: mode, path: sub/mode, mode: 0600}}]
  - {{name: pw, secret: {{secretName: pw, defaultMode: 0400}}}}
  - {{name: host, hostPath: {{path: {host}/made, type: DirectoryOrCreate}}}}
  - name: info
    downwardAPI:
      items:
      - {{path: name, fieldRef: {{fieldPath: metadata.name}}}}
      - {{path: labels, fieldRef: {{fieldPath: metadata.labels}}}}
      - {{path: mem, resourceFieldRef: {{containerName: app, resource: limits.memory, divisor: 1Mi}}}}
  - name: all
    projected:
      sources:
      - configMap: {{name: cfg}}
      - secret: {{name: pw, items: [{{key: user, path: creds/user, mode: 0440}}]}}
      - downwardAPI: {{items: [{{path: pod, fieldRef: {{fieldPath: metadata.name}}}}]}}
"#,
        host = host.display()
    )
}

#[test]
fn volumes_files_modes_mounts_and_teardown() {
    let t = TempDir::new("all");
    let host = t.0.join("host");
    fs::create_dir_all(&host).unwrap();
    let pod_dir = t.0.join("pod");
    let (pod, sources) = load(&pod_yaml(&host));
    let v = setup(&pod, &pod_dir, &sources).unwrap();
    let vol = |n: &str| v.host_path(n).unwrap().to_path_buf();

    // emptyDir: a world-writable directory, group-owned with setgid for fsGroup.
    let scratch = vol("scratch");
    assert_eq!(mode(&scratch), 0o2777);
    assert_eq!(fs::metadata(&scratch).unwrap().gid(), 2345);
    assert!(!mounted(&scratch));
    // Memory emptyDir: a tmpfs of the given size.
    let mem = vol("mem");
    assert!(mounted(&mem));
    let st = nix::sys::statvfs::statvfs(&mem).unwrap();
    assert_eq!(st.blocks() as u64 * st.fragment_size() as u64, 2 << 20);
    // configMap with items and modes (fsGroup adds g+r); the key files are symlinks into ..data.
    let cfg = vol("cfg");
    assert_eq!(fs::read_to_string(cfg.join("greeting")).unwrap(), "hello");
    assert_eq!(fs::read_to_string(cfg.join("sub/mode")).unwrap(), "fast");
    assert_eq!(mode(&cfg.join("greeting")), 0o644);
    assert_eq!(mode(&cfg.join("sub/mode")), 0o640);
    assert!(fs::symlink_metadata(cfg.join("greeting"))
        .unwrap()
        .file_type()
        .is_symlink());
    assert!(!mounted(&cfg));
    // secret: on tmpfs, every key, defaultMode 0400 (+ g+r for fsGroup).
    let pw = vol("pw");
    assert!(mounted(&pw));
    assert_eq!(fs::read_to_string(pw.join("password")).unwrap(), "s3cret");
    assert_eq!(mode(&pw.join("user")), 0o440);
    assert_eq!(fs::metadata(pw.join("user")).unwrap().gid(), 2345);
    // hostPath DirectoryOrCreate: created, and used in place.
    assert_eq!(vol("host"), host.join("made"));
    assert!(host.join("made").is_dir());
    // downwardAPI
    let info = vol("info");
    assert_eq!(fs::read_to_string(info.join("name")).unwrap(), "web");
    assert_eq!(
        fs::read_to_string(info.join("labels")).unwrap(),
        "app=\"web\"\ntier=\"front\""
    );
    assert_eq!(fs::read_to_string(info.join("mem")).unwrap(), "64");
    // projected: all three sources merged, on tmpfs.
    let all = vol("all");
    assert!(mounted(&all));
    assert_eq!(fs::read_to_string(all.join("mode")).unwrap(), "fast");
    assert_eq!(fs::read_to_string(all.join("creds/user")).unwrap(), "admin");
    assert_eq!(fs::read_to_string(all.join("pod")).unwrap(), "web");
    assert!(!all.join("password").exists());

    let mounts = v.mounts(&pod.spec.containers[0]).unwrap();
    let flags: Vec<(&str, bool)> = mounts
        .iter()
        .map(|m| (m.container_path.as_str(), m.readonly))
        .collect();
    assert_eq!(
        flags,
        [
            ("/scratch", false),
            ("/mem", true),
            ("/etc/cfg", true),
            ("/etc/greeting", true),
            ("/etc/pw", true),
            ("/host", false),
            ("/info", true),
            ("/all", true),
            ("/logs", false),
        ]
    );
    // subPaths are bind mounts under volumes/.subpaths/<container>/<index>: a configMap key
    // (a file) and an emptyDir sub-directory (created).
    let subpaths = fs::canonicalize(v.volumes_dir())
        .unwrap()
        .join(".subpaths/app");
    let greeting = PathBuf::from(&mounts[3].host_path);
    assert_eq!(greeting, subpaths.join("3"));
    assert!(mounted(&greeting));
    assert_eq!(fs::read_to_string(&greeting).unwrap(), "hello");
    assert!(scratch.join("logs/app").is_dir());
    let logs = PathBuf::from(&mounts[8].host_path);
    assert_eq!(logs, subpaths.join("8"));
    fs::write(scratch.join("logs/app/x.log"), "log").unwrap();
    assert_eq!(fs::read_to_string(logs.join("x.log")).unwrap(), "log");
    // Starting the container again rebinds rather than stacking mounts.
    v.mounts(&pod.spec.containers[0]).unwrap();
    assert_eq!(
        mounts[5].propagation,
        cri::MountPropagation::PropagationHostToContainer as i32
    );
    assert_eq!(
        mounts[0].propagation,
        cri::MountPropagation::PropagationPrivate as i32
    );

    // Idempotent refresh: a changed configMap is published, a dropped key disappears,
    // emptyDir contents stay, tmpfs is not mounted twice.
    fs::write(scratch.join("keep"), "x").unwrap();
    let (mut objects, _) = parse_objects(&pod_yaml(&host), "test.yaml").unwrap();
    if let Object::ConfigMap(cm) = &mut objects[0] {
        cm.data.insert("greeting".into(), "bonjour".into());
        cm.data.remove("mode");
    }
    if let Object::Secret(s) = &mut objects[1] {
        s.string_data.remove("password");
    }
    let sources2 = ConfigSources::load(None, &objects).unwrap();
    let mut pod2 = pod.clone();
    pod2.spec.volumes[2]
        .config_map
        .as_mut()
        .unwrap()
        .items
        .truncate(1);
    let v2 = setup(&pod2, &pod_dir, &sources2).unwrap();
    assert_eq!(fs::read_to_string(cfg.join("greeting")).unwrap(), "bonjour");
    assert!(!cfg.join("sub").exists());
    assert!(!pw.join("password").exists());
    assert_eq!(fs::read_to_string(scratch.join("keep")).unwrap(), "x");
    let dirs: Vec<_> = fs::read_dir(&cfg)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.starts_with(".."))
        .collect();
    assert_eq!(dirs.len(), 2, "{dirs:?}"); // ..data and one timestamped dir
    let canon = fs::canonicalize(v2.volumes_dir()).unwrap();
    let count = mount_points()
        .unwrap()
        .iter()
        .filter(|m| m.starts_with(&canon))
        .count();
    assert_eq!(count, 5, "mem, pw, all and two subPaths, once each");

    teardown(&pod_dir).unwrap();
    assert!(!pod_dir.join("volumes").exists());
    assert!(!mount_points()
        .unwrap()
        .iter()
        .any(|m| m.starts_with(&canon)));
    assert!(host.join("made").is_dir(), "hostPath data is never removed");
    teardown(&pod_dir).unwrap();
}

#[test]
fn missing_sources_and_bad_host_paths_leave_nothing() {
    let t = TempDir::new("bad");
    let pod_dir = t.0.join("pod");
    let (pod, _) = load(
        "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec:\n  containers: [{name: a, image: b}]\n  volumes:\n  - {name: m, emptyDir: {medium: Memory}}\n  - {name: s, secret: {secretName: nope}}\n",
    );
    let err = format!(
        "{:#}",
        setup(&pod, &pod_dir, &ConfigSources::default()).unwrap_err()
    );
    assert!(
        err.contains("spec.volumes[1] (\"s\")") && err.contains("secret \"nope\" not found"),
        "{err}"
    );
    assert!(!pod_dir.join("volumes").exists());
    let canon = fs::canonicalize(&t.0).unwrap();
    assert!(!mount_points()
        .unwrap()
        .iter()
        .any(|m| m.starts_with(&canon)));

    // Optional sources make empty volumes.
    let mut optional = pod.clone();
    optional.spec.volumes[1].secret.as_mut().unwrap().optional = Some(true);
    let v = setup(&optional, &pod_dir, &ConfigSources::default()).unwrap();
    assert!(v.host_path("s").unwrap().join("..data").exists());
    teardown(&pod_dir).unwrap();

    for (type_, path, want) in [
        ("Directory", t.0.join("absent"), "is not a directory"),
        ("File", t.0.clone(), "is not a file"),
        ("Socket", t.0.clone(), "is not a socket file"),
        ("CharDevice", PathBuf::from("/dev/null"), ""),
        (
            "BlockDevice",
            PathBuf::from("/dev/null"),
            "is not a block device",
        ),
        ("FileOrCreate", t.0.join("new-file"), ""),
    ] {
        let res = check_host_path(&path, type_);
        if want.is_empty() {
            res.unwrap();
        } else {
            let err = res.unwrap_err().to_string();
            assert!(
                err.contains(want) && err.starts_with("hostPath type check failed"),
                "{err}"
            );
        }
    }
    assert!(t.0.join("new-file").is_file());
}

/// CVE-2017-1002101: a container puts a symlink to the host's /etc in its emptyDir and asks
/// (in a later container of the pod) for it as a subPath.
#[test]
fn subpath_symlink_escape_cve_2017_1002101() {
    let t = TempDir::new("cve");
    let pod_dir = t.0.join("pod");
    let (pod, sources) = load(
        "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec:\n  containers:\n  - name: a\n    image: b\n    volumeMounts: [{name: v, mountPath: /x, subPath: evil}]\n  - name: c\n    image: b\n    volumeMounts: [{name: v, mountPath: /x, subPath: evil/passwd}]\n  volumes: [{name: v, emptyDir: {}}]\n",
    );
    let v = setup(&pod, &pod_dir, &sources).unwrap();
    std::os::unix::fs::symlink("/etc", v.host_path("v").unwrap().join("evil")).unwrap();
    for c in &pod.spec.containers {
        let err = format!("{:#}", v.mounts(c).unwrap_err());
        assert!(err.contains("outside the volume"), "{err}");
    }
    let canon = fs::canonicalize(v.volumes_dir()).unwrap();
    assert!(!mount_points()
        .unwrap()
        .iter()
        .any(|m| m.starts_with(&canon)));
    teardown(&pod_dir).unwrap();
    assert!(fs::metadata("/etc/passwd").is_ok());
}

#[test]
fn sub_paths_cannot_escape() {
    let t = TempDir::new("sub");
    let base = t.0.join("vol");
    fs::create_dir_all(&base).unwrap();
    std::os::unix::fs::symlink("/etc", base.join("evil")).unwrap();
    for (sub, want) in [
        ("../x", "must not contain '..'"),
        ("a/../../x", "must not contain '..'"),
        ("/etc", "must be a relative path"),
        ("evil", "outside the volume"),
        ("evil/passwd", "outside the volume"),
        ("evil/newdir/x", "outside the volume"),
    ] {
        let err = sub_path(&base, sub, true).unwrap_err().to_string();
        assert!(err.contains(want), "{sub}: {err}");
    }
    assert_eq!(
        sub_path(&base, "ok/dir", true).unwrap(),
        fs::canonicalize(&base).unwrap().join("ok/dir")
    );
    assert!(sub_path(&base, "missing", false)
        .unwrap_err()
        .to_string()
        .contains("does not exist"));
    assert!(!Path::new("/etc/newdir").exists());
    // A symlink that stays inside the volume is fine (configMap keys are such links).
    std::os::unix::fs::symlink("ok", base.join("inside")).unwrap();
    assert_eq!(
        sub_path(&base, "inside/dir", false).unwrap(),
        fs::canonicalize(&base).unwrap().join("ok/dir")
    );
    assert!(check_file_path("..data").is_err());
    assert!(check_file_path("a/../b").is_err());
    assert!(check_file_path("/abs").is_err());
    check_file_path("a/b.txt").unwrap();
}

#[test]
fn mountinfo_escapes() {
    assert_eq!(unescape_mountinfo("/a\\040b\\011c"), "/a b\tc");
    assert_eq!(unescape_mountinfo("/plain\\"), "/plain\\");
}
