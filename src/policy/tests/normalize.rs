use std::borrow::Cow;

use super::{matched, policy};
use crate::policy::MatrixParams;
use crate::policy::path::{PathOptions, normalize_path, normalize_path_with};
use crate::policy::*;

const BYPASS: &str = r#"
policy:
  routes:
    - name: admin
      match: { path: { exact: /admin } }
      require: { all_of: ["admin:all"] }
    - name: admin-tree
      match: { path: { prefix: /admin } }
      require: { all_of: ["admin:all"] }
    - name: public
      match: { path: { prefix: /public } }
      auth: none
    - name: upload
      match: { path: { template: "/api/v1/uploads/{id}" } }
    - name: files
      match: { path: { template: "/api/v1/uploads/{id}/files/{*rest}" } }
"#;

#[test]
fn bypass_attempts() {
    let p = policy(BYPASS);
    let cases = [
        ("/admin", "admin"),
        ("/public/../admin", "admin"),
        ("/public/%2e%2e/admin", "admin"),
        ("/public/%2E%2E/admin", "admin"),
        ("/public/.%2e/admin", "admin"),
        ("/public/%2e/../admin", "admin"),
        ("/public/./../admin", "admin"),
        ("/public/x/../../admin", "admin"),
        ("//admin", "admin"),
        ("///admin//", "admin"),
        ("/admin/", "admin"),
        ("/./admin", "admin"),
        ("/admin?x=/public", "admin"),
        ("/admin#/public", "admin"),
        ("/admin?/../public", "admin"),
        ("/%61dmin", "admin"),
        ("/admin/x", "admin-tree"),
        ("/admin/../public", "public"),
        ("/admin/x/%2e%2e/%2e%2e/public", "public"),
        // Paths are case-sensitive: /ADMIN is a different resource (here: no route).
        ("/ADMIN", "<none>"),
        ("/Admin/x", "<none>"),
        // Decoded once only: %252e stays a literal "%2e" segment.
        ("/public/%252e%252e/admin", "public"),
        ("/publicity", "<none>"),
        // Rejected outright.
        ("/admin%2Fx", "<bad>"),
        ("/admin%2fx", "<bad>"),
        ("/public%2F..%2Fadmin", "<bad>"),
        ("/public/%2e%2e%2fadmin", "<bad>"),
        ("/public/..%2Fadmin", "<bad>"),
        ("/admin%5cx", "<bad>"),
        ("/public\\..\\admin", "<bad>"),
        ("/public/%00", "<bad>"),
        ("/public/\0", "<bad>"),
        ("/public/%0a", "<bad>"),
        ("/public/\t", "<bad>"),
        ("/public/%zz", "<bad>"),
        ("/public/%", "<bad>"),
        ("/public/%2", "<bad>"),
        ("/public/%ff", "<bad>"),
        ("/public/%c3", "<bad>"),
        ("/public/%c0%ae%c0%ae/admin", "<bad>"),
        ("/public/..;/admin", "<bad>"),
        ("/public/.;x/admin", "<bad>"),
        ("/public/%2e%2e;/admin", "<bad>"),
        ("/..", "<bad>"),
        ("/public/../../admin", "<bad>"),
        ("admin", "<bad>"),
        ("*", "<bad>"),
        ("http://x/admin", "<bad>"),
        ("", "<bad>"),
        ("?/admin", "<bad>"),
        // Templates.
        ("/api/v1/uploads/42", "upload"),
        ("/api/v1/uploads/42/files/a/b/c", "files"),
        ("/api/v1/uploads/42/x/y", "<none>"),
        ("/api/v1/uploads/42/files/../../43", "upload"),
        ("/api/v1/uploads/%34%32", "upload"),
    ];
    for (path, want) in cases {
        assert_eq!(matched(&p, "h", "GET", path), want, "{path:?}");
    }
}

