//! What only cgroup v1 needs: cpuset inheritance and the devices controller's rule files.
use super::{read_file, write_file, CgroupError};
use oci_spec::runtime::{LinuxDeviceCgroup, LinuxDeviceType};
use std::path::Path;

pub(super) const DEVICES_ALLOW: &str = "devices.allow";
pub(super) const DEVICES_DENY: &str = "devices.deny";

/// A new v1 cpuset cgroup starts with empty `cpuset.cpus` and `cpuset.mems` (unless the parent
/// has `cgroup.clone_children`), and attaching a task to it then fails with ENOSPC. Fill
/// empty values of `level` from the nearest ancestor, up to the mount point, that has them.
pub(super) fn inherit_cpuset(level: &Path, mount_point: &Path) -> Result<(), CgroupError> {
    for name in ["cpuset.cpus", "cpuset.mems"] {
        if !read_file(&level.join(name))?.trim().is_empty() {
            continue;
        }
        let mut value = None;
        let mut ancestor = level.parent();
        while let Some(dir) = ancestor.filter(|d| d.starts_with(mount_point)) {
            let candidate = read_file(&dir.join(name))?;
            if !candidate.trim().is_empty() {
                value = Some(candidate);
                break;
            }
            ancestor = dir.parent();
        }
        // Nothing to copy means no ancestor can run tasks either; the kernel's ENOSPC on
        // attach will then name the real problem.
        if let Some(value) = value {
            write_file(&level.join(name), value.trim())?;
        }
    }
    Ok(())
}

/// The allow rules every container gets after its own `linux.resources.devices` rules, as
/// runc 1.1 adds them (its `AllowedDevices`): mknod of any char or block device (the device
/// nodes rcrun creates in /dev still need their own allow rule to be opened), the standard
/// /dev nodes, the pty master and slaves, and the console.
pub fn default_allowed_devices() -> Vec<LinuxDeviceCgroup> {
    let rule = |typ, major: Option<i64>, minor: Option<i64>, access: &str| {
        let mut r = LinuxDeviceCgroup::default();
        r.set_allow(true);
        r.set_typ(Some(typ));
        r.set_major(major);
        r.set_minor(minor);
        r.set_access(Some(access.to_string()));
        r
    };
    use LinuxDeviceType::{B, C};
    vec![
        rule(C, None, None, "m"),
        rule(B, None, None, "m"),
        rule(C, Some(1), Some(3), "rwm"), // /dev/null
        rule(C, Some(1), Some(8), "rwm"), // /dev/random
        rule(C, Some(1), Some(7), "rwm"), // /dev/full
        rule(C, Some(5), Some(0), "rwm"), // /dev/tty
        rule(C, Some(1), Some(5), "rwm"), // /dev/zero
        rule(C, Some(1), Some(9), "rwm"), // /dev/urandom
        rule(C, Some(136), None, "rwm"),  // /dev/pts/*
        rule(C, Some(5), Some(2), "rwm"), // /dev/ptmx
        rule(C, Some(5), Some(1), "rwm"), // /dev/console
    ]
}

/// Each write the rules turn into, in order: (`devices.allow` or `devices.deny`, line).
/// The kernel parses one rule per write(2), so the caller writes each line separately.
pub(super) fn rule_writes(
    rules: &[LinuxDeviceCgroup],
) -> Result<Vec<(&'static str, String)>, CgroupError> {
    let mut out = Vec::new();
    for rule in rules {
        let file = if rule.allow() {
            DEVICES_ALLOW
        } else {
            DEVICES_DENY
        };
        for line in rule_lines(rule)? {
            out.push((file, line));
        }
    }
    Ok(out)
}

/// One OCI rule as kernel lines (`c 1:3 rwm`).
fn rule_lines(rule: &LinuxDeviceCgroup) -> Result<Vec<String>, CgroupError> {
    let access = match rule.access().as_deref() {
        None | Some("") => "rwm",
        Some(a) => a,
    };
    if !access.chars().all(|c| matches!(c, 'r' | 'w' | 'm')) {
        return Err(CgroupError::InvalidDeviceRule {
            rule: rule.to_string(),
            reason: "access must be made of r, w and m",
        });
    }
    let number = |n: Option<i64>| match n {
        // runc and the spec's examples use -1 for "any" as well as leaving it out.
        Some(n) if n >= 0 => n.to_string(),
        _ => "*".to_string(),
    };
    let (major, minor) = (number(rule.major()), number(rule.minor()));
    let lines = match rule.typ().unwrap_or(LinuxDeviceType::A) {
        LinuxDeviceType::A => {
            if access_is_full(access) && major == "*" && minor == "*" {
                vec!["a *:* rwm".to_string()]
            } else {
                // The kernel reads any rule starting with 'a' as "every device, every access"
                // and ignores the rest, so a narrower 'a' rule is spelled out for c and b.
                vec![
                    format!("c {major}:{minor} {access}"),
                    format!("b {major}:{minor} {access}"),
                ]
            }
        }
        LinuxDeviceType::C | LinuxDeviceType::U => vec![format!("c {major}:{minor} {access}")],
        LinuxDeviceType::B => vec![format!("b {major}:{minor} {access}")],
        // The devices controller only governs char and block devices; opening a FIFO
        // never consults it, so there is nothing to write.
        LinuxDeviceType::P => Vec::new(),
    };
    Ok(lines)
}

