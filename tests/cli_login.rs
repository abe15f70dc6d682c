//! `portcullis login --client-credentials` (a service account, no person)
//! against the real Keycloak 26, then `token create --api` for its own
//! token: refused where `api.manage_kinds` leaves service accounts out,
//! allowed where it lists them. And the clear, non-zero failures of the
//! login commands: a wrong issuer URL, missing client credentials, the API
//! unreachable, a credentials file others may read, an expired
//! client-credentials login without the environment to renew it.
//!
//! Needs Keycloak: `scripts/test` starts it; alone, `cargo test --test
//! cli_login` starts its own.

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use portcullis::server::Running;
use portcullis_testkit::check::{Req, allowed, check, serve_yaml, wait_ready};
use portcullis_testkit::cli::{Cli, Tripwire};
use portcullis_testkit::oidc::signin_config;
use portcullis_testkit::real_keycloak::{READY, RealKeycloak, SHIPPED_SECRET};
use portcullis_testkit::wait::eventually;
use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_portcullis");

async fn server(kc: &RealKeycloak, manage_kinds: &str) -> (Running, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let api = format!("  manage_kinds: {manage_kinds}");
    let srv = serve_yaml(&signin_config(kc, &api, ""), dir.path(), false).await;
    wait_ready(&srv, READY).await;
    (srv, dir)
}

/// The shipped `automation` client, from the environment.
fn service_account() -> Cli {
    let mut cli = Cli::new(BIN);
    cli.set_env("PORTCULLIS_CLIENT_ID", "automation");
    cli.set_env("PORTCULLIS_CLIENT_SECRET", SHIPPED_SECRET);
    cli
}

#[tokio::test]
async fn service_account_manages_its_own_tokens_only_where_manage_kinds_allows() {
    let kc = RealKeycloak::get().await;
    let cli = service_account();
    let out = cli
        .run(&["login", "--issuer", &kc.issuer(), "--client-credentials"])
        .await;
    assert!(out.ok(), "{out:?}");
    assert!(
        out.stderr.contains("as service-account-automation"),
        "{out:?}"
    );
    let mode = std::fs::metadata(cli.credentials())
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let stored = std::fs::read_to_string(cli.credentials()).unwrap();
    assert!(
        !stored.contains(SHIPPED_SECRET),
        "the client secret is never stored"
    );

    // api.manage_kinds: [jwt] (the default): refused, saying why.
    let (users_only, _d1) = server(&kc, "[jwt]").await;
    let api = format!("http://{}", users_only.http_addr);
    let args = [
        "token",
        "create",
        "--api",
        &api,
        "--name",
        "nightly",
        "--scopes",
        "uploads:read",
    ];
    let out = cli.run(&args).await;
    out.expect_err("credential kind service_account cannot manage tokens");
    assert!(out.stdout.is_empty(), "{out:?}");

    // [jwt, service_account]: its own token, through the API's rules.
    let (both, _d2) = server(&kc, "[jwt, service_account]").await;
    let api = format!("http://{}", both.http_addr);
    let args = [
        "token",
        "create",
        "--api",
        &api,
        "--name",
        "nightly",
        "--scopes",
        "uploads:read",
    ];
    let out = cli.run(&args).await;
    let pat = out.expect_ok().trim().to_owned();
    assert_eq!(out.stdout, format!("{pat}\n"));
    let (h, _) = allowed(&check(both.grpc_addr, &Req::get("/api/v1/uploads/1").bearer(&pat)).await);
    assert_eq!(h["x-auth-username"], "service-account-automation");
    assert_eq!(h["x-auth-method"], "pat");
    let out = cli.run(&["token", "list", "--api", &api, "--json"]).await;
    let list: Value = serde_json::from_str(out.expect_ok()).unwrap();
    assert_eq!(list.as_array().unwrap().len(), 1, "{list}");
    // Where it was last used from, as the page and the API show it (the
    // Check above is flushed later, so not yet known: null, and "-").
    for k in ["last_used_ip", "last_used_user_agent"] {
        assert!(list[0].get(k).is_some(), "{k} in {list}");
    }
    let table = cli.run(&["token", "list", "--api", &api]).await;
    let head = table
        .expect_ok()
        .lines()
        .next()
        .unwrap_or_default()
        .to_owned();
    assert!(
        head.contains("LAST IP") && head.contains("LAST USER AGENT"),
        "{table:?}"
    );

    // Expired: renewed with the environment's credentials (never stored)…
    let mut c: Value = serde_json::from_slice(&std::fs::read(cli.credentials()).unwrap()).unwrap();
    c["expires_at"] = json!("2020-01-01T00:00:00Z");
    std::fs::write(cli.credentials(), serde_json::to_vec(&c).unwrap()).unwrap();
    cli.run(&["token", "list", "--api", &api]).await.expect_ok();
    // …and without them, a clear refusal.
    let mut c: Value = serde_json::from_slice(&std::fs::read(cli.credentials()).unwrap()).unwrap();
    c["expires_at"] = json!("2020-01-01T00:00:00Z");
    std::fs::write(cli.credentials(), serde_json::to_vec(&c).unwrap()).unwrap();
    let mut bare = service_account();
    std::fs::create_dir_all(bare.credentials().parent().unwrap()).unwrap();
    std::fs::copy(cli.credentials(), bare.credentials()).unwrap();
    bare.unset_env("PORTCULLIS_CLIENT_ID");
    bare.unset_env("PORTCULLIS_CLIENT_SECRET");
    bare.run(&["token", "list", "--api", &api])
        .await
        .expect_err("client credentials are never stored");

    // Logout forgets it (a client-credentials login has no session).
    cli.run(&["logout"]).await.expect_ok();
    assert!(!cli.credentials().exists());
}

