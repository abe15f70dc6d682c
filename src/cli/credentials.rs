//! The credentials file `portcullis login` writes and the `token --api`
//! commands read: `$XDG_CONFIG_HOME/portcullis/credentials` (else
//! `~/.config/portcullis/credentials`), JSON, mode 0600 in a 0700
//! directory. A file anyone else may read or write is refused, not used:
//! it holds a refresh token, which is as good as the user's session.
//!
//! The checks are made on the opened descriptor, not the path (a path
//! checked then opened again can be swapped in between): the file is
//! opened without following a symbolic link, then must be a regular file
//! the user owns with no group or other permission bits. Its directory must
//! be the user's (or root's) and writable by nobody else, or someone else
//! could replace the file with their own between two commands.

use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// Why the credentials file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum CredentialsError {
    #[error("neither XDG_CONFIG_HOME nor HOME is set: there is no place for the credentials file")]
    NoHome,
    #[error("not logged in ({} does not exist); run `portcullis login --issuer URL` first", .0.display())]
    Missing(PathBuf),
    #[error(
        "{path} has mode {mode:04o}: others may read or change it, so it is refused; it must be 0600 (chmod 600 {path}), and log in again if someone else may have read it",
        path = .path.display()
    )]
    TooOpen { path: PathBuf, mode: u32 },
    #[error("{} is not a regular file", .0.display())]
    NotAFile(PathBuf),
    #[error(
        "{} is a symbolic link: refused, since it could point anywhere; remove it and run `portcullis login` again",
        .0.display()
    )]
    Symlink(PathBuf),
    #[error(
        "{path} belongs to uid {owner}, not to you (uid {you}): refused; remove it and run `portcullis login` again",
        path = .path.display()
    )]
    NotOwned { path: PathBuf, owner: u32, you: u32 },
    #[error(
        "the directory {path} {why}, so someone else could replace the credentials file in it: refused; it must be yours and writable only by you (chmod 700 {path})",
        path = .path.display()
    )]
    UnsafeDir { path: PathBuf, why: String },
    #[error("{}: {source}", .path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{} is not a portcullis credentials file ({source}); run `portcullis login` again", .path.display())]
    Corrupt {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
}

/// How the tokens were obtained, which decides how they are renewed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Grant {
    /// RFC 8628 device authorization grant: a person approved it; renewed
    /// with the refresh token.
    DeviceCode,
    /// Client credentials from the environment (a service account); renewed
    /// by asking again with them (never stored).
    ClientCredentials,
}

/// What the file holds. Never the client secret.
#[derive(Clone, Serialize, Deserialize)]
pub struct Credentials {
    pub issuer: String,
    pub client_id: String,
    pub grant: Grant,
    pub token_endpoint: String,
    #[serde(default)]
    pub revocation_endpoint: Option<String>,
    #[serde(default)]
    pub end_session_endpoint: Option<String>,
    pub access_token: String,
    #[serde(default)]
    pub refresh_token: Option<String>,
    pub expires_at: DateTime<Utc>,
    /// Scopes asked for at login (asked again on a client-credentials renewal).
    #[serde(default)]
    pub scopes: Vec<String>,
    /// `login --insecure-http` was given: renewals may use a plain-http
    /// issuer off this machine too.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub insecure_http: bool,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("issuer", &self.issuer)
            .field("client_id", &self.client_id)
            .field("grant", &self.grant)
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

/// `$XDG_CONFIG_HOME/portcullis/credentials`; an XDG_CONFIG_HOME that is
/// not absolute is ignored, as the XDG spec says.
pub fn path() -> Result<PathBuf, CredentialsError> {
    let xdg = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute());
    let base = match xdg {
        Some(p) => p,
        None => std::env::var_os("HOME")
            .map(PathBuf::from)
            .filter(|p| p.is_absolute())
            .map(|h| h.join(".config"))
            .ok_or(CredentialsError::NoHome)?,
    };
    Ok(base.join("portcullis").join("credentials"))
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> CredentialsError + '_ {
    move |source| CredentialsError::Io {
        path: path.to_owned(),
        source,
    }
}

impl CredentialsError {
    /// A file or directory that must not be used or written (as opposed
    /// to one that is missing or unreadable as JSON).
    pub fn is_unsafe(&self) -> bool {
        matches!(
            self,
            CredentialsError::TooOpen { .. }
                | CredentialsError::NotAFile(_)
                | CredentialsError::Symlink(_)
                | CredentialsError::NotOwned { .. }
                | CredentialsError::UnsafeDir { .. }
        )
    }
}

/// The effective uid: whose files these must be.
fn euid() -> u32 {
    rustix::process::geteuid().as_raw()
}

