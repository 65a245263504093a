//! CVE regression suite: one test per class of runc's CVEs that applies to rcrun. Each test
//! replays the attack against a real container and asserts it fails.
//!
//! Nothing here may harm the host even when the runtime under test is vulnerable: every file an
//! attack could make the runtime (or the container) write to is a decoy in a temp dir, never a
//! real system file. Where a real procfs file is the target, it is one that belongs to the
//! container's own namespaces (e.g. `/proc/sys/kernel/hostname` of its UTS namespace), and
//! values written to global ones are the values they already hold. The host's
//! `/proc/sys/kernel/core_pattern` is only ever read, to check it did not change.
//!
//! Refusing to create a container is always an acceptable defence; what a test asserts is that
//! the attack never succeeds.

use std::fs;
use std::path::{Path, PathBuf};

use std::os::unix::fs::MetadataExt;

use anyhow::{anyhow, bail, Context, Result};
use e2e::*;

/// Every capability the host's bounding set holds (a runtime cannot give more).
fn all_caps() -> Result<Vec<String>> {
    let mut names: Vec<String> = caps::read(None, caps::CapSet::Bounding)?
        .iter()
        .map(|c| c.to_string())
        .collect();
    names.sort();
    Ok(names)
}

/// `all_caps` as the `&str`s `Bundle::capabilities` takes.
fn as_strs(names: &[String]) -> Vec<&str> {
    names.iter().map(String::as_str).collect()
}

/// The host's core_pattern, read only (never written by any test).
fn core_pattern() -> String {
    fs::read_to_string("/proc/sys/kernel/core_pattern").unwrap_or_default()
}

/// A decoy file on the host: what a vulnerable runtime would mount or write instead of a
/// sensitive file. Lives in its own temp dir, so the test can also check that nothing was
/// created next to it.
struct Decoy {
    dir: tempfile::TempDir,
}

const DECOY_TEXT: &str = "DECOY-UNTOUCHED\n";

impl Decoy {
    fn new(prefix: &str) -> Result<Decoy> {
        let dir = temp_dir(prefix)?;
        fs::write(dir.path().join("decoy"), DECOY_TEXT)?;
        Ok(Decoy { dir })
    }

    fn dir(&self) -> &Path {
        self.dir.path()
    }

    fn file(&self) -> PathBuf {
        self.dir.path().join("decoy")
    }

    /// Fails if the decoy file changed (written, or replaced by something else), something
    /// else appeared in its dir, or a mount of this process's mount namespace mentions it.
    fn check(&self, what: &str) -> Result<()> {
        check_decoy_file(&self.file(), what)?;
        let mut names: Vec<String> = fs::read_dir(self.dir())?
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        if names != ["decoy"] {
            bail!(
                "{what}: something was created in the host dir {}: {names:?}",
                self.dir().display()
            );
        }
        if mountinfo_contains(&self.dir().to_string_lossy()) {
            bail!("{what}: a host mount mentions {}", self.dir().display());
        }
        Ok(())
    }
}

/// Fails unless `path` is still a regular file holding [`DECOY_TEXT`].
fn check_decoy_file(path: &Path, what: &str) -> Result<()> {
    let meta = fs::symlink_metadata(path)
        .with_context(|| format!("{what}: the host decoy {} is gone", path.display()))?;
    if !meta.file_type().is_file() {
        bail!(
            "{what}: the host decoy {} was replaced by a {:?} (mode {:o}, rdev {:#x})",
            path.display(),
            meta.file_type(),
            meta.mode(),
            meta.rdev()
        );
    }
    let text = fs::read_to_string(path)?;
    if text != DECOY_TEXT {
        bail!(
            "{what}: the host decoy {} was written: {text:?}",
            path.display()
        );
    }
    Ok(())
}

/// Records a failed check and goes on, so one run reports every variant of an attack.
fn record(failures: &mut Vec<String>, result: Result<()>) {
    if let Err(e) = result {
        failures.push(format!("{e:#}"));
    }
}

