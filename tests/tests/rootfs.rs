//! The container's filesystem: pivot_root, read-only root, mounts (and where they land), /dev,
//! devices, masked and read-only paths, sysctls, rootfs propagation.

use std::fs;
use std::os::unix::fs::symlink;

use anyhow::Result;
use e2e::*;

/// Runs `script` in a container from `bundle` and returns its output, whatever the status.
fn run_sh(bundle: &mut Bundle, script: &str) -> Result<Output> {
    bundle.sh(script);
    let rt = Runtime::new()?;
    rt.run(bundle, &unique_id("rootfs"))
}

/// The mountinfo line (inside the container) of `mount_point`, from `cat /proc/self/mountinfo`.
fn mount_line(out: &Output, mount_point: &str) -> Option<MountInfo> {
    parse_mountinfo(&out.stdout)
        .into_iter()
        .rev()
        .find(|m| m.mount_point == mount_point)
}

#[test]
fn host_files_are_invisible_after_pivot_root() -> Result<()> {
    let marker = HostFile::create(
        format!("/tmp/{}", unique_id("rcrun-e2e-marker")),
        "host only",
    )?;
    let path = marker.0.to_string_lossy().into_owned();
    let mut bundle = Bundle::new()?;
    let out = run_sh(
        &mut bundle,
        &format!("if [ -e {path} ]; then echo VISIBLE; else echo hidden; fi; ls /"),
    )?
    .ok()?;
    assert!(out.stdout.starts_with("hidden"), "{out}");
    Ok(())
}

#[test]
fn no_pivot_still_confines_the_container() -> Result<()> {
    let marker = HostFile::create(
        format!("/tmp/{}", unique_id("rcrun-e2e-marker")),
        "host only",
    )?;
    let path = marker.0.to_string_lossy().into_owned();
    let mut bundle = Bundle::new()?;
    bundle.sh(&format!(
        "if [ -e {path} ]; then echo VISIBLE; else echo hidden; fi; cat /etc/hostname"
    ));
    let rt = Runtime::new()?;
    let out = rt
        .run_with(&bundle, &unique_id("rootfs"), &["--no-pivot"])?
        .ok()?;
    assert!(out.stdout.starts_with("hidden"), "{out}");
    assert!(out.stdout.contains("rcrun"), "not the image's /etc: {out}");
    Ok(())
}

#[test]
fn readonly_root_cannot_be_written() -> Result<()> {
    let mut bundle = Bundle::new()?;
    bundle.readonly(true);
    let out = run_sh(
        &mut bundle,
        "touch /newfile 2>&1; echo status=$?; cat /proc/self/mountinfo",
    )?;
    assert!(out.success(), "{out}");
    assert!(out.stdout.contains("Read-only file system"), "{out}");
    assert!(!out.stdout.contains("status=0"), "{out}");
    let root = mount_line(&out, "/").expect("no / in mountinfo");
    assert!(root.options.split(',').any(|o| o == "ro"), "{}", root.line);
    assert!(!bundle.rootfs().join("newfile").exists());
    Ok(())
}

#[test]
fn writable_root_can_be_written() -> Result<()> {
    let mut bundle = Bundle::new()?;
    bundle.readonly(false);
    let out = run_sh(&mut bundle, "echo hi > /newfile")?;
    assert!(out.success(), "{out}");
    assert_eq!(fs::read_to_string(bundle.rootfs().join("newfile"))?, "hi\n");
    Ok(())
}

#[test]
fn bind_mounts_read_write_and_read_only() -> Result<()> {
    let rw = temp_dir("rw")?;
    let ro = temp_dir("ro")?;
    fs::write(ro.path().join("file"), "from the host\n")?;
    let mut bundle = Bundle::new()?;
    bundle
        .bind(rw.path(), "/mnt/rw", &["rw"])
        .bind(ro.path(), "/mnt/ro", &["ro"]);
    let out = run_sh(
        &mut bundle,
        "echo written > /mnt/rw/out; cat /mnt/ro/file; \
         echo nope > /mnt/ro/out 2>/dev/null && echo RO-WRITABLE; cat /proc/self/mountinfo",
    )?;
    assert!(out.success(), "{out}");
    assert_eq!(fs::read_to_string(rw.path().join("out"))?, "written\n");
    assert!(out.stdout.contains("from the host"), "{out}");
    assert!(!out.stdout.contains("RO-WRITABLE"), "{out}");
    assert!(!ro.path().join("out").exists());
    let ro_line = mount_line(&out, "/mnt/ro").expect("no /mnt/ro mount");
    assert!(
        ro_line.options.split(',').any(|o| o == "ro"),
        "{}",
        ro_line.line
    );
    let rw_line = mount_line(&out, "/mnt/rw").expect("no /mnt/rw mount");
    assert!(
        rw_line.options.split(',').any(|o| o == "rw"),
        "{}",
        rw_line.line
    );
    Ok(())
}