/// `O_NOFOLLOW`: a symbolic link in the last component is an error
/// (ELOOP), not followed. `O_NONBLOCK`: a FIFO put there does not hang the
/// open (it is refused as not a regular file right after).
fn no_follow() -> i32 {
    use rustix::fs::OFlags;
    (OFlags::NOFOLLOW | OFlags::NONBLOCK).bits() as i32
}

/// The directory the file lives in: the user's or root's, and writable by
/// neither group nor others. Symbolic links to it are followed (a
/// `~/.config` that is a link to the user's own directory is fine): what
/// matters is who can change the directory itself.
fn check_dir(dir: &Path) -> Result<(), CredentialsError> {
    let meta = fs::metadata(dir).map_err(io(dir))?;
    let bad = |why: String| CredentialsError::UnsafeDir {
        path: dir.to_owned(),
        why,
    };
    if !meta.is_dir() {
        return Err(bad("is not a directory".into()));
    }
    let you = euid();
    if meta.uid() != you && meta.uid() != 0 {
        return Err(bad(format!(
            "belongs to uid {}, not to you (uid {you})",
            meta.uid()
        )));
    }
    let mode = meta.mode() & 0o7777;
    if mode & 0o022 != 0 {
        return Err(bad(format!("has mode {mode:04o}")));
    }
    Ok(())
}

/// Opens the file without following a link and checks the descriptor:
/// a regular file the user owns. Its mode is returned for the caller.
fn open_checked(path: &Path) -> Result<(File, u32), CredentialsError> {
    let f = match OpenOptions::new()
        .read(true)
        .custom_flags(no_follow())
        .open(path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(CredentialsError::Missing(path.to_owned()));
        }
        Err(e) if e.raw_os_error() == Some(rustix::io::Errno::LOOP.raw_os_error()) => {
            return Err(CredentialsError::Symlink(path.to_owned()));
        }
        Err(e) => return Err(io(path)(e)),
    };
    let meta = f.metadata().map_err(io(path))?;
    if !meta.file_type().is_file() {
        return Err(CredentialsError::NotAFile(path.to_owned()));
    }
    let you = euid();
    if meta.uid() != you {
        return Err(CredentialsError::NotOwned {
            path: path.to_owned(),
            owner: meta.uid(),
            you,
        });
    }
    Ok((f, meta.mode() & 0o7777))
}

fn parse(path: &Path, mut f: File) -> Result<Credentials, CredentialsError> {
    let mut text = Vec::new();
    f.read_to_end(&mut text).map_err(io(path))?;
    serde_json::from_slice(&text).map_err(|source| CredentialsError::Corrupt {
        path: path.to_owned(),
        source,
    })
}

/// The parent directory, checked; a missing one means not logged in.
fn checked_parent(path: &Path) -> Result<(), CredentialsError> {
    let Some(dir) = path.parent() else {
        return Ok(());
    };
    match fs::metadata(dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            Err(CredentialsError::Missing(path.to_owned()))
        }
        _ => check_dir(dir),
    }
}

/// Reads the file, refusing a link, a file that is not the user's, one
/// with wider permissions than 0600, or one in a directory others may
/// write.
pub fn load(path: &Path) -> Result<Credentials, CredentialsError> {
    checked_parent(path)?;
    let (f, mode) = open_checked(path)?;
    if mode & 0o077 != 0 {
        return Err(CredentialsError::TooOpen {
            path: path.to_owned(),
            mode,
        });
    }
    parse(path, f)
}

/// For `logout`: reads a file that would be refused only for being too
/// open (or in a directory others may write), returning why as a warning.
/// Such a file may have been read by someone else, which is exactly when
/// its session should be ended; a link or someone else's file is still
/// refused (it is not this user's login to end).
pub fn load_for_logout(
    path: &Path,
) -> Result<(Credentials, Option<CredentialsError>), CredentialsError> {
    let dir_warning = match checked_parent(path) {
        Ok(()) => None,
        Err(e @ CredentialsError::UnsafeDir { .. }) => Some(e),
        Err(e) => return Err(e),
    };
    let (f, mode) = open_checked(path)?;
    let warning = if mode & 0o077 != 0 {
        Some(CredentialsError::TooOpen {
            path: path.to_owned(),
            mode,
        })
    } else {
        dir_warning
    };
    Ok((parse(path, f)?, warning))
}

/// An exclusive `flock` on `credentials.lock` beside the file, held until
/// dropped: one process at a time renews, logs in or logs out, so two
/// commands never spend the same refresh token (Keycloak rotates them: the
/// second would get `invalid_grant`). The lock file is never removed
/// (removing it would let two processes lock two different files).
pub struct Lock {
    _file: File,
}

fn lock_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_owned();
    name.push(".lock");
    path.with_file_name(name)
}

