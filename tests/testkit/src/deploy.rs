//! Reading what `deploy/` ships, for `tests/deploy*.rs`: YAML documents,
//! the Kubernetes objects, and the properties every shipped Envoy config
//! must keep (fail closed, path normalisation, identity headers stripped
//! where ext_authz does not run).

use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::Value;

use crate::envoy::repo_root;

// --- loading ---------------------------------------------------------------

pub fn deploy_dir() -> PathBuf {
    repo_root().join("deploy")
}

pub fn read(rel: &str) -> String {
    let p = repo_root().join(rel);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("reading {}: {e}", p.display()))
}

/// Every document of a (multi-document) YAML text.
pub fn yaml_docs(text: &str, what: &str) -> Vec<Value> {
    serde_norway::Deserializer::from_str(text)
        .map(|doc| Value::deserialize(doc).unwrap_or_else(|e| panic!("{what}: bad YAML: {e}")))
        .filter(|v| !v.is_null())
        .collect()
}

pub fn yaml(text: &str, what: &str) -> Value {
    let mut docs = yaml_docs(text, what);
    assert_eq!(docs.len(), 1, "{what}: expected one YAML document");
    docs.remove(0)
}

pub fn files_under(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            files_under(&p, out);
        } else {
            out.push(p);
        }
    }
}

/// Helm templates are Go templates, not YAML.
pub fn is_helm_template(p: &Path) -> bool {
    p.components().any(|c| c.as_os_str() == "templates") && p.to_string_lossy().contains("/helm/")
}

/// All Kubernetes objects in deploy/k8s (kustomization excluded).
pub fn k8s_objects() -> Vec<Value> {
    let mut files = Vec::new();
    files_under(&deploy_dir().join("k8s"), &mut files);
    files.sort();
    let mut objs = Vec::new();
    for f in files {
        if f.file_name().unwrap() == "kustomization.yaml" {
            continue;
        }
        let text = std::fs::read_to_string(&f).unwrap();
        objs.extend(yaml_docs(&text, &f.display().to_string()));
    }
    objs
}

/// `helm template` of deploy/helm/portcullis with `--set` values: the
/// rendered text, or helm's error output. The binary is
/// `$PORTCULLIS_HELM` (scripts/test installs it) or `helm` on the PATH.
pub fn helm_template(set: &[&str]) -> Result<String, String> {
    let helm = std::env::var("PORTCULLIS_HELM").unwrap_or_else(|_| "helm".into());
    let mut cmd = std::process::Command::new(&helm);
    // The chart declares kubeVersion >= 1.29 (native sidecars).
    cmd.args(["template", "t", "--kube-version", "1.31.0"]);
    for v in set {
        cmd.args(["--set", v]);
    }
    let out = cmd
        .arg(deploy_dir().join("helm/portcullis"))
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "helm binary {helm:?} not found ({e}); run scripts/test, or scripts/install-helm and set PORTCULLIS_HELM"
            )
        });
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// Checks that `cfg`'s `portcullis` cluster is a Unix socket (a STATIC
/// cluster with a pipe address), then puts `shipped`'s TCP cluster in its
/// place, so the rest can be compared with the shipped file. Returns the
/// socket path.
pub fn swap_pipe_cluster(cfg: &mut Value, shipped: &Value, what: &str) -> String {
    let shipped_pc = shipped
        .pointer("/static_resources/clusters")
        .and_then(|c| c.as_array())
        .and_then(|c| c.iter().find(|c| c["name"] == "portcullis"))
        .expect("shipped portcullis cluster")
        .clone();
    let pc = cfg
        .pointer_mut("/static_resources/clusters")
        .and_then(|c| c.as_array_mut())
        .and_then(|c| c.iter_mut().find(|c| c["name"] == "portcullis"))
        .unwrap_or_else(|| panic!("{what}: no portcullis cluster"));
    assert_eq!(pc["type"], "STATIC", "{what}: {pc:?}");
    let path = pc
        .pointer("/load_assignment/endpoints/0/lb_endpoints/0/endpoint/address/pipe/path")
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("{what}: portcullis is reached over a Unix socket: {pc:?}"))
        .to_owned();
    *pc = shipped_pc;
    path
}

pub fn object<'a>(objs: &'a [Value], kind: &str) -> &'a Value {
    let found: Vec<_> = objs.iter().filter(|o| o["kind"] == kind).collect();
    assert_eq!(found.len(), 1, "expected exactly one {kind}");
    found[0]
}