/// Fails the test with every recorded failure.
fn assert_no_failures(failures: &[String]) {
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

/// A bundle whose /dev is the image's own directory (no tmpfs over it), as when an image or a
/// volume shared with another container controls what is in /dev.
fn bundle_with_image_dev() -> Result<Bundle> {
    let mut bundle = Bundle::new()?;
    bundle.remove_mount("/dev");
    let dev = bundle.rootfs().join("dev");
    for sub in ["pts", "shm", "mqueue"] {
        fs::create_dir_all(dev.join(sub))?;
    }
    Ok(bundle)
}

/// A value printed by a container as `KEY=VALUE` on a line of its own.
fn field<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    text.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
        .map(str::trim)
}

/// What a container prints about its /proc: the filesystem type, whether /proc/timer_list is
/// the null device, and whether /proc/sys is read-only, each as `KEY=VALUE`.
const PROC_REPORT: &str = "echo procfs=$(stat -fc %T /proc/); \
     echo masked=$(stat -c %F:%t:%T /proc/timer_list 2>&1); \
     echo masked_bytes=$(head -c 64 /proc/timer_list 2>/dev/null | wc -c); \
     echo sysro=$(awk '$5 ~ /\\/sys$/ && $0 ~ / - proc / { split($6, o, \",\"); print o[1] }' \
       /proc/self/mountinfo | sort -u | tr '\\n' ,); \
     echo sysfs=$(stat -fc %T /proc/sys/)";

/// Fails unless a [`PROC_REPORT`] shows a procfs at /proc with /proc/timer_list masked and
/// /proc/sys read-only.
fn check_proc_protected(out: &Output, what: &str) -> Result<()> {
    let text = &out.stdout;
    if field(text, "procfs") != Some("proc") {
        bail!("{what}: /proc is not a procfs: {out}");
    }
    if field(text, "masked") != Some("character special file:1:3")
        || field(text, "masked_bytes") != Some("0")
    {
        bail!("{what}: /proc/timer_list is not masked with the null device: {out}");
    }
    let sysro = field(text, "sysro").unwrap_or_default();
    if sysro.is_empty()
        || !sysro
            .split(',')
            .filter(|o| !o.is_empty())
            .all(|o| o == "ro")
    {
        bail!("{what}: /proc/sys is not (only) mounted read-only ({sysro:?}): {out}");
    }
    Ok(())
}