fn lock_blocking(path: &Path, create_dir: bool) -> Result<Lock, CredentialsError> {
    if let Some(dir) = path.parent() {
        if create_dir {
            DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(io(dir))?;
        }
        checked_parent(path)?;
    }
    let lp = lock_path(path);
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .custom_flags(no_follow())
        .open(&lp)
        .map_err(|e| {
            if e.raw_os_error() == Some(rustix::io::Errno::LOOP.raw_os_error()) {
                CredentialsError::Symlink(lp.clone())
            } else {
                io(&lp)(e)
            }
        })?;
    let meta = f.metadata().map_err(io(&lp))?;
    if !meta.file_type().is_file() {
        return Err(CredentialsError::NotAFile(lp));
    }
    rustix::fs::flock(&f, rustix::fs::FlockOperation::LockExclusive)
        .map_err(|e| io(&lp)(e.into()))?;
    Ok(Lock { _file: f })
}

/// Waits for the lock (off the async threads). `create_dir`: make the
/// directory first (login); otherwise a missing one is [`CredentialsError::Missing`].
pub async fn lock(path: &Path, create_dir: bool) -> Result<Lock, CredentialsError> {
    let p = path.to_owned();
    tokio::task::spawn_blocking(move || lock_blocking(&p, create_dir))
        .await
        .map_err(|e| io(path)(std::io::Error::other(e)))?
}

/// Writes the file atomically: a new 0600 file beside it, then a rename,
/// so a reader never sees half a file and the mode is never wider. The
/// directory is created 0700 when missing, and refused when it exists but
/// others may write it.
pub fn save(path: &Path, c: &Credentials) -> Result<(), CredentialsError> {
    if let Some(dir) = path.parent() {
        DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(io(dir))?;
        check_dir(dir)?;
    }
    let tmp = path.with_extension(format!("tmp-{}", std::process::id()));
    let _ = fs::remove_file(&tmp);
    let write = || -> std::io::Result<()> {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(no_follow())
            .open(&tmp)?;
        // The umask cannot widen 0600, but a file system may: make sure.
        f.set_permissions(fs::Permissions::from_mode(0o600))?;
        f.write_all(&serde_json::to_vec_pretty(c).map_err(std::io::Error::other)?)?;
        f.sync_all()?;
        fs::rename(&tmp, path)
    };
    write().map_err(|e| {
        let _ = fs::remove_file(&tmp);
        io(path)(e)
    })
}

