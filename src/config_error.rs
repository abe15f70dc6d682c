//! [`ConfigError`]: one configuration problem, naming the key.
//!
//! A module of its own, below every section: each subsystem validates the
//! section it owns and returns these, and `config` only gathers them. If
//! the type lived in `config`, every section owner would import `config`
//! while `config` imports them (an import cycle).

/// A configuration problem: which key, what is wrong, what is accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {message}")]
pub struct ConfigError {
    /// Dotted path of the offending key, e.g. `issuers[0].algorithms[1]`.
    pub key: String,
    /// What is wrong and what would be accepted.
    pub message: String,
}

impl ConfigError {
    pub fn new(key: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError {
            key: key.into(),
            message: message.into(),
        }
    }
}

/// Collects a section's problems; `check` pushes when a rule is broken.
#[derive(Debug, Default)]
pub struct Problems(Vec<ConfigError>);

impl Problems {
    /// Records a problem with `key` unless `ok`.
    pub fn check(&mut self, ok: bool, key: &str, message: impl FnOnce() -> String) {
        if !ok {
            self.0.push(ConfigError::new(key, message()));
        }
    }

    pub fn push(&mut self, key: impl Into<String>, message: impl Into<String>) {
        self.0.push(ConfigError::new(key, message));
    }

    pub fn extend(&mut self, more: impl IntoIterator<Item = ConfigError>) {
        self.0.extend(more);
    }

    pub fn into_vec(self) -> Vec<ConfigError> {
        self.0
    }
}
