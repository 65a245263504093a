//! The command line itself: global flags, help, version, usage errors, logging.

use std::fs;

use anyhow::Result;
use e2e::*;

#[test]
fn version_and_help() -> Result<()> {
    let rt = Runtime::new()?;
    let version = rt.rcrun(&["--version"])?;
    assert!(version.success(), "{version}");
    assert!(!version.stdout.trim().is_empty(), "{version}");

    let help = rt.rcrun(&["--help"])?;
    assert!(help.success(), "{help}");
    for command in [
        "create", "start", "state", "kill", "delete", "run", "list", "spec",
    ] {
        assert!(
            help.stdout.contains(command),
            "{command} not in help: {help}"
        );
    }
    Ok(())
}

#[test]
fn usage_errors_fail() -> Result<()> {
    let rt = Runtime::new()?;
    for args in [
        vec!["no-such-command"],
        vec!["start"],
        vec!["state"],
        vec!["delete"],
        vec!["create", "--no-such-flag", "x"],
    ] {
        let out = rt.rcrun(&args)?;
        assert!(!out.success(), "{args:?} succeeded: {out}");
        assert!(!out.stderr.trim().is_empty(), "{args:?}: no message: {out}");
    }
    Ok(())
}

#[test]
fn list_of_an_empty_root() -> Result<()> {
    let rt = Runtime::new()?;
    let quiet = rt.rcrun(&["list", "-q"])?.ok()?;
    assert_eq!(quiet.stdout.trim(), "", "{quiet}");
    let json = rt.rcrun(&["list", "--format", "json"])?.ok()?;
    let value: Value = serde_json::from_str(json.stdout.trim())?;
    assert!(
        value.is_null() || value.as_array().is_some_and(|a| a.is_empty()),
        "{json}"
    );
    Ok(())
}

#[test]
fn global_flags_log_and_debug_are_accepted() -> Result<()> {
    let mut bundle = Bundle::new()?;
    bundle.sh("echo hi");
    bundle.write()?;
    let rt = Runtime::new()?;
    let id = unique_id("cli");
    rt.track(&id);
    let log = rt.root().join("text.log");
    let mut cmd = rt.command(&["--debug", "--log"]);
    cmd.arg(&log)
        .args(["--log-format", "text", "run", "--bundle"])
        .arg(bundle.path())
        .arg(&id);
    let out = rt.output(&mut cmd)?.ok()?;
    assert_eq!(out.stdout.trim(), "hi", "{out}");
    assert!(log.exists(), "no log file with --log");

    // A failing command writes its error to the text log too.
    let mut cmd = rt.command(&["--log"]);
    cmd.arg(&log).args(["start", "no-such-container"]);
    let out = rt.output(&mut cmd)?;
    assert!(!out.success(), "{out}");
    let text = fs::read_to_string(&log)?;
    assert!(
        text.lines()
            .any(|l| l.contains("level=error") && l.contains("does not exist")),
        "no level=error line in the log:\n{text}\n{out}"
    );
    Ok(())
}

#[test]
fn state_dir_lives_under_root() -> Result<()> {
    let mut bundle = Bundle::new()?;
    bundle.args(&["sleep", "60"]);
    let rt = Runtime::new()?;
    let id = unique_id("cli");
    rt.create(&bundle, &id)?.ok()?;
    assert!(
        rt.root().join(&id).is_dir(),
        "no {}/{id}",
        rt.root().display()
    );
    Ok(())
}

/// `--version` (and runc's `-v`) in runc's shape: `<name> version <v>`, then `commit:`, `spec:`,
/// and the libseccomp linked at run time; docker's `info` reads the first two lines.
#[test]
fn version_is_runc_shaped() -> Result<()> {
    let rt = Runtime::new()?;
    for flag in ["--version", "-v"] {
        let out = rt.rcrun(&[flag])?.ok()?;
        let lines: Vec<&str> = out.stdout.lines().collect();
        assert!(
            lines.first().is_some_and(|l| l.contains(" version ")),
            "{flag}: {out}"
        );
        for key in ["commit: ", "spec: ", "libseccomp: "] {
            let line = lines.iter().find(|l| l.starts_with(key));
            assert!(
                line.is_some_and(|l| l.len() > key.len()),
                "{flag}: no {key:?} line: {out}"
            );
        }
    }
    if testing_rcrun() {
        let out = rt.rcrun(&["--version"])?.ok()?;
        assert!(out.stdout.starts_with("rcrun version "), "{out}");
        let seccomp = out
            .stdout
            .lines()
            .find_map(|l| l.strip_prefix("libseccomp: "))
            .unwrap_or_default();
        assert!(
            seccomp.split('.').count() == 3 && seccomp.split('.').all(|n| n.parse::<u32>().is_ok()),
            "libseccomp version {seccomp:?}: {out}"
        );
    }
    Ok(())
}

/// rcrun's own (hidden) `completion <shell>`: a script bash accepts.
#[test]
fn completion_scripts() -> Result<()> {
    if !testing_rcrun() {
        return Ok(());
    }
    let rt = Runtime::new()?;
    for shell in ["bash", "zsh", "fish"] {
        let out = rt.rcrun(&["completion", shell])?.ok()?;
        assert!(out.stdout.contains("rcrun"), "{shell}: {out}");
        assert!(out.stdout.contains("exec"), "{shell}: {out}");
    }
    let script = rt.root().join("rcrun.bash");
    fs::write(&script, rt.rcrun(&["completion", "bash"])?.ok()?.stdout)?;
    let out = host(
        "bash",
        &[
            "-c",
            &format!("source {} && complete -p rcrun", script.display()),
        ],
    )?;
    assert!(out.stdout.contains("-F _rcrun rcrun"), "{out}");
    let out = rt.rcrun(&["completion", "no-such-shell"])?;
    assert!(!out.success(), "{out}");
    Ok(())
}

/// `--log-format json` lines are logrus's: exactly level, msg and time (RFC 3339, UTC), one
/// object per line. containerd's shim reads the last error's msg from this file.
#[test]
fn json_log_lines_are_logrus_shaped() -> Result<()> {
    let rt = Runtime::new()?;
    let log = rt.root().join("log.json");
    let mut cmd = rt.command(&["--log"]);
    cmd.arg(&log)
        .args(["--log-format", "json", "start", "no-such-container"]);
    let out = rt.output(&mut cmd)?;
    assert!(!out.success(), "{out}");
    let text = fs::read_to_string(&log)?;
    let mut errors = 0;
    for line in text.lines() {
        let value: Value =
            serde_json::from_str(line).map_err(|e| anyhow::anyhow!("not JSON: {line:?}: {e}"))?;
        let obj = value
            .as_object()
            .ok_or_else(|| anyhow::anyhow!("not an object: {line}"))?;
        let mut keys: Vec<&str> = obj.keys().map(String::as_str).collect();
        keys.sort_unstable();
        assert_eq!(keys, ["level", "msg", "time"], "{line}");
        let time = obj["time"].as_str().unwrap_or_default();
        assert!(
            time.len() >= 20 && time.as_bytes()[10] == b'T' && time.ends_with('Z'),
            "time {time:?} is not RFC 3339 UTC"
        );
        if obj["level"] == "error" {
            errors += 1;
            let msg = obj["msg"].as_str().unwrap_or_default();
            assert!(msg.contains("does not exist"), "{line}");
        }
    }
    assert_eq!(errors, 1, "one error line expected:\n{text}");
    Ok(())
}