/// CVE-2016-9962: `runc exec` (and a container's init before `start`) ran runtime code inside
/// the container's namespaces while it was still ptrace-able, so a process of the container
/// could read its memory, environment and fds (host fds included) through /proc/PID/*. Here the
/// init of a created (not yet started) container is attacked by a second container that joins
/// its user and pid namespaces with CAP_SYS_PTRACE in that user namespace: only the runtime
/// init being non-dumpable stands in the way. Proves that /proc/1/{fd,environ,exe,root,mem} of
/// the runtime init cannot be opened, and (positive control) that the same attacker can read
/// them once the container's own program runs.
#[test]
fn cve_2016_9962_runtime_init_is_not_inspectable_before_start() -> Result<()> {
    let mut victim = Bundle::new()?;
    victim
        .namespace("user", None)
        .set(
            "/linux/uidMappings",
            json!([{"containerID": 0, "hostID": 100000, "size": 65536}]),
        )
        .set(
            "/linux/gidMappings",
            json!([{"containerID": 0, "hostID": 100000, "size": 65536}]),
        )
        .env("SECRET", "runtime-environment")
        .args(&["sleep", "60"]);
    let rt = Runtime::new()?;
    let a = unique_id("cve-9962-a");
    rt.create(&victim, &a)?.ok()?;
    let pid = rt.pid(&a)?;

    let attack = "echo name=$(cat /proc/1/comm); \
         ls /proc/1/fd >/dev/null 2>&1 && echo FD-LISTED; \
         cat /proc/1/environ >/dev/null 2>&1 && echo ENVIRON-READ; \
         readlink /proc/1/exe >/dev/null 2>&1 && echo EXE-READ; \
         ls /proc/1/root/ >/dev/null 2>&1 && echo ROOT-LISTED; \
         dd if=/proc/1/mem of=/dev/null bs=1 count=1 2>/dev/null && echo MEM-OPENED; \
         echo done";
    let attacker = |tag: &str| -> Result<Output> {
        let mut b = Bundle::new()?;
        b.namespace("user", Some(&format!("/proc/{pid}/ns/user")))
            .namespace("pid", Some(&format!("/proc/{pid}/ns/pid")))
            // The victim's mappings, which some runtimes (runc) require also when joining.
            .set(
                "/linux/uidMappings",
                json!([{"containerID": 0, "hostID": 100000, "size": 65536}]),
            )
            .set(
                "/linux/gidMappings",
                json!([{"containerID": 0, "hostID": 100000, "size": 65536}]),
            )
            .set(
                "/process/capabilities/bounding",
                json!(["CAP_SYS_PTRACE", "CAP_KILL"]),
            )
            .set(
                "/process/capabilities/effective",
                json!(["CAP_SYS_PTRACE", "CAP_KILL"]),
            )
            .set(
                "/process/capabilities/permitted",
                json!(["CAP_SYS_PTRACE", "CAP_KILL"]),
            )
            .remove("/process/capabilities/ambient")
            .sh(attack);
        let out = rt.run(&b, &unique_id(&format!("cve-9962-{tag}")))?;
        Ok(out)
    };

    let before = attacker("before")?.ok()?;
    assert!(before.stdout.contains("done"), "{before}");
    for marker in [
        "FD-LISTED",
        "ENVIRON-READ",
        "EXE-READ",
        "ROOT-LISTED",
        "MEM-OPENED",
    ] {
        assert!(
            !before.stdout.contains(marker),
            "the runtime init (still runtime code) was inspectable: {marker}: {before}"
        );
    }

    // Positive control: once the container's program runs, the same attacker gets in, so the
    // refusals above were the runtime's doing.
    rt.start(&a)?.ok()?;
    wait_for("the victim to exec sleep", WAIT_TIMEOUT, || {
        Ok(fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == "sleep"))
    })?;
    let after = attacker("after")?.ok()?;
    assert!(
        after.stdout.contains("ENVIRON-READ"),
        "control: the attacker cannot read even the started container's environ, so the test \
         proves nothing: {after}"
    );
    Ok(())
}

/// CVE-2019-16884 / CVE-2023-28642: an image whose /proc is a symlink (absolute, or relative
/// with enough `..` to leave the rootfs) made runc mount procfs where the symlink pointed and
/// skip the protections that check for "/proc" (LSM labels, masked and read-only paths). Here
/// the symlink points at a host decoy dir. Proves: create is refused, or procfs is mounted
/// inside the container with /proc/timer_list masked and /proc/sys read-only; the host dir stays
/// empty and unmounted.
#[test]
fn cve_2023_28642_proc_symlink_in_the_image_keeps_proc_protected() -> Result<()> {
    let before = core_pattern();
    let mut failures = Vec::new();
    for (kind, relative) in [("absolute", false), ("relative", true)] {
        let decoy = Decoy::new("cve-28642")?;
        let mut bundle = Bundle::new()?;
        let proc_dir = bundle.rootfs().join("proc");
        fs::remove_dir(&proc_dir)?;
        let target = if relative {
            format!("{}{}", "../".repeat(16), decoy.dir().display())
        } else {
            decoy.dir().display().to_string()
        };
        std::os::unix::fs::symlink(&target, &proc_dir)?;
        bundle.sh(PROC_REPORT);
        let rt = Runtime::new()?;
        let id = unique_id("cve-28642");
        let out = rt.run(&bundle, &id)?;
        let what = format!("{kind} /proc symlink -> {target}");
        if out.success() {
            record(&mut failures, check_proc_protected(&out, &what));
        } else {
            eprintln!("{what}: refused: {}", out.error_line());
        }
        drop(rt);
        record(&mut failures, decoy.check(&what));
    }
    assert_eq!(before, core_pattern(), "host core_pattern changed");
    assert_no_failures(&failures);
    Ok(())
}