pub fn s<'a>(v: &'a Value, ptr: &str) -> &'a str {
    v.pointer(ptr)
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("no string at {ptr} in {v}"))
}

pub fn named<'a>(list: &'a Value, name: &str) -> &'a Value {
    list.as_array()
        .unwrap_or_else(|| panic!("not a list: {list}"))
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no entry named {name} in {list}"))
}

// --- Envoy config ----------------------------------------------------------

/// The parts of an Envoy bootstrap these checks look at.
pub struct EnvoyView<'a> {
    pub root: &'a Value,
    pub hcm: &'a Value,
    pub ext_authz: &'a Value,
    pub routes: &'a Value,
}

pub fn envoy_view(root: &Value) -> EnvoyView<'_> {
    let listeners = root.pointer("/static_resources/listeners").unwrap();
    assert_eq!(listeners.as_array().unwrap().len(), 1);
    let filters = listeners.pointer("/0/filter_chains/0/filters").unwrap();
    let hcm = &named(filters, "envoy.filters.network.http_connection_manager")["typed_config"];
    let http_filters = &hcm["http_filters"];
    let names: Vec<&str> = http_filters
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["name"].as_str().unwrap())
        .collect();
    // ext_authz first (a rate limit between it and the router keys on the
    // metadata it sets, and counts only allowed requests), the router last.
    assert_eq!(
        names.first(),
        Some(&"envoy.filters.http.ext_authz"),
        "ext_authz must run first: {names:?}"
    );
    assert_eq!(
        names.last(),
        Some(&"envoy.filters.http.router"),
        "the router must run last: {names:?}"
    );
    for n in &names[1..names.len() - 1] {
        assert_eq!(
            *n, "envoy.filters.http.local_ratelimit",
            "only a rate limit may sit between ext_authz and the router: {names:?}"
        );
    }
    EnvoyView {
        root,
        hcm,
        ext_authz: &http_filters[0]["typed_config"],
        routes: hcm.pointer("/route_config/virtual_hosts/0/routes").unwrap(),
    }
}

/// Every identity header portcullis sets by default, from the code that
/// names them (`authz::headers`), so a new header (such as `x-auth-issuer`)
/// cannot be forgotten on the routes where ext_authz does not run.
pub fn identity_headers() -> Vec<String> {
    use portcullis::authz::headers::{DEFAULT_PREFIX, IdentityField};
    let out: Vec<String> = IdentityField::ALL
        .iter()
        .map(|f| format!("{DEFAULT_PREFIX}{}", f.suffix()))
        .collect();
    assert!(out.len() >= 8 && out.iter().any(|h| h == "x-auth-issuer"));
    out
}

