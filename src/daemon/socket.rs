//! The control socket's file: one live daemon per path, a stale file from a crash removed, mode and group set
//! explicitly, and every peer's credentials checked before it is served.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use nix::unistd::{Gid, Group, Uid, User};
use tokio::net::UnixListener;
use tokio::net::unix::UCred;

/// Why the socket could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum SocketError {
    /// A daemon already answers on the path.
    #[error(
        "another mongo-backup-agent daemon is already serving {0}: stop it first (systemctl stop mongo-backup-agent)"
    )]
    InUse(PathBuf),
    /// Binding, removing a stale file, or setting mode/group failed.
    #[error(
        "control socket {path}: {action}: {source} (check [daemon] socket and that its directory exists and is writable)"
    )]
    Io {
        /// Socket path.
        path: PathBuf,
        /// What was being done.
        action: &'static str,
        /// Underlying error.
        source: std::io::Error,
    },
}

/// Who may use the socket: root, the daemon's own user, and members of the socket's group.
#[derive(Debug, Clone)]
pub struct Access {
    own_uid: u32,
    group: Option<(u32, Vec<String>)>,
}

impl Access {
    /// Whether the peer may talk to the daemon. The file mode already keeps others out; this second check holds
    /// even when the directory or mode was loosened by hand.
    pub fn allows(&self, peer: &UCred) -> bool {
        let uid = peer.uid();
        if uid == 0 || uid == self.own_uid {
            return true;
        }
        let Some((gid, members)) = &self.group else { return false };
        if peer.gid() == *gid {
            return true;
        }
        match User::from_uid(Uid::from_raw(uid)) {
            Ok(Some(user)) => user.gid.as_raw() == *gid || members.contains(&user.name),
            _ => false,
        }
    }
}

/// Binds `path`: refuses when a daemon answers there, removes the file when none does (left by a crash), then
/// sets mode 0660 and, when `group` exists on this host, that group. Returns the listener and the access rule.
pub async fn bind(path: &Path, group: &str) -> Result<(UnixListener, Access), SocketError> {
    let io = |action| move |source| SocketError::Io { path: path.to_path_buf(), action, source };
    if path.exists() {
        if tokio::net::UnixStream::connect(path).await.is_ok() {
            return Err(SocketError::InUse(path.to_path_buf()));
        }
        log::info!("removing stale control socket {} (no daemon answers on it)", path.display());
        std::fs::remove_file(path).map_err(io("removing the stale socket"))?;
    }
    let listener = UnixListener::bind(path).map_err(io("binding"))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660)).map_err(io("setting mode 0660"))?;
    let group = match Group::from_name(group) {
        Ok(Some(g)) => {
            std::os::unix::fs::chown(path, None, Some(g.gid.as_raw())).map_err(io("setting the group"))?;
            Some((g.gid.as_raw(), g.mem))
        }
        _ => {
            log::warn!("group {group:?} does not exist: only root and this user can use {}", path.display());
            None
        }
    };
    Ok((listener, Access { own_uid: Uid::effective().as_raw(), group }))
}

/// The name of group `gid`, for log lines.
pub fn group_name(gid: u32) -> String {
    Group::from_gid(Gid::from_raw(gid)).ok().flatten().map_or_else(|| gid.to_string(), |g| g.name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn live_socket_is_refused_and_stale_one_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("control.sock");
        let (live, _) = bind(&path, "no-such-group-mba").await.unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o660);
        assert!(matches!(bind(&path, "no-such-group-mba").await, Err(SocketError::InUse(_))));
        drop(live);
        // The file stays behind, as after a crash; nobody answers on it any more.
        assert!(path.exists());
        bind(&path, "no-such-group-mba").await.unwrap();
    }

    #[tokio::test]
    async fn the_socket_gets_the_configured_group() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("control.sock");
        // Root may give any group; anyone else only one of their own.
        let group = if Uid::effective().is_root() {
            Group::from_name("daemon").unwrap().expect("Debian has group daemon")
        } else {
            Group::from_gid(Gid::effective()).unwrap().unwrap()
        };
        bind(&path, &group.name).await.unwrap();
        use std::os::unix::fs::MetadataExt;
        assert_eq!(std::fs::metadata(&path).unwrap().gid(), group.gid.as_raw());
    }

    #[tokio::test]
    async fn own_user_is_allowed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("control.sock");
        let (listener, access) = bind(&path, "no-such-group-mba").await.unwrap();
        let client = tokio::net::UnixStream::connect(&path).await.unwrap();
        let (server, _) = listener.accept().await.unwrap();
        assert!(access.allows(&server.peer_cred().unwrap()));
        drop(client);
        let stranger = Access { own_uid: u32::MAX - 1, group: None };
        let peer = server.peer_cred().unwrap();
        assert_eq!(stranger.allows(&peer), peer.uid() == 0);
    }
}
