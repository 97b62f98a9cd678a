//! The Terraform in `infra/terraform` against the code it deploys, offline (no provider
//! downloads here): the table's keys and TTL attribute are those `kurz init` creates; each role
//! allows exactly the DynamoDB and Kinesis calls its program makes (`kurz serve`: the task role;
//! `kurz aggregate`: the aggregate role), found by following the calls from each program's entry
//! through the source, and the code makes no call outside the declared lists; every `KURZ__`
//! variable in each task definition is a real setting, and the consumer reads the stream the
//! service writes, and with traces on kurz sends its spans where the collector beside it
//! listens; the log metric filters match the lines the code logs.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;
use std::process::Command;

use hcl::{Block, Body, Expression, ObjectKey, TraversalOperator};
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
    let granted = role_actions(&files, "task");
    assert_eq!(
        of_service(&granted, "dynamodb"),
        set(SERVE_OPERATIONS),
        "the DynamoDB actions the task role's policies grant vs the calls kurz serve makes"
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
        Expression::Conditional(choice) => {
            kurz_variables(&choice.true_expr, found);
            kurz_variables(&choice.false_expr, found);
        }
        _ => {}
    }
}

fn attributes_everywhere(body: &Body, out: &mut Vec<Expression>) {
    out.extend(body.attributes().map(|a| a.expr().clone()));
    for block in body.blocks() {
        attributes_everywhere(block.body(), out);
    }
}

/// The module's `locals` attribute `name`.
fn local_value<'a>(files: &'a [(String, Body)], name: &str) -> Option<&'a Expression> {
    blocks(files, "locals").find_map(|b| attribute(b.body(), name))
}

