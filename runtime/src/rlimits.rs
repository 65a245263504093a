//! `process.rlimits`, converted once and applied with setrlimit in the init.
use nix::sys::resource::{setrlimit, Resource};
use oci_spec::runtime::{PosixRlimit, PosixRlimitType};

#[derive(Debug, thiserror::Error)]
pub enum RlimitError {
    #[error("failed to set {name} to soft {soft} hard {hard}")]
    Set {
        name: String,
        soft: u64,
        hard: u64,
        #[source]
        source: nix::Error,
    },
}

#[derive(Debug, Clone)]
pub struct Rlimit {
    pub name: String,
    pub resource: Resource,
    pub soft: u64,
    pub hard: u64,
}

fn resource(t: PosixRlimitType) -> Resource {
    use PosixRlimitType as T;
    match t {
        T::RlimitCpu => Resource::RLIMIT_CPU,
        T::RlimitFsize => Resource::RLIMIT_FSIZE,
        T::RlimitData => Resource::RLIMIT_DATA,
        T::RlimitStack => Resource::RLIMIT_STACK,
        T::RlimitCore => Resource::RLIMIT_CORE,
        T::RlimitRss => Resource::RLIMIT_RSS,
        T::RlimitNproc => Resource::RLIMIT_NPROC,
        T::RlimitNofile => Resource::RLIMIT_NOFILE,
        T::RlimitMemlock => Resource::RLIMIT_MEMLOCK,
        T::RlimitAs => Resource::RLIMIT_AS,
        T::RlimitLocks => Resource::RLIMIT_LOCKS,
        T::RlimitSigpending => Resource::RLIMIT_SIGPENDING,
        T::RlimitMsgqueue => Resource::RLIMIT_MSGQUEUE,
        T::RlimitNice => Resource::RLIMIT_NICE,
        T::RlimitRtprio => Resource::RLIMIT_RTPRIO,
        T::RlimitRttime => Resource::RLIMIT_RTTIME,
    }
}

pub fn from_spec(limits: Option<&Vec<PosixRlimit>>) -> Vec<Rlimit> {
    limits
        .into_iter()
        .flatten()
        .map(|l| Rlimit {
            name: l.typ().to_string(),
            resource: resource(l.typ()),
            soft: l.soft(),
            hard: l.hard(),
        })
        .collect()
}

pub fn apply(limits: &[Rlimit]) -> Result<(), RlimitError> {
    for l in limits {
        setrlimit(l.resource, l.soft, l.hard).map_err(|source| RlimitError::Set {
            name: l.name.clone(),
            soft: l.soft,
            hard: l.hard,
            source,
        })?;
    }
    Ok(())
}
