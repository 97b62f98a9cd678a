//! The Terraform in `infra/terraform` against the code it deploys, offline (no provider
//! downloads here): the table's keys and TTL attribute are those `kurz init` creates, the task
//! role allows exactly the DynamoDB calls `kurz serve` makes (and the code makes no call
//! outside the declared lists), and every `KURZ__` variable in the task definition is a real
//! setting.

use std::collections::{BTreeSet, HashMap};
use std::path::Path;

use hcl::{Block, Body, Expression, ObjectKey};
use kurz::config::Settings;
use kurz::store::dynamodb::item::{INDEX_SK, PARTITION_KEY, SORT_KEY, TTL_ATTRIBUTE};
use kurz::store::dynamodb::{INDEXES, INIT_OPERATIONS, SERVE_OPERATIONS};

const MODULE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/infra/terraform/modules/kurz");

/// Every `.tf` file of the module, parsed.
fn module() -> Vec<(String, Body)> {
    let mut files: Vec<_> = std::fs::read_dir(MODULE)
        .expect("infra/terraform/modules/kurz exists")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "tf"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no .tf files in {MODULE}");
    files
        .into_iter()
        .map(|path| {
            let text = std::fs::read_to_string(&path).expect("readable");
            let body = hcl::parse(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            (path.display().to_string(), body)
        })
        .collect()
}

fn blocks<'a>(files: &'a [(String, Body)], kind: &'a str) -> impl Iterator<Item = &'a Block> {
    files
        .iter()
        .flat_map(move |(_, body)| body.blocks().filter(move |b| b.identifier() == kind))
}

fn resource<'a>(files: &'a [(String, Body)], kind: &str, name: &str) -> &'a Block {
    blocks(files, "resource")
        .find(|b| {
            b.labels().first().map(|l| l.as_str()) == Some(kind)
                && b.labels().get(1).map(|l| l.as_str()) == Some(name)
        })
        .unwrap_or_else(|| panic!("no resource \"{kind}\" \"{name}\" in {MODULE}"))
}

fn attribute<'a>(body: &'a Body, key: &str) -> Option<&'a Expression> {
    body.attributes().find(|a| a.key() == key).map(|a| a.expr())
}

fn string_attr(body: &Body, key: &str) -> String {
    match attribute(body, key) {
        Some(Expression::String(s)) => s.clone(),
        other => panic!("`{key}` should be a string literal, is {other:?}"),
    }
}

#[test]
fn the_table_has_the_keys_and_ttl_attribute_kurz_init_creates() {
    let files = module();
    let table = resource(&files, "aws_dynamodb_table", "kurz").body();
    assert_eq!(string_attr(table, "hash_key"), PARTITION_KEY);
    assert_eq!(string_attr(table, "range_key"), SORT_KEY);
    assert_eq!(string_attr(table, "billing_mode"), "PAY_PER_REQUEST");
    let attributes: BTreeSet<(String, String)> = table
        .blocks()
        .filter(|b| b.identifier() == "attribute")
        .map(|b| (string_attr(b.body(), "name"), string_attr(b.body(), "type")))
        .collect();
    let expected: BTreeSet<(String, String)> = [PARTITION_KEY, SORT_KEY, INDEX_SK]
        .into_iter()
        .chain(INDEXES.iter().map(|(_, partition)| *partition))
        .map(|k| (k.to_owned(), "S".to_owned()))
        .collect();
    assert_eq!(
        attributes, expected,
        "key attributes of the table and its indexes: strings, nothing else"
    );
    let indexes: BTreeSet<(String, String, String, String)> = table
        .blocks()
        .filter(|b| b.identifier() == "global_secondary_index")
        .map(|b| {
            let field = |key| string_attr(b.body(), key);
            (
                field("name"),
                field("hash_key"),
                field("range_key"),
                field("projection_type"),
            )
        })
        .collect();
    let expected: BTreeSet<(String, String, String, String)> = INDEXES
        .iter()
        .map(|(name, partition)| {
            let owned = |s: &str| s.to_owned();
            (owned(name), owned(partition), owned(INDEX_SK), owned("ALL"))
        })
        .collect();
    assert_eq!(indexes, expected, "the list indexes kurz init creates");
    let ttl = table
        .blocks()
        .find(|b| b.identifier() == "ttl")
        .expect("a ttl block");
    assert_eq!(string_attr(ttl.body(), "attribute_name"), TTL_ATTRIBUTE);
    assert_eq!(
        attribute(ttl.body(), "enabled"),
        Some(&Expression::Bool(true))
    );
}

/// The DynamoDB operations the store's source calls on its SDK client (`client.get_item()`
/// -> `GetItem`).
fn operations_in_source() -> BTreeSet<String> {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/src/store/dynamodb");
    let mut found = BTreeSet::new();
    for entry in std::fs::read_dir(dir).expect("src/store/dynamodb") {
        let text = std::fs::read_to_string(entry.expect("entry").path()).expect("source");
        let mut rest = text.as_str();
        while let Some(at) = rest.find("client") {
            rest = &rest[at + "client".len()..];
            let after = rest.trim_start();
            let Some(call) = after.strip_prefix('.') else {
                continue;
            };
            let name: String = call
                .chars()
                .take_while(|c| c.is_ascii_lowercase() || *c == '_')
                .collect();
            if !name.is_empty() && call[name.len()..].starts_with('(') {
                found.insert(pascal_case(&name));
            }
        }
    }
    found
}

