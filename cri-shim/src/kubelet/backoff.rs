//! kubelet's per-container restart back-off (client-go's `flowcontrol.Backoff` as kubelet uses
//! it, without jitter): 10 s doubling to 5 min, forgotten once an entry has been quiet for
//! longer than the reset period (kubelet: twice the maximum, 10 min).
//!
//! kubelet's `doBackOff` (pkg/kubelet/kuberuntime) asks `IsInBackOffSince(key, finishedAt)` and
//! only when that says no does it call `Next(key, finishedAt)` and restart. An unknown key is
//! never in back-off, so the FIRST restart of a container is immediate and arms the 10 s window;
//! the second waits 10 s after the exit, the third 20 s, and so on. `Backoff` reproduces exactly
//! that, with the clock passed in so it can be tested.
use std::collections::HashMap;
use std::time::{Duration, Instant};

pub const DEFAULT_BASE: Duration = Duration::from_secs(10);
pub const DEFAULT_MAX: Duration = Duration::from_secs(300);
pub const DEFAULT_RESET: Duration = Duration::from_secs(600);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackoffConfig {
    pub base: Duration,
    pub max: Duration,
    /// An entry whose last update is older than this (seen from the event) starts over.
    pub reset: Duration,
}

impl Default for BackoffConfig {
    fn default() -> Self {
        BackoffConfig {
            base: DEFAULT_BASE,
            max: DEFAULT_MAX,
            reset: DEFAULT_RESET,
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    backoff: Duration,
    last_update: Instant,
}

#[derive(Debug, Clone)]
pub struct Backoff {
    config: BackoffConfig,
    entries: HashMap<String, Entry>,
}

impl Backoff {
    pub fn new(config: BackoffConfig) -> Backoff {
        Backoff {
            config,
            entries: HashMap::new(),
        }
    }

    /// The current window of `key` (zero when unknown): what kubelet prints in
    /// "back-off 20s restarting failed container".
    pub fn get(&self, key: &str) -> Duration {
        self.entries.get(key).map(|e| e.backoff).unwrap_or_default()
    }

    fn expired(&self, event: Instant, last_update: Instant) -> bool {
        event.saturating_duration_since(last_update) > self.config.reset
    }

    /// Whether, at `now`, an event at `event` (a container's exit) is still inside its window.
    pub fn in_backoff_since(&self, key: &str, event: Instant, now: Instant) -> bool {
        match self.entries.get(key) {
            None => false,
            Some(e) if self.expired(event, e.last_update) => false,
            Some(e) => now.saturating_duration_since(event) < e.backoff,
        }
    }

    /// Like `in_backoff_since` but measured from the last `next` (image pulls: kubelet's
    /// `IsInBackOffSinceUpdate`).
    pub fn in_backoff_since_update(&self, key: &str, now: Instant) -> bool {
        match self.entries.get(key) {
            None => false,
            Some(e) if self.expired(now, e.last_update) => false,
            Some(e) => now.saturating_duration_since(e.last_update) < e.backoff,
        }
    }

    /// When the window that `event` opened ends, if `key` is in back-off.
    pub fn until(&self, key: &str, event: Instant) -> Option<Instant> {
        self.entries.get(key).map(|e| event + e.backoff)
    }

    /// Moves `key` to its next window: the base for a new or expired entry, else double, capped.
    pub fn next(&mut self, key: &str, event: Instant, now: Instant) {
        let backoff = match self.entries.get(key) {
            Some(e) if !self.expired(event, e.last_update) => {
                e.backoff.saturating_mul(2).min(self.config.max)
            }
            _ => self.config.base.min(self.config.max),
        };
        self.entries.insert(
            key.to_string(),
            Entry {
                backoff,
                last_update: now,
            },
        );
    }

    pub fn reset(&mut self, key: &str) {
        self.entries.remove(key);
    }
}

/// kubelet's duration text in back-off messages: Go's `time.Duration.String()` for whole
/// seconds ("10s", "1m20s", "5m0s").
pub fn go_duration(d: Duration) -> String {
    let secs = d.as_secs();
    let ms = d.subsec_millis();
    if secs < 60 {
        if ms == 0 {
            format!("{secs}s")
        } else {
            let frac = format!("{:03}", ms);
            format!("{secs}.{}s", frac.trim_end_matches('0'))
        }
    } else if secs < 3600 {
        format!("{}m{}s", secs / 60, secs % 60)
    } else {
        format!("{}h{}m{}s", secs / 3600, (secs % 3600) / 60, secs % 60)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: fn(u64) -> Duration = Duration::from_secs;

    /// A container that crashes immediately every time it is started, restarted the moment its
    /// window allows: the windows are 10, 20, 40, 80, 160, 300, 300 s, and the first restart
    /// does not wait (kubelet's doBackOff).
    #[test]
    fn default_windows_double_from_10s_to_5m() {
        let mut b = Backoff::new(BackoffConfig::default());
        let t0 = Instant::now();
        assert!(!b.in_backoff_since("c", t0, t0), "first restart waits");
        b.next("c", t0, t0);
        let mut now = t0;
        let mut seen = Vec::new();
        for _ in 0..7 {
            let exit = now;
            let window = b.get("c");
            seen.push(window.as_secs());
            assert!(b.in_backoff_since("c", exit, exit + window - S(1)));
            assert!(!b.in_backoff_since("c", exit, exit + window));
            now = exit + window;
            b.next("c", exit, now);
        }
        assert_eq!(seen, [10, 20, 40, 80, 160, 300, 300]);
    }

    #[test]
    fn resets_after_running_longer_than_reset_period() {
        let mut b = Backoff::new(BackoffConfig::default());
        let t0 = Instant::now();
        b.next("c", t0, t0);
        b.next("c", t0 + S(1), t0 + S(11));
        assert_eq!(b.get("c"), S(20));
        // Restarted at t0+11 s, ran for 10 min 1 s before exiting: the entry is stale.
        let exit = t0 + S(11) + S(601);
        assert!(!b.in_backoff_since("c", exit, exit));
        b.next("c", exit, exit);
        assert_eq!(b.get("c"), S(10));
        // Exactly at the reset period it is not yet stale (kubelet compares with `>`).
        let mut b2 = Backoff::new(BackoffConfig::default());
        b2.next("c", t0, t0);
        assert!(b2.in_backoff_since("c", t0 + S(600), t0 + S(601)));
    }

    #[test]
    fn custom_base_is_capped_by_max() {
        let mut b = Backoff::new(BackoffConfig {
            base: S(1),
            max: S(3),
            reset: S(600),
        });
        let t0 = Instant::now();
        for want in [1, 2, 3, 3] {
            b.next("c", t0, t0);
            assert_eq!(b.get("c"), S(want));
        }
        assert!(!b.in_backoff_since("other", t0, t0));
    }

    #[test]
    fn image_pull_window_counts_from_last_attempt() {
        let mut b = Backoff::new(BackoffConfig::default());
        let t0 = Instant::now();
        assert!(!b.in_backoff_since_update("img", t0));
        b.next("img", t0, t0);
        assert!(b.in_backoff_since_update("img", t0 + S(9)));
        assert!(!b.in_backoff_since_update("img", t0 + S(10)));
    }

    #[test]
    fn go_duration_text() {
        assert_eq!(go_duration(S(10)), "10s");
        assert_eq!(go_duration(S(80)), "1m20s");
        assert_eq!(go_duration(S(300)), "5m0s");
        assert_eq!(go_duration(Duration::from_millis(1500)), "1.5s");
    }
}