#[test]
fn normalised_forms() {
    let cases: [(&str, Result<&str, &str>); 16] = [
        ("/", Ok("/")),
        ("/a/b", Ok("/a/b")),
        ("/a/b/", Ok("/a/b")),
        ("//", Ok("/")),
        ("/.", Ok("/")),
        ("/a/..", Ok("/")),
        ("/a/./b/../c//d/", Ok("/a/c/d")),
        ("/caf%C3%A9", Ok("/café")),
        ("/café", Ok("/café")),
        ("/a%20b+c", Ok("/a b+c")),
        ("/a%3Fb?c", Ok("/a%3Fb")),
        (
            "/a;x=1/b",
            Err("path segment with ';' parameters (policy.matrix_params: reject)"),
        ),
        ("/a%25", Ok("/a%25")),
        ("/a/../..", Err("'..' above the root")),
        ("/a%2Fb", Err("encoded slash (%2F)")),
        ("/a%5Cb", Err("encoded backslash (%5C)")),
    ];
    for (raw, want) in cases {
        assert_eq!(
            normalize_path(raw).as_deref().map_err(|e| *e),
            want,
            "{raw:?}"
        );
    }
    assert_eq!(normalize_path("/a%00").unwrap_err(), "encoded NUL (%00)");
    assert_eq!(
        normalize_path("x").unwrap_err(),
        "path does not start with /"
    );
}

#[test]
fn canonical_paths_borrow_and_agree_with_slow_path() {
    for raw in [
        "/",
        "/a",
        "/a/b.c/d-e_f~g",
        "/é/x",
        "/a/b?q=1#f",
        "/.well-known/x",
        "/a..",
    ] {
        let n = normalize_path(raw).unwrap();
        assert!(matches!(n, Cow::Borrowed(_)), "{raw} should not allocate");
        let ci = PathOptions {
            case_insensitive: true,
            ..PathOptions::default()
        };
        assert!(
            matches!(normalize_path_with(raw, ci).unwrap(), Cow::Borrowed(_)),
            "{raw}: lower-case paths do not allocate when case-insensitive"
        );
        let path = raw.split(['?', '#']).next().unwrap();
        assert_eq!(
            super::super::path::normalize_slow_for_test(path).unwrap(),
            n
        );
    }
    for raw in ["/a/", "//a", "/a/./b", "/a/%61", "/a/.."] {
        assert!(
            matches!(normalize_path(raw).unwrap(), Cow::Owned(_)),
            "{raw}"
        );
    }
}

#[test]
fn host_normalisation() {
    for (raw, want) in [
        ("api.example.org", "api.example.org"),
        ("API.Example.org:8443", "api.example.org"),
        ("api.example.org.", "api.example.org"),
        ("api.example.org.:443", "api.example.org"),
        ("[::1]:8080", "[::1]"),
        ("[::1]", "[::1]"),
        ("::1", "::1"),
        ("host:", "host"),
        ("", ""),
    ] {
        assert_eq!(normalize_host(raw), want, "{raw}");
    }
    assert!(matches!(normalize_host("a.b:1"), Cow::Borrowed(_)));
}

/// Deterministic fuzz: random concatenations of tricky fragments must either be
/// rejected or normalise to a canonical path, and the allocation-free fast path
/// must agree with the slow path.
#[test]
fn normalisation_fuzz() {
    const FRAGS: [&str; 24] = [
        "/", "//", ".", "..", "%2e", "%2E", "%2f", "%5c", "%00", "%", "%2", "a", "b", ";", "..;",
        "?", "#", "%25", "%c3%a9", "é", "\\", "%41", "+", "%ff",
    ];
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for _ in 0..50_000 {
        let mut raw = String::from("/");
        for _ in 0..(next() % 8) {
            raw.push_str(FRAGS[(next() % FRAGS.len() as u64) as usize]);
        }
        let Ok(n) = normalize_path(&raw) else {
            continue;
        };
        assert!(n.starts_with('/'), "{raw:?} -> {n:?}");
        if n.len() > 1 {
            assert!(!n.ends_with('/'), "{raw:?} -> {n:?}");
            for seg in n[1..].split('/') {
                assert!(!matches!(seg, "" | "." | ".."), "{raw:?} -> {n:?}");
                assert!(
                    !seg.starts_with(".;") && !seg.starts_with("..;"),
                    "{raw:?} -> {n:?}"
                );
            }
        }
        assert!(!n.contains(['\\', '\0']), "{raw:?} -> {n:?}");
        let path = raw.split(['?', '#']).next().unwrap();
        assert_eq!(
            super::super::path::normalize_slow_for_test(path).as_deref(),
            Ok(&*n),
            "{raw:?}"
        );
    }
}

