//! Inputs found by the fuzz targets in tests/fuzz/ (scripts/fuzz), replayed
//! as ordinary tests. Each test feeds the exact bytes of the crash input and
//! checks the property the target found broken.

use portcullis::policy::normalize_path;

/// `routes` target: `normalize_path` was not idempotent. `%25` decoded to a
/// bare `%`, which a second pass rejected as an invalid escape; likewise
/// `%3F` / `%23` decoded to `?` / `#`, which a second pass cut off.
#[test]
fn routes_normalize_path_is_idempotent() {
    // Crash input, verbatim (host and method lines absent).
    let crash: &[u8] = b"/a%25";
    let raw = std::str::from_utf8(crash).unwrap();
    for raw in [
        raw,
        "/a%3Fb",
        "/a%3fb?c",
        "/a%23b",
        "/public/%252e%252e/admin",
        "/x%25%32%35",
    ] {
        let once = normalize_path(raw).unwrap();
        let twice = normalize_path(&once);
        assert_eq!(twice.as_deref(), Ok(&*once), "{raw:?} -> {once:?}");
    }
    assert_eq!(normalize_path("/a%25").unwrap(), "/a%25");
    assert_eq!(normalize_path("/a%3fb?c").unwrap(), "/a%3Fb");
    assert_eq!(normalize_path("/a%23b").unwrap(), "/a%23b");
    // Decoded once only: `%252e` is the literal text `%2e`, kept as `%252e`.
    assert_eq!(
        normalize_path("/public/%252e%252e/admin").unwrap(),
        "/public/%252e%252e/admin"
    );
}
