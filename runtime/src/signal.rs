//! Signal names and numbers as `kill` accepts them.
use nix::sys::signal::Signal;
use std::str::FromStr;

#[derive(Debug, thiserror::Error)]
pub enum SignalError {
    #[error("unknown signal {0:?}")]
    Unknown(String),
    /// Real-time signals (and 0) are valid for kill(2), but nix's `Signal` has no value for them.
    #[error("signal {0:?} is not supported (real-time signals and signal 0 cannot be sent yet)")]
    NotSupported(String),
}

/// Parses `KILL`, `SIGKILL`, `sigkill`, `9`.
///
/// Like runc, a name is matched case-insensitively with or without the `SIG` prefix and a
/// number is taken as the raw signal number. `SIGRTMIN+n`, `RTMAX-n` and the numbers 0 and
/// 32..=64 are recognised but refused with [`SignalError::NotSupported`].
pub fn parse(s: &str) -> Result<Signal, SignalError> {
    let raw = s.trim();
    if !raw.is_empty() && raw.bytes().all(|b| b.is_ascii_digit()) {
        let number: i32 = raw
            .parse()
            .map_err(|_| SignalError::Unknown(s.to_string()))?;
        return Signal::try_from(number).map_err(|_| {
            if number == 0 || (libc::SIGRTMIN()..=libc::SIGRTMAX()).contains(&number) {
                SignalError::NotSupported(s.to_string())
            } else {
                SignalError::Unknown(s.to_string())
            }
        });
    }

    let upper = raw.to_ascii_uppercase();
    let name = upper.strip_prefix("SIG").unwrap_or(&upper);
    if is_realtime_name(name) {
        return Err(SignalError::NotSupported(s.to_string()));
    }
    let canonical = match name {
        // Historical aliases that the kernel headers (and kill(1)) still accept.
        "IOT" => "ABRT",
        "POLL" => "IO",
        "CLD" => "CHLD",
        other => other,
    };
    Signal::from_str(&format!("SIG{canonical}")).map_err(|_| SignalError::Unknown(s.to_string()))
}

/// `RTMIN`, `RTMAX`, `RTMIN+3`, `RTMAX-2` (the `SIG` prefix already removed).
fn is_realtime_name(name: &str) -> bool {
    ["RTMIN", "RTMAX"].iter().any(|base| {
        name.strip_prefix(base).is_some_and(|rest| {
            rest.is_empty()
                || rest
                    .strip_prefix(['+', '-'])
                    .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_in_every_spelling() {
        for s in ["KILL", "SIGKILL", "kill", "sigkill", "SigKill", "9", " 9 "] {
            assert_eq!(parse(s).ok(), Some(Signal::SIGKILL), "{s}");
        }
        assert_eq!(parse("TERM").ok(), Some(Signal::SIGTERM));
        assert_eq!(parse("15").ok(), Some(Signal::SIGTERM));
        assert_eq!(parse("hup").ok(), Some(Signal::SIGHUP));
        assert_eq!(parse("SIGWINCH").ok(), Some(Signal::SIGWINCH));
        assert_eq!(parse("usr1").ok(), Some(Signal::SIGUSR1));
    }

    #[test]
    fn aliases() {
        assert_eq!(parse("SIGIOT").ok(), Some(Signal::SIGABRT));
        assert_eq!(parse("poll").ok(), Some(Signal::SIGIO));
        assert_eq!(parse("CLD").ok(), Some(Signal::SIGCHLD));
    }

    #[test]
    fn unknown() {
        for s in [
            "",
            "SIG",
            "NOPE",
            "SIGNOPE",
            "-9",
            "9x",
            "65",
            "99999999999",
            "KILL9",
        ] {
            assert!(matches!(parse(s), Err(SignalError::Unknown(_))), "{s}");
        }
    }

    #[test]
    fn realtime_is_refused_clearly() {
        for s in ["SIGRTMIN", "RTMIN+3", "sigrtmax-1", "34", "64", "0"] {
            assert!(matches!(parse(s), Err(SignalError::NotSupported(_))), "{s}");
        }
        assert!(matches!(parse("RTMIN+"), Err(SignalError::Unknown(_))));
    }
}
