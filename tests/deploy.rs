//! Checks on everything under deploy/: each YAML/JSON file parses, the
//! Envoy config fails closed and validates with a real Envoy, the Kubernetes
//! manifests and the Helm chart keep the properties we rely on (native
//! sidecar, probes, non-root, read-only root filesystem, secrets from env),
//! and the copies of the same config stay in step.
//!
//! `envoy --mode validate` needs the binary from `scripts/install-envoy` (or
//! `$PORTCULLIS_ENVOY`): without it the validate test fails saying so.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use portcullis_testkit::envoy::{self, DEFAULTS, render, repo_root};
use serde::Deserialize;
use serde_json::Value;

// --- loading ---------------------------------------------------------------

fn deploy_dir() -> PathBuf {
    repo_root().join("deploy")
}

fn read(rel: &str) -> String {
    let p = repo_root().join(rel);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("reading {}: {e}", p.display()))
}

/// Every document of a (multi-document) YAML text.
fn yaml_docs(text: &str, what: &str) -> Vec<Value> {
    serde_norway::Deserializer::from_str(text)
        .map(|doc| Value::deserialize(doc).unwrap_or_else(|e| panic!("{what}: bad YAML: {e}")))
        .filter(|v| !v.is_null())
        .collect()
}

fn yaml(text: &str, what: &str) -> Value {
    let mut docs = yaml_docs(text, what);
    assert_eq!(docs.len(), 1, "{what}: expected one YAML document");
    docs.remove(0)
}

fn files_under(dir: &Path, out: &mut Vec<PathBuf>) {
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
fn is_helm_template(p: &Path) -> bool {
    p.components().any(|c| c.as_os_str() == "templates") && p.to_string_lossy().contains("/helm/")
}

/// All Kubernetes objects in deploy/k8s (kustomization excluded).
fn k8s_objects() -> Vec<Value> {
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

fn object<'a>(objs: &'a [Value], kind: &str) -> &'a Value {
    let found: Vec<_> = objs.iter().filter(|o| o["kind"] == kind).collect();
    assert_eq!(found.len(), 1, "expected exactly one {kind}");
    found[0]
}

fn s<'a>(v: &'a Value, ptr: &str) -> &'a str {
    v.pointer(ptr)
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("no string at {ptr} in {v}"))
}

fn named<'a>(list: &'a Value, name: &str) -> &'a Value {
    list.as_array()
        .unwrap_or_else(|| panic!("not a list: {list}"))
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no entry named {name} in {list}"))
}

// --- Envoy config ----------------------------------------------------------

/// The parts of an Envoy bootstrap these checks look at.
struct EnvoyView<'a> {
    root: &'a Value,
    hcm: &'a Value,
    ext_authz: &'a Value,
    routes: &'a Value,
}

fn envoy_view(root: &Value) -> EnvoyView<'_> {
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
fn identity_headers() -> Vec<String> {
    use portcullis::authz::headers::{DEFAULT_PREFIX, IdentityField};
    let out: Vec<String> = IdentityField::ALL
        .iter()
        .map(|f| format!("{DEFAULT_PREFIX}{}", f.suffix()))
        .collect();
    assert!(out.len() >= 8 && out.iter().any(|h| h == "x-auth-issuer"));
    out
}