/// Removes the file; `false` when there was none.
pub fn remove(path: &Path) -> Result<bool, CredentialsError> {
    match fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(io(path)(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Credentials {
        Credentials {
            issuer: "https://kc.example.org/realms/x".into(),
            client_id: "cli".into(),
            grant: Grant::DeviceCode,
            token_endpoint: "https://kc.example.org/realms/x/protocol/openid-connect/token".into(),
            revocation_endpoint: None,
            end_session_endpoint: None,
            access_token: "secret-access".into(),
            refresh_token: Some("secret-refresh".into()),
            expires_at: Utc::now(),
            scopes: vec![],
            insecure_http: false,
        }
    }

    #[test]
    fn saved_0600_in_a_0700_dir_and_read_back() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("portcullis").join("credentials");
        save(&p, &sample()).unwrap();
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&p), 0o600);
        assert_eq!(mode(p.parent().unwrap()), 0o700);
        assert_eq!(load(&p).unwrap().access_token, "secret-access");
        let dbg = format!("{:?}", load(&p).unwrap());
        assert!(!dbg.contains("secret"), "{dbg}");
    }

    #[test]
    fn wider_modes_are_refused_and_missing_says_log_in() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("credentials");
        assert!(matches!(load(&p), Err(CredentialsError::Missing(_))));
        save(&p, &sample()).unwrap();
        for m in [0o644, 0o640, 0o604, 0o660, 0o666] {
            fs::set_permissions(&p, fs::Permissions::from_mode(m)).unwrap();
            let e = load(&p).unwrap_err();
            assert!(matches!(e, CredentialsError::TooOpen { .. }), "{m:o}: {e}");
            assert!(e.to_string().contains("chmod 600"), "{e}");
        }
        fs::set_permissions(&p, fs::Permissions::from_mode(0o400)).unwrap();
        assert!(load(&p).is_ok(), "narrower than 0600 is fine");
        assert!(remove(&p).unwrap());
        assert!(!remove(&p).unwrap());
    }

    #[test]
    fn a_0600_file_in_a_directory_others_may_write_is_refused() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("portcullis");
        let p = dir.join("credentials");
        save(&p, &sample()).unwrap();
        for m in [0o777, 0o770, 0o702, 0o1777] {
            fs::set_permissions(&dir, fs::Permissions::from_mode(m)).unwrap();
            let e = load(&p).unwrap_err();
            assert!(
                matches!(e, CredentialsError::UnsafeDir { .. }),
                "{m:o}: {e}"
            );
            assert!(e.to_string().contains("chmod 700"), "{e}");
            let e = save(&p, &sample()).unwrap_err();
            assert!(
                matches!(e, CredentialsError::UnsafeDir { .. }),
                "{m:o}: {e}"
            );
        }
        // Readable by others but not writable: nothing can be swapped in.
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
        assert!(load(&p).is_ok());
    }

    #[test]
    fn a_symlink_is_refused_even_to_a_good_file() {
        let d = tempfile::tempdir().unwrap();
        let real = d.path().join("real");
        save(&real, &sample()).unwrap();
        let p = d.path().join("credentials");
        std::os::unix::fs::symlink(&real, &p).unwrap();
        let e = load(&p).unwrap_err();
        assert!(matches!(e, CredentialsError::Symlink(_)), "{e}");
        assert!(e.is_unsafe());
        // A dangling one too (it would be created through on a naive open).
        fs::remove_file(&real).unwrap();
        assert!(matches!(load(&p), Err(CredentialsError::Symlink(_))));
        // Not a regular file: refused, and a FIFO does not hang the open.
        let fifo = d.path().join("fifo");
        assert!(
            std::process::Command::new("mkfifo")
                .arg(&fifo)
                .status()
                .unwrap()
                .success()
        );
        assert!(matches!(load(&fifo), Err(CredentialsError::NotAFile(_))));
        // Saving replaces the link itself, never writes through it.
        save(&p, &sample()).unwrap();
        assert!(!fs::symlink_metadata(&p).unwrap().file_type().is_symlink());
        assert!(!real.exists());
    }

    #[test]
    fn logout_reads_a_too_open_file_with_a_warning_but_not_a_link() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("credentials");
        save(&p, &sample()).unwrap();
        let (_, w) = load_for_logout(&p).unwrap();
        assert!(w.is_none());
        fs::set_permissions(&p, fs::Permissions::from_mode(0o644)).unwrap();
        let (c, w) = load_for_logout(&p).unwrap();
        assert_eq!(c.refresh_token.as_deref(), Some("secret-refresh"));
        assert!(matches!(w, Some(CredentialsError::TooOpen { .. })), "{w:?}");
        fs::set_permissions(&p, fs::Permissions::from_mode(0o600)).unwrap();
        fs::set_permissions(d.path(), fs::Permissions::from_mode(0o777)).unwrap();
        let (_, w) = load_for_logout(&p).unwrap();
        assert!(
            matches!(w, Some(CredentialsError::UnsafeDir { .. })),
            "{w:?}"
        );
        fs::set_permissions(d.path(), fs::Permissions::from_mode(0o700)).unwrap();
        let l = d.path().join("link");
        std::os::unix::fs::symlink(&p, &l).unwrap();
        assert!(matches!(
            load_for_logout(&l),
            Err(CredentialsError::Symlink(_))
        ));
    }

    #[tokio::test]
    async fn the_lock_is_exclusive_and_a_linked_lock_file_refused() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("portcullis").join("credentials");
        assert!(matches!(
            lock(&p, false).await,
            Err(CredentialsError::Missing(_))
        ));
        let held = lock(&p, true).await.unwrap();
        // Another open file description cannot take it while it is held…
        let other = File::open(lock_path(&p)).unwrap();
        let try_lock =
            || rustix::fs::flock(&other, rustix::fs::FlockOperation::NonBlockingLockExclusive);
        assert_eq!(try_lock(), Err(rustix::io::Errno::WOULDBLOCK));
        drop(held);
        // …and can once it is dropped.
        try_lock().unwrap();
        drop(other);
        lock(&p, false).await.unwrap();
        let lp = lock_path(&p);
        fs::remove_file(&lp).unwrap();
        std::os::unix::fs::symlink(d.path().join("x"), &lp).unwrap();
        assert!(matches!(
            lock(&p, false).await,
            Err(CredentialsError::Symlink(_))
        ));
    }

    #[test]
    fn someone_elses_file_is_refused() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("credentials");
        save(&p, &sample()).unwrap();
        // Giving a file away needs root; elsewhere this part cannot run.
        if std::os::unix::fs::chown(&p, Some(euid() + 4242), None).is_err() {
            eprintln!("not root: cannot give the file to another uid");
            return;
        }
        let e = load(&p).unwrap_err();
        assert!(matches!(e, CredentialsError::NotOwned { .. }), "{e}");
        // A directory of someone else's (not root's) is refused too.
        std::os::unix::fs::chown(&p, Some(euid()), None).unwrap();
        std::os::unix::fs::chown(d.path(), Some(euid() + 4242), None).unwrap();
        let e = load(&p).unwrap_err();
        assert!(matches!(e, CredentialsError::UnsafeDir { .. }), "{e}");
        std::os::unix::fs::chown(d.path(), Some(euid()), None).unwrap();
    }
}