fn access_is_full(access: &str) -> bool {
    ['r', 'w', 'm'].iter().all(|c| access.contains(*c))
}

/// Writes the lines from [`rule_writes`] into the devices cgroup `dir`.
pub(super) fn apply_rules(
    dir: &Path,
    writes: &[(&'static str, String)],
) -> Result<(), CgroupError> {
    for (file, line) in writes {
        write_file(&dir.join(file), line)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(
        allow: bool,
        typ: Option<LinuxDeviceType>,
        major: Option<i64>,
        minor: Option<i64>,
        access: Option<&str>,
    ) -> LinuxDeviceCgroup {
        let mut r = LinuxDeviceCgroup::default();
        r.set_allow(allow);
        r.set_typ(typ);
        r.set_major(major);
        r.set_minor(minor);
        r.set_access(access.map(str::to_string));
        r
    }

    #[test]
    fn runc_default_deny_all_then_allow() {
        let rules = vec![
            rule(false, None, None, None, Some("rwm")),
            rule(
                true,
                Some(LinuxDeviceType::C),
                Some(10),
                Some(229),
                Some("rw"),
            ),
            rule(true, Some(LinuxDeviceType::B), Some(8), None, None),
            rule(
                true,
                Some(LinuxDeviceType::U),
                Some(-1),
                Some(-1),
                Some("m"),
            ),
            rule(
                true,
                Some(LinuxDeviceType::P),
                Some(1),
                Some(1),
                Some("rwm"),
            ),
        ];
        let writes = rule_writes(&rules).expect("valid rules");
        assert_eq!(
            writes,
            vec![
                (DEVICES_DENY, "a *:* rwm".to_string()),
                (DEVICES_ALLOW, "c 10:229 rw".to_string()),
                (DEVICES_ALLOW, "b 8:* rwm".to_string()),
                (DEVICES_ALLOW, "c *:* m".to_string()),
            ]
        );
    }

    #[test]
    fn narrow_all_rule_is_split() {
        let writes = rule_writes(&[rule(false, Some(LinuxDeviceType::A), None, None, Some("w"))])
            .expect("valid");
        assert_eq!(
            writes,
            vec![
                (DEVICES_DENY, "c *:* w".to_string()),
                (DEVICES_DENY, "b *:* w".to_string()),
            ]
        );
    }

    #[test]
    fn bad_access_is_rejected() {
        let err = rule_writes(&[rule(
            true,
            Some(LinuxDeviceType::C),
            Some(1),
            Some(3),
            Some("rx"),
        )])
        .expect_err("x is not an access");
        assert!(matches!(err, CgroupError::InvalidDeviceRule { .. }));
    }

    #[test]
    fn defaults_cover_the_standard_nodes() {
        let lines: Vec<String> = rule_writes(&default_allowed_devices())
            .expect("valid defaults")
            .into_iter()
            .map(|(file, line)| {
                assert_eq!(file, DEVICES_ALLOW);
                line
            })
            .collect();
        for expected in [
            "c *:* m",
            "b *:* m",
            "c 1:3 rwm",
            "c 1:5 rwm",
            "c 1:7 rwm",
            "c 1:8 rwm",
            "c 1:9 rwm",
            "c 5:0 rwm",
            "c 5:1 rwm",
            "c 5:2 rwm",
            "c 136:* rwm",
        ] {
            assert!(lines.iter().any(|l| l == expected), "{expected} missing");
        }
    }

    #[test]
    fn cpuset_is_copied_from_the_nearest_non_empty_ancestor() {
        let base = std::env::temp_dir().join(format!("rcrun-cpuset-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        let mid = base.join("mid");
        let leaf = mid.join("leaf");
        std::fs::create_dir_all(&leaf).expect("dirs");
        for (dir, cpus, mems) in [(&base, "0-3\n", "0\n"), (&mid, "\n", "\n"), (&leaf, "", "")] {
            std::fs::write(dir.join("cpuset.cpus"), cpus).expect("cpus");
            std::fs::write(dir.join("cpuset.mems"), mems).expect("mems");
        }
        inherit_cpuset(&leaf, &base).expect("inherit");
        assert_eq!(
            std::fs::read_to_string(leaf.join("cpuset.cpus"))
                .ok()
                .as_deref(),
            Some("0-3")
        );
        assert_eq!(
            std::fs::read_to_string(leaf.join("cpuset.mems"))
                .ok()
                .as_deref(),
            Some("0")
        );
        // An ancestor outside the mount point is never consulted.
        std::fs::write(leaf.join("cpuset.cpus"), "").expect("reset");
        inherit_cpuset(&leaf, &mid).expect("inherit within mid");
        assert_eq!(
            std::fs::read_to_string(leaf.join("cpuset.cpus"))
                .ok()
                .as_deref(),
            Some("")
        );
        let _ = std::fs::remove_dir_all(&base);
    }
}
