//! Route matching cost at 10 and 1,000 routes (`cargo bench --bench route_match`).

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use portcullis::policy::{
    MatchConfig, PathConfig, Policy, PolicyConfig, RequireConfig, RouteConfig, RouteMatch,
};

/// `n` routes: a third each exact / template / prefix; every 5th bound to an
/// exact host, every 7th to a wildcard host, some limited to GET.
fn config(n: usize) -> PolicyConfig {
    let routes = (0..n)
        .map(|i| {
            let path = match i % 3 {
                0 => PathConfig::Exact(format!("/api/v1/res{i}/items")),
                1 => PathConfig::Template(format!("/api/v1/res{i}/{{id}}/files/{{*rest}}")),
                _ => PathConfig::Prefix(format!("/static/s{i}/")),
            };
            let hosts = if i % 5 == 0 {
                Some(vec![format!("svc{}.example.org", i % 20)])
            } else if i % 7 == 0 {
                Some(vec![format!("*.tenant{}.example.org", i % 10)])
            } else {
                None
            };
            RouteConfig {
                name: format!("route-{i}"),
                matcher: MatchConfig {
                    hosts,
                    methods: (i % 4 == 0).then(|| vec!["GET".into(), "HEAD".into()]),
                    path: Some(path),
                },
                auth: Default::default(),
                require: RequireConfig {
                    all_of: vec![format!("res{i}:read")],
                    any_of: vec![],
                },
                credentials: portcullis::policy::CredentialKind::ALL.to_vec(),
                strip_credential: false,
                query_credential: false,
                assertion: None,
            }
        })
        .collect();
    PolicyConfig {
        routes,
        ..Default::default()
    }
}

fn requests(n: usize) -> Vec<(&'static str, &'static str, String)> {
    let last = |k: usize| (0..n).rev().find(|i| i % 3 == k).unwrap_or(k);
    vec![
        // exact path, any-host route
        (
            "api.example.org",
            "GET",
            format!("/api/v1/res{}/items", last(0)),
        ),
        // template with catch-all + query string
        (
            "api.example.org:443",
            "POST",
            format!("/api/v1/res{}/42/files/a/b/c.txt?x=1", last(1)),
        ),
        // longest prefix
        (
            "api.example.org",
            "GET",
            format!("/static/s{}/css/site.css", last(2)),
        ),
        // wildcard host tier that falls through to any-host routes
        (
            "a.tenant1.example.org",
            "GET",
            "/api/v1/res1/7/files/x".into(),
        ),
        // no route
        ("api.example.org", "GET", "/nothing/here".into()),
        // needs normalisation (allocates)
        (
            "API.example.org",
            "GET",
            "/api//v1/./res1/%34%32/files/x".into(),
        ),
    ]
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("route_match");
    for n in [10usize, 1000] {
        let policy = Policy::compile(&config(n)).expect("bench policy compiles");
        let reqs = requests(n);
        for (h, m, p) in &reqs {
            assert!(
                !matches!(policy.match_request(h, m, p), RouteMatch::BadPath(_)),
                "{p}"
            );
        }
        group.throughput(Throughput::Elements(reqs.len() as u64));
        group.bench_with_input(BenchmarkId::from_parameter(n), &reqs, |b, reqs| {
            b.iter(|| {
                for (h, m, p) in reqs {
                    black_box(policy.match_request(black_box(h), black_box(m), black_box(p)));
                }
            })
        });
    }
    group.finish();

    // Per request kind at 1,000 routes, to see where the time goes.
    let policy = Policy::compile(&config(1000)).expect("bench policy compiles");
    let mut each = c.benchmark_group("route_match_each/1000");
    let kinds = [
        "exact",
        "template",
        "prefix",
        "wildcard_fallthrough",
        "miss",
        "normalise",
    ];
    for (kind, (h, m, p)) in kinds.iter().zip(requests(1000)) {
        each.bench_function(*kind, |b| {
            b.iter(|| black_box(policy.match_request(black_box(h), black_box(m), black_box(&p))))
        });
    }
    each.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