#[test]
fn item7_matrix_params_rejected_by_default_in_every_form() {
    for raw in [
        "/api/v1/uploads;x/123",
        "/api/v1/uploads;/123",
        "/api/v1/uploads/123;jsessionid=1",
        "/api/v1/uploads%3Bx/123",
        "/api/v1/uploads%3bx/123",
        "/;x/api",
        "/api/%3B",
    ] {
        assert_eq!(
            normalize_path(raw),
            Err("path segment with ';' parameters (policy.matrix_params: reject)"),
            "{raw}"
        );
    }
    // Dot segments with parameters: refused whatever the mode.
    let strip = PathOptions {
        matrix_params: MatrixParams::Strip,
        ..PathOptions::default()
    };
    for raw in ["/a/..;x/b", "/a/%2e%2e%3bx/b", "/a/.;/b"] {
        assert!(normalize_path_with(raw, strip).is_err(), "{raw}");
    }
    // `;` only after the path (query, fragment) is not a parameter.
    assert_eq!(normalize_path("/a/b?x=1;y").as_deref(), Ok("/a/b"));
    // `%253B` is a literal `%3B` for an upstream that decodes once.
    assert_eq!(normalize_path("/a%253Bx").as_deref(), Ok("/a%253Bx"));
}

#[test]
fn item7_matrix_params_strip_keeps_the_bare_segment() {
    let strip = PathOptions {
        matrix_params: MatrixParams::Strip,
        ..PathOptions::default()
    };
    for (raw, want) in [
        ("/api/v1/uploads;x/123", "/api/v1/uploads/123"),
        ("/api/v1/uploads;a=1;b=2/123", "/api/v1/uploads/123"),
        ("/api/v1/uploads%3Bx/123", "/api/v1/uploads/123"),
        ("/api/v1/uploads/123;x", "/api/v1/uploads/123"),
        ("/api/;x/v1", "/api/v1"),
        ("/;x", "/"),
        ("/a/b/..;x", "<err>"),
    ] {
        let got = normalize_path_with(raw, strip);
        let got = got.as_deref().unwrap_or("<err>");
        assert_eq!(got, want, "{raw}");
        // Idempotent.
        if want != "<err>" {
            assert_eq!(normalize_path_with(got, strip).as_deref(), Ok(got));
        }
    }
}

#[test]
fn item7_case_insensitive_paths_lower_case_ascii() {
    let ci = PathOptions {
        case_insensitive: true,
        ..PathOptions::default()
    };
    for (raw, want) in [
        ("/API/V1/Uploads/1", "/api/v1/uploads/1"),
        ("/Api/%55ploads", "/api/uploads"),
        ("/a%3Fb", "/a%3fb"),
        ("/É/X", "/É/x"),
    ] {
        let got = normalize_path_with(raw, ci).unwrap();
        assert_eq!(got, want, "{raw}");
        assert_eq!(normalize_path_with(&got, ci).as_deref(), Ok(want), "{raw}");
    }
    // Off by default: case is kept.
    assert_eq!(normalize_path("/API").as_deref(), Ok("/API"));
}