fn pascal_case(snake: &str) -> String {
    snake
        .split('_')
        .map(|w| {
            let mut c = w.chars();
            c.next()
                .map(|f| f.to_ascii_uppercase().to_string() + c.as_str())
                .unwrap_or_default()
        })
        .collect()
}

#[test]
fn the_task_role_allows_exactly_the_dynamodb_calls_kurz_serve_makes() {
    let declared: BTreeSet<String> = SERVE_OPERATIONS
        .iter()
        .chain(INIT_OPERATIONS)
        .map(|s| (*s).to_owned())
        .collect();
    let called = operations_in_source();
    assert!(
        called.contains("GetItem"),
        "the scan found no calls: {called:?}"
    );
    assert_eq!(
        called, declared,
        "the store's SDK calls and SERVE_OPERATIONS + INIT_OPERATIONS differ"
    );

    let files = module();
    let actions = blocks(&files, "locals")
        .find_map(|b| attribute(b.body(), "kurz_dynamodb_actions"))
        .expect("local.kurz_dynamodb_actions");
    let Expression::Array(actions) = actions else {
        panic!("kurz_dynamodb_actions should be a list literal");
    };
    let allowed: BTreeSet<String> = actions
        .iter()
        .map(|a| match a {
            Expression::String(s) => s.clone(),
            other => panic!("not a string literal: {other:?}"),
        })
        .collect();
    let needed: BTreeSet<String> = SERVE_OPERATIONS
        .iter()
        .map(|op| format!("dynamodb:{op}"))
        .collect();
    assert_eq!(
        allowed, needed,
        "task role actions vs the calls kurz serve makes"
    );
}

/// Every object `{ name = "KURZ__…", … }` anywhere in `expr`, by name, with its value when it
/// is a string literal.
fn kurz_variables(expr: &Expression, found: &mut Vec<(String, Option<String>)>) {
    match expr {
        Expression::Object(object) => {
            let get = |key: &str| {
                object.iter().find_map(|(k, v)| match k {
                    ObjectKey::Identifier(id) if id.as_str() == key => Some(v),
                    ObjectKey::Expression(Expression::String(s)) if s == key => Some(v),
                    _ => None,
                })
            };
            if let Some(Expression::String(name)) = get("name")
                && name.starts_with("KURZ__")
            {
                let value = match get("value") {
                    Some(Expression::String(v)) => Some(v.clone()),
                    _ => None,
                };
                found.push((name.clone(), value));
            }
            for (_, value) in object.iter() {
                kurz_variables(value, found);
            }
        }
        Expression::Array(items) => items.iter().for_each(|e| kurz_variables(e, found)),
        Expression::FuncCall(call) => call.args.iter().for_each(|e| kurz_variables(e, found)),
        Expression::Parenthesis(inner) => kurz_variables(inner, found),
        _ => {}
    }
}

fn attributes_everywhere(body: &Body, out: &mut Vec<Expression>) {
    out.extend(body.attributes().map(|a| a.expr().clone()));
    for block in body.blocks() {
        attributes_everywhere(block.body(), out);
    }
}

#[test]
fn every_kurz_variable_in_the_task_definition_is_a_real_setting() {
    let files = module();
    let mut found = Vec::new();
    for (_, body) in &files {
        let mut exprs = Vec::new();
        attributes_everywhere(body, &mut exprs);
        for expr in &exprs {
            kurz_variables(expr, &mut found);
        }
    }
    let names: BTreeSet<&str> = found.iter().map(|(n, _)| n.as_str()).collect();
    for must in [
        "KURZ__STORE__BACKEND",
        "KURZ__STORE__DYNAMODB__TABLE",
        "KURZ__CACHE__REDIS__URL",
        "KURZ__SERVER__DRAIN_DELAY_MS",
    ] {
        assert!(
            names.contains(must),
            "{must} not set in the task definition: {names:?}"
        );
    }
    let mut literals = HashMap::new();
    for (name, value) in &found {
        // Alone, any value: an error may say the value is wrong, never that the name is.
        let env = HashMap::from([(name.clone(), value.clone().unwrap_or_else(|| "1".into()))]);
        if let Err(e) = Settings::load_from(None, Some(env)) {
            assert!(
                !e.to_string().contains("unknown field"),
                "{name} is not a kurz setting: {e}"
            );
        }
        if let Some(value) = value {
            literals.insert(name.clone(), value.clone());
        }
    }
    // Together, the literal values load as they are (the keys come from a secret, so a
    // stand-in of the required length takes their place).
    if names.contains("KURZ__AUTH__API_KEYS") {
        literals.insert("KURZ__AUTH__API_KEYS".into(), "k".repeat(32));
    }
    if let Err(e) = Settings::load_from(None, Some(literals.clone())) {
        panic!("the task definition's settings do not load: {e}\n{literals:?}");
    }
}

#[test]
fn the_image_checks_health_with_the_kurz_subcommand() {
    let dockerfile =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("Dockerfile"))
            .expect("Dockerfile");
    // The instruction with its continuation lines.
    let mut instruction = String::new();
    for line in dockerfile
        .lines()
        .skip_while(|l| !l.trim_start().starts_with("HEALTHCHECK"))
    {
        instruction.push_str(line.trim_end_matches('\\'));
        if !line.ends_with('\\') {
            break;
        }
    }
    assert!(
        instruction.contains(r#"CMD ["/usr/local/bin/kurz", "healthcheck"]"#),
        "HEALTHCHECK should run `kurz healthcheck`: {instruction}"
    );
}