/// CVE-2019-19921: a volume whose destination is a symlink to /proc (planted by another
/// container sharing the volume, or by the image) let runc mount the volume over the
/// container's /proc, replacing procfs and with it the masked paths and LSM checks. Proves:
/// create is refused, or /proc is still procfs with its protections.
#[test]
fn cve_2019_19921_volume_through_a_symlink_cannot_replace_proc() -> Result<()> {
    let mut failures = Vec::new();
    for dest in ["/vol", "/vol/sys"] {
        let volume = temp_dir("cve-19921-vol")?;
        fs::write(volume.path().join("timer_list"), "FAKE")?;
        let mut bundle = Bundle::new()?;
        std::os::unix::fs::symlink("/proc", bundle.rootfs().join("vol"))?;
        bundle.bind(volume.path(), dest, &[]).sh(PROC_REPORT);
        let rt = Runtime::new()?;
        let out = rt.run(&bundle, &unique_id("cve-19921"))?;
        let what = format!("volume at {dest} with /vol -> /proc");
        if out.success() {
            record(&mut failures, check_proc_protected(&out, &what));
        } else {
            eprintln!("{what}: refused: {}", out.error_line());
        }
        if fs::read_to_string(volume.path().join("timer_list"))? != "FAKE" {
            failures.push(format!("{what}: the volume was written"));
        }
    }
    assert_no_failures(&failures);
    Ok(())
}

/// Plants symlinks in `rootfs` that point at the host `decoy` dir: `abs` (absolute), `rel`
/// (relative, `..` past the rootfs) and `chain` (-> `link2` -> `/abs`).
fn plant_escape_links(rootfs: &Path, decoy: &Path) -> Result<()> {
    use std::os::unix::fs::symlink;
    symlink(decoy, rootfs.join("abs"))?;
    symlink(
        format!("{}{}", "../".repeat(16), decoy.display()),
        rootfs.join("rel"),
    )?;
    symlink("link2", rootfs.join("chain"))?;
    symlink("/abs", rootfs.join("link2"))?;
    Ok(())
}

/// CVE-2021-30465 (and CVE-2023-27561, its regression): mount destinations containing symlinks
/// (absolute, relative with `..`, chains; or swapped in during a race by a container sharing the
/// volume) were followed on the host, so a volume landed on a host path. Proves that each
/// destination resolves inside the rootfs: the container sees the volume at the in-rootfs
/// resolution of the link, and the host decoy the links point at gets no mount and no file.
#[test]
fn cve_2021_30465_mount_destinations_resolve_inside_the_rootfs() -> Result<()> {
    let decoy = Decoy::new("cve-30465")?;
    let volume = temp_dir("cve-30465-vol")?;
    fs::write(volume.path().join("marker"), "VOLUME\n")?;
    let mut bundle = Bundle::new()?;
    plant_escape_links(&bundle.rootfs(), decoy.dir())?;
    // Where the links resolve to inside the rootfs.
    let inside = decoy.dir().display().to_string();
    fs::create_dir_all(bundle.rootfs().join(inside.trim_start_matches('/')))?;
    for link in ["abs", "rel", "chain"] {
        fs::create_dir_all(
            bundle
                .rootfs()
                .join(inside.trim_start_matches('/'))
                .join(link),
        )?;
        bundle.bind(volume.path(), &format!("/{link}/{link}"), &["ro"]);
    }
    bundle.sh(&format!(
        "for l in abs rel chain; do echo $l=$(cat {inside}/$l/marker 2>&1); done"
    ));
    let rt = Runtime::new()?;
    let out = rt.run(&bundle, &unique_id("cve-30465"))?;
    if out.success() {
        for link in ["abs", "rel", "chain"] {
            assert_eq!(
                field(&out.stdout, link),
                Some("VOLUME"),
                "the volume at /{link}/{link} is not at its in-rootfs resolution: {out}"
            );
        }
    } else {
        eprintln!("refused: {}", out.error_line());
    }
    drop(rt);
    decoy.check("mount through a symlink")?;
    Ok(())
}