#[test]
fn tmpfs_mount_with_size_mode_and_flags() -> Result<()> {
    let mut bundle = Bundle::new()?;
    bundle.add_mount(json!({
        "destination": "/scratch",
        "type": "tmpfs",
        "source": "tmpfs",
        "options": ["nosuid", "nodev", "noexec", "size=1m", "mode=1770"],
    }));
    let out = run_sh(&mut bundle, "stat -c %a /scratch; cat /proc/self/mountinfo")?.ok()?;
    assert_eq!(out.stdout.lines().next(), Some("1770"), "{out}");
    let line = mount_line(&out, "/scratch").expect("no /scratch mount");
    assert_eq!(line.fs_type, "tmpfs", "{}", line.line);
    for flag in ["nosuid", "nodev", "noexec"] {
        assert!(line.options.split(',').any(|o| o == flag), "{}", line.line);
    }
    assert!(line.super_options.contains("size=1024k"), "{}", line.line);
    assert!(line.super_options.contains("mode=1770"), "{}", line.line);
    Ok(())
}

#[test]
fn default_mounts_have_their_flags() -> Result<()> {
    let mut bundle = Bundle::new()?;
    let out = run_sh(&mut bundle, "cat /proc/self/mountinfo")?.ok()?;
    for (dest, fs_type, flags) in [
        ("/proc", "proc", &[][..]),
        ("/dev", "tmpfs", &["nosuid"][..]),
        ("/dev/pts", "devpts", &["nosuid", "noexec"][..]),
        ("/dev/shm", "tmpfs", &["nosuid", "nodev", "noexec"][..]),
        ("/dev/mqueue", "mqueue", &["nosuid", "nodev", "noexec"][..]),
        ("/sys", "sysfs", &["nosuid", "nodev", "noexec", "ro"][..]),
    ] {
        let line = mount_line(&out, dest).unwrap_or_else(|| panic!("no {dest}: {out}"));
        assert_eq!(line.fs_type, fs_type, "{}", line.line);
        for flag in flags {
            assert!(
                line.options.split(',').any(|o| o == *flag),
                "{dest} without {flag}: {}",
                line.line
            );
        }
    }
    Ok(())
}

#[test]
fn mount_destination_symlink_to_a_host_path_stays_inside_the_rootfs() -> Result<()> {
    // rootfs/evil -> /tmp/<host dir>: a naive runtime follows it on the host.
    let host_dir = temp_dir("hostdir")?;
    let mut bundle = Bundle::new()?;
    bundle.readonly(false);
    symlink(host_dir.path(), bundle.rootfs().join("evil"))?;
    bundle.add_mount(json!({
        "destination": "/evil",
        "type": "tmpfs",
        "source": "tmpfs",
        "options": ["size=1m"],
    }));
    let src = temp_dir("bindsrc")?;
    fs::write(src.path().join("payload"), "payload\n")?;
    symlink(host_dir.path(), bundle.rootfs().join("evil2"))?;
    bundle.bind(src.path(), "/evil2", &["rw"]);
    let rt = Runtime::new()?;
    let id = unique_id("rootfs");
    bundle.sh("echo pwned > /evil/pwned; ls /evil2; cat /proc/self/mountinfo");
    let out = rt.run(&bundle, &id)?;
    let host_path = host_dir.path().to_string_lossy().into_owned();
    let entries: Vec<_> = fs::read_dir(host_dir.path())?.flatten().collect();
    assert!(
        entries.is_empty(),
        "the host dir {host_path} was written: {entries:?}\n{out}"
    );
    assert!(
        !mountinfo_contains(&host_path),
        "a mount landed on the host dir {host_path}"
    );
    // Either refused, or mounted inside the rootfs.
    if out.success() {
        let inside = parse_mountinfo(&out.stdout);
        assert!(
            inside.iter().any(|m| m.mount_point == host_path),
            "mount not at the symlink's target inside the rootfs: {out}"
        );
    }
    Ok(())
}

