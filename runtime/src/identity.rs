//! Who the container process is: uid, gid, supplementary groups and umask.
use nix::unistd::{setgroups, setresgid, setresuid, Gid, Uid};
use oci_spec::runtime::User;

#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("failed to set supplementary groups {groups:?}")]
    Groups {
        groups: Vec<u32>,
        #[source]
        source: nix::Error,
    },
    #[error("failed to set gid {0}")]
    Gid(u32, #[source] nix::Error),
    #[error("failed to set uid {0}")]
    Uid(u32, #[source] nix::Error),
    #[error("failed to set PR_SET_KEEPCAPS")]
    KeepCaps(#[source] nix::Error),
}

#[derive(Debug, Clone)]
pub struct Identity {
    pub uid: u32,
    pub gid: u32,
    pub additional_gids: Vec<u32>,
    pub umask: u32,
}

impl Identity {
    pub fn from_spec(user: &User) -> Self {
        Identity {
            uid: user.uid(),
            gid: user.gid(),
            additional_gids: user.additional_gids().clone().unwrap_or_default(),
            // runc's default when the spec names none.
            umask: user.umask().unwrap_or(0o022),
        }
    }

    /// Switches gid, groups and uid, keeping the permitted capabilities across the uid change
    /// so that the spec's sets can be applied afterwards. `setgroups_allowed` is false in a
    /// user namespace whose setgroups file says deny.
    pub fn apply(&self, setgroups_allowed: bool) -> Result<(), IdentityError> {
        nix::sys::prctl::set_keepcaps(true).map_err(IdentityError::KeepCaps)?;
        if setgroups_allowed {
            let groups: Vec<Gid> = self
                .additional_gids
                .iter()
                .map(|g| Gid::from_raw(*g))
                .collect();
            setgroups(&groups).map_err(|source| IdentityError::Groups {
                groups: self.additional_gids.clone(),
                source,
            })?;
        }
        let gid = Gid::from_raw(self.gid);
        setresgid(gid, gid, gid).map_err(|e| IdentityError::Gid(self.gid, e))?;
        let uid = Uid::from_raw(self.uid);
        setresuid(uid, uid, uid).map_err(|e| IdentityError::Uid(self.uid, e))?;
        nix::sys::prctl::set_keepcaps(false).map_err(IdentityError::KeepCaps)?;
        Ok(())
    }
}