#[tokio::test]
async fn login_failures_are_clear_and_non_zero() {
    let kc = RealKeycloak::get().await;
    let cli = service_account();
    // A realm that does not exist; a trailing slash (another issuer); a
    // closed port; not a URL.
    let nope = format!("{}/realms/nope", kc.base);
    let slash = format!("{}/", kc.issuer());
    for (issuer, needle) in [
        (nope.as_str(), "HTTP 404"),
        (slash.as_str(), "calls itself"),
        ("http://127.0.0.1:1/realms/x", "cannot fetch"),
        ("not a url", "not a URL"),
    ] {
        let out = cli
            .run(&["login", "--issuer", issuer, "--client-credentials"])
            .await;
        out.expect_err(&format!("--issuer {issuer}: "));
        out.expect_err(needle);
        assert!(!cli.credentials().exists());
    }
    // A wrong secret: the provider's refusal, named.
    let mut wrong = Cli::new(BIN);
    wrong.set_env("PORTCULLIS_CLIENT_ID", "automation");
    wrong.set_env("PORTCULLIS_CLIENT_SECRET", "wrong");
    wrong
        .run(&["login", "--issuer", &kc.issuer(), "--client-credentials"])
        .await
        .expect_err("the provider refused the client credentials login: unauthorized_client");
    // No client credentials in the environment.
    Cli::new(BIN)
        .run(&["login", "--issuer", &kc.issuer(), "--client-credentials"])
        .await
        .expect_err("PORTCULLIS_CLIENT_ID is not set");
}

#[tokio::test]
async fn token_commands_fail_clearly_when_not_logged_in_unreachable_or_the_file_is_open() {
    let kc = RealKeycloak::get().await;
    let cli = service_account();
    cli.run(&["token", "list", "--api", "http://127.0.0.1:9"])
        .await
        .expect_err("not logged in");
    cli.run(&["login", "--issuer", &kc.issuer(), "--client-credentials"])
        .await
        .expect_ok();

    // The API unreachable.
    let out = cli
        .run(&["token", "list", "--api", "http://127.0.0.1:9"])
        .await;
    out.expect_err("cannot reach the API at http://127.0.0.1:9");

    // Something that is not the API.
    let out = cli
        .run(&["token", "list", "--api", &format!("{}/realms", kc.base)])
        .await;
    out.expect_err("is --api the portcullis HTTP address");

    // A credentials file others may read is refused, by every command that
    // would use it, and by login (which would overwrite it).
    let path = cli.credentials();
    for mode in [0o644, 0o640, 0o606] {
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        let out = cli
            .run(&["token", "list", "--api", "http://127.0.0.1:9"])
            .await;
        out.expect_err(&format!("has mode {mode:04o}"));
        out.expect_err("chmod 600");
        cli.run(&["login", "--issuer", &kc.issuer(), "--client-credentials"])
            .await
            .expect_err("must be 0600");
    }
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    cli.run(&["token", "list", "--api", "http://127.0.0.1:9"])
        .await
        .expect_err("cannot reach the API");

    // A 0600 file in a directory others may write (they could swap it).
    let dir = path.parent().unwrap().to_owned();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
    cli.run(&["token", "list", "--api", "http://127.0.0.1:9"])
        .await
        .expect_err("chmod 700");
    cli.run(&["login", "--issuer", &kc.issuer(), "--client-credentials"])
        .await
        .expect_err("chmod 700");
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();

    // A symbolic link, even to a good 0600 file of the user's.
    let real = dir.join("elsewhere");
    std::fs::rename(&path, &real).unwrap();
    std::os::unix::fs::symlink(&real, &path).unwrap();
    cli.run(&["token", "list", "--api", "http://127.0.0.1:9"])
        .await
        .expect_err("is a symbolic link");
    std::fs::remove_file(&path).unwrap();
    std::fs::rename(&real, &path).unwrap();

    // Logout still removes a too-open file.
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    cli.run(&["logout"]).await.expect_ok();
    assert!(!path.exists());
}

