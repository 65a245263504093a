//! Signal names and numbers as `kill` accepts them.
use nix::sys::signal::Signal;
use nix::unistd::Pid;
use std::str::FromStr;

#[derive(Debug, thiserror::Error)]
pub enum SignalError {
    #[error("unknown signal {0:?}")]
    Unknown(String),
}

/// A signal `kill` may send: a classic one or a real-time one (`SIGRTMIN+3` is what systemd
/// images ask to be stopped with), which nix's `Signal` cannot represent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KillSignal(i32);

impl KillSignal {
    pub const KILL: KillSignal = KillSignal(libc::SIGKILL);

    pub fn number(self) -> i32 {
        self.0
    }

    /// kill(2) of `pid` with this signal.
    pub fn send(self, pid: Pid) -> nix::Result<()> {
        // SAFETY: kill(2) takes plain integers; the number was checked to be a signal at parse.
        nix::errno::Errno::result(unsafe { libc::kill(pid.as_raw(), self.0) }).map(drop)
    }
}

impl From<Signal> for KillSignal {
    fn from(s: Signal) -> Self {
        KillSignal(s as i32)
    }
}

/// Parses `KILL`, `SIGKILL`, `sigkill`, `9`, and real-time signals: `SIGRTMIN+3`, `RTMAX-1`,
/// `37`.
///
/// Like runc, a name is matched case-insensitively with or without the `SIG` prefix and a
/// number is taken as the raw signal number. Signal 0 is refused: it sends nothing, and
/// `state` is the way to ask whether a container is alive.
pub fn parse(s: &str) -> Result<KillSignal, SignalError> {
    let unknown = || SignalError::Unknown(s.to_string());
    let raw = s.trim();
    if !raw.is_empty() && raw.bytes().all(|b| b.is_ascii_digit()) {
        let number: i32 = raw.parse().map_err(|_| unknown())?;
        if Signal::try_from(number).is_ok()
            || (libc::SIGRTMIN()..=libc::SIGRTMAX()).contains(&number)
        {
            return Ok(KillSignal(number));
        }
        return Err(unknown());
    }

    let upper = raw.to_ascii_uppercase();
    let name = upper.strip_prefix("SIG").unwrap_or(&upper);
    if let Some(number) = realtime_number(name) {
        return number.map(KillSignal).ok_or_else(unknown);
    }
    let canonical = match name {
        // Historical aliases that the kernel headers (and kill(1)) still accept.
        "IOT" => "ABRT",
        "POLL" => "IO",
        "CLD" => "CHLD",
        other => other,
    };
    Signal::from_str(&format!("SIG{canonical}"))
        .map(KillSignal::from)
        .map_err(|_| unknown())
}

/// `RTMIN`, `RTMAX`, `RTMIN+3`, `RTMAX-2` (the `SIG` prefix already removed): None when the
/// name is not of that shape, Some(None) when it is but lies outside RTMIN..=RTMAX.
fn realtime_number(name: &str) -> Option<Option<i32>> {
    let (min, max) = (libc::SIGRTMIN(), libc::SIGRTMAX());
    for (base, value, sign) in [("RTMIN", min, 1), ("RTMAX", max, -1)] {
        let Some(rest) = name.strip_prefix(base) else {
            continue;
        };
        if rest.is_empty() {
            return Some(Some(value));
        }
        let offset = match rest.strip_prefix(if sign > 0 { '+' } else { '-' }) {
            Some(n) if !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) => n,
            _ => return Some(None),
        };
        let number = offset
            .parse::<i32>()
            .ok()
            .and_then(|n| value.checked_add(sign * n))
            .filter(|n| (min..=max).contains(n));
        return Some(number);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sig(s: Signal) -> Option<KillSignal> {
        Some(KillSignal::from(s))
    }

    #[test]
    fn names_in_every_spelling() {
        for s in ["KILL", "SIGKILL", "kill", "sigkill", "SigKill", "9", " 9 "] {
            assert_eq!(parse(s).ok(), sig(Signal::SIGKILL), "{s}");
        }
        assert_eq!(parse("TERM").ok(), sig(Signal::SIGTERM));
        assert_eq!(parse("15").ok(), sig(Signal::SIGTERM));
        assert_eq!(parse("hup").ok(), sig(Signal::SIGHUP));
        assert_eq!(parse("SIGWINCH").ok(), sig(Signal::SIGWINCH));
        assert_eq!(parse("usr1").ok(), sig(Signal::SIGUSR1));
    }

    #[test]
    fn aliases() {
        assert_eq!(parse("SIGIOT").ok(), sig(Signal::SIGABRT));
        assert_eq!(parse("poll").ok(), sig(Signal::SIGIO));
        assert_eq!(parse("CLD").ok(), sig(Signal::SIGCHLD));
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
            "0",
            "65",
            "99999999999",
            "KILL9",
            "RTMIN+",
            "RTMIN-1",
            "RTMAX+1",
            "RTMIN+99",
            "RTMAX-99",
        ] {
            assert!(matches!(parse(s), Err(SignalError::Unknown(_))), "{s}");
        }
    }

    #[test]
    fn realtime_signals_by_name_and_number() {
        let (min, max) = (libc::SIGRTMIN(), libc::SIGRTMAX());
        assert_eq!(parse("SIGRTMIN").map(KillSignal::number).ok(), Some(min));
        assert_eq!(parse("rtmin+3").map(KillSignal::number).ok(), Some(min + 3));
        assert_eq!(
            parse("SIGRTMAX-1").map(KillSignal::number).ok(),
            Some(max - 1)
        );
        assert_eq!(parse("RTMAX").map(KillSignal::number).ok(), Some(max));
        assert_eq!(
            parse(&max.to_string()).map(KillSignal::number).ok(),
            Some(max)
        );
        assert_eq!(
            parse(&min.to_string()).map(KillSignal::number).ok(),
            Some(min)
        );
    }
}
