//! The Prometheus rules (`infra/prometheus/`) and the Grafana dashboard (`infra/grafana/`)
//! against the metrics kurz exports: promtool checks the rules and runs their unit tests, and
//! every metric a rule or a panel queries is one `/metrics` renders (the `metrics!` table, the
//! HTTP metrics and the admission counters, as `Metrics::render` writes them), with every label
//! value it matches exactly (`route="redirect"`, `le="0.1"`, `class="read"`), so a renamed
//! metric, route or bucket fails here instead of leaving a silent panel or an alert that never
//! fires.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::{Command, Output};

use kurz::http::Endpoint;
use kurz::telemetry::Metrics;
use serde_json::Value as Json;
use serde_yaml::Value as Yaml;

const RULES: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/infra/prometheus/kurz-rules.yml"
);
const RULE_TESTS: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/infra/prometheus/kurz-rules.test.yml"
);
const DASHBOARD: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/infra/grafana/kurz.json");

const INSTALL: &str =
    "promtool is missing: scripts/test.sh installs it (apt-get install prometheus)";

/// Labels Prometheus adds from the scrape target, not kurz.
const TARGET_LABELS: [&str; 2] = ["job", "instance"];

fn promtool(args: &[&str]) -> Output {
    match Command::new("promtool").args(args).output() {
        Ok(output) => output,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!("{INSTALL}"),
        Err(e) => panic!("promtool {args:?}: {e}"),
    }
}

fn assert_success(what: &str, output: &Output) -> String {
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "{what} failed ({}):\n{stdout}\n{stderr}",
        output.status
    );
    stdout
}

#[test]
fn the_rules_pass_promtool_check_and_their_unit_tests() {
    let check = promtool(&["check", "rules", RULES]);
    println!("{}", assert_success("promtool check rules", &check));
    let tests: Yaml = serde_yaml::from_str(&read(RULE_TESTS)).expect("the rule tests are YAML");
    let cases = tests["tests"].as_sequence().map_or(0, Vec::len);
    assert!(cases >= 5, "only {cases} rule tests in {RULE_TESTS}");
    let run = promtool(&["test", "rules", RULE_TESTS]);
    println!("{}", assert_success("promtool test rules", &run));
}

/// promtool parses the dashboard's queries too: each written as a recording rule, with
/// Grafana's variables given values.
#[test]
fn the_dashboard_queries_are_promql_promtool_accepts() {
    let queries = dashboard_queries(&dashboard());
    let mut file = String::from("groups:\n  - name: dashboard\n    rules:\n");
    for (i, (_, expr)) in queries.iter().enumerate() {
        let expr = expr
            .replace("$__rate_interval", "5m")
            .replace("$job", ".+")
            .replace("$instance", ".+");
        let expr = serde_json::to_string(&expr).expect("a string");
        file.push_str(&format!(
            "      - record: dashboard_query_{i}\n        expr: {expr}\n"
        ));
    }
    let dir = tempfile::tempdir().expect("a temporary directory");
    let path = dir.path().join("dashboard-queries.yml");
    std::fs::write(&path, file).expect("written");
    let path = path.to_str().expect("a UTF-8 path");
    let check = promtool(&["check", "rules", path]);
    println!(
        "{}",
        assert_success("promtool check rules (the dashboard's queries)", &check)
    );
}

#[test]
fn every_alert_is_a_page_or_a_ticket_and_says_what_to_read() {
    for rule in rules() {
        let Some(alert) = rule["alert"].as_str() else {
            continue;
        };
        let severity = rule["labels"]["severity"].as_str();
        assert!(
            matches!(severity, Some("page" | "ticket")),
            "{alert}: severity {severity:?}, not page or ticket"
        );
        for annotation in ["summary", "description", "runbook"] {
            assert!(
                rule["annotations"][annotation].as_str().is_some(),
                "{alert} has no {annotation} annotation"
            );
        }
    }
}