/// CVE-2024-45310: runc created missing mount destinations (dirs and files) through a
/// symlinked parent planted by a container sharing the volume, so empty files and dirs
/// appeared anywhere on the host. Proves that missing destinations (a dir, nested dirs and a
/// file, under absolute, relative and chained links) are never created on the host.
#[test]
fn cve_2024_45310_missing_destinations_are_not_created_on_the_host() -> Result<()> {
    let decoy = Decoy::new("cve-45310")?;
    let volume = temp_dir("cve-45310-vol")?;
    fs::write(volume.path().join("file"), "VOLUME-FILE\n")?;
    let mut bundle = Bundle::new()?;
    plant_escape_links(&bundle.rootfs(), decoy.dir())?;
    for link in ["abs", "rel", "chain"] {
        bundle
            .add_mount(json!({
                "destination": format!("/{link}/newdir-{link}/deeper"),
                "type": "tmpfs",
                "source": "tmpfs",
                "options": ["size=64k"],
            }))
            .bind(
                &volume.path().join("file"),
                &format!("/{link}/newfile-{link}"),
                &["ro"],
            );
    }
    let inside = decoy.dir().display().to_string();
    bundle.sh(&format!(
        "for l in abs rel chain; do echo $l=$(cat {inside}/newfile-$l 2>&1); done"
    ));
    let rt = Runtime::new()?;
    let out = rt.run(&bundle, &unique_id("cve-45310"))?;
    if out.success() {
        for link in ["abs", "rel", "chain"] {
            assert_eq!(
                field(&out.stdout, link),
                Some("VOLUME-FILE"),
                "the file mount under /{link} is not at its in-rootfs resolution: {out}"
            );
        }
    } else {
        eprintln!("refused: {}", out.error_line());
    }
    drop(rt);
    decoy.check("missing destinations under symlinks")?;
    Ok(())
}

/// A capability set (e.g. `CapInh`) from /proc/PID/status text as printed by `grep Cap`.
fn cap(text: &str, key: &str) -> Option<String> {
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{key}:")))
        .map(|v| v.trim().to_string())
}

/// CVE-2022-29162: runc gave processes (the init, and `runc exec --cap`) a non-empty
/// inheritable set the config did not ask for, so an exec of a binary with inheritable file
/// capabilities gained them. Proves that with a config that lists no inheritable set (the
/// default), CapInh is 0 for the init, for `exec`, and for `exec --cap`.
#[test]
fn cve_2022_29162_no_inheritable_capabilities_unless_asked() -> Result<()> {
    let mut bundle = Bundle::new()?;
    bundle.remove("/process/capabilities/inheritable");
    bundle.sh("grep Cap /proc/self/status");
    let rt = Runtime::new()?;
    let out = rt.run(&bundle, &unique_id("cve-29162"))?.ok()?;
    assert_eq!(
        cap(&out.stdout, "CapInh").as_deref(),
        Some("0000000000000000"),
        "init: {out}"
    );

    let mut bundle = Bundle::new()?;
    bundle.remove("/process/capabilities/inheritable");
    bundle.args(&["sleep", "60"]);
    let id = unique_id("cve-29162");
    rt.start_detached(&bundle, &id)?;
    let pid = rt.pid(&id)?;
    assert_eq!(proc_status(pid, "CapInh")?, "0000000000000000", "init");
    for extra in [&[][..], &["--cap", "CAP_CHOWN"][..]] {
        let mut args = vec!["exec"];
        args.extend_from_slice(extra);
        args.extend_from_slice(&[&id, "grep", "Cap", "/proc/self/status"]);
        let out = rt.rcrun(&args)?.ok()?;
        assert_eq!(
            cap(&out.stdout, "CapInh").as_deref(),
            Some("0000000000000000"),
            "exec {extra:?}: {out}"
        );
    }
    Ok(())
}