#[test]
fn dev_has_the_standard_devices() -> Result<()> {
    let mut bundle = Bundle::new()?;
    let out = run_sh(
        &mut bundle,
        "for d in null zero full random urandom tty ptmx; do \
           [ -c /dev/$d ] && echo \"char $d $(stat -L -c %t:%T /dev/$d)\"; done; \
         for d in pts shm; do [ -d /dev/$d ] && echo \"dir $d\"; done; \
         for l in fd stdin stdout stderr; do [ -L /dev/$l ] && echo \"link $l $(readlink /dev/$l)\"; done; \
         head -c 4 /dev/zero | od -An -tx1; echo x > /dev/null && echo null-ok",
    )?
    .ok()?;
    for dev in [
        "char null 1:3",
        "char zero 1:5",
        "char full 1:7",
        "char random 1:8",
        "char urandom 1:9",
        "char tty 5:0",
        "char ptmx 5:2",
        "dir pts",
        "dir shm",
        "link fd /proc/self/fd",
        "link stdin /proc/self/fd/0",
        "link stdout /proc/self/fd/1",
        "link stderr /proc/self/fd/2",
        "00 00 00 00",
        "null-ok",
    ] {
        assert!(out.stdout.contains(dev), "missing {dev:?}: {out}");
    }
    Ok(())
}

#[test]
fn linux_devices_are_created() -> Result<()> {
    let mut bundle = Bundle::new()?;
    bundle.set(
        "/linux/devices",
        json!([{
            "path": "/dev/e2e-null",
            "type": "c",
            "major": 1,
            "minor": 3,
            "fileMode": 0o666,
            "uid": 1000,
            "gid": 1001,
        }]),
    );
    bundle.set(
        "/linux/resources/devices",
        json!([
            {"allow": false, "access": "rwm"},
            {"allow": true, "type": "c", "major": 1, "minor": 3, "access": "rwm"},
        ]),
    );
    let out = run_sh(
        &mut bundle,
        "stat -c '%F %t:%T %a %u %g' /dev/e2e-null; echo x > /dev/e2e-null && echo write-ok",
    )?
    .ok()?;
    assert!(
        out.stdout
            .contains("character special file 1:3 666 1000 1001"),
        "{out}"
    );
    assert!(out.stdout.contains("write-ok"), "{out}");
    Ok(())
}

#[test]
fn masked_paths_are_masked() -> Result<()> {
    let mut bundle = Bundle::new()?;
    let out = run_sh(
        &mut bundle,
        "for f in /proc/kcore /proc/keys /proc/timer_list; do \
           [ -e $f ] && echo \"$f $(cat $f | wc -c) $(stat -c %t:%T $f)\"; done; \
         for d in /proc/acpi /sys/firmware; do [ -e $d ] && echo \"$d $(ls $d | wc -l)\"; done",
    )?
    .ok()?;
    // Only what this kernel has: /proc/kcore, for one, may not exist.
    for path in [
        "/proc/kcore",
        "/proc/keys",
        "/proc/timer_list",
        "/proc/acpi",
        "/sys/firmware",
    ] {
        let Ok(meta) = fs::metadata(path) else {
            continue;
        };
        let want = if meta.is_dir() {
            format!("{path} 0")
        } else {
            format!("{path} 0 1:3")
        };
        assert!(
            out.stdout.lines().any(|l| l == want),
            "{path} not masked (want {want:?}): {out}"
        );
    }
    Ok(())
}

#[test]
fn readonly_paths_are_read_only() -> Result<()> {
    let mut bundle = Bundle::new()?;
    let out = run_sh(
        &mut bundle,
        "(echo e2e > /proc/sys/kernel/domainname) 2>&1 && echo WRITABLE; \
         cat /proc/self/mountinfo",
    )?;
    assert!(!out.stdout.contains("WRITABLE"), "{out}");
    assert!(out.stdout.contains("Read-only file system"), "{out}");
    for path in ["/proc/sys", "/proc/bus", "/proc/fs", "/proc/irq"] {
        if let Some(line) = mount_line(&out, path) {
            assert!(line.options.split(',').any(|o| o == "ro"), "{}", line.line);
        } else if path == "/proc/sys" {
            panic!("/proc/sys is not a mount: {out}");
        }
    }
    Ok(())
}

