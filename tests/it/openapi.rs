//! `openapi.yaml` is the machine-readable contract: it must list exactly the routes the server
//! registers, and every error it documents must be problem+json. The running server is probed
//! for each documented operation to show the route really exists.

use std::collections::BTreeSet;

use serde_yaml::Value;

fn spec() -> Value {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/openapi.yaml"))
        .expect("openapi.yaml is readable");
    serde_yaml::from_str(&text).expect("openapi.yaml is valid YAML")
}

const METHODS: [&str; 8] = [
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

fn spec_operations(spec: &Value) -> BTreeSet<(String, String)> {
    let paths = spec["paths"].as_mapping().expect("paths");
    let mut operations = BTreeSet::new();
    for (path, item) in paths {
        let path = path.as_str().expect("path is a string");
        for method in METHODS {
            if item.get(method).is_some() {
                operations.insert((method.to_uppercase(), path.to_owned()));
            }
        }
    }
    operations
}

fn server_operations() -> BTreeSet<(String, String)> {
    kurz::http::Endpoint::ALL
        .iter()
        .flat_map(|endpoint| {
            endpoint
                .methods()
                .iter()
                .map(|m| (m.to_string(), endpoint.path().to_owned()))
        })
        .collect()
}

#[test]
fn spec_and_server_list_the_same_operations() {
    let spec = spec();
    assert_eq!(spec["openapi"].as_str(), Some("3.1.0"));
    let documented = spec_operations(&spec);
    let served = server_operations();
    let undocumented: Vec<_> = served.difference(&documented).collect();
    let unserved: Vec<_> = documented.difference(&served).collect();
    assert!(
        undocumented.is_empty() && unserved.is_empty(),
        "served but not in openapi.yaml: {undocumented:?}; in openapi.yaml but not served: {unserved:?}"
    );
}

#[test]
fn every_documented_error_is_problem_json() {
    let spec = spec();
    let responses = &spec["components"]["responses"];
    for (path, item) in spec["paths"].as_mapping().expect("paths") {
        for method in METHODS {
            let Some(operation) = item.get(method) else {
                continue;
            };
            if method == "head" {
                continue; // HEAD answers carry no body
            }
            let listed = operation["responses"].as_mapping().expect("responses");
            assert!(!listed.is_empty());
            for (status, response) in listed {
                let status = status.as_str().expect("status is quoted");
                if !(status.starts_with('4') || status.starts_with('5')) {
                    continue;
                }
                let resolved = match response.get("$ref").and_then(Value::as_str) {
                    Some(reference) => {
                        let name = reference.rsplit('/').next().expect("ref name");
                        &responses[name]
                    }
                    None => response,
                };
                assert!(
                    resolved["content"]
                        .get("application/problem+json")
                        .is_some(),
                    "{method} {path:?} {status} is not problem+json"
                );
            }
        }
    }
}

#[tokio::test]
async fn every_documented_operation_is_routed() {
    let app = crate::harness::spawn_app().await;
    let spec = spec();
    for (method, path) in spec_operations(&spec) {
        let responses = &spec["paths"][path.as_str()][method.to_lowercase().as_str()]["responses"];
        let url = app.url(
            &path
                .replace("{code}", "probe")
                .replace("{file}", "kurz.css"),
        );
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let response = app
            .client
            .request(method.clone(), &url)
            .bearer_auth(crate::harness::ADMIN_TOKEN)
            .send()
            .await
            .expect("send");
        // Routed, and answered as documented: a status the operation lists (an error a probe
        // with made-up values may meet), never a 405 or a 5xx.
        let status = response.status();
        assert_ne!(status, 405, "{method} {path}");
        assert!(!status.is_server_error(), "{method} {path}: {status}");
        assert!(
            responses.get(status.as_str()).is_some() || responses.get("default").is_some(),
            "{method} {path}: {status} is not among the documented responses"
        );
        let body = response.text().await.expect("body");
        assert!(
            !body.contains("nothing is served at"),
            "{method} {path}: {body}"
        );
    }
    app.stop().await;
}