/// CVE-2025-31133: masking a path bind-mounts /dev/null over it; runc used the container's
/// /dev/null by path, so a container that replaced it with a symlink (via a /dev it controls, or
/// racing with a shared mount) got an arbitrary file (e.g. /proc/sys/kernel/core_pattern)
/// mounted read-write over a masked path, or masking silently disabled. Here /dev/null of the
/// image is a symlink to a host decoy file shared into the container, and to the container's
/// own /proc/sys/kernel/hostname (a procfs file of its private UTS namespace, harmless to
/// write). Proves: create is refused, or /proc/keys and /proc/timer_list are masked with the
/// real null device and writing to them reaches neither target; and in both cases the file the
/// symlink points to is never written, deleted or replaced (e.g. by a device node) by the
/// runtime while it makes the default devices.
#[test]
fn cve_2025_31133_masked_paths_use_the_real_null_device() -> Result<()> {
    let before = core_pattern();
    let mut failures = Vec::new();
    for target in ["/shared/decoy", "/proc/sys/kernel/hostname"] {
        let mut bundle = bundle_with_image_dev()?;
        let shared = bundle.share()?;
        fs::write(shared.join("decoy"), DECOY_TEXT)?;
        let null = bundle.rootfs().join("dev/null");
        let _ = fs::remove_file(&null);
        std::os::unix::fs::symlink(target, &null)?;
        bundle
            .hostname("unchanged")
            .capabilities(&["CAP_SYS_ADMIN", "CAP_DAC_OVERRIDE"])
            .sh("echo keys=$(stat -c %F:%t:%T /proc/keys 2>&1); \
                 echo keys_bytes=$(head -c 64 /proc/keys 2>/dev/null | wc -c); \
                 echo pwned > /proc/keys 2>/dev/null; \
                 echo timer=$(stat -c %F:%t:%T /proc/timer_list 2>&1); \
                 echo pwned > /proc/timer_list 2>/dev/null; \
                 echo hostname=$(hostname)");
        let rt = Runtime::new()?;
        let out = rt.run(&bundle, &unique_id("cve-31133"))?;
        let what = format!("/dev/null -> {target}");
        if out.success() {
            let text = &out.stdout;
            let timer = field(text, "timer").unwrap_or_default();
            let result = if field(text, "keys") != Some("character special file:1:3")
                || field(text, "keys_bytes") != Some("0")
            {
                Err(anyhow!(
                    "{what}: /proc/keys is not masked with the null device: {out}"
                ))
            } else if timer != "character special file:1:3" && !timer.contains("No such file") {
                Err(anyhow!(
                    "{what}: /proc/timer_list is not masked with the null device: {out}"
                ))
            } else if field(text, "hostname") != Some("unchanged") {
                Err(anyhow!(
                    "{what}: a write to a masked path reached the target: {out}"
                ))
            } else {
                Ok(())
            };
            record(&mut failures, result);
        } else {
            eprintln!("{what}: refused: {}", out.error_line());
        }
        record(
            &mut failures,
            check_decoy_file(&shared.join("decoy"), &what),
        );
    }
    assert_eq!(before, core_pattern(), "host core_pattern changed");
    assert_no_failures(&failures);
    Ok(())
}