/// Marks the stored login expired, so the next command renews it first.
fn expire(cli: &Cli) {
    let mut c: Value = serde_json::from_slice(&std::fs::read(cli.credentials()).unwrap()).unwrap();
    c["expires_at"] = json!("2020-01-01T00:00:00Z");
    std::fs::write(cli.credentials(), serde_json::to_vec(&c).unwrap()).unwrap();
}

/// Plain http to a host other than this machine is refused before the
/// login is read or renewed, for `--api` and `--issuer`; `--insecure-http`
/// is the user's explicit way past it.
#[tokio::test]
async fn plain_http_off_this_machine_is_refused_before_anything_is_sent() {
    let kc = RealKeycloak::get().await;
    let cli = service_account();
    cli.run(&["login", "--issuer", &kc.issuer(), "--client-credentials"])
        .await
        .expect_ok();
    // Expired: a renewal would post the client secret; the refusal comes first.
    expire(&cli);
    let needle = "refusing to send credentials over plain http";
    for api in ["http://example.org", "http://10.0.0.1:9192/x"] {
        let out = cli.run(&["token", "list", "--api", api]).await;
        out.expect_err(needle);
        out.expect_err("--insecure-http");
    }
    cli.run(&[
        "login",
        "--issuer",
        "http://keycloak.example.org/realms/example",
        "--client-credentials",
    ])
    .await
    .expect_err(&format!(
        "--issuer http://keycloak.example.org/realms/example: {needle}"
    ));
    let stored: Value = serde_json::from_slice(&std::fs::read(cli.credentials()).unwrap()).unwrap();
    assert_eq!(
        stored["expires_at"],
        json!("2020-01-01T00:00:00Z"),
        "nothing was renewed"
    );

    // A listener on this machine's own network address sees nothing…
    let Some(far) = Tripwire::start().await else {
        eprintln!("no non-loopback address here: the far-listener half is not run");
        return;
    };
    cli.run(&["token", "list", "--api", &far.url])
        .await
        .expect_err(needle);
    cli.run(&[
        "login",
        "--issuer",
        &format!("{}/realms/x", far.url),
        "--client-credentials",
    ])
    .await
    .expect_err(needle);
    assert!(far.seen().is_empty(), "{:?}", far.seen());
    // …unless the user says --insecure-http (the login is renewed first,
    // at the loopback Keycloak, then the API call goes out in clear).
    cli.run(&["token", "list", "--api", &far.url, "--insecure-http"])
        .await
        .expect_err("is --api the portcullis HTTP address");
    let seen = far.seen();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert!(
        seen[0]
            .to_ascii_lowercase()
            .contains("authorization: bearer "),
        "{seen:?}"
    );
    // `--insecure-http` belongs to `--api`.
    Cli::new(BIN)
        .run(&["token", "list", "--user", "u", "--dev", "--insecure-http"])
        .await
        .expect_err("--insecure-http goes with --api URL");
}

