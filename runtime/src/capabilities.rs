//! The five capability sets of `process.capabilities`, through the caps crate.
use caps::{CapSet, Capability, CapsHashSet};
use oci_spec::runtime::{Capabilities, LinuxCapabilities};

#[derive(Debug, thiserror::Error)]
pub enum CapabilityError {
    #[error("failed to {action} the {set} capability set")]
    Set {
        action: &'static str,
        set: &'static str,
        #[source]
        source: caps::errors::CapsError,
    },
}

/// The sets to give the process; `None` for a set leaves it empty, as runc does.
#[derive(Debug, Clone, Default)]
pub struct CapabilitySets {
    pub bounding: CapsHashSet,
    pub effective: CapsHashSet,
    pub permitted: CapsHashSet,
    pub inheritable: CapsHashSet,
    pub ambient: CapsHashSet,
}

fn convert(
    set: Option<&Capabilities>,
    supported: &CapsHashSet,
    unknown: &mut Vec<String>,
) -> CapsHashSet {
    let mut out = CapsHashSet::new();
    for cap in set.into_iter().flatten() {
        let name = format!("CAP_{cap}");
        match name.parse::<Capability>() {
            // Capabilities the running kernel does not know are skipped, as runc does.
            Ok(c) if supported.contains(&c) => {
                out.insert(c);
            }
            _ => unknown.push(name),
        }
    }
    out
}

impl CapabilitySets {
    /// Converts the spec's sets; returns warnings about what had to be left out.
    pub fn from_spec(c: Option<&LinuxCapabilities>) -> (Self, Vec<String>) {
        let mut unknown = Vec::new();
        let Some(c) = c else {
            return (CapabilitySets::default(), unknown);
        };
        let supported = caps::runtime::thread_all_supported();
        let mut conv = |s: &Option<Capabilities>| convert(s.as_ref(), &supported, &mut unknown);
        let sets = CapabilitySets {
            bounding: conv(c.bounding()),
            effective: conv(c.effective()),
            permitted: conv(c.permitted()),
            inheritable: conv(c.inheritable()),
            ambient: conv(c.ambient()),
        };
        let mut sets = sets;
        // The kernel only lets a capability be ambient if it is permitted and inheritable;
        // runc's default spec lists ambient ones without inheritable, and runc skips them.
        let (kept, skipped): (CapsHashSet, CapsHashSet) = sets
            .ambient
            .iter()
            .partition(|c| sets.permitted.contains(c) && sets.inheritable.contains(c));
        sets.ambient = kept;
        let mut warnings = Vec::new();
        unknown.sort();
        unknown.dedup();
        if !unknown.is_empty() {
            warnings.push(format!(
                "ignoring capabilities this kernel does not support: {}",
                unknown.join(", ")
            ));
        }
        if !skipped.is_empty() && log::log_enabled!(log::Level::Debug) {
            let mut names: Vec<String> = skipped.iter().map(|c| c.to_string()).collect();
            names.sort();
            log::debug!(
                "ambient capabilities need to be permitted and inheritable; skipping: {}",
                names.join(", ")
            );
        }
        (sets, warnings)
    }

    /// Drops from the bounding set everything not listed. Needs CAP_SETPCAP, so it runs before
    /// the uid change.
    pub fn apply_bounding(&self) -> Result<(), CapabilityError> {
        // The bounding set can only shrink, one capability at a time.
        for cap in caps::runtime::thread_all_supported() {
            if !self.bounding.contains(&cap) {
                caps::drop(None, CapSet::Bounding, cap).map_err(|source| CapabilityError::Set {
                    action: "drop from",
                    set: "bounding",
                    source,
                })?;
            }
        }
        Ok(())
    }

    /// Sets permitted, inheritable, effective and ambient, after the uid change (which, with
    /// PR_SET_KEEPCAPS, keeps permitted but clears effective).
    pub fn apply_process_sets(&self) -> Result<(), CapabilityError> {
        let err = |set: &'static str| {
            move |source| CapabilityError::Set {
                action: "set",
                set,
                source,
            }
        };
        // effective must stay a subset of permitted at every step: shrink it first, widen last.
        let current_eff =
            caps::read(None, CapSet::Effective).map_err(|source| CapabilityError::Set {
                action: "read",
                set: "effective",
                source,
            })?;
        let interim: CapsHashSet = current_eff.intersection(&self.permitted).copied().collect();
        // inheritable first, while CAP_SETPCAP may still be effective.
        caps::set(None, CapSet::Inheritable, &self.inheritable).map_err(err("inheritable"))?;
        caps::set(None, CapSet::Effective, &interim).map_err(err("effective"))?;
        caps::set(None, CapSet::Permitted, &self.permitted).map_err(err("permitted"))?;
        caps::set(None, CapSet::Effective, &self.effective).map_err(err("effective"))?;
        caps::clear(None, CapSet::Ambient).map_err(err("ambient"))?;
        for cap in &self.ambient {
            caps::raise(None, CapSet::Ambient, *cap).map_err(err("ambient"))?;
        }
        Ok(())
    }
}