/// CVE-2025-52565: with a terminal, runc bind-mounted the pty over /dev/console by path; a
/// /dev/console symlink in the container made it mount the pty over the symlink's target
/// (e.g. a procfs file), and before masking/read-only paths were applied. Here /dev/console is
/// a symlink to a shared host decoy, and to /proc/sys/kernel/hostname. Proves: create is
/// refused, or the pty lands on /dev/console itself and nothing is mounted on, or written to,
/// either target.
#[test]
fn cve_2025_52565_dev_console_symlink_is_not_followed() -> Result<()> {
    let before = core_pattern();
    let mut failures = Vec::new();
    for target in ["/shared/decoy", "/proc/sys/kernel/hostname"] {
        let mut bundle = bundle_with_image_dev()?;
        let shared = bundle.share()?;
        fs::write(shared.join("decoy"), DECOY_TEXT)?;
        let console = bundle.rootfs().join("dev/console");
        let _ = fs::remove_file(&console);
        std::os::unix::fs::symlink(target, &console)?;
        bundle.terminal(true).sh(&format!(
            "{{ echo mounted=$(awk '$5 == \"{target}\"' /proc/self/mountinfo | wc -l); \
               echo target=$(stat -c %F:%t /proc/sys/kernel/hostname); \
               echo console=$(stat -Lc %F /dev/console 2>&1); }} > /shared/out; echo done"
        ));
        let socket = ConsoleSocket::new()?;
        let rt = Runtime::new()?;
        let id = unique_id("cve-52565");
        let what = format!("/dev/console -> {target}");
        let out = rt.create_with(&bundle, &id, &["--console-socket", &socket.path_str()])?;
        if out.success() {
            let master = socket.receive(WAIT_TIMEOUT)?;
            rt.start(&id)?.ok()?;
            let _ = read_pty(&master, WAIT_TIMEOUT, |t| t.contains("done"));
            rt.wait_stopped(&id)?;
            let report = fs::read_to_string(shared.join("out")).context("the report")?;
            if field(&report, "mounted") != Some("0") {
                failures.push(format!(
                    "{what}: something (the pty) is mounted on the symlink's target: {report}"
                ));
            }
            if field(&report, "target") != Some("regular empty file:0") {
                failures.push(format!(
                    "{what}: /proc/sys/kernel/hostname is no longer procfs's: {report}"
                ));
            }
        } else {
            eprintln!("{what}: refused: {}", out.error_line());
        }
        record(
            &mut failures,
            check_decoy_file(&shared.join("decoy"), &what),
        );
        if mountinfo_contains(&shared.join("decoy").to_string_lossy()) {
            failures.push(format!("{what}: a host mount mentions the decoy"));
        }
    }
    assert_eq!(before, core_pattern(), "host core_pattern changed");
    assert_no_failures(&failures);
    Ok(())
}

/// CVE-2025-52881 (and CVE-2019-19921's LSM half): runc wrote to procfs files by path (sysctls,
/// /proc/self/attr, oom_score_adj) inside a container whose mounts the attacker could shape, so
/// a bind mount over the procfs file redirected the runtime's write to any file. Here a host
/// decoy file is mounted over /proc/sys/kernel/domainname (with a sysctl for it) and over
/// /proc/self/oom_score_adj (with process.oomScoreAdj). Proves: create is refused, or the
/// runtime's write never reaches the decoy.
#[test]
fn cve_2025_52881_runtime_procfs_writes_are_not_redirected() -> Result<()> {
    let mut failures = Vec::new();
    for dest in ["/proc/sys/kernel/domainname", "/proc/self/oom_score_adj"] {
        let decoy = Decoy::new("cve-52881")?;
        let mut bundle = Bundle::new()?;
        bundle
            .bind(&decoy.file(), dest, &[])
            .set(
                "/linux/sysctl",
                json!({"kernel.domainname": "pwned-domain"}),
            )
            .set("/process/oomScoreAdj", json!(123))
            .sh("echo domain=$(cat /proc/sys/kernel/domainname); \
                 echo oom=$(cat /proc/self/oom_score_adj)");
        let rt = Runtime::new()?;
        let out = rt.run(&bundle, &unique_id("cve-52881"))?;
        let what = format!("decoy mounted over {dest}");
        if out.success() {
            eprintln!("{what}: ran: {}", out.stdout.trim());
        } else {
            eprintln!("{what}: refused: {}", out.error_line());
        }
        drop(rt);
        record(&mut failures, decoy.check(&what));
    }
    assert_no_failures(&failures);
    Ok(())
}

