//! An image config's `StopSignal` (Dockerfile `STOPSIGNAL`): what StopContainer sends first
//! instead of SIGTERM, as containerd does. Images write it as `SIGUSR1`, `USR1`, `usr1`, `10`
//! or `SIGRTMIN+3`; the OCI runtime is given a form every runc-compatible `kill` takes.
use std::str::FromStr;

use nix::sys::signal::Signal;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("StopSignal {0:?} is not a signal")]
pub struct BadStopSignal(pub String);

/// The signal `kill` is given: `SIGUSR1` for the classic signals, the number for real-time
/// ones (runc and crun take numbers; there are no portable names for them). `None` when the
/// image sets none (SIGTERM then).
pub fn runtime_signal(stop_signal: &str) -> Result<Option<String>, BadStopSignal> {
    let raw = stop_signal.trim();
    if raw.is_empty() {
        return Ok(None);
    }
    let bad = || BadStopSignal(stop_signal.to_string());
    if raw.bytes().all(|b| b.is_ascii_digit()) {
        let n: i32 = raw.parse().map_err(|_| bad())?;
        if let Ok(sig) = Signal::try_from(n) {
            return Ok(Some(sig.as_str().to_string()));
        }
        if (libc::SIGRTMIN()..=libc::SIGRTMAX()).contains(&n) {
            return Ok(Some(n.to_string()));
        }
        return Err(bad());
    }
    let upper = raw.to_ascii_uppercase();
    let name = upper.strip_prefix("SIG").unwrap_or(&upper);
    if let Some(n) = realtime(name) {
        return Ok(Some(n.to_string()));
    }
    let name = match name {
        // Old aliases that kill(1) still takes.
        "IOT" => "ABRT",
        "POLL" => "IO",
        "CLD" => "CHLD",
        other => other,
    };
    let sig = Signal::from_str(&format!("SIG{name}")).map_err(|_| bad())?;
    Ok(Some(sig.as_str().to_string()))
}

/// `RTMIN`, `RTMIN+3`, `RTMAX-2`, `RTMAX` → the signal number, if in range.
fn realtime(name: &str) -> Option<i32> {
    let (base, rest) = if let Some(r) = name.strip_prefix("RTMIN") {
        (libc::SIGRTMIN(), r)
    } else if let Some(r) = name.strip_prefix("RTMAX") {
        (libc::SIGRTMAX(), r)
    } else {
        return None;
    };
    let n = if rest.is_empty() {
        base
    } else if let Some(off) = rest.strip_prefix('+') {
        base.checked_add(off.parse::<i32>().ok()?)?
    } else if let Some(off) = rest.strip_prefix('-') {
        base.checked_sub(off.parse::<i32>().ok()?)?
    } else {
        return None;
    };
    (libc::SIGRTMIN()..=libc::SIGRTMAX())
        .contains(&n)
        .then_some(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_spellings_become_what_kill_takes() {
        for s in ["SIGUSR1", "USR1", "usr1", " SigUsr1 ", "10"] {
            assert_eq!(
                runtime_signal(s).unwrap().as_deref(),
                Some("SIGUSR1"),
                "{s}"
            );
        }
        assert_eq!(runtime_signal("").unwrap(), None);
        assert_eq!(
            runtime_signal("SIGQUIT").unwrap().as_deref(),
            Some("SIGQUIT")
        );
        assert_eq!(runtime_signal("IOT").unwrap().as_deref(), Some("SIGABRT"));
        let rt3 = (libc::SIGRTMIN() + 3).to_string();
        assert_eq!(runtime_signal("SIGRTMIN+3").unwrap(), Some(rt3.clone()));
        assert_eq!(runtime_signal(&rt3).unwrap(), Some(rt3));
        assert_eq!(
            runtime_signal("RTMAX").unwrap(),
            Some(libc::SIGRTMAX().to_string())
        );
    }

    #[test]
    fn non_signals_are_refused() {
        for s in [
            "SIGFOO", "0", "65", "-1", "RTMIN+99", "RTMAX+1", "RTMIN3", "SIG", "9x",
        ] {
            assert!(runtime_signal(s).is_err(), "{s} accepted");
        }
    }
}