pub fn assert_envoy_properties(root: &Value, what: &str) {
    let v = envoy_view(root);
    let a = v.ext_authz;
    assert_eq!(
        s(a, "/@type"),
        "type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthz",
        "{what}"
    );
    assert_eq!(a["transport_api_version"], "V3", "{what}");
    assert_eq!(a["failure_mode_allow"], false, "{what}: must fail closed");
    assert_eq!(
        a["status_on_error"]["code"], "ServiceUnavailable",
        "{what}: errors must be 503"
    );
    assert_eq!(a["include_peer_certificate"], false, "{what}");
    assert_allowed_headers(a, what);
    assert!(a.get("with_request_body").is_none(), "{what}");
    assert_eq!(
        a["grpc_service"]["envoy_grpc"]["cluster_name"], "portcullis",
        "{what}"
    );
    assert!(a["grpc_service"]["timeout"].is_string(), "{what}: timeout");

    // Path handling: defence in depth in front of portcullis's own.
    assert_eq!(v.hcm["normalize_path"], true, "{what}");
    assert_eq!(v.hcm["merge_slashes"], true, "{what}");
    let esc = s(v.hcm, "/path_with_escaped_slashes_action");
    assert!(
        ["REJECT_REQUEST", "UNESCAPE_AND_REDIRECT"].contains(&esc),
        "{what}: {esc}"
    );
    assert_eq!(
        v.hcm["common_http_protocol_options"]["headers_with_underscores_action"], "DROP_HEADER",
        "{what}"
    );

    // Admin only on loopback.
    assert_eq!(
        s(v.root, "/admin/address/socket_address/address"),
        "127.0.0.1",
        "{what}"
    );

    // portcullis cluster speaks HTTP/2.
    let clusters = v.root.pointer("/static_resources/clusters").unwrap();
    let pc = named(clusters, "portcullis");
    let opts = &pc["typed_extension_protocol_options"]["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"];
    assert_eq!(
        s(opts, "/@type"),
        "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
    );
    assert!(
        opts["explicit_http_config"]["http2_protocol_options"].is_object(),
        "{what}"
    );
    named(clusters, "app");

    // Routes: ext_authz is disabled only on exact-path routes, and those
    // strip every identity header; the uploads route passes context.
    let mut disabled = Vec::new();
    for r in v.routes.as_array().unwrap() {
        let per = &r["typed_per_filter_config"]["envoy.filters.http.ext_authz"];
        if per["disabled"] == true {
            let path = r["match"]["path"]
                .as_str()
                .unwrap_or_else(|| panic!("{what}: ext_authz disabled on a non-exact route {r}"));
            let removed: Vec<&str> = r["request_headers_to_remove"]
                .as_array()
                .map(|a| a.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            for h in identity_headers() {
                assert!(
                    removed.contains(&h.as_str()),
                    "{what}: public {path} keeps {h} (a client could forge it)"
                );
            }
            disabled.push(path.to_owned());
        }
        // Only the RFC 9728 document reaches portcullis's HTTP port.
        let cluster = if r["match"]["path"] == "/.well-known/oauth-protected-resource" {
            "portcullis-http"
        } else {
            "app"
        };
        assert_eq!(r["route"]["cluster"], cluster, "{what}: {r}");
    }
    assert_eq!(
        disabled,
        ["/healthz", "/.well-known/oauth-protected-resource"],
        "{what}"
    );
    let uploads = named(v.routes, "uploads");
    assert_eq!(uploads["match"]["prefix"], "/api/v1/uploads/");
    let ctx = &uploads["typed_per_filter_config"]["envoy.filters.http.ext_authz"]["check_settings"]
        ["context_extensions"];
    assert_eq!(ctx["portcullis.route"], "uploads", "{what}");
    assert_eq!(ctx["portcullis.required_scopes"], "uploads:read", "{what}");
    // Only reads reach the read route; other methods the
    // write route (tests/deploy_routes.rs walks every method).
    let methods = &uploads["match"]["headers"][0];
    assert_eq!(methods["name"], ":method", "{what}");
    assert_eq!(
        methods["string_match"]["safe_regex"]["regex"], "GET|HEAD",
        "{what}"
    );
    let write = named(v.routes, "uploads-write");
    let ctx = &write["typed_per_filter_config"]["envoy.filters.http.ext_authz"]["check_settings"]["context_extensions"];
    assert_eq!(ctx["portcullis.route"], "uploads-write", "{what}");
    assert_eq!(ctx["portcullis.required_scopes"], "uploads:write", "{what}");
    let last = v.routes.as_array().unwrap().last().unwrap();
    assert_eq!(last["match"]["prefix"], "/", "{what}: catch-all last");
}

// --- tests -----------------------------------------------------------------

/// ext_authz sends only the headers portcullis reads, and every header
/// with the identity prefix (a client copy must reach portcullis to be
/// removed).
fn assert_allowed_headers(ext_authz: &Value, what: &str) {
    let patterns = ext_authz
        .pointer("/allowed_headers/patterns")
        .and_then(Value::as_array)
        .unwrap_or_else(|| panic!("{what}: ext_authz has no allowed_headers.patterns"));
    let exact: Vec<&str> = patterns
        .iter()
        .filter_map(|p| p["exact"].as_str())
        .collect();
    for h in [
        "authorization",
        "dpop",
        "x-request-id",
        "x-forwarded-for",
        "user-agent",
    ] {
        assert!(
            exact.contains(&h),
            "{what}: allowed_headers lacks {h}: {exact:?}"
        );
    }
    assert!(
        patterns
            .iter()
            .any(|p| p["prefix"].as_str() == Some(portcullis::authz::headers::DEFAULT_PREFIX)),
        "{what}: allowed_headers must send every x-auth-* header: {patterns:?}"
    );
    assert!(
        !exact.contains(&"cookie"),
        "{what}: cookies are not portcullis' business"
    );
}