/// A renewal never posts to a token endpoint only the credentials file
/// names: the issuer is asked again, and a file naming another endpoint is
/// refused with nothing sent (here the client secret from the environment).
#[tokio::test]
async fn renewal_refuses_a_token_endpoint_the_issuer_does_not_name() {
    let kc = RealKeycloak::get().await;
    let cli = service_account();
    cli.run(&["login", "--issuer", &kc.issuer(), "--client-credentials"])
        .await
        .expect_ok();
    let other = Tripwire::loopback().await;
    let mut c: Value = serde_json::from_slice(&std::fs::read(cli.credentials()).unwrap()).unwrap();
    let real = c["token_endpoint"].clone();
    c["token_endpoint"] = json!(format!("{}/token", other.url));
    c["expires_at"] = json!("2020-01-01T00:00:00Z");
    std::fs::write(cli.credentials(), serde_json::to_vec(&c).unwrap()).unwrap();
    let out = cli
        .run(&["token", "list", "--api", "http://127.0.0.1:9"])
        .await;
    out.expect_err("cannot renew your login");
    out.expect_err("the credentials file names the token endpoint");
    assert!(other.seen().is_empty(), "{:?}", other.seen());
    // Put back, the same file renews at the issuer's endpoint.
    c["token_endpoint"] = real;
    std::fs::write(cli.credentials(), serde_json::to_vec(&c).unwrap()).unwrap();
    cli.run(&["token", "list", "--api", "http://127.0.0.1:9"])
        .await
        .expect_err("cannot reach the API");
    let renewed: Value =
        serde_json::from_slice(&std::fs::read(cli.credentials()).unwrap()).unwrap();
    assert_ne!(renewed["expires_at"], json!("2020-01-01T00:00:00Z"));
}

/// Two commands never renew at once: a second waits for the first's lock
/// and then reads the file again, finding the renewed login (here put
/// there by the test while the command waits; without the lock and the
/// second read it would try to renew, which fails without the client
/// secret in the environment).
#[tokio::test]
async fn a_renewal_waits_for_the_lock_and_reads_the_file_again() {
    let kc = RealKeycloak::get().await;
    let mut cli = service_account();
    cli.run(&["login", "--issuer", &kc.issuer(), "--client-credentials"])
        .await
        .expect_ok();
    let fresh = std::fs::read(cli.credentials()).unwrap();
    expire(&cli);
    cli.unset_env("PORTCULLIS_CLIENT_ID");
    cli.unset_env("PORTCULLIS_CLIENT_SECRET");
    let held = cli.hold_credentials_lock();
    let holder = async {
        eventually(
            Duration::from_secs(20),
            "token list waits on the lock",
            async || {
                if cli.someone_waits_on_credentials_lock() {
                    Ok(())
                } else {
                    Err("nobody waits")
                }
            },
        )
        .await;
        // What the process we stand for would have written: a renewed login.
        std::fs::write(cli.credentials(), &fresh).unwrap();
        drop(held);
    };
    let ((), out) = tokio::join!(
        holder,
        cli.run(&["token", "list", "--api", "http://127.0.0.1:9"])
    );
    // Past the login (read again, fresh): on to the (absent) API.
    out.expect_err("cannot reach the API at http://127.0.0.1:9");
}

/// The operator commands under their new name and their old spelling
/// write to the same store.
#[tokio::test]
async fn admin_token_and_the_older_token_spelling_are_the_same_commands() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_str().unwrap();
    // The dev issuer must exist for `--dev` to default the owner's issuer.
    let srv = serve_yaml("", dir.path(), true).await;
    let cli = Cli::new(BIN);
    let mut pats = Vec::new();
    for cmd in [&["admin", "token"][..], &["token"][..]] {
        let mut args: Vec<&str> = cmd.to_vec();
        args.extend([
            "create",
            "--dev",
            "--data-dir",
            data,
            "--user",
            "alice",
            "--username",
            "alice",
            "--name",
            "ops",
            "--scopes",
            "a:read",
        ]);
        let out = cli.run(&args).await;
        pats.push(out.expect_ok().trim().to_owned());
    }
    let out = cli
        .run(&[
            "admin",
            "token",
            "list",
            "--dev",
            "--data-dir",
            data,
            "--user",
            "alice",
        ])
        .await;
    assert_eq!(out.expect_ok().matches("ops").count(), 2, "{out:?}");
    for pat in &pats {
        allowed(&check(srv.grpc_addr, &Req::get("/x").bearer(pat)).await);
    }
    // `--api` and the operator flags do not mix.
    let out = cli
        .run(&[
            "token",
            "create",
            "--api",
            "http://127.0.0.1:9",
            "--user",
            "alice",
            "--name",
            "x",
            "--scopes",
            "a:read",
        ])
        .await;
    out.expect_err("cannot be used with");
}
