//! `rcrun features`: the runtime-spec features document, and that what it claims holds.

use anyhow::Result;
use e2e::*;

#[test]
fn features_lists_what_rcrun_supports_and_each_claim_holds() -> Result<()> {
    if !testing_rcrun() {
        return Ok(());
    }
    let rt = Runtime::new()?;
    let out = rt.rcrun(&["features"])?.ok()?;
    let f: Value = serde_json::from_str(&out.stdout)?;
    assert_eq!(f["ociVersionMin"], "1.0.0");
    let hooks: Vec<&str> = f["hooks"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(
        hooks,
        [
            "prestart",
            "createRuntime",
            "createContainer",
            "startContainer",
            "poststart",
            "poststop"
        ]
    );
    let linux = &f["linux"];
    for ns in [
        "cgroup", "ipc", "mount", "network", "pid", "user", "uts", "time",
    ] {
        assert!(
            linux["namespaces"]
                .as_array()
                .is_some_and(|a| a.contains(&json!(ns))),
            "{ns}"
        );
    }
    assert_eq!(linux["seccomp"]["enabled"], true);
    assert!(linux["seccomp"]["actions"]
        .as_array()
        .is_some_and(|a| a.contains(&json!("SCMP_ACT_NOTIFY"))));
    assert_eq!(linux["apparmor"]["enabled"], false);
    assert_eq!(linux["selinux"]["enabled"], false);
    // Kernel 5.12+ (mount_setattr); tests/tests/idmap.rs runs id-mapped mounts.
    assert_eq!(linux["mountExtensions"]["idmap"]["enabled"], true);
    // Every advertised mount option is accepted on a real tmpfs mount.
    let options: Vec<String> = f["mountOptions"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|o| o.as_str().map(String::from))
        .filter(|o| {
            ![
                "bind",
                "rbind",
                "remount",
                "ro",
                "unbindable",
                "runbindable",
                // Bind mounts in a user namespace only; tests/tests/idmap.rs holds them to it.
                "idmap",
                "ridmap",
            ]
            .contains(&o.as_str())
        })
        .collect();
    let mut bundle = Bundle::new()?;
    bundle.args(&["true"]).add_mount(
        json!({"destination": "/opts", "type": "tmpfs", "source": "tmpfs", "options": options}),
    );
    let out = rt.run(&bundle, &unique_id("features"))?;
    assert_eq!(out.code(), 0, "advertised mount options refused: {out}");
    // Every advertised capability can be asked for (the host's bounding set permitting).
    let host_bounding = u64::from_str_radix(
        std::fs::read_to_string("/proc/self/status")?
            .lines()
            .find_map(|l| l.strip_prefix("CapBnd:"))
            .unwrap_or("0")
            .trim(),
        16,
    )?;
    assert!(linux["capabilities"]
        .as_array()
        .is_some_and(|a| a.len() >= 38));
    let mut bundle = Bundle::new()?;
    let caps: Vec<Value> = linux["capabilities"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|c| c != &&json!("CAP_SYS_RESOURCE") || host_bounding & (1 << 24) != 0)
        .cloned()
        .collect();
    bundle
        .args(&["true"])
        .set("/process/capabilities/bounding", json!(caps));
    let out = rt.run(&bundle, &unique_id("features"))?;
    assert_eq!(out.code(), 0, "advertised capabilities refused: {out}");
    Ok(())
}

#[test]
fn apparmor_and_selinux_labels_are_refused_where_the_lsm_is_off() -> Result<()> {
    if !testing_rcrun() {
        return Ok(());
    }
    let rt = Runtime::new()?;
    for (pointer, value) in [
        ("/process/apparmorProfile", "some-profile"),
        ("/process/selinuxLabel", "system_u:system_r:container_t:s0"),
    ] {
        let mut bundle = Bundle::new()?;
        bundle.args(&["true"]).set(pointer, json!(value));
        let id = unique_id("lsm");
        let out = rt.create(&bundle, &id)?;
        assert!(!out.success(), "{pointer}: {out}");
        assert_nothing_left(&rt, &bundle, &id)?;
    }
    Ok(())
}
