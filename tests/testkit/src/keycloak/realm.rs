//! The Keycloak stand-in's realm set-up: clients, users, and the claims,
//! lifetimes, audience and algorithm of the tokens it issues.

use std::time::Duration;

use jsonwebtoken::Algorithm;
use serde_json::Value;

use super::keys::{Family, family};
use super::{Client, FakeKeycloak, User, new_uuid};

impl FakeKeycloak {
    /// Registers (or replaces) a client. `secret: None` = public client.
    /// `can_exchange` = "Standard token exchange" enabled for the client.
    pub fn add_client(&self, client_id: &str, secret: Option<&str>, can_exchange: bool) {
        self.shared.lock().clients.insert(
            client_id.to_owned(),
            Client {
                secret: secret.map(str::to_owned),
                can_exchange,
                service_account_sub: new_uuid(),
            },
        );
    }

    /// Registers (or replaces) a user for the `password` grant. `realm_roles`
    /// are added to the realm's default roles; `scope` is the scope of the
    /// user's tokens (a requested `scope` is added to it).
    pub fn add_user(
        &self,
        username: &str,
        password: &str,
        sub: &str,
        realm_roles: &[&str],
        scope: &str,
    ) {
        self.shared.lock().users.insert(
            username.to_owned(),
            User {
                username: username.to_owned(),
                password: password.to_owned(),
                sub: sub.to_owned(),
                realm_roles: realm_roles.iter().map(|r| (*r).to_owned()).collect(),
                scope: scope.to_owned(),
            },
        );
    }

    /// Claims merged into every token issued by token exchange (e.g.
    /// `{"token_use": "pat"}`). Must be a JSON object.
    pub fn set_exchange_extra_claims(&self, v: Value) {
        let Value::Object(map) = v else {
            panic!("set_exchange_extra_claims expects a JSON object");
        };
        self.shared.lock().exchange_extra_claims = map;
    }

    /// Lifetime (`exp - iat`, `expires_in`) of exchanged tokens (default 300 s).
    pub fn set_exchange_lifetime(&self, d: Duration) {
        self.shared.lock().exchange_lifetime = d;
    }

    /// Lifetime of tokens from `claims()`, `password` and
    /// `client_credentials` (default 300 s).
    pub fn set_access_token_lifetime(&self, d: Duration) {
        self.shared.lock().access_token_lifetime = d;
    }

    /// `aud` of tokens from `claims()`, `password` and `client_credentials`
    /// (default `["portcullis","account"]`; a string or an array).
    pub fn set_default_audience(&self, aud: Value) {
        self.shared.lock().default_audience = aud;
    }

    /// Algorithm of tokens issued by the token endpoint (default RS256).
    pub fn set_token_alg(&self, alg: Algorithm) {
        assert!(
            matches!(family(alg), Family::Rsa | Family::Ed) || alg == Algorithm::ES256,
            "token endpoint algorithm must be RS*/PS*, ES256 or EdDSA"
        );
        self.shared.lock().token_alg = alg;
    }
}
