use super::s;
use crate::policy::*;
use crate::scope::ScopeError;

#[test]
fn check_scopes_table() {
    // (all_of, any_of, extra, granted, is_pat, Ok(()) or missing)
    type Case<'a> = (
        &'a [&'a str],
        &'a [&'a str],
        &'a [&'a str],
        &'a [&'a str],
        bool,
        Option<&'a [&'a str]>,
    );
    let cases: &[Case] = &[
        (&[], &[], &[], &[], false, None),
        (&["uploads:read"], &[], &[], &["uploads:read"], false, None),
        (&["uploads:read"], &[], &[], &["uploads:*"], false, None),
        (&["uploads:read"], &[], &[], &["*:read"], false, None),
        (&["uploads:read"], &[], &[], &["*:*"], false, None),
        (
            &["uploads:read"],
            &[],
            &[],
            &["uploads:write"],
            false,
            Some(&["uploads:read"]),
        ),
        (
            &["uploads:read"],
            &[],
            &[],
            &["*:write", "downloads:*"],
            false,
            Some(&["uploads:read"]),
        ),
        (
            &["uploads:read", "uploads:write"],
            &[],
            &[],
            &["uploads:read"],
            false,
            Some(&["uploads:write"]),
        ),
        (
            &["uploads:read", "uploads:write"],
            &[],
            &[],
            &[],
            false,
            Some(&["uploads:read", "uploads:write"]),
        ),
        // any_of: one suffices; all reported when none is held
        (&[], &["a:x", "b:y"], &[], &["b:y"], false, None),
        (&[], &["a:x", "b:y"], &[], &["a:*"], false, None),
        (
            &[],
            &["a:x", "b:y"],
            &[],
            &["c:z"],
            false,
            Some(&["a:x", "b:y"]),
        ),
        (&["u:r"], &["a:x"], &[], &[], false, Some(&["u:r", "a:x"])),
        (&["u:r"], &["a:x"], &[], &["u:r"], false, Some(&["a:x"])),
        (&["u:r"], &["a:x"], &[], &["a:x"], false, Some(&["u:r"])),
        // extra (context_extensions) adds to all_of; duplicates reported once
        (&["u:r"], &[], &["u:w"], &["u:r"], false, Some(&["u:w"])),
        (&["u:r"], &[], &["u:r"], &[], false, Some(&["u:r"])),
        (&[], &[], &["u:w"], &["u:*"], false, None),
        // PATs never reach tokens:*, whatever they hold
        (
            &["tokens:manage"],
            &[],
            &[],
            &["*:*"],
            true,
            Some(&["tokens:manage"]),
        ),
        (
            &["tokens:manage"],
            &[],
            &[],
            &["tokens:*"],
            true,
            Some(&["tokens:manage"]),
        ),
        (
            &["tokens:manage"],
            &[],
            &[],
            &["tokens:manage"],
            true,
            Some(&["tokens:manage"]),
        ),
        (
            &["tokens:manage"],
            &[],
            &[],
            &["*:manage"],
            true,
            Some(&["tokens:manage"]),
        ),
        (
            &[],
            &[],
            &["tokens:list"],
            &["*:*"],
            true,
            Some(&["tokens:list"]),
        ),
        (
            &[],
            &["tokens:manage"],
            &[],
            &["*:*"],
            true,
            Some(&["tokens:manage"]),
        ),
        (
            &[],
            &["tokens:manage", "uploads:read"],
            &[],
            &["*:*"],
            true,
            None,
        ),
        (&["uploads:read"], &[], &[], &["*:*"], true, None),
        // ...but JWTs and service accounts can
        (&["tokens:manage"], &[], &[], &["*:*"], false, None),
        (&["tokens:manage"], &[], &[], &["tokens:*"], false, None),
        // garbage in granted never matches
        (&["u:r"], &[], &[], &["garbage", ""], false, Some(&["u:r"])),
    ];
    for (i, (all, any, extra, granted, pat, want)) in cases.iter().enumerate() {
        let (all, any, extra) = (s(all), s(any), s(extra));
        let req = ScopeRequirements {
            all_of: &all,
            any_of: &any,
            envoy_all_of: &extra,
        };
        let holder = if *pat {
            CredentialKind::Pat
        } else {
            CredentialKind::Jwt
        };
        let got = req.check(&s(granted), holder).map_err(|d| {
            assert_eq!(d.required, req.named(), "case {i}");
            d.missing
        });
        let want = match want {
            None => Ok(()),
            Some(m) => Err(s(m)),
        };
        assert_eq!(
            got, want,
            "case {i}: {all:?} {any:?} {extra:?} {granted:?} pat={pat}"
        );
    }
    let (all, any) = (s(&["a:b", "c:d"]), s(&["e:f"]));
    let req = ScopeRequirements {
        all_of: &all,
        any_of: &any,
        envoy_all_of: &[],
    };
    let d = req
        .check(&s(&["a:b", "e:f"]), CredentialKind::Jwt)
        .unwrap_err();
    assert_eq!(d.scope_param(), "a:b c:d e:f");
    assert_eq!(d.to_string(), "missing scopes: c:d");
}

#[test]
fn parse_required_scopes_table() {
    let ok: &[(&str, &[&str])] = &[
        ("", &[]),
        ("   ", &[]),
        ("uploads:read", &["uploads:read"]),
        (
            " uploads:read \t uploads:write\n",
            &["uploads:read", "uploads:write"],
        ),
        ("a:b a:b", &["a:b"]),
    ];
    for (raw, want) in ok {
        assert_eq!(parse_required_scopes(raw).unwrap(), s(want), "{raw:?}");
    }
    let bad = [
        (
            "uploads:*",
            ScopeError::WildcardRequired("uploads:*".into()),
        ),
        ("a:b *:*", ScopeError::WildcardRequired("*:*".into())),
        ("uploads", ScopeError::Shape("uploads".into())),
        ("a:b,c", ScopeError::Chars("a:b,c".into())),
        ("a:b,c:d", ScopeError::Shape("a:b,c:d".into())),
        ("a:b:c", ScopeError::Shape("a:b:c".into())),
    ];
    for (raw, want) in bad {
        assert_eq!(parse_required_scopes(raw).unwrap_err(), want, "{raw:?}");
    }
}
