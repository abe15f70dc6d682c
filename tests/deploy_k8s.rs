//! The Kubernetes manifests and the Helm chart keep the properties we rely
//! on (native sidecar, probes, non-root, read-only root filesystem, secrets
//! from env), the Keycloak realm has the clients portcullis expects, the
//! Dockerfile runs as non-root, and the copies of the same config stay in
//! step. (`tests/deploy.rs` checks the Envoy configs.)

use std::collections::BTreeMap;

use portcullis_testkit::deploy::{
    assert_envoy_properties, envoy_view, helm_template, k8s_objects, named, object, read, s,
    swap_pipe_cluster, yaml, yaml_docs,
};
use portcullis_testkit::envoy::{self, DEFAULTS};
use serde_json::Value;

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
    // gRPC on a Unix socket in an emptyDir both portcullis and Envoy mount.
    let sock = s(&cfg, "/listen/grpc")
        .strip_prefix("unix:")
        .expect("gRPC on a Unix socket");
    let dir = std::path::Path::new(sock)
        .parent()
        .unwrap()
        .to_str()
        .unwrap();
    let vols = dep.pointer("/spec/template/spec/volumes").unwrap();
    let run = vols
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v.get("emptyDir").is_some() && mounted_at(dep, &v["name"], dir) == 2)
        .unwrap_or_else(|| panic!("no emptyDir mounted at {dir} in portcullis and envoy"));
    assert!(run["name"].is_string());
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
    let clusters = envoy_cfg.pointer("/static_resources/clusters").unwrap();
    let pc = named(clusters, "portcullis");
    assert_eq!(
        s(
            pc,
            "/load_assignment/endpoints/0/lb_endpoints/0/endpoint/address/pipe/path"
        ),
        sock,
        "Envoy's portcullis cluster is the socket portcullis listens on"
    );
    assert_eq!(
        s(pc, "/type"),
        "STATIC",
        "a pipe address takes a STATIC cluster"
    );
}

/// How many containers (init containers included) mount volume `name` at `path`.
fn mounted_at(dep: &Value, name: &Value, path: &str) -> usize {
    let spec = dep.pointer("/spec/template/spec").unwrap();
    ["initContainers", "containers"]
        .iter()
        .filter_map(|k| spec[*k].as_array())
        .flatten()
        .filter(|c| {
            c["volumeMounts"].as_array().is_some_and(|m| {
                m.iter()
                    .any(|m| &m["name"] == name && m["mountPath"].as_str() == Some(path))
            })
        })
        .count()
}

#[test]
fn helm_chart_is_sane() {
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

    // Rendered (scripts/test installs helm and exports PORTCULLIS_HELM),
    // checked like the manifests, with each gRPC transport.
    let shipped = yaml(&envoy::shipped(), "deploy/envoy.yaml");
    assert_eq!(values["portcullis"]["grpcTransport"], "unix");

    // Default: gRPC on a Unix socket in an in-memory emptyDir that only
    // portcullis and Envoy mount; no gRPC TCP port anywhere in the pod.
    let out = helm_template(&[]).unwrap_or_else(|e| panic!("helm template failed:\n{e}"));
    let (dep, cfg, mut envoy_cfg) = rendered(&out, "helm (unix)");
    let sock = s(&cfg, "/listen/grpc")
        .strip_prefix("unix:")
        .expect("helm: gRPC on a Unix socket by default")
        .to_owned();
    assert_eq!(sock, "/var/run/portcullis/grpc.sock");
    let spec = &dep["spec"]["template"]["spec"];
    let run = spec["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| mounted_at(&dep, &v["name"], "/var/run/portcullis") > 0)
        .expect("helm: a volume at the socket's directory");
    assert_eq!(run["emptyDir"]["medium"], "Memory", "helm: {run}");
    assert_eq!(
        mounted_at(&dep, &run["name"], "/var/run/portcullis"),
        2,
        "helm: portcullis and envoy share the socket's emptyDir"
    );
    let app = named(&spec["containers"], "app");
    assert!(
        !app["volumeMounts"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["name"] == run["name"]),
        "helm: the app must not reach the socket"
    );
    let ports: Vec<&Value> = ["initContainers", "containers"]
        .iter()
        .flat_map(|k| spec[*k].as_array().unwrap())
        .flat_map(|c| c["ports"].as_array().into_iter().flatten())
        .collect();
    assert!(
        ports
            .iter()
            .all(|p| p["containerPort"] != 9191 && p["name"] != "authz-grpc"),
        "helm (unix): no gRPC TCP port: {ports:?}"
    );
    assert_eq!(
        swap_pipe_cluster(&mut envoy_cfg, &shipped, "helm (unix)"),
        sock,
        "Envoy's portcullis cluster is the socket portcullis listens on"
    );
    assert_eq!(
        envoy_cfg, shipped,
        "helm envoy.yaml drifted from deploy/envoy.yaml (beyond the socket)"
    );

    // tcp: 127.0.0.1:grpcPort, the shipped Envoy config as it is.
    let out = helm_template(&["portcullis.grpcTransport=tcp"])
        .unwrap_or_else(|e| panic!("helm template (tcp) failed:\n{e}"));
    let (dep, cfg, envoy_cfg) = rendered(&out, "helm (tcp)");
    assert_eq!(s(&cfg, "/listen/grpc"), "127.0.0.1:9191");
    let spec = &dep["spec"]["template"]["spec"];
    let pc = named(&spec["initContainers"], "portcullis");
    assert_eq!(named(&pc["ports"], "authz-grpc")["containerPort"], 9191);
    assert!(
        spec["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .all(|v| v["name"] != "portcullis-run"),
        "helm (tcp): no socket volume"
    );
    assert_eq!(
        envoy_cfg, shipped,
        "helm envoy.yaml (tcp) drifted from deploy/envoy.yaml"
    );

    // Anything else is refused, naming the value.
    let err = helm_template(&["portcullis.grpcTransport=udp"]).expect_err("udp refused");
    assert!(
        err.contains("portcullis.grpcTransport must be unix or tcp"),
        "{err}"
    );
}

/// A `helm template` output checked like the manifests: the pod spec, the
/// portcullis config (loads and validates, secrets from the Secret) and the
/// Envoy config's properties. Returns the Deployment, the portcullis config
/// and the Envoy config.
fn rendered(out: &str, what: &str) -> (Value, Value, Value) {
    let objs = yaml_docs(out, what);
    let dep = object(&objs, "Deployment");
    let secret = object(&objs, "Secret");
    assert_pod_spec(
        &dep["spec"]["template"]["spec"],
        s(secret, "/metadata/name"),
        what,
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
    let text = s(cm, "/data/config.yaml");
    let cfg = portcullis::config::Config::from_yaml_str(text, &env)
        .unwrap_or_else(|e| panic!("{what}: config.yaml loads: {e}"));
    cfg.validate()
        .unwrap_or_else(|e| panic!("{what}: config.yaml validates: {e:?}"));
    let envoy_cfg = yaml(s(cm, "/data/envoy.yaml"), what);
    assert_envoy_properties(&envoy_cfg, what);
    (dep.clone(), yaml(text, what), envoy_cfg)
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