/// The `KURZ__` variables of task definition `name`, with their value expressions (those of
/// the locals it names too, such as the region settings).
fn task_variables(files: &[(String, Body)], name: &str) -> Vec<(String, Option<String>)> {
    let task = resource(files, "aws_ecs_task_definition", name).body();
    let mut exprs = Vec::new();
    attributes_everywhere(task, &mut exprs);
    let text = hcl::format::to_string(task).expect("formats");
    for (at, _) in text.match_indices("local.") {
        let name: String = text[at + "local.".len()..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        if let Some(expr) = local_value(files, &name) {
            exprs.push(expr.clone());
        }
    }
    let mut found = Vec::new();
    for expr in &exprs {
        kurz_variables(expr, &mut found);
    }
    found
}

/// Each name is a kurz setting, and the literal values load together.
fn assert_real_settings(task: &str, found: &[(String, Option<String>)], must: &[&str]) {
    let names: BTreeSet<&str> = found.iter().map(|(n, _)| n.as_str()).collect();
    for must in must {
        assert!(
            names.contains(must),
            "{must} not set in the {task} task definition: {names:?}"
        );
    }
    let mut literals = HashMap::new();
    for (name, value) in found {
        // Alone, any value: an error may say the value is wrong, never that the name is.
        let env = HashMap::from([(name.clone(), value.clone().unwrap_or_else(|| "1".into()))]);
        if let Err(e) = Settings::load_from(None, Some(env)) {
            assert!(
                !e.to_string().contains("unknown field"),
                "{name} ({task} task) is not a kurz setting: {e}"
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
        panic!("the {task} task definition's settings do not load: {e}\n{literals:?}");
    }
}

#[test]
fn every_kurz_variable_in_the_task_definitions_is_a_real_setting() {
    let files = module();
    let tasks: BTreeSet<String> = blocks(&files, "resource")
        .filter(|b| b.labels().first().map(|l| l.as_str()) == Some("aws_ecs_task_definition"))
        .filter_map(|b| b.labels().get(1).map(|l| l.as_str().to_owned()))
        .collect();
    assert_eq!(
        tasks,
        BTreeSet::from(["aggregate".to_owned(), "kurz".to_owned()]),
        "the task definitions this test knows"
    );
    let serve = task_variables(&files, "kurz");
    assert_real_settings(
        "kurz serve",
        &serve,
        &[
            "KURZ__STORE__BACKEND",
            "KURZ__STORE__DYNAMODB__TABLE",
            "KURZ__CACHE__REDIS__URL",
            "KURZ__SERVER__DRAIN_DELAY_MS",
            "KURZ__CLICKS__SINK",
            "KURZ__CLICKS__KINESIS__STREAM",
            "KURZ__SERVER__ADMIN_BIND",
            "KURZ__REGION__NAME",
            "KURZ__REGION__ID",
            "KURZ__REGION__PEERS",
            "KURZ__REGION__STREAM_ENDPOINT_URL",
        ],
    );
    // /metrics only on a loopback listener of its own, never on the port the load balancers
    // reach (the container port, 8080).
    let admin = serve
        .iter()
        .find(|(n, _)| n == "KURZ__SERVER__ADMIN_BIND")
        .and_then(|(_, v)| v.as_deref())
        .expect("KURZ__SERVER__ADMIN_BIND is a literal");
    let admin: std::net::SocketAddr = admin.parse().expect("an address");
    assert!(
        admin.ip().is_loopback() && admin.port() != 8080,
        "the admin listener should be on loopback, off the public port: {admin}"
    );
    let aggregate = task_variables(&files, "aggregate");
    assert_real_settings(
        "kurz aggregate",
        &aggregate,
        &[
            "KURZ__STORE__BACKEND",
            "KURZ__STORE__DYNAMODB__TABLE",
            "KURZ__STORE__DYNAMODB__REGION",
            "KURZ__CLICKS__KINESIS__STREAM",
            "KURZ__AGGREGATE__WINDOW_MS",
            "KURZ__LOG__FORMAT",
            "KURZ__REGION__NAME",
            "KURZ__REGION__ID",
        ],
    );
}

/// The settings of the click stream (`clicks.kinesis.*`) in task definition `name`, by name,
/// with their value expressions.
fn stream_settings(files: &[(String, Body)], name: &str) -> BTreeMap<String, String> {
    let mut exprs = Vec::new();
    attributes_everywhere(
        resource(files, "aws_ecs_task_definition", name).body(),
        &mut exprs,
    );
    let mut found = BTreeMap::new();
    for expr in &exprs {
        environment_entries(expr, &mut found);
    }
    found
        .into_iter()
        .filter(|(name, _)| name.starts_with("KURZ__CLICKS__KINESIS__"))
        .collect()
}

/// Every `{ name = "KURZ__…", value = EXPR }` in `expr`: the name and EXPR as written.
fn environment_entries(expr: &Expression, found: &mut BTreeMap<String, String>) {
    match expr {
        Expression::Object(object) => {
            let get = |key: &str| {
                object.iter().find_map(|(k, v)| match k {
                    ObjectKey::Identifier(id) if id.as_str() == key => Some(v),
                    _ => None,
                })
            };
            if let (Some(Expression::String(name)), Some(value)) = (get("name"), get("value"))
                && name.starts_with("KURZ__")
            {
                found.insert(name.clone(), format!("{value:?}"));
            }
            object
                .iter()
                .for_each(|(_, v)| environment_entries(v, found));
        }
        Expression::Array(items) => items.iter().for_each(|e| environment_entries(e, found)),
        Expression::FuncCall(call) => call.args.iter().for_each(|e| environment_entries(e, found)),
        Expression::Parenthesis(inner) => environment_entries(inner, found),
        Expression::Conditional(choice) => {
            environment_entries(&choice.true_expr, found);
            environment_entries(&choice.false_expr, found);
        }
        _ => {}
    }
}

#[test]
fn the_consumer_reads_the_stream_the_service_writes_with_its_settings() {
    let files = module();
    let serve = stream_settings(&files, "kurz");
    assert!(
        serve.contains_key("KURZ__CLICKS__KINESIS__STREAM"),
        "the service names no stream: {serve:?}"
    );
    // The same stream, and the same resend window and put timeout (the consumer remembers
    // record ids for as long as the producers may send one again).
    assert_eq!(
        stream_settings(&files, "aggregate"),
        serve,
        "clicks.kinesis.* of kurz aggregate vs kurz serve"
    );
    // The consumer runs `kurz aggregate`: a subcommand of this kurz.
    let command = container_command(resource(&files, "aws_ecs_task_definition", "aggregate"));
    assert_eq!(command, ["aggregate"], "the consumer's container command");
    let help = Command::new(env!("CARGO_BIN_EXE_kurz"))
        .args(&command)
        .arg("--help")
        .output()
        .expect("kurz runs");
    assert!(
        help.status.success(),
        "`kurz {} --help` failed: {}",
        command.join(" "),
        String::from_utf8_lossy(&help.stderr)
    );
}

/// The `command` of the (one) container in a task definition's `jsonencode([...])`.
fn container_command(task: &Block) -> Vec<String> {
    let Some(Expression::FuncCall(call)) = attribute(task.body(), "container_definitions") else {
        panic!("container_definitions should be jsonencode([...])");
    };
    let Some(Expression::Array(containers)) = call.args.first() else {
        panic!("container_definitions should be jsonencode([...])");
    };
    let [Expression::Object(container)] = containers.as_slice() else {
        panic!("one container per task definition");
    };
    let command = container.iter().find_map(|(k, v)| match k {
        ObjectKey::Identifier(id) if id.as_str() == "command" => Some(v),
        _ => None,
    });
    let Some(Expression::Array(words)) = command else {
        panic!("the container should have a literal `command` list");
    };
    words
        .iter()
        .map(|w| match w {
            Expression::String(s) => s.clone(),
            other => panic!("not a string literal: {other:?}"),
        })
        .collect()
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

// --- the calls each program makes, by following them through the source ---------------------

/// Which SDK an operation belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Sdk {
    DynamoDb,
    Kinesis,
}

/// The source the walk reads, in groups of files whose functions call each other by `self.`,
/// `Self::` or a bare name, and the SDK a `client` is in that group (a `kinesis` receiver is
/// always Kinesis).
const GROUPS: &[(&str, &str, Sdk)] = &[
    ("main", "src/main.rs", Sdk::DynamoDb),
    ("store", "src/store/mod.rs", Sdk::DynamoDb),
    ("dynamodb", "src/store/dynamodb", Sdk::DynamoDb),
    ("stream", "src/clicks/stream.rs", Sdk::Kinesis),
    ("aggregate", "src/aggregate/mod.rs", Sdk::Kinesis),
    ("leases", "src/aggregate/leases.rs", Sdk::DynamoDb),
];

/// `path::f(` calls followed: the segment before `f`, and the group it names.
const PATHS: &[(&str, &str)] = &[
    ("store", "store"),
    ("DynamoStore", "dynamodb"),
    ("dynamodb", "dynamodb"),
    ("item", "dynamodb"),
    ("rollups", "dynamodb"),
    ("table", "dynamodb"),
    ("error", "dynamodb"),
    ("stream", "stream"),
    ("StreamSink", "stream"),
    ("aggregate", "aggregate"),
    ("Reader", "aggregate"),
    ("leases", "leases"),
    ("Leases", "leases"),
];

/// `receiver.f(` calls followed: the receiver's name, and the group of its type.
const RECEIVERS: &[(&str, &str)] = &[
    // kurz aggregate's store (`Context::store`, and main's), a DynamoStore.
    ("store", "dynamodb"),
    ("leases", "leases"),
    ("reader", "aggregate"),
];

/// Functions by (group, name): the bodies (a name may be defined more than once in a group).
type Functions = HashMap<(&'static str, String), Vec<String>>;

fn is_ident(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// The functions of a file (its test module left out), found by rustfmt's layout: a `fn` line
/// and the body up to the first `}` at the line's indentation.
fn functions_of(text: &str) -> Vec<(String, String)> {
    let text = text
        .find("\n#[cfg(test)]\nmod tests")
        .map_or(text, |at| &text[..at]);
    let lines: Vec<&str> = text
        .lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect();
    let mut found = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let mut rest = line.trim_start();
        let indent = &line[..line.len() - rest.len()];
        for qualifier in [
            "pub(crate) ",
            "pub(super) ",
            "pub ",
            "const ",
            "async ",
            "unsafe ",
        ] {
            rest = rest.strip_prefix(qualifier).unwrap_or(rest);
        }
        let Some(rest) = rest.strip_prefix("fn ") else {
            continue;
        };
        let name: String = rest.chars().take_while(|c| is_ident(*c)).collect();
        let closing = format!("{indent}}}");
        let end = if line.trim_end().ends_with('}') || line.trim_end().ends_with(';') {
            i
        } else {
            (i + 1..lines.len())
                .find(|&j| lines[j] == closing)
                .unwrap_or_else(|| panic!("no end to fn {name}"))
        };
        found.push((name, lines[i..=end].join("\n")));
    }
    found
}

fn sources() -> Functions {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut functions = Functions::new();
    for (group, path, _) in GROUPS {
        let path = root.join(path);
        let files: Vec<_> = if path.is_dir() {
            std::fs::read_dir(&path)
                .expect("source dir")
                .map(|e| e.expect("entry").path())
                .filter(|p| p.extension().is_some_and(|x| x == "rs"))
                .collect()
        } else {
            vec![path]
        };
        for file in files {
            let text = std::fs::read_to_string(&file).expect("source");
            for (name, body) in functions_of(&text) {
                functions.entry((*group, name)).or_default().push(body);
            }
        }
    }
    functions
}

/// How a call `name(` is made: `receiver.name(`, `path::name(` or a bare `name(`.
enum Call {
    Method(String),
    Path(String),
    Bare,
}

/// Every call in `body`, with how it is made.
fn calls(body: &str) -> Vec<(Call, String)> {
    let chars: Vec<char> = body.chars().collect();
    let word_before = |mut end: usize| {
        while end > 0 && chars[end - 1].is_whitespace() {
            end -= 1;
        }
        let start = (0..end)
            .rev()
            .take_while(|&k| is_ident(chars[k]))
            .last()
            .unwrap_or(end);
        (start, chars[start..end].iter().collect::<String>())
    };
    let mut found = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        if !(chars[i].is_ascii_alphabetic() || chars[i] == '_') || (i > 0 && is_ident(chars[i - 1]))
        {
            i += 1;
            continue;
        }
        let start = i;
        while i < chars.len() && is_ident(chars[i]) {
            i += 1;
        }
        if chars.get(i) != Some(&'(') {
            continue;
        }
        let name: String = chars[start..i].iter().collect();
        let mut before = start;
        while before > 0 && chars[before - 1].is_whitespace() {
            before -= 1;
        }
        let call = if before > 0 && chars[before - 1] == '.' {
            Call::Method(word_before(before - 1).1)
        } else if before > 1 && chars[before - 1] == ':' && chars[before - 2] == ':' {
            Call::Path(word_before(before - 2).1)
        } else if word_before(start).1 == "fn" {
            continue;
        } else {
            Call::Bare
        };
        found.push((call, name));
    }
    found
}

fn sdk_of(group: &str) -> Sdk {
    GROUPS
        .iter()
        .find(|(name, _, _)| *name == group)
        .map(|(_, _, sdk)| *sdk)
        .expect("a known group")
}

/// The SDK operations reachable from `roots` ((group, function)), following the calls that
/// [`GROUPS`], [`PATHS`] and [`RECEIVERS`] say where to find.
fn reachable(functions: &Functions, roots: &[(&'static str, &str)]) -> BTreeSet<(Sdk, String)> {
    let mut ops = BTreeSet::new();
    let mut seen = BTreeSet::new();
    let mut todo: Vec<(&'static str, String)> =
        roots.iter().map(|(g, f)| (*g, (*f).to_owned())).collect();
    for root in &todo {
        assert!(
            functions.contains_key(root),
            "no fn {} in {}",
            root.1,
            root.0
        );
    }
    while let Some(at) = todo.pop() {
        if !seen.insert(at.clone()) {
            continue;
        }
        let (group, _) = at;
        for body in functions.get(&at).into_iter().flatten() {
            for (call, name) in calls(body) {
                let target = match &call {
                    Call::Method(r) if r == "client" => {
                        ops.insert((sdk_of(group), pascal_case(&name)));
                        continue;
                    }
                    Call::Method(r) if r == "kinesis" => {
                        ops.insert((Sdk::Kinesis, pascal_case(&name)));
                        continue;
                    }
                    Call::Method(r) if r == "self" => Some(group),
                    Call::Path(p) if p == "Self" => Some(group),
                    Call::Bare => Some(group),
                    Call::Method(r) => RECEIVERS.iter().find(|(n, _)| n == r).map(|(_, g)| *g),
                    Call::Path(p) => PATHS.iter().find(|(n, _)| n == p).map(|(_, g)| *g),
                };
                if let Some(target) = target
                    && functions.contains_key(&(target, name.clone()))
                {
                    todo.push((target, name));
                }
            }
        }
    }
    ops
}

fn of_sdk(ops: &BTreeSet<(Sdk, String)>, sdk: Sdk) -> BTreeSet<String> {
    ops.iter()
        .filter(|(s, _)| *s == sdk)
        .map(|(_, op)| op.clone())
        .collect()
}

fn set(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|s| (*s).to_owned()).collect()
}

/// `kurz serve`'s calls on the stream: those of the sink the service builds (`StreamSink::new`)
/// and the flusher calls through the `Sink` trait.
const SERVE_STREAM_ROOTS: &[(&str, &str)] = &[
    ("stream", "new"),
    ("stream", "add_clicks"),
    ("stream", "close"),
];

#[test]
fn each_program_calls_exactly_the_declared_operations() {
    let functions = sources();
    let serve = reachable(&functions, SERVE_STREAM_ROOTS);
    assert_eq!(
        of_sdk(&serve, Sdk::Kinesis),
        set(kurz::clicks::stream::SERVE_OPERATIONS),
        "the Kinesis calls of kurz serve vs clicks::stream::SERVE_OPERATIONS"
    );
    assert!(
        of_sdk(&serve, Sdk::DynamoDb).is_empty(),
        "the stream sink calls DynamoDB: {serve:?}"
    );

    let init = reachable(&functions, &[("main", "init")]);
    assert_eq!(
        of_sdk(&init, Sdk::Kinesis),
        set(kurz::clicks::stream::INIT_OPERATIONS),
        "the Kinesis calls of kurz init vs clicks::stream::INIT_OPERATIONS"
    );

    let aggregate = reachable(&functions, &[("main", "aggregate")]);
    assert_eq!(
        of_sdk(&aggregate, Sdk::Kinesis),
        set(kurz::aggregate::KINESIS_OPERATIONS),
        "the Kinesis calls of kurz aggregate vs aggregate::KINESIS_OPERATIONS"
    );
    assert_eq!(
        of_sdk(&aggregate, Sdk::DynamoDb),
        set(kurz::aggregate::DYNAMODB_OPERATIONS),
        "the DynamoDB calls of kurz aggregate vs aggregate::DYNAMODB_OPERATIONS"
    );

    // No Kinesis or lease call in the stream's and the consumer's files is outside those walks.
    let mut walked = serve;
    walked.extend(init);
    walked.extend(aggregate);
    for group in ["stream", "aggregate", "leases"] {
        for ((g, name), bodies) in &functions {
            if *g != group {
                continue;
            }
            for body in bodies {
                for (call, op) in calls(body) {
                    let sdk = match call {
                        Call::Method(r) if r == "client" => sdk_of(group),
                        Call::Method(r) if r == "kinesis" => Sdk::Kinesis,
                        _ => continue,
                    };
                    let op = pascal_case(&op);
                    assert!(
                        walked.contains(&(sdk, op.clone())),
                        "{sdk:?} {op} (in {group}::{name}) is called by none of kurz serve, init and aggregate as the walk follows them"
                    );
                }
            }
        }
    }
}

/// The dotted names of a traversal (`aws_iam_role.aggregate[0].id` -> aws_iam_role, aggregate,
/// id), index operators left out.
fn traversal_names(expr: &Expression) -> Vec<String> {
    let Expression::Traversal(traversal) = expr else {
        return Vec::new();
    };
    let Expression::Variable(root) = &traversal.expr else {
        return Vec::new();
    };
    std::iter::once(root.as_str().to_owned())
        .chain(traversal.operators.iter().filter_map(|op| match op {
            TraversalOperator::GetAttr(name) => Some(name.as_str().to_owned()),
            _ => None,
        }))
        .collect()
}

/// A list of strings, written out or as `local.NAME`.
fn string_list(files: &[(String, Body)], expr: &Expression) -> Vec<String> {
    let names = traversal_names(expr);
    let expr = match names.as_slice() {
        [local, name] if local == "local" => {
            local_value(files, name).unwrap_or_else(|| panic!("no local.{name}"))
        }
        _ => expr,
    };
    let Expression::Array(items) = expr else {
        panic!("not a list literal or a local one: {expr:?}");
    };
    items
        .iter()
        .map(|a| match a {
            Expression::String(s) => s.clone(),
            other => panic!("not a string literal: {other:?}"),
        })
        .collect()
}

/// Every `actions` list anywhere in `body` (statements, dynamic blocks and their content).
fn actions_in(files: &[(String, Body)], body: &Body, out: &mut BTreeSet<String>) {
    for a in body.attributes() {
        if a.key() == "actions" {
            out.extend(string_list(files, a.expr()));
        }
    }
    for block in body.blocks() {
        actions_in(files, block.body(), out);
    }
}

/// The actions granted to `aws_iam_role.ROLE` by every inline policy attached to it.
fn role_actions(files: &[(String, Body)], role: &str) -> BTreeSet<String> {
    assert!(
        blocks(files, "resource").all(|b| {
            let kind = b.labels().first().map(|l| l.as_str());
            kind != Some("aws_iam_role_policy_attachment")
                && kind != Some("aws_iam_role_policies_exclusive")
        }),
        "every grant should be an inline aws_iam_role_policy (which this test reads)"
    );
    let mut granted = BTreeSet::new();
    let mut policies = 0;
    for policy in blocks(files, "resource")
        .filter(|b| b.labels().first().map(|l| l.as_str()) == Some("aws_iam_role_policy"))
    {
        let target = attribute(policy.body(), "role").map(traversal_names);
        if target.as_deref().and_then(|t| t.get(..2))
            != Some(&["aws_iam_role".to_owned(), role.to_owned()][..])
        {
            continue;
        }
        policies += 1;
        let document = attribute(policy.body(), "policy").map(traversal_names);
        let Some([data, kind, name, ..]) = document.as_deref() else {
            panic!("the policy of {role} should be data.aws_iam_policy_document.NAME.json");
        };
        assert_eq!(
            (data.as_str(), kind.as_str()),
            ("data", "aws_iam_policy_document")
        );
        let document = blocks(files, "data")
            .find(|b| {
                b.labels().first().map(|l| l.as_str()) == Some("aws_iam_policy_document")
                    && b.labels().get(1).map(|l| l.as_str()) == Some(name.as_str())
            })
            .unwrap_or_else(|| panic!("no data.aws_iam_policy_document.{name}"));
        actions_in(files, document.body(), &mut granted);
    }
    assert!(policies > 0, "no policy attached to aws_iam_role.{role}");
    granted
}

/// The operations of `service` among `actions` (`dynamodb:GetItem` -> `GetItem`).
fn of_service(actions: &BTreeSet<String>, service: &str) -> BTreeSet<String> {
    actions
        .iter()
        .filter_map(|a| a.strip_prefix(&format!("{service}:")))
        .map(str::to_owned)
        .collect()
}

#[test]
fn the_roles_allow_exactly_the_calls_their_programs_make() {
    let files = module();
    let serve = role_actions(&files, "task");
    assert_eq!(
        of_service(&serve, "kinesis"),
        set(kurz::clicks::stream::SERVE_OPERATIONS),
        "the task role's Kinesis actions vs the calls kurz serve makes"
    );
    let aggregate = role_actions(&files, "aggregate");
    assert_eq!(
        of_service(&aggregate, "kinesis"),
        set(kurz::aggregate::KINESIS_OPERATIONS),
        "the aggregate role's Kinesis actions vs the calls kurz aggregate makes"
    );
    assert_eq!(
        of_service(&aggregate, "dynamodb"),
        set(kurz::aggregate::DYNAMODB_OPERATIONS),
        "the aggregate role's DynamoDB actions vs the calls kurz aggregate makes"
    );
    // The one grant for another program: the trace collector beside kurz (traces on) sends
    // spans to X-Ray with these, as its awsxray exporter documents.
    assert_eq!(
        of_service(&serve, "xray"),
        set(&["PutTelemetryRecords", "PutTraceSegments"]),
        "the task role's X-Ray actions vs the collector's calls"
    );
    for (role, actions) in [("task", &serve), ("aggregate", &aggregate)] {
        for action in actions.iter() {
            let collector = role == "task" && action.starts_with("xray:");
            assert!(
                collector
                    || ["dynamodb:", "kinesis:", "kms:"]
                        .iter()
                        .any(|service| action.starts_with(service)),
                "{role} role: {action} is no call kurz makes"
            );
        }
    }
}

#[test]
fn with_traces_on_kurz_sends_its_spans_where_the_collector_beside_it_listens() {
    let files = module();
    let local = |name: &str| {
        blocks(&files, "locals")
            .find_map(|b| attribute(b.body(), name))
            .unwrap_or_else(|| panic!("no local.{name}"))
    };
    let Expression::String(listens) = local("collector_otlp") else {
        panic!("local.collector_otlp should be a string literal");
    };
    assert!(
        listens.starts_with("127.0.0.1:"),
        "the collector takes spans on loopback only, not from the network: {listens}"
    );
    let config = format!("{:?}", local("collector_config"));
    assert!(
        config.contains("collector_otlp"),
        "the collector's OTLP receiver listens on local.collector_otlp: {config}"
    );
    let kurz = task_variables(&files, "kurz");
    let sends = kurz
        .iter()
        .find(|(name, _)| name == "KURZ__TELEMETRY__OTLP_ENDPOINT")
        .and_then(|(_, value)| value.clone())
        .expect(
            "the kurz task sets KURZ__TELEMETRY__OTLP_ENDPOINT to a literal when traces are on",
        );
    assert_eq!(sends, format!("http://{listens}"));
    assert!(
        kurz.iter()
            .any(|(name, _)| name == "KURZ__TELEMETRY__SAMPLE_RATIO"),
        "the sampling ratio is the module's traces_sample_ratio"
    );
}

// --- log metric filters against the lines the code logs ------------------------------------

/// Each `tracing::LEVEL!(...)` in the files of `dir` (test modules left out): the text of its
/// arguments and its message (the last string literal).
fn log_lines(dir: &str, level: &str) -> Vec<(String, String)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join(dir);
    let mut found = Vec::new();
    let start = format!("tracing::{level}!(");
    for entry in std::fs::read_dir(dir).expect("source dir") {
        let path = entry.expect("entry").path();
        if path.extension().is_none_or(|x| x != "rs") {
            continue;
        }
        let text = std::fs::read_to_string(&path).expect("source");
        let text = text
            .find("\n#[cfg(test)]\nmod tests")
            .map_or(text.as_str(), |at| &text[..at]);
        let mut rest = text;
        while let Some(at) = rest.find(&start) {
            rest = &rest[at + start.len()..];
            let (mut depth, mut in_string, mut escaped) = (1, false, false);
            let (mut literal, mut last) = (String::new(), None);
            let mut end = rest.len();
            for (i, c) in rest.char_indices() {
                if in_string {
                    match c {
                        _ if escaped => {
                            literal.push(c);
                            escaped = false;
                        }
                        '\\' => escaped = true,
                        '"' => {
                            in_string = false;
                            last = Some(std::mem::take(&mut literal));
                        }
                        _ => literal.push(c),
                    }
                    continue;
                }
                match c {
                    '"' => in_string = true,
                    '(' => depth += 1,
                    ')' => {
                        depth -= 1;
                        if depth == 0 {
                            end = i;
                            break;
                        }
                    }
                    _ => {}
                }
            }
            let message = last.unwrap_or_else(|| panic!("{level}! without a message in {path:?}"));
            found.push((rest[..end].to_owned(), message));
        }
    }
    found
}

/// The patterns of a metric filter's `$.message = "…"` terms, from the local list its pattern is
/// built from.
fn filter_messages(files: &[(String, Body)], filter: &str, local: &str) -> Vec<String> {
    let pattern = attribute(
        resource(files, "aws_cloudwatch_log_metric_filter", filter).body(),
        "pattern",
    )
    .expect("a pattern");
    assert!(
        format!("{pattern:?}").contains(local),
        "the {filter} filter's pattern should be built from local.{local}"
    );
    let list = local_value(files, local).unwrap_or_else(|| panic!("no local.{local}"));
    string_list(files, list)
}

/// Whether a filter term (`*` at its end: any text) matches the message `format!` makes of
/// `literal` (`{…}`: some text).
fn term_matches(term: &str, literal: &str) -> bool {
    match term.strip_suffix('*') {
        Some(prefix) => literal.starts_with(prefix) && !prefix.contains('{'),
        None => term == literal && !literal.contains('{'),
    }
}

#[test]
fn the_consumer_errors_alarm_counts_every_failure_kurz_aggregate_logs() {
    let files = module();
    let terms: BTreeSet<String> =
        filter_messages(&files, "aggregate_errors", "aggregate_error_messages")
            .into_iter()
            .collect();
    let mut logged: BTreeSet<String> = BTreeSet::new();
    for level in ["warn", "error"] {
        logged.extend(
            log_lines("src/aggregate", level)
                .into_iter()
                .map(|(_, m)| m),
        );
    }
    assert!(!logged.is_empty(), "found no warn!/error! in src/aggregate");
    assert_eq!(
        terms, logged,
        "the aggregate-errors filter's messages vs the WARN/ERROR lines of src/aggregate"
    );
}

#[test]
fn the_dropped_clicks_alarm_counts_every_line_that_drops_clicks() {
    let files = module();
    let terms = filter_messages(&files, "clicks_dropped", "dropped_clicks_messages");
    let dropping: Vec<String> = log_lines("src/clicks", "error")
        .into_iter()
        .filter(|(args, _)| args.split(',').any(|a| a.trim().starts_with("clicks =")))
        .map(|(_, message)| message)
        .collect();
    assert!(
        !dropping.is_empty(),
        "found no error! with a clicks field in src/clicks"
    );
    for message in &dropping {
        assert!(
            terms.iter().any(|t| term_matches(t, message)),
            "\"{message}\" (src/clicks) is not counted by the clicks-dropped filter: {terms:?}"
        );
    }
    for term in &terms {
        assert!(
            dropping.iter().any(|m| term_matches(term, m)),
            "the clicks-dropped filter's \"{term}\" matches no line of src/clicks that drops clicks: {dropping:?}"
        );
    }
    let value = resource(&files, "aws_cloudwatch_log_metric_filter", "clicks_dropped")
        .body()
        .blocks()
        .find(|b| b.identifier() == "metric_transformation")
        .map(|b| string_attr(b.body(), "value"));
    assert_eq!(
        value.as_deref(),
        Some("$.clicks"),
        "the metric counts the clicks"
    );
}

// --- Fargate task sizes ----------------------------------------------------------------------

/// The CPU/memory pairs AWS Fargate accepts (Linux), from the ECS documentation's "Task CPU and
/// memory" table: CPU units -> (smallest MiB, largest MiB, step).
const FARGATE_SIZES: &[(i64, i64, i64, i64)] = &[
    (256, 512, 2048, 512), // 512, 1024, 2048: listed below, the one irregular row
    (512, 1024, 4096, 1024),
    (1024, 2048, 8192, 1024),
    (2048, 4096, 16384, 1024),
    (4096, 8192, 30720, 1024),
    (8192, 16384, 61440, 4096),
    (16384, 32768, 122880, 8192),
];

fn fargate_memory(cpu: i64) -> BTreeSet<i64> {
    if cpu == 256 {
        return BTreeSet::from([512, 1024, 2048]);
    }
    let (_, low, high, step) = FARGATE_SIZES
        .iter()
        .find(|(c, ..)| *c == cpu)
        .copied()
        .unwrap_or_else(|| panic!("{cpu} is no Fargate CPU size"));
    (low..=high).step_by(step as usize).collect()
}

/// A whole number written as a literal or a sum of literals (`8192 + 1`).
fn integer(expr: &Expression) -> i64 {
    match expr {
        Expression::Number(n) => n.as_i64().expect("a whole number"),
        Expression::Operation(op) => match op.as_ref() {
            hcl::expr::Operation::Binary(b) if b.operator == hcl::expr::BinaryOperator::Plus => {
                integer(&b.lhs_expr) + integer(&b.rhs_expr)
            }
            other => panic!("not a sum: {other:?}"),
        },
        other => panic!("not a number: {other:?}"),
    }
}

/// A list of whole numbers written out or as `range(start, limit, step)` (limit excluded, as
/// Terraform's range).
fn integer_list(expr: &Expression) -> BTreeSet<i64> {
    match expr {
        Expression::Array(items) => items.iter().map(integer).collect(),
        Expression::FuncCall(call) if call.name.name.as_str() == "range" => {
            let [start, limit, step] = call.args.as_slice() else {
                panic!("range(start, limit, step) expected: {call:?}");
            };
            let step = usize::try_from(integer(step)).expect("a positive step");
            (integer(start)..integer(limit)).step_by(step).collect()
        }
        other => panic!("not a list of numbers or a range(): {other:?}"),
    }
}

#[test]
fn the_task_size_preconditions_admit_exactly_the_pairs_fargate_accepts() {
    let files = module();
    let table = blocks(&files, "locals")
        .find_map(|b| attribute(b.body(), "fargate_memory_by_cpu"))
        .expect("local.fargate_memory_by_cpu");
    let Expression::Object(table) = table else {
        panic!("fargate_memory_by_cpu should be an object literal");
    };
    let admitted: BTreeMap<i64, BTreeSet<i64>> = table
        .iter()
        .map(|(k, v)| {
            let key = match k {
                ObjectKey::Identifier(id) => id.as_str().to_owned(),
                ObjectKey::Expression(Expression::String(s)) => s.clone(),
                other => panic!("key {other:?}"),
            };
            (key.parse().expect("a CPU size"), integer_list(v))
        })
        .collect();
    let expected: BTreeMap<i64, BTreeSet<i64>> = FARGATE_SIZES
        .iter()
        .map(|(cpu, ..)| (*cpu, fargate_memory(*cpu)))
        .collect();
    assert_eq!(
        admitted, expected,
        "local.fargate_memory_by_cpu vs Fargate's table"
    );

    // Each task definition checks its own CPU and memory against that table.
    for (task, cpu, memory) in [
        ("kurz", "task_cpu", "task_memory"),
        ("aggregate", "aggregate_task_cpu", "aggregate_task_memory"),
    ] {
        let conditions: Vec<String> = resource(&files, "aws_ecs_task_definition", task)
            .body()
            .blocks()
            .filter(|b| b.identifier() == "lifecycle")
            .flat_map(|b| {
                b.body()
                    .blocks()
                    .filter(|p| p.identifier() == "precondition")
            })
            .filter_map(|p| attribute(p.body(), "condition"))
            .map(|c| hcl::format::to_string(c).expect("formats"))
            .collect();
        let wanted = format!(
            "contains(lookup(local.fargate_memory_by_cpu, tostring(var.{cpu}), []), var.{memory})"
        );
        assert!(
            conditions.iter().any(|c| c == &wanted),
            "the {task} task definition should have the precondition {wanted}: {conditions:?}"
        );
    }
}

#[test]
fn the_table_is_pre_warmed() {
    // A Redis failover sends every L1 miss to the table at once (CAPACITY.md section 3): the
    // table must be warm for it, not double its previous peak every 30 minutes.
    let files = module();
    let table = resource(&files, "aws_dynamodb_table", "kurz").body();
    let warm = table.blocks().any(|b| {
        b.identifier() == "warm_throughput"
            || (b.identifier() == "dynamic"
                && b.labels().first().map(|l| l.as_str()) == Some("warm_throughput"))
    });
    assert!(warm, "aws_dynamodb_table.kurz has no warm_throughput");
}

#[test]
fn the_fleet_holds_the_peak_with_a_zone_lost_and_a_burst_and_steps_out_for_bursts() {
    // CAPACITY.md section 2: up to 22 tasks at the peak. One zone of three lost leaves two
    // thirds of the fleet for it, and a burst doubles the load.
    let files = module();
    let max_tasks = blocks(&files, "variable")
        .find(|b| b.labels().first().map(|l| l.as_str()) == Some("max_tasks"))
        .and_then(|b| attribute(b.body(), "default"))
        .map(integer)
        .expect("variable max_tasks with a default");
    let needed = (22.0_f64 / (2.0 / 3.0) * 2.0).ceil() as i64;
    assert!(
        max_tasks >= needed,
        "max_tasks defaults to {max_tasks}, below {needed}"
    );
    let steps = blocks(&files, "resource").any(|b| {
        b.labels().first().map(|l| l.as_str()) == Some("aws_appautoscaling_policy")
            && attribute(b.body(), "policy_type") == Some(&Expression::String("StepScaling".into()))
            && attribute(b.body(), "resource_id")
                .map(traversal_names)
                .as_deref()
                == Some(
                    &[
                        "aws_appautoscaling_target".to_owned(),
                        "kurz".to_owned(),
                        "resource_id".to_owned(),
                    ][..],
                )
    });
    assert!(steps, "no step scaling policy on the kurz service");
}

#[test]
fn redirects_skip_the_waf_and_the_api_is_behind_it() {
    // A web ACL bills every request it sees (CAPACITY.md section 8): the load balancer of the
    // short links has none; the API's has it, and the short host serves no API path.
    let files = module();
    let associated: Vec<Vec<String>> = blocks(&files, "resource")
        .filter(|b| b.labels().first().map(|l| l.as_str()) == Some("aws_wafv2_web_acl_association"))
        .filter_map(|b| attribute(b.body(), "resource_arn").map(traversal_names))
        .collect();
    assert_eq!(
        associated,
        [["aws_lb", "api", "arn"].map(str::to_owned).to_vec()],
        "the web ACL should be on aws_lb.api only"
    );
    let refuses_api = blocks(&files, "resource")
        .filter(|b| b.labels().first().map(|l| l.as_str()) == Some("aws_lb_listener_rule"))
        .filter(|b| {
            attribute(b.body(), "listener_arn")
                .map(traversal_names)
                .as_deref()
                == Some(&["aws_lb_listener", "https", "arn"].map(str::to_owned)[..])
        })
        .any(|b| {
            let text = hcl::format::to_string(b.body()).expect("formats");
            text.contains("\"/api/*\"") && text.contains("fixed-response")
        });
    assert!(
        refuses_api,
        "the redirect host's HTTPS listener should answer /api/* itself"
    );
}

/// A burn rate and its window in seconds.
type Window = (f64, i64);
/// The (long, short) window pairs of a severity, any of which fires it.
type Pairs = Vec<(Window, Window)>;

#[test]
fn the_slo_alarms_burn_at_the_sre_workbooks_rates_and_windows() {
    // Page at 14.4x over 1 h and 5 min, 6x over 6 h and 30 min; ticket at 3x over 1 d and 2 h,
    // 1x over 3 d and 6 h.
    let expected: BTreeMap<&str, Pairs> = BTreeMap::from([
        (
            "page",
            vec![((14.4, 3600), (14.4, 300)), ((6.0, 21600), (6.0, 1800))],
        ),
        (
            "ticket",
            vec![((3.0, 86400), (3.0, 7200)), ((1.0, 259200), (1.0, 21600))],
        ),
    ]);
    let files = module();
    let local = |name: &str| {
        blocks(&files, "locals")
            .find_map(|b| attribute(b.body(), name))
            .unwrap_or_else(|| panic!("no local.{name}"))
    };
    let key = |k: &ObjectKey| match k {
        ObjectKey::Identifier(id) => id.as_str().to_owned(),
        ObjectKey::Expression(Expression::String(s)) => s.clone(),
        other => panic!("key {other:?}"),
    };
    let Expression::Object(windows) = local("slo_windows") else {
        panic!("slo_windows should be an object literal");
    };
    let windows: BTreeMap<String, Window> = windows
        .iter()
        .map(|(k, v)| {
            let Expression::Object(v) = v else {
                panic!("a window should be an object")
            };
            let field = |f: &str| {
                v.iter()
                    .find(|(k, _)| key(k) == f)
                    .map(|(_, e)| e)
                    .unwrap_or_else(|| panic!("no {f}"))
            };
            let Expression::Number(burn) = field("burn") else {
                panic!("burn should be a number")
            };
            (
                key(k),
                (burn.as_f64().expect("a number"), integer(field("seconds"))),
            )
        })
        .collect();
    let Expression::Object(rules) = local("slo_rules") else {
        panic!("slo_rules should be an object literal");
    };
    let rules: BTreeMap<String, Pairs> = rules
        .iter()
        .map(|(k, v)| {
            let Expression::Array(pairs) = v else {
                panic!("pairs")
            };
            let pairs = pairs
                .iter()
                .map(|p| {
                    let names = string_list(&files, p);
                    let [long, short] = names.as_slice() else {
                        panic!("a pair: {names:?}")
                    };
                    (windows[long.as_str()], windows[short.as_str()])
                })
                .collect();
            (key(k), pairs)
        })
        .collect();
    let expected: BTreeMap<String, _> = expected
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
    assert_eq!(rules, expected, "burn rates and windows of the SLO alarms");
    for kind in ["availability", "latency"] {
        resource(&files, "aws_cloudwatch_composite_alarm", kind);
    }
}

#[test]
fn the_table_is_backed_up_to_a_locked_vault_and_copied() {
    let files = module();
    let selection = resource(&files, "aws_backup_selection", "kurz").body();
    let resources = hcl::format::to_string(attribute(selection, "resources").expect("resources"))
        .expect("formats");
    assert!(
        resources.contains("local.table_arn"),
        "the backup selection should hold the table: {resources}"
    );
    let table = hcl::format::to_string(local_value(&files, "table_arn").expect("local.table_arn"))
        .expect("formats");
    assert!(
        table.contains("aws_dynamodb_table.kurz[0].arn"),
        "local.table_arn should be the table's (or its replica's) ARN: {table}"
    );
    let lock = resource(&files, "aws_backup_vault_lock_configuration", "kurz").body();
    for key in ["changeable_for_days", "min_retention_days"] {
        assert!(
            attribute(lock, key).is_some(),
            "the vault lock needs {key} (compliance mode, a minimum retention)"
        );
    }
    let plan = hcl::format::to_string(resource(&files, "aws_backup_plan", "kurz").body())
        .expect("formats");
    assert!(
        plan.contains("dynamic \"copy_action\"") && plan.contains("var.backup_copy_vault_arns"),
        "the backup plan should copy each backup to backup_copy_vault_arns"
    );
}

/// Several regions: the table is a global table with a replica in each other region, under that
/// region's replica of the multi-Region data key; the shared secrets are replicated with it;
/// and Route 53 fails a region over on a single-metric alarm (health checks take no metric
/// math) of the 503s that blame its own store, by the field kurz writes on those lines.
#[test]
fn two_regions_replicate_the_table_key_and_secrets_and_fail_over_on_the_store() {
    let files = module();
    let text = |kind: &str, name: &str| {
        hcl::format::to_string(resource(&files, kind, name).body()).expect("formats")
    };
    let table = text("aws_dynamodb_table", "kurz");
    for needle in [
        "dynamic \"replica\"",
        "var.replica_data_key_arns",
        "NEW_AND_OLD_IMAGES",
        "point_in_time_recovery",
    ] {
        assert!(
            table.contains(needle),
            "the table should have {needle}: {table}"
        );
    }
    assert!(text("aws_kms_key", "data").contains("multi_region"));
    assert!(text("aws_kms_replica_key", "data").contains("var.primary_data_key_arn"));
    let secrets = text("aws_secretsmanager_secret", "kurz");
    assert!(
        secrets.contains("dynamic \"replica\"") && secrets.contains("local.shared_secrets"),
        "the shared secrets should be replicated: {secrets}"
    );

    let check = resource(&files, "aws_route53_health_check", "store").body();
    assert_eq!(string_attr(check, "type"), "CLOUDWATCH_METRIC");
    let watched = hcl::format::to_string(attribute(check, "cloudwatch_alarm_name").expect("alarm"))
        .expect("formats");
    assert!(
        watched.contains("aws_cloudwatch_metric_alarm.store_unavailable"),
        "{watched}"
    );
    let alarm = resource(&files, "aws_cloudwatch_metric_alarm", "store_unavailable").body();
    assert!(
        alarm.blocks().all(|b| b.identifier() != "metric_query"),
        "a Route 53 health check takes a single-metric alarm only"
    );
    let metric = hcl::format::to_string(attribute(alarm, "metric_name").expect("metric_name"))
        .expect("formats");
    assert!(
        metric.contains("aws_cloudwatch_log_metric_filter.store_unavailable"),
        "{metric}"
    );
    let filter = resource(
        &files,
        "aws_cloudwatch_log_metric_filter",
        "store_unavailable",
    )
    .body();
    assert_eq!(
        string_attr(filter, "pattern"),
        r#"{ $.status = 503 && $.unavailable = "store" }"#
    );
    // And kurz writes those two fields on the line of a 503 that blames its store: held by
    // http::observe's test `a_503_line_says_in_json_what_was_unavailable`, on the JSON it logs.
}
