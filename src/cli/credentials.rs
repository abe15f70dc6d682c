//! The credentials file `portcullis login` writes and the `token --api`
//! commands read: `$XDG_CONFIG_HOME/portcullis/credentials` (else
//! `~/.config/portcullis/credentials`), JSON, mode 0600 in a 0700
//! directory. A file anyone else may read or write is refused, not used:
//! it holds a refresh token, which is as good as the user's session.

use std::fs::{self, DirBuilder, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
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

/// Reads the file, refusing one with wider permissions than 0600.
pub fn load(path: &Path) -> Result<Credentials, CredentialsError> {
    let meta = match fs::symlink_metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(CredentialsError::Missing(path.to_owned()));
        }
        other => other.map_err(io(path))?,
    };
    if !meta.file_type().is_file() {
        return Err(CredentialsError::NotAFile(path.to_owned()));
    }
    let mode = meta.permissions().mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(CredentialsError::TooOpen {
            path: path.to_owned(),
            mode,
        });
    }
    let text = fs::read(path).map_err(io(path))?;
    serde_json::from_slice(&text).map_err(|source| CredentialsError::Corrupt {
        path: path.to_owned(),
        source,
    })
}

/// Writes the file atomically: a new 0600 file beside it, then a rename,
/// so a reader never sees half a file and the mode is never wider.
pub fn save(path: &Path, c: &Credentials) -> Result<(), CredentialsError> {
    if let Some(dir) = path.parent() {
        DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(io(dir))?;
    }
    let tmp = path.with_extension(format!("tmp-{}", std::process::id()));
    let _ = fs::remove_file(&tmp);
    let write = || -> std::io::Result<()> {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
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
}