/// /proc/sys, /proc/sysrq-trigger and /sys are global kernel interfaces: the default config
/// makes them read-only (readonlyPaths, sysfs `ro`), and a container's root (uid 0, owner of
/// those files) must not write them. Writes use the value the file already holds, so a
/// vulnerable runtime changes nothing on the host; sysrq-trigger is only checked, never
/// written. Proves the writes fail with EROFS and the mounts are read-only.
#[test]
fn proc_sys_and_sysfs_are_read_only() -> Result<()> {
    let proc_file = "/proc/sys/kernel/printk_ratelimit";
    let sys_file = "/sys/kernel/mm/transparent_hugepage/khugepaged/pages_to_scan";
    let mut bundle = Bundle::new()?;
    bundle.capabilities(&as_strs(&all_caps()?)).sh(&format!(
        "for f in {proc_file} {sys_file}; do \
           [ -e $f ] || continue; v=$(cat $f); \
           if (echo \"$v\" > $f) 2>/tmp/err || true; then :; fi; \
           echo \"write $f: $(cat /tmp/err 2>/dev/null || echo none)\"; \
         done; \
         awk '$5 == \"/proc/sys\" || $5 == \"/proc/sysrq-trigger\" || $5 == \"/sys\" \
           {{ split($6, o, \",\"); print \"opt \" $5 \"=\" o[1] }}' /proc/self/mountinfo"
    ));
    // /tmp of the read-only rootfs cannot hold the error file: give it a tmpfs.
    bundle.add_mount(json!({
        "destination": "/tmp", "type": "tmpfs", "source": "tmpfs", "options": ["size=64k"],
    }));
    let rt = Runtime::new()?;
    let out = rt.run(&bundle, &unique_id("cve-ro"))?.ok()?;
    for line in out.stdout.lines().filter(|l| l.starts_with("write ")) {
        assert!(
            line.contains("Read-only file system"),
            "a write to a kernel interface did not fail with EROFS: {line}\n{out}"
        );
    }
    for mount in ["/proc/sys", "/proc/sysrq-trigger", "/sys"] {
        if !Path::new(mount).exists() {
            continue;
        }
        let opts: Vec<&str> = out
            .stdout
            .lines()
            .filter_map(|l| l.strip_prefix(&format!("opt {mount}=")))
            .collect();
        assert!(
            !opts.is_empty() && opts.iter().all(|o| *o == "ro"),
            "{mount} is not read-only: {opts:?}\n{out}"
        );
    }
    Ok(())
}

/// Device access outside the allow list: the default config denies every device but the
/// standard ones; even with all capabilities (CAP_MKNOD, CAP_SYSLOG, CAP_SYS_RAWIO), a node made
/// by the container for another device (/dev/kmsg 1:11, a host block device) must not open,
/// while one for an allowed device (/dev/null 1:3) does (the control). Only reads are tried.
#[test]
fn devices_outside_the_allow_list_cannot_be_opened() -> Result<()> {
    let block = fs::read_dir("/sys/dev/block")?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .find(|n| n.contains(':'));
    let mut script = String::from(
        "mknod /tmp/null c 1 3 && head -c 1 /tmp/null && echo OPENED-null; \
         mknod /tmp/kmsg c 1 11 && (exec 3< /tmp/kmsg) 2>/dev/null && echo OPENED-kmsg; ",
    );
    if let Some(block) = &block {
        let (major, minor) = block.split_once(':').unwrap_or_default();
        script.push_str(&format!(
            "mknod /tmp/disk b {major} {minor} && (exec 3< /tmp/disk) 2>/dev/null && \
             echo OPENED-disk; "
        ));
    }
    script.push_str("echo done");
    let mut bundle = Bundle::new()?;
    bundle
        .capabilities(&as_strs(&all_caps()?))
        .add_mount(json!({
            "destination": "/tmp", "type": "tmpfs", "source": "tmpfs", "options": ["size=64k"],
        }))
        .sh(&script);
    let rt = Runtime::new()?;
    let out = rt.run(&bundle, &unique_id("cve-dev"))?;
    assert!(out.stdout.contains("done"), "{out}");
    assert!(
        out.stdout.contains("OPENED-null"),
        "control: an allowed device node made in the container does not open: {out}"
    );
    for dev in ["kmsg", "disk"] {
        assert!(
            !out.stdout.contains(&format!("OPENED-{dev}")),
            "a device outside the allow list ({dev}, block {block:?}) opened: {out}"
        );
    }
    Ok(())
}