fn assert_envoy_properties(root: &Value, what: &str) {
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

#[test]
fn every_yaml_and_json_file_under_deploy_parses() {
    let mut files = Vec::new();
    files_under(&deploy_dir(), &mut files);
    files.sort();
    let mut checked = 0;
    for f in &files {
        let name = f.display().to_string();
        let ext = f.extension().and_then(|e| e.to_str()).unwrap_or("");
        let text = std::fs::read_to_string(f).unwrap();
        match ext {
            "yaml" | "yml" if is_helm_template(f) => continue,
            "yaml" | "yml" => {
                let docs = yaml_docs(&text, &name);
                assert!(!docs.is_empty(), "{name}: no documents");
            }
            "json" => {
                serde_json::from_str::<Value>(&text)
                    .unwrap_or_else(|e| panic!("{name}: bad JSON: {e}"));
            }
            _ => continue,
        }
        checked += 1;
    }
    assert!(checked >= 9, "only {checked} files checked: {files:?}");
}

#[test]
fn shipped_envoy_fails_closed_and_normalises() {
    let root = yaml(&envoy::shipped(), "deploy/envoy.yaml");
    assert_envoy_properties(&root, "deploy/envoy.yaml");
}

#[test]
fn envoy_validates_every_config_we_ship() {
    let dir = tempfile::tempdir().unwrap();
    // The shipped file itself, in place: it must run as it is.
    match envoy::validate(&envoy::shipped_path()) {
        Ok(out) => eprintln!("deploy/envoy.yaml: {}", out.trim()),
        Err(out) => panic!("envoy rejects deploy/envoy.yaml as shipped:\n{out}"),
    }
    let mut configs = Vec::new();
    configs.push((
        "deploy/envoy.yaml (e2e-style)",
        render(
            &envoy::shipped(),
            &[
                ("LISTEN_HOST", "127.0.0.1"),
                ("LISTEN_PORT", "18080"),
                ("EXT_AUTHZ_TIMEOUT", "5s"),
            ],
        ),
    ));
    let cm = k8s_objects();
    let cm = object(&cm, "ConfigMap");
    configs.push((
        "deploy/k8s/configmap.yaml envoy.yaml",
        s(cm, "/data/envoy.yaml").to_owned(),
    ));
    for (i, (what, text)) in configs.iter().enumerate() {
        let p = dir.path().join(format!("envoy-{i}.yaml"));
        std::fs::write(&p, text).unwrap();
        match envoy::validate(&p) {
            Ok(out) => eprintln!("{what}: {}", out.trim()),
            Err(out) => panic!("envoy rejects {what}:\n{out}"),
        }
    }
}

#[test]
fn k8s_envoy_config_is_the_shipped_file() {
    let objs = k8s_objects();
    let cm = object(&objs, "ConfigMap");
    let k8s = yaml(s(cm, "/data/envoy.yaml"), "ConfigMap envoy.yaml");
    let want = yaml(&envoy::shipped(), "deploy/envoy.yaml");
    assert_eq!(
        k8s, want,
        "deploy/k8s/configmap.yaml envoy.yaml drifted from deploy/envoy.yaml"
    );
    assert_envoy_properties(&k8s, "k8s ConfigMap");
}

/// Checks a pod spec (plain manifest or Helm output).
fn assert_pod_spec(spec: &Value, secret_name: &str, what: &str) {
    let pod_nonroot = spec["securityContext"]["runAsNonRoot"] == true;
    assert_eq!(spec["automountServiceAccountToken"], false, "{what}");

    // portcullis: a native sidecar.
    let inits = &spec["initContainers"];
    let pc = named(inits, "portcullis");
    assert_eq!(pc["restartPolicy"], "Always", "{what}: native sidecar");
    assert_eq!(
        pc["args"],
        serde_json::json!(["serve", "--config", "/etc/portcullis/config.yaml"]),
        "{what}"
    );
    let port_of = |c: &Value, p: &Value| -> i64 {
        match p {
            Value::Number(n) => n.as_i64().unwrap(),
            Value::String(name) => named(&c["ports"], name)["containerPort"].as_i64().unwrap(),
            other => panic!("{what}: bad probe port {other}"),
        }
    };
    let probe = |c: &Value, kind: &str| -> (String, i64) {
        let g = &c[kind]["httpGet"];
        assert!(g.is_object(), "{what}: {} has no httpGet {kind}", c["name"]);
        (
            g["path"].as_str().unwrap().to_owned(),
            port_of(c, &g["port"]),
        )
    };
    assert_eq!(
        probe(pc, "livenessProbe"),
        ("/healthz".into(), 9192),
        "{what}"
    );
    assert_eq!(
        probe(pc, "readinessProbe"),
        ("/readyz".into(), 9192),
        "{what}"
    );
    assert_eq!(probe(pc, "startupProbe").0, "/healthz", "{what}");

    // Secrets reach portcullis as env vars from the Secret.
    for var in [
        "PORTCULLIS__STORE__URL",
        "PORTCULLIS__PAT__EXCHANGE__CLIENT_SECRET",
    ] {
        let e = named(&pc["env"], var);
        assert_eq!(
            e["valueFrom"]["secretKeyRef"]["name"], secret_name,
            "{what}: {var}"
        );
        assert_eq!(e["valueFrom"]["secretKeyRef"]["key"], var, "{what}");
    }

    // The data dir is an emptyDir.
    let data = pc["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["mountPath"] == "/var/lib/portcullis")
        .unwrap_or_else(|| panic!("{what}: no data dir mount"));
    let vol = named(&spec["volumes"], data["name"].as_str().unwrap());
    assert!(
        vol["emptyDir"].is_object(),
        "{what}: data dir is not an emptyDir"
    );

    // Every container: non-root, read-only root fs, no escalation, resources.
    let containers = spec["containers"].as_array().unwrap();
    assert!(
        containers.iter().any(|c| c["name"] == "envoy")
            && containers.iter().any(|c| c["name"] == "app"),
        "{what}: envoy and app containers"
    );
    for c in containers.iter().chain(inits.as_array().unwrap()) {
        let name = c["name"].as_str().unwrap();
        let sc = &c["securityContext"];
        assert!(
            pod_nonroot || sc["runAsNonRoot"] == true,
            "{what}: {name} may run as root"
        );
        assert_ne!(sc["runAsNonRoot"], false, "{what}: {name}");
        assert_ne!(sc["runAsUser"], 0, "{what}: {name}");
        assert_eq!(sc["readOnlyRootFilesystem"], true, "{what}: {name}");
        assert_eq!(sc["allowPrivilegeEscalation"], false, "{what}: {name}");
        for k in ["requests", "limits"] {
            for r in ["cpu", "memory"] {
                assert!(
                    !c["resources"][k][r].is_null(),
                    "{what}: {name} lacks resources.{k}.{r}"
                );
            }
        }
    }
    if !pod_nonroot {
        panic!("{what}: pod securityContext.runAsNonRoot should be true");
    }
}

#[test]
fn k8s_manifests_keep_their_guarantees() {
    let objs = k8s_objects();
    let dep = object(&objs, "Deployment");
    let secret = object(&objs, "Secret");
    let svc = object(&objs, "Service");
    let cm = object(&objs, "ConfigMap");
    let spec = &dep["spec"]["template"]["spec"];
    assert_pod_spec(spec, s(secret, "/metadata/name"), "deploy/k8s");

    // Selector ↔ labels ↔ Service.
    let labels = &dep["spec"]["template"]["metadata"]["labels"];
    for (k, v) in dep["spec"]["selector"]["matchLabels"].as_object().unwrap() {
        assert_eq!(&labels[k], v, "selector label {k}");
    }
    for (k, v) in svc["spec"]["selector"].as_object().unwrap() {
        assert_eq!(&labels[k], v, "Service selector label {k}");
    }
    let envoy_c = named(&spec["containers"], "envoy");
    assert_eq!(svc["spec"]["ports"][0]["targetPort"], "http");
    assert_eq!(named(&envoy_c["ports"], "http")["containerPort"], 10000);

    // ConfigMap volumes point at keys that exist.
    for v in spec["volumes"].as_array().unwrap() {
        if let Some(cmv) = v.get("configMap") {
            assert_eq!(cmv["name"], cm["metadata"]["name"]);
            for item in cmv["items"].as_array().unwrap() {
                let key = item["key"].as_str().unwrap();
                assert!(cm["data"][key].is_string(), "ConfigMap has no {key}");
            }
        }
    }

    // Secret keys are exactly the env vars portcullis reads.
    let keys: Vec<&String> = secret["stringData"].as_object().unwrap().keys().collect();
    assert_eq!(
        keys,
        [
            "PORTCULLIS__PAT__EXCHANGE__CLIENT_SECRET",
            "PORTCULLIS__STORE__URL"
        ]
    );

    // portcullis config: shape we promise in the manifests.
    let cfg = yaml(s(cm, "/data/config.yaml"), "config.yaml");
    assert!(
        s(&cfg, "/listen/grpc").starts_with("127.0.0.1:"),
        "gRPC stays on loopback"
    );
    assert_eq!(s(&cfg, "/listen/http"), "0.0.0.0:9192", "kubelet probes");
    assert_eq!(s(&cfg, "/data_dir"), "/var/lib/portcullis");
    assert_eq!(s(&cfg, "/store/kind"), "postgres");
    assert!(
        cfg["store"].get("url").is_none(),
        "store URL belongs in the Secret"
    );
    assert_eq!(s(&cfg, "/revocation/kind"), "redis");
    assert!(s(&cfg, "/revocation/redis_url").starts_with("redis://"));
    assert_eq!(s(&cfg, "/policy/default"), "deny");
    assert!(cfg["pat"]["exchange"].get("client_secret").is_none());
    assert_eq!(s(&cfg, "/pat/exchange/client_id"), "portcullis-pat-issuer");
    assert!(
        s(&cfg, "/issuers/0/issuer").contains("/realms/"),
        "a Keycloak realm issuer"
    );
    // The route Envoy names in context_extensions exists in the policy.
    named(&cfg["policy"]["routes"], "uploads");
    let envoy_cfg = yaml(s(cm, "/data/envoy.yaml"), "envoy.yaml");
    let grpc_port = envoy_cfg
        .pointer("/static_resources/clusters")
        .map(|c| {
            named(c, "portcullis")
                .pointer("/load_assignment/endpoints/0/lb_endpoints/0/endpoint/address/socket_address/port_value")
                .unwrap()
                .as_i64()
                .unwrap()
        })
        .unwrap();
    assert!(s(&cfg, "/listen/grpc").ends_with(&format!(":{grpc_port}")));
}

#[test]
fn helm_chart_is_sane() {
    let chart = repo_root().join("deploy/helm/portcullis");
    let meta = yaml(&read("deploy/helm/portcullis/Chart.yaml"), "Chart.yaml");
    assert_eq!(meta["apiVersion"], "v2");
    assert_eq!(meta["name"], "portcullis");
    let values = yaml(&read("deploy/helm/portcullis/values.yaml"), "values.yaml");

    // Same portcullis config as the plain manifests (less what the chart owns).
    let objs = k8s_objects();
    let mut k8s_cfg = yaml(
        s(object(&objs, "ConfigMap"), "/data/config.yaml"),
        "config.yaml",
    );
    let m = k8s_cfg.as_object_mut().unwrap();
    m.remove("listen");
    m.remove("data_dir");
    assert_eq!(
        values["portcullis"]["config"], k8s_cfg,
        "values.yaml portcullis.config drifted from deploy/k8s/configmap.yaml"
    );
    // Envoy routes in values ↔ the routes of deploy/envoy.yaml.
    let tmpl = yaml(&envoy::shipped(), "deploy/envoy.yaml");
    let routes = envoy_view(&tmpl).routes.clone();
    for r in values["envoy"]["publicRoutes"].as_array().unwrap() {
        let t = named(&routes, s(r, "/name"));
        assert_eq!(t["match"]["path"], r["path"], "public route {r}");
    }
    for r in values["envoy"]["authzRoutes"].as_array().unwrap() {
        let t = named(&routes, s(r, "/name"));
        assert_eq!(t["match"]["prefix"], r["prefix"], "route {r}");
        let regex = &t["match"]["headers"][0]["string_match"]["safe_regex"]["regex"];
        match r["methods"].as_array() {
            Some(ms) => {
                let ms: Vec<&str> = ms.iter().map(|m| m.as_str().unwrap()).collect();
                assert_eq!(regex, &Value::from(ms.join("|")), "route {r}");
            }
            None => assert!(t["match"]["headers"].is_null(), "route {r}"),
        }
        assert_eq!(
            t["typed_per_filter_config"]["envoy.filters.http.ext_authz"]["check_settings"]["context_extensions"],
            r["contextExtensions"],
            "route {r}"
        );
    }
    assert_eq!(
        values["envoy"]["publicRoutes"].as_array().unwrap().len()
            + values["envoy"]["authzRoutes"].as_array().unwrap().len()
            + 2,
        routes.as_array().unwrap().len(),
        "values.yaml envoy routes + resource-metadata + catch-all vs deploy/envoy.yaml"
    );
    assert_eq!(
        values["envoy"]["extAuthzTimeout"],
        DEFAULTS
            .iter()
            .find(|(k, _)| *k == "EXT_AUTHZ_TIMEOUT")
            .unwrap()
            .1
    );
    assert_eq!(values["envoy"]["port"], 10000);
    assert_eq!(values["portcullis"]["grpcPort"], 9191);
    assert_eq!(values["portcullis"]["httpPort"], 9192);
    assert_eq!(
        values["containerSecurityContext"]["readOnlyRootFilesystem"],
        true
    );
    assert_eq!(values["podSecurityContext"]["runAsNonRoot"], true);

    // Templates: present, balanced actions, and the guarantees spelled out.
    let mut templates = BTreeMap::new();
    for t in [
        "_helpers.tpl",
        "configmap.yaml",
        "deployment.yaml",
        "secret.yaml",
        "service.yaml",
    ] {
        let text = read(&format!("deploy/helm/portcullis/templates/{t}"));
        assert_eq!(
            text.matches("{{").count(),
            text.matches("}}").count(),
            "{t}: unbalanced template actions"
        );
        templates.insert(t, text);
    }
    let dep = &templates["deployment.yaml"];
    assert!(dep.contains("restartPolicy: Always"));
    assert!(dep.contains("path: /readyz"));
    let cm = &templates["configmap.yaml"];
    for needle in [
        "failure_mode_allow: false",
        "status_on_error: { code: ServiceUnavailable }",
        "transport_api_version: V3",
        "normalize_path: true",
        "merge_slashes: true",
        "disabled: true",
    ] {
        assert!(cm.contains(needle), "helm configmap lacks {needle}");
    }

    // With a helm binary, render and check the output like the manifests.
    // scripts/test installs helm (scripts/install-helm) and exports its path.
    let helm = std::env::var("PORTCULLIS_HELM").unwrap_or_else(|_| "helm".into());
    let out = std::process::Command::new(&helm)
        // The chart declares kubeVersion >= 1.29 (native sidecars).
        .args(["template", "t", "--kube-version", "1.31.0"])
        .arg(&chart)
        .output();
    match out {
        Err(e) => panic!(
            "helm binary {helm:?} not found ({e}); run scripts/test, or scripts/install-helm and set PORTCULLIS_HELM"
        ),
        Ok(o) if !o.status.success() => panic!(
            "helm template failed:\n{}",
            String::from_utf8_lossy(&o.stderr)
        ),
        Ok(o) => {
            let objs = yaml_docs(&String::from_utf8_lossy(&o.stdout), "helm template");
            let dep = object(&objs, "Deployment");
            let secret = object(&objs, "Secret");
            assert_pod_spec(
                &dep["spec"]["template"]["spec"],
                s(secret, "/metadata/name"),
                "helm",
            );
            let cm = object(&objs, "ConfigMap");
            // Secrets reach portcullis as PORTCULLIS__* variables from the Secret.
            let env = portcullis::config::MapEnv(
                secret["stringData"]
                    .as_object()
                    .expect("secret stringData")
                    .iter()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
                    .collect(),
            );
            let cfg = portcullis::config::Config::from_yaml_str(s(cm, "/data/config.yaml"), &env)
                .expect("helm config.yaml loads");
            cfg.validate().expect("helm config.yaml validates");
            let envoy_cfg = yaml(s(cm, "/data/envoy.yaml"), "helm envoy.yaml");
            assert_envoy_properties(&envoy_cfg, "helm ConfigMap");
            assert_eq!(
                envoy_cfg,
                yaml(&envoy::shipped(), "deploy/envoy.yaml"),
                "helm envoy.yaml drifted from deploy/envoy.yaml"
            );
        }
    }
}

#[test]
fn keycloak_realm_has_the_clients_portcullis_expects() {
    let realm: Value = serde_json::from_str(&read("deploy/keycloak/realm.json")).unwrap();
    let clients = &realm["clients"];
    let client = |id: &str| -> &Value {
        clients
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["clientId"] == id)
            .unwrap_or_else(|| panic!("no client {id}"))
    };
    let audiences = |c: &Value| -> Vec<String> {
        c["protocolMappers"]
            .as_array()
            .map(|ms| {
                ms.iter()
                    .filter(|m| m["protocolMapper"] == "oidc-audience-mapper")
                    .filter(|m| m["config"]["access.token.claim"] == "true")
                    .map(|m| {
                        m["config"]["included.client.audience"]
                            .as_str()
                            .unwrap()
                            .to_owned()
                    })
                    .collect()
            })
            .unwrap_or_default()
    };
    client("portcullis");
    for id in ["web", "cli"] {
        let c = client(id);
        assert_eq!(c["publicClient"], true, "{id}");
        let aud = audiences(c);
        assert!(aud.contains(&"portcullis".into()), "{id}: {aud:?}");
        assert!(
            aud.contains(&"portcullis-pat-issuer".into()),
            "{id}: the PAT issuer must be in aud for token exchange: {aud:?}"
        );
    }
    assert_eq!(
        client("web")["attributes"]["pkce.code.challenge.method"],
        "S256"
    );
    let pat = client("portcullis-pat-issuer");
    assert_eq!(pat["publicClient"], false);
    assert_eq!(pat["attributes"]["standard.token.exchange.enabled"], "true");
    assert!(audiences(pat).contains(&"portcullis".into()));
    let marker = pat["protocolMappers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["protocolMapper"] == "oidc-hardcoded-claim-mapper")
        .expect("token_use mapper");
    assert_eq!(marker["config"]["claim.name"], "token_use");
    assert_eq!(marker["config"]["claim.value"], "pat");
    assert_eq!(marker["config"]["access.token.claim"], "true");

    // portcullis recognises a service account by `client_id` ==
    // `azp`, which Keycloak's `service_account` client scope adds; an
    // imported client does not get that scope unless listed (checked
    // against Keycloak 26.5.6).
    let worker = client("uploads-worker");
    assert_eq!(worker["serviceAccountsEnabled"], true);
    assert!(
        worker["defaultClientScopes"]
            .as_array()
            .is_some_and(|s| s.iter().any(|s| s == "service_account")),
        "uploads-worker needs the service_account client scope"
    );

    // Every role the portcullis config maps exists in the realm.
    let roles: Vec<&str> = realm["roles"]["realm"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    let objs = k8s_objects();
    let cfg = yaml(
        s(object(&objs, "ConfigMap"), "/data/config.yaml"),
        "config.yaml",
    );
    assert!(
        cfg["issuers"][0]["issuer"]
            .as_str()
            .unwrap()
            .ends_with(&format!("/realms/{}", realm["realm"].as_str().unwrap())),
        "issuer names this realm"
    );
    for role in cfg["issuers"][0]["scopes"]["map"]
        .as_object()
        .unwrap()
        .keys()
    {
        assert!(roles.contains(&role.as_str()), "realm lacks role {role}");
    }
}

#[test]
fn dockerfile_runs_portcullis_as_non_root() {
    let d = read("deploy/Dockerfile");
    let lines: Vec<&str> = d
        .lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#'))
        .collect();
    assert!(lines.contains(&r#"ENTRYPOINT ["portcullis"]"#), "{d}");
    assert!(
        lines.contains(&r#"CMD ["serve", "--config", "/etc/portcullis/config.yaml"]"#),
        "{d}"
    );
    let user = lines
        .iter()
        .rev()
        .find(|l| l.starts_with("USER "))
        .expect("USER");
    assert!(user.starts_with("USER 65532"), "{user}");
    assert!(!lines.iter().any(|l| l.starts_with("HEALTHCHECK")));
    assert!(
        lines.iter().filter(|l| l.starts_with("FROM ")).count() >= 2,
        "multi-stage"
    );
}

/// The example config must load with the real config loader, secrets
/// supplied as the env vars the Deployment sets.
#[test]
fn k8s_portcullis_config_is_accepted_by_the_loader() {
    use portcullis::config::{Config, MapEnv};
    let objs = k8s_objects();
    let text = s(object(&objs, "ConfigMap"), "/data/config.yaml").to_owned();
    let env = MapEnv(
        [
            (
                "PORTCULLIS__STORE__URL".to_owned(),
                "postgres://portcullis:pw@127.0.0.1:5432/portcullis".to_owned(),
            ),
            (
                "PORTCULLIS__PAT__EXCHANGE__CLIENT_SECRET".to_owned(),
                "s3cret".to_owned(),
            ),
        ]
        .into_iter()
        .collect(),
    );
    let cfg = Config::from_yaml_str(&text, &env).unwrap_or_else(|e| panic!("{e}"));
    if let Err(errs) = cfg.validate() {
        panic!("{errs:?}");
    }
}