#[test]
fn sysctls_are_set_in_the_containers_namespaces() -> Result<()> {
    let host_forward = fs::read_to_string("/proc/sys/net/ipv4/ip_forward")?;
    let host_shmmni = fs::read_to_string("/proc/sys/kernel/shmmni")?;
    let mut bundle = Bundle::new()?;
    bundle.set(
        "/linux/sysctl",
        json!({"net.ipv4.ip_forward": "1", "kernel.shmmni": "1234"}),
    );
    let out = run_sh(
        &mut bundle,
        "cat /proc/sys/net/ipv4/ip_forward /proc/sys/kernel/shmmni",
    )?
    .ok()?;
    let values: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(values, ["1", "1234"], "{out}");
    assert_eq!(
        fs::read_to_string("/proc/sys/net/ipv4/ip_forward")?,
        host_forward
    );
    assert_eq!(fs::read_to_string("/proc/sys/kernel/shmmni")?, host_shmmni);
    Ok(())
}

#[test]
fn rootfs_propagation_is_applied() -> Result<()> {
    for (propagation, shared) in [("shared", true), ("private", false), ("slave", false)] {
        let mut bundle = Bundle::new()?;
        bundle.set("/linux/rootfsPropagation", json!(propagation));
        let out = run_sh(&mut bundle, "cat /proc/self/mountinfo")?.ok()?;
        let root = mount_line(&out, "/").expect("no / in mountinfo");
        assert_eq!(
            root.line.contains(" shared:"),
            shared,
            "rootfsPropagation {propagation}: {}",
            root.line
        );
    }
    Ok(())
}

/// A tmpfs mounted on the host under a temp dir, unmounted (lazily) when dropped.
struct HostSubmount(std::path::PathBuf);

impl HostSubmount {
    fn new(at: std::path::PathBuf) -> Result<HostSubmount> {
        fs::create_dir_all(&at)?;
        nix::mount::mount(
            Some("tmpfs"),
            &at,
            Some("tmpfs"),
            nix::mount::MsFlags::empty(),
            Some("size=1m,mode=777"),
        )?;
        Ok(HostSubmount(at))
    }
}

impl Drop for HostSubmount {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(&self.0, nix::mount::MntFlags::MNT_DETACH);
    }
}

#[test]
fn rro_makes_submounts_read_only_where_ro_does_not() -> Result<()> {
    let src = temp_dir("rro")?;
    let sub = HostSubmount::new(src.path().join("sub"))?;
    // The subshells: the shell itself reports a failed redirection, on its own stderr.
    let write_both = "(echo top > /mnt/b/top) 2>&1; echo top=$?; \
                      (echo sub > /mnt/b/sub/f) 2>&1; echo sub=$?; cat /proc/self/mountinfo";

    let mut bundle = Bundle::new()?;
    bundle.bind(src.path(), "/mnt/b", &["rro"]);
    let out = run_sh(&mut bundle, write_both)?;
    assert!(out.success(), "{out}");
    assert!(out.stdout.contains("top=1"), "{out}");
    assert!(
        out.stdout.contains("sub=1"),
        "submount writable under rro: {out}"
    );
    assert_eq!(
        out.stdout.matches("Read-only file system").count(),
        2,
        "not EROFS: {out}"
    );
    let sub_line = mount_line(&out, "/mnt/b/sub").expect("the submount was not bound in");
    assert!(
        sub_line.options.split(',').any(|o| o == "ro"),
        "{}",
        sub_line.line
    );
    assert!(!src.path().join("top").exists() && !sub.0.join("f").exists());
    // Only the container's copy became read-only: the host's submount still takes writes.
    fs::write(sub.0.join("host"), "still writable")?;
    fs::remove_file(sub.0.join("host"))?;

    let mut bundle = Bundle::new()?;
    bundle.bind(src.path(), "/mnt/b", &["ro"]);
    let out = run_sh(&mut bundle, write_both)?;
    assert!(out.success(), "{out}");
    assert!(out.stdout.contains("top=1"), "{out}");
    assert!(
        out.stdout.contains("sub=0"),
        "plain ro reached the submount: {out}"
    );
    assert_eq!(fs::read_to_string(sub.0.join("f"))?, "sub\n");
    Ok(())
}