#[test]
fn every_metric_the_rules_and_the_dashboard_query_is_one_kurz_exports() {
    let exported = exported();
    let rules = rules();
    let recorded: BTreeSet<String> = rules
        .iter()
        .filter_map(|r| r["record"].as_str().map(str::to_owned))
        .collect();
    let mut queries: Vec<(String, String)> = rules
        .iter()
        .map(|r| {
            let name = r["record"].as_str().or(r["alert"].as_str()).unwrap_or("?");
            let expr = r["expr"].as_str().expect("every rule has an expr");
            (format!("{RULES}: {name}"), expr.to_owned())
        })
        .collect();
    let rule_queries = queries.len();
    queries.extend(dashboard_queries(&dashboard()));
    assert!(
        rule_queries >= 20 && queries.len() - rule_queries >= 40,
        "found only {rule_queries} rule and {} dashboard queries",
        queries.len() - rule_queries
    );

    let mut wrong = Vec::new();
    let mut used = BTreeSet::new();
    for (whence, expr) in &queries {
        for selector in selectors(expr) {
            if recorded.contains(&selector.name) {
                continue;
            }
            let Some(labels) = exported.get(&selector.name) else {
                wrong.push(format!(
                    "{whence}: `{}` is no metric kurz exports",
                    selector.name
                ));
                continue;
            };
            used.insert(selector.name.clone());
            for (label, value) in &selector.equal {
                if TARGET_LABELS.contains(&label.as_str()) || value.contains('$') {
                    continue;
                }
                let known = labels.get(label);
                if !known.is_some_and(|values| values.contains(value)) {
                    wrong.push(format!(
                        "{whence}: `{}` has no series {label}=\"{value}\" (it has {label}: {:?})",
                        selector.name,
                        known.cloned().unwrap_or_default()
                    ));
                }
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    println!(
        "{} queries name {} of kurz's {} series names",
        queries.len(),
        used.len(),
        exported.len()
    );
}

#[test]
fn every_panel_reads_the_datasource_variable() {
    let dashboard = dashboard();
    let variables = dashboard["templating"]["list"]
        .as_array()
        .expect("templating.list");
    assert!(
        variables.iter().any(|v| v["name"] == "datasource"
            && v["type"] == "datasource"
            && v["query"] == "prometheus"),
        "no Prometheus datasource variable named `datasource`"
    );
    let mut panels = 0;
    walk(&dashboard["panels"], &mut |key, value| {
        if key == "datasource" {
            panels += 1;
            assert_eq!(
                value["uid"], "${datasource}",
                "a datasource that is not the variable: {value}"
            );
        }
    });
    assert!(panels > 0);
}

#[test]
fn the_readme_explains_every_alert_and_no_other() {
    let readme = read(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"));
    let section = readme
        .split("\n## SLOs and dashboards\n")
        .nth(1)
        .and_then(|s| s.split("\n## ").next())
        .expect("README.md has a section \"SLOs and dashboards\"");
    let explained: BTreeSet<&str> = section
        .lines()
        .filter_map(|l| l.strip_prefix("| `"))
        .filter_map(|l| l.split('`').next())
        .collect();
    let alerts: BTreeSet<String> = rules()
        .iter()
        .filter_map(|r| r["alert"].as_str().map(str::to_owned))
        .collect();
    let alerts: BTreeSet<&str> = alerts.iter().map(String::as_str).collect();
    assert_eq!(explained, alerts, "README's alert table against {RULES}");
}

/// Each series name kurz renders on `/metrics` with the values of each of its labels: counters
/// and gauges by their own name, a histogram by its `_bucket`, `_sum` and `_count` series.
fn exported() -> BTreeMap<String, BTreeMap<String, BTreeSet<String>>> {
    let text = Metrics::with_routes(Endpoint::METRIC_LABELS).render(0);
    let mut series: BTreeMap<String, BTreeMap<String, BTreeSet<String>>> = BTreeMap::new();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let sample = line.rsplit_once(' ').map_or(line, |(s, _)| s);
        let (name, labels) = match sample.split_once('{') {
            Some((name, labels)) => (name, labels.trim_end_matches('}')),
            None => (sample, ""),
        };
        let entry = series.entry(name.to_owned()).or_default();
        for pair in labels.split(',').filter(|p| !p.is_empty()) {
            let (label, value) = pair.split_once('=').expect("label=\"value\"");
            entry
                .entry(label.to_owned())
                .or_default()
                .insert(value.trim_matches('"').to_owned());
        }
    }
    assert!(series.contains_key("kurz_http_request_duration_seconds_bucket"));
    series
}

fn read(path: &str) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn rules() -> Vec<Yaml> {
    let rules: Yaml = serde_yaml::from_str(&read(RULES)).expect("the rules are YAML");
    rules["groups"]
        .as_sequence()
        .expect("groups")
        .iter()
        .flat_map(|g| g["rules"].as_sequence().expect("rules").clone())
        .collect()
}

fn dashboard() -> Json {
    assert!(Path::new(DASHBOARD).exists(), "{DASHBOARD} is missing");
    serde_json::from_str(&read(DASHBOARD)).expect("the dashboard is JSON")
}

/// Calls `f` with every key and value in `value`, depth first.
fn walk(value: &Json, f: &mut impl FnMut(&str, &Json)) {
    match value {
        Json::Object(map) => {
            for (key, value) in map {
                f(key, value);
                walk(value, f);
            }
        }
        Json::Array(items) => items.iter().for_each(|v| walk(v, f)),
        _ => {}
    }
}

/// Every PromQL query of the dashboard: the panels' `expr`s and the variables' queries
/// (`label_values(selector, label)` queries its selector).
fn dashboard_queries(dashboard: &Json) -> Vec<(String, String)> {
    let mut queries = Vec::new();
    walk(&dashboard["panels"], &mut |key, value| {
        if let ("expr", Some(expr)) = (key, value.as_str()) {
            queries.push((format!("{DASHBOARD}: panel"), expr.to_owned()));
        }
    });
    let variables = dashboard["templating"]["list"].as_array().cloned();
    for variable in variables.unwrap_or_default() {
        if variable["type"] != "query" {
            continue;
        }
        let query = variable["query"]["query"]
            .as_str()
            .or(variable["query"].as_str())
            .expect("a query variable has a query");
        let name = variable["name"].as_str().unwrap_or("?");
        let expr = match query.strip_prefix("label_values(") {
            Some(args) => match args.trim_end_matches(')').rsplit_once(',') {
                Some((selector, _label)) => selector,
                None => continue, // label_values(label): every series, no metric named
            },
            None => query,
        };
        queries.push((format!("{DASHBOARD}: variable {name}"), expr.to_owned()));
    }
    queries
}

/// A metric named in a query, with the label values it matches exactly (`label="value"`).
#[derive(Debug)]
struct Selector {
    name: String,
    equal: Vec<(String, String)>,
}

/// Words of PromQL that are not metric names when not followed by `(`.
const KEYWORDS: [&str; 23] = [
    "sum",
    "min",
    "max",
    "avg",
    "group",
    "stddev",
    "stdvar",
    "count",
    "count_values",
    "bottomk",
    "topk",
    "quantile",
    "and",
    "or",
    "unless",
    "bool",
    "offset",
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
];
/// Keywords followed by a list of label names in parentheses.
const LABEL_LISTS: [&str; 6] = [
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
];

/// The metric names a PromQL expression reads: identifiers that are not functions (followed by
/// `(`), keywords, numbers, durations, Grafana variables, label names in `by (...)` and the like,
/// or inside `{...}` and `[...]`.
fn selectors(expr: &str) -> Vec<Selector> {
    let chars: Vec<char> = expr.chars().collect();
    let mut found: Vec<Selector> = Vec::new();
    let mut i = 0;
    let ident = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == ':';
    while i < chars.len() {
        let c = chars[i];
        if c == '"' || c == '\'' || c == '`' {
            i = skip_string(&chars, i);
        } else if c == '[' {
            i = chars[i..]
                .iter()
                .position(|&c| c == ']')
                .map_or(chars.len(), |p| i + p + 1);
        } else if c == '{' {
            let end = chars[i..]
                .iter()
                .position(|&c| c == '}')
                .map_or(chars.len(), |p| i + p);
            let matchers: String = chars[i + 1..end].iter().collect();
            // A selector with no name before its braces (`{__name__=~"..."}`) would name its
            // metrics in a way this reader does not follow: the queries here have none.
            let named = chars[..i].iter().rev().find(|c| !c.is_whitespace());
            assert!(
                named.is_some_and(|&c| ident(c)),
                "label matchers without a metric name in `{expr}`"
            );
            let selector = found.last_mut().expect("the metric before its braces");
            selector.equal = equality_matchers(&matchers);
            i = end + 1;
        } else if c == '$' {
            i += 1;
            while i < chars.len() && (ident(chars[i]) || chars[i] == '{' || chars[i] == '}') {
                i += 1;
            }
        } else if c.is_ascii_digit() || c == '.' {
            while i < chars.len() && (ident(chars[i]) || chars[i] == '.') {
                i += 1;
            }
        } else if ident(c) {
            let start = i;
            while i < chars.len() && ident(chars[i]) {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            let next = chars[i..].iter().find(|c| !c.is_whitespace());
            if LABEL_LISTS.contains(&word.as_str()) && next == Some(&'(') {
                i += chars[i..]
                    .iter()
                    .position(|&c| c == ')')
                    .map_or(0, |p| p + 1);
            } else if next == Some(&'(')
                || KEYWORDS.contains(&word.as_str())
                || word == "Inf"
                || word == "NaN"
            {
                // a function, an aggregation or an operator
            } else {
                found.push(Selector {
                    name: word,
                    equal: Vec::new(),
                });
            }
        } else {
            i += 1;
        }
    }
    found
}

fn skip_string(chars: &[char], start: usize) -> usize {
    let quote = chars[start];
    let mut i = start + 1;
    while i < chars.len() && chars[i] != quote {
        i += if chars[i] == '\\' { 2 } else { 1 };
    }
    i + 1
}

/// The `label="value"` matchers of a selector's braces (`!=`, `=~` and `!~` are not checked).
fn equality_matchers(matchers: &str) -> Vec<(String, String)> {
    let mut equal = Vec::new();
    let mut rest = matchers;
    while let Some(eq) = rest.find('=') {
        let label = rest[..eq].trim().trim_start_matches(',').trim();
        let op_end = eq + 1 + usize::from(rest[eq + 1..].starts_with('~'));
        let negated = label.ends_with('!');
        let after = rest[op_end..].trim_start();
        let Some(quoted) = after.strip_prefix('"') else {
            break;
        };
        let end = quoted.find('"').unwrap_or(quoted.len());
        if !negated && op_end == eq + 1 {
            equal.push((label.to_owned(), quoted[..end].to_owned()));
        }
        rest = &quoted[(end + 1).min(quoted.len())..];
    }
    equal
}

#[test]
fn the_query_reader_finds_metrics_and_their_exact_label_values() {
    let names = |expr: &str| {
        selectors(expr)
            .into_iter()
            .map(|s| (s.name, s.equal))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        names(
            r#"histogram_quantile(0.99, sum by (le) (rate(a_bucket{job=~"$job",route="redirect", le!="1"}[$__rate_interval])))"#
        ),
        vec![(
            "a_bucket".to_owned(),
            vec![("route".to_owned(), "redirect".to_owned())]
        )]
    );
    assert_eq!(
        names("x > (14.4 * 0.0005) and on (job, instance) y offset 5m or time() - z"),
        vec![
            ("x".to_owned(), vec![]),
            ("y".to_owned(), vec![]),
            ("z".to_owned(), vec![])
        ]
    );
    assert_eq!(
        names("sum without (instance) (job:r:ratio_rate5m{job=\"a\"}) / 1e6"),
        vec![(
            "job:r:ratio_rate5m".to_owned(),
            vec![("job".to_owned(), "a".to_owned())]
        )]
    );
}
