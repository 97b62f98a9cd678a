#!/usr/bin/env python3
"""Offline check of Terraform configuration against provider schemas.

`terraform validate` needs the providers, which cannot be downloaded here. This script does the
part of it that catches typos, from schemas that come as npm packages: the prebuilt CDK for
Terraform bindings (@cdktf/provider-aws, @cdktf/provider-random) are generated from the
providers' own schemas and name every argument, block and attribute in snake_case in their
`synthesizeHclAttributes` / `...ToHclTerraform` functions (with `isBlock: true|false`) and in
their attribute getters (`getStringAttribute('arn_suffix')`).

It checks, in every directory of .tf files under the given root (each is a module):
  * every resource and data source type exists in its provider;
  * every argument and nested block inside them (and inside `dynamic` blocks) exists at that
    place in the schema, and is written as what it is (block or attribute);
  * provider blocks, lifecycle and other meta-arguments, variable/output/locals/terraform blocks;
  * references: var.X, local.X, module.X.OUTPUT, TYPE.NAME.ATTR and data.TYPE.NAME.ATTR name
    something declared, and ATTR exists on that type;
  * module calls: every input is a variable of the called module, every required one is given;
  * plan-time knowledge: no `for_each` or `count` of a resource, data source or module inside a
    called module depends on an input the caller feeds from a resource or data source attribute
    or another module's output (unknown until apply on a first plan: "Invalid for_each
    argument"), through locals too; `count = length(var.X)` is accepted when the caller passes a
    splat (`TYPE.NAME[*].ATTR`) or a list literal, whose length is known;
  * the aws provider's version constraint admits the schema's major version.

It does not check types, values or expressions (terraform validate and plan do that).

Usage: check_tf_schema.py --aws DIR --random DIR ROOT
       check_tf_schema.py --aws DIR --random DIR --self-test
(DIR: an installed package, e.g. node_modules/@cdktf/provider-aws.)
Exit status 0: no finding. 1: findings, one per line as FILE:LINE: message. 2: usage or setup.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import tempfile
from dataclasses import dataclass, field

# ---------------------------------------------------------------------------------------------
# HCL: a small parser that keeps what this check needs (block structure, argument names, line
# numbers, and each expression's code with string literals blanked out).


class HclError(Exception):
    pass


@dataclass
class Attribute:
    name: str
    line: int
    code: str  # the expression, string literal text removed, template interpolations kept
    raw: str = ""  # the expression as written


@dataclass
class Block:
    type: str
    labels: list[str]
    line: int
    body: list = field(default_factory=list)  # of Attribute | Block

    def attributes(self) -> dict[str, Attribute]:
        return {i.name: i for i in self.body if isinstance(i, Attribute)}

    def blocks(self, type_: str | None = None) -> list["Block"]:
        return [i for i in self.body if isinstance(i, Block) and (type_ is None or i.type == type_)]


@dataclass
class Token:
    kind: str  # ident, string, heredoc, number, punct, newline, eof
    text: str
    line: int
    code: str = ""  # for strings and heredocs: the interpolated expressions' code
    start: int = 0  # offsets in the source, so an expression's code keeps its spacing
    end: int = 0


_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")
_NUMBER = re.compile(r"[0-9]+(\.[0-9]+)?([eE][+-]?[0-9]+)?")
_HEREDOC = re.compile(r"<<(-?)([A-Za-z_][A-Za-z0-9_-]*)[ \t]*\n")


class Lexer:
    def __init__(self, text: str, path: str):
        self.s = text
        self.path = path
        self.i = 0
        self.line = 1

    def error(self, msg: str) -> HclError:
        return HclError(f"{self.path}:{self.line}: HCL parse error: {msg}")

    def tokens(self) -> list[Token]:
        out = []
        while True:
            tok = self.next()
            out.append(tok)
            if tok.kind == "eof":
                return out

    def next(self) -> Token:
        tok = self._next()
        tok.end = self.i
        return tok

    def _next(self) -> Token:
        s = self.s
        while self.i < len(s):
            c = s[self.i]
            if c in " \t\r":
                self.i += 1
            elif c == "#" or s.startswith("//", self.i):
                while self.i < len(s) and s[self.i] != "\n":
                    self.i += 1
            elif s.startswith("/*", self.i):
                end = s.find("*/", self.i + 2)
                if end < 0:
                    raise self.error("unterminated /* comment")
                self.line += s.count("\n", self.i, end)
                self.i = end + 2
            else:
                break
        start = self.i
        if self.i >= len(s):
            return Token("eof", "", self.line, start=start)
        c = s[self.i]
        line = self.line
        if c == "\n":
            self.i += 1
            self.line += 1
            return Token("newline", "\n", line, start=start)
        if c == '"':
            text, code = self.string()
            return Token("string", text, line, code, start=start)
        m = _HEREDOC.match(s, self.i)
        if m:
            tok = self.heredoc(m)
            tok.start = start
            return tok
        m = _IDENT.match(s, self.i)
        if m:
            self.i = m.end()
            return Token("ident", m.group(), line, start=start)
        m = _NUMBER.match(s, self.i)
        if m:
            self.i = m.end()
            return Token("number", m.group(), line, start=start)
        for op in ("==", "!=", "<=", ">=", "&&", "||", "=>", "..."):
            if s.startswith(op, self.i):
                self.i += len(op)
                return Token("punct", op, line, start=start)
        self.i += 1
        return Token("punct", c, line, start=start)

    def string(self) -> tuple[str, str]:
        """A quoted template; returns (literal text, code of its interpolations)."""
        s = self.s
        self.i += 1
        text, code = [], []
        while True:
            if self.i >= len(s):
                raise self.error("unterminated string")
            c = s[self.i]
            if c == '"':
                self.i += 1
                return "".join(text), " ".join(code)
            if c == "\n":
                raise self.error("newline in a quoted string")
            if c == "\\":
                text.append(s[self.i : self.i + 2])
                self.i += 2
            elif s.startswith("$${", self.i) or s.startswith("%%{", self.i):
                text.append(s[self.i : self.i + 3])
                self.i += 3
            elif s.startswith("${", self.i) or s.startswith("%{", self.i):
                self.i += 2
                code.append(self.template_expr())
            else:
                text.append(c)
                self.i += 1

    def template_expr(self) -> str:
        """The code inside ${ ... } up to its closing brace (nested strings included)."""
        depth = 0
        parts = []
        prev_end = self.i
        while True:
            tok = self.next()
            if tok.kind == "eof":
                raise self.error("unterminated ${ in a string")
            if tok.kind == "punct" and tok.text == "{":
                depth += 1
            elif tok.kind == "punct" and tok.text == "}":
                if depth == 0:
                    return "".join(parts)
                depth -= 1
            if tok.start > prev_end:
                parts.append(" ")
            prev_end = tok.end
            parts.append(f'"{tok.code}"' if tok.kind in ("string", "heredoc") else tok.text)

    def heredoc(self, m: re.Match) -> Token:
        line = self.line
        marker = m.group(2)
        self.i = m.end()
        self.line += 1
        lines = []
        while True:
            if self.i >= len(self.s):
                raise self.error(f"unterminated heredoc <<{marker}")
            end = self.s.find("\n", self.i)
            end = len(self.s) if end < 0 else end
            row = self.s[self.i : end]
            self.i = end
            if row.strip() == marker:
                break
            lines.append(row)
            self.i += 1
            self.line += 1
        content = "\n".join(lines)
        code = " ".join(re.findall(r"(?<!\$)\$\{([^}]*)\}", content))
        return Token("heredoc", content, line, code)


class Parser:
    def __init__(self, text: str, path: str):
        self.path = path
        self.text = text
        self.toks = Lexer(text, path).tokens()
        self.p = 0

    def peek(self) -> Token:
        return self.toks[self.p]

    def take(self) -> Token:
        tok = self.toks[self.p]
        self.p += 1
        return tok

    def error(self, tok: Token, msg: str) -> HclError:
        return HclError(f"{self.path}:{tok.line}: HCL parse error: {msg}")

    def file(self) -> list:
        body = self.body(top=True)
        return body

    def body(self, top: bool = False) -> list:
        items = []
        while True:
            tok = self.peek()
            if tok.kind == "newline":
                self.take()
                continue
            if tok.kind == "eof":
                if not top:
                    raise self.error(tok, "missing }")
                return items
            if tok.kind == "punct" and tok.text == "}":
                if top:
                    raise self.error(tok, "unexpected }")
                self.take()
                return items
            if tok.kind != "ident":
                raise self.error(tok, f"expected an argument or block name, found {tok.text!r}")
            name = self.take()
            nxt = self.peek()
            if nxt.kind == "punct" and nxt.text == "=":
                self.take()
                first = self.peek().start
                code = self.expression()
                raw = self.text[first : self.toks[self.p - 1].end].strip()
                items.append(Attribute(name.text, name.line, code, raw))
                continue
            labels = []
            while self.peek().kind in ("string", "ident"):
                labels.append(self.take().text)
            brace = self.take()
            if not (brace.kind == "punct" and brace.text == "{"):
                raise self.error(brace, f"expected '=' or '{{' after {name.text!r}")
            items.append(Block(name.text, labels, name.line, self.body()))

    def expression(self) -> str:
        depth = 0
        parts = []
        prev_end = self.peek().start
        while True:
            tok = self.peek()
            if tok.kind == "eof":
                if depth:
                    raise self.error(tok, "unterminated expression")
                break
            if tok.kind == "newline" and depth == 0:
                break
            if tok.kind == "punct" and tok.text == "}" and depth == 0:
                break  # closes the enclosing one-line block
            self.take()
            if tok.kind == "punct" and tok.text in "([{":
                depth += 1
            elif tok.kind == "punct" and tok.text in ")]}":
                depth -= 1
            if tok.start > prev_end or tok.kind == "newline":
                parts.append(" ")
            prev_end = tok.end
            if tok.kind in ("string", "heredoc"):
                parts.append(f'"{tok.code}"')
            elif tok.kind != "newline":
                parts.append(tok.text)
        return "".join(parts)


def parse_hcl(text: str, path: str) -> list:
    return Parser(text, path).file()


# ---------------------------------------------------------------------------------------------
# Schemas from the cdktf bindings.

ANY = "any"  # a subtree the bindings type as `any` (too deeply nested for them)


@dataclass
class Schema:
    """One block's schema: arguments (name -> True) and nested blocks (name -> Schema or ANY)."""

    args: dict[str, bool] = field(default_factory=dict)
    blocks: dict[str, object] = field(default_factory=dict)
    attrs: set[str] = field(default_factory=set)  # everything readable (arguments, computed)


_ENTRY = re.compile(
    r"^\s+([a-z0-9_]+): \{\s*value: (.*?),\s*isBlock: (true|false),\s*type: \"(\w+)\",\s*"
    r"storageClassType: \"(\w+)\",\s*\}",
    re.M | re.S,
)
_GETTER = re.compile(
    r"(?:get[A-Za-z]*Attribute|interpolationForAttribute)\('([a-z0-9_]+)'\)"
    # Computed lists and maps of objects (aws_vpc_endpoint.dns_entry) are objects of their own.
    r"|new [A-Za-z0-9_]+(?:List|Map)\(this, \"([a-z0-9_]+)\""
)
_TO_HCL = re.compile(r"\b([A-Za-z0-9_]+ToHclTerraform)\b")

# Subtrees the bindings type as `any`, and the names allowed in them. Source: the provider's
# documentation of aws_wafv2_web_acl (rule.statement); only what infra/ uses is listed, so a new
# statement type has to be added here on purpose. Each value maps a block name to its own
# allow-list; "=" lists the arguments.
ANY_ALLOW: dict[tuple[str, str], dict] = {
    ("aws_wafv2_web_acl", "rule.statement"): {
        "rate_based_statement": {
            "=": {"limit", "aggregate_key_type", "evaluation_window_sec"},
        },
        "managed_rule_group_statement": {
            "=": {"name", "vendor_name", "version"},
            "rule_action_override": {
                "=": {"name"},
                "action_to_use": {
                    "count": {"=": set()},
                    "block": {"=": set()},
                    "allow": {"=": set()},
                },
            },
        },
    },
}


class Provider:
    def __init__(self, name: str, pkg: str):
        self.name = name
        self.pkg = pkg
        with open(os.path.join(pkg, "package.json"), encoding="utf-8") as f:
            meta = json.load(f)
        self.package = f"{meta['name']}@{meta['version']}"
        self.version = meta.get("cdktf", {}).get("provider", {}).get("version", "?")
        self.lib = os.path.join(pkg, "lib")
        self._cache: dict[tuple[str, str], Schema | None] = {}
        self._index: dict[tuple[str, str], str] | None = None

    def describe(self) -> str:
        return f"{self.name} provider {self.version} (schema from {self.package})"

    def _dir_for(self, kind: str, type_: str) -> str | None:
        base = type_[len(self.name) + 1 :].replace("_", "-")
        guess = (f"data-{self.name}-{base}" if kind == "data" else base) if kind != "provider" else "provider"
        path = os.path.join(self.lib, guess, "index.js")
        if os.path.exists(path) and self._declares(path, kind, type_):
            return path
        if self._index is None:  # the bindings renamed it: scan them all, once
            self._index = {}
            for d in os.listdir(self.lib):
                p = os.path.join(self.lib, d, "index.js")
                if not os.path.exists(p):
                    continue
                with open(p, encoding="utf-8") as f:
                    text = f.read()
                for m in re.finditer(r'\.tfResourceType = "([a-z0-9_]+)";', text):
                    k = "data" if "extends cdktf.TerraformDataSource" in text else "resource"
                    self._index[(k, m.group(1))] = p
        return self._index.get((kind, type_))

    @staticmethod
    def _declares(path: str, kind: str, type_: str) -> bool:
        with open(path, encoding="utf-8") as f:
            text = f.read()
        if f'.tfResourceType = "{type_}";' not in text:
            return False
        base = {"data": "TerraformDataSource", "resource": "TerraformResource", "provider": "TerraformProvider"}[kind]
        return f"extends cdktf.{base}" in text

    def schema(self, kind: str, type_: str) -> Schema | None:
        key = (kind, type_)
        if key not in self._cache:
            path = self._dir_for(kind, type_)
            self._cache[key] = self._load(path, kind) if path else None
        return self._cache[key]

    def _load(self, path: str, kind: str) -> Schema:
        with open(path, encoding="utf-8") as f:
            js = f.read()
        base = {"data": "TerraformDataSource", "resource": "TerraformResource", "provider": "TerraformProvider"}[kind]
        m = re.search(r"^class (\w+) extends cdktf\." + base + r" \{", js, re.M)
        if not m:
            raise SystemExit(f"check_tf_schema: no {base} class in {path}")
        cls = m.group(1)
        cls_end = js.find(f"{cls}.tfResourceType", m.end())
        cls_body = js[m.end() : cls_end]
        hcl = re.search(r"synthesizeHclAttributes\(\) \{\s*const attrs = \{(.*?)\n        \};", cls_body, re.S)
        if not hcl:
            raise SystemExit(f"check_tf_schema: no synthesizeHclAttributes in {path}")
        functions = {
            fm.group(1): fm.group(2)
            for fm in re.finditer(r"^function (\w+ToHclTerraform)\(struct\) \{(.*?)^\}", js, re.M | re.S)
        }
        schema = self._entries(hcl.group(1), functions, set())
        schema.attrs = set(schema.args) | set(schema.blocks) | {g or c for g, c in _GETTER.findall(cls_body)}
        return schema

    def _entries(self, text: str, functions: dict[str, str], seen: set[str]) -> Schema:
        schema = Schema()
        for name, value, is_block, _type, storage in _ENTRY.findall(text):
            if storage == "any":  # untyped in the bindings: accept either syntax, check by allow-list
                schema.args[name] = True
                schema.blocks[name] = ANY
                continue
            if is_block == "false":
                schema.args[name] = True
                continue
            fn = next((f for f in _TO_HCL.findall(value) if not f.startswith("cdktf")), None)
            if storage == "any" or fn is None or fn not in functions or fn in seen:
                schema.blocks[name] = ANY
            else:
                schema.blocks[name] = self._entries(functions[fn], functions, seen | {fn})
        return schema


# ---------------------------------------------------------------------------------------------
# The check.

RESOURCE_META = {"count", "for_each", "depends_on", "provider"}
RESOURCE_META_BLOCKS = {"lifecycle", "provisioner", "connection"}
LIFECYCLE = Schema(
    args={"create_before_destroy": True, "prevent_destroy": True, "ignore_changes": True, "replace_triggered_by": True},
    blocks={
        "precondition": Schema(args={"condition": True, "error_message": True}),
        "postcondition": Schema(args={"condition": True, "error_message": True}),
    },
)
VARIABLE = Schema(
    args={"description": True, "type": True, "default": True, "sensitive": True, "nullable": True, "ephemeral": True},
    blocks={"validation": Schema(args={"condition": True, "error_message": True})},
)
OUTPUT = Schema(
    args={"description": True, "value": True, "sensitive": True, "depends_on": True, "ephemeral": True},
    blocks={"precondition": Schema(args={"condition": True, "error_message": True})},
)
TERRAFORM_ARGS = {"required_version", "experiments"}
TERRAFORM_BLOCKS = {"required_providers", "backend", "cloud", "provider_meta"}
MODULE_META = {"source", "version", "count", "for_each", "depends_on", "providers"}

_REF_RES = re.compile(
    r"(?<![\w.])(data\.)?((?:aws|random)_[a-z0-9_]+)\.([A-Za-z_][\w-]*)(\[[^\]]*\]|\.\*)?(?:\.([A-Za-z_]\w*))?"
)
_REF_VAR = re.compile(r"(?<![\w.])var\.([A-Za-z_][\w-]*)")
_REF_LOCAL = re.compile(r"(?<![\w.])local\.([A-Za-z_][\w-]*)")
_REF_MODULE = re.compile(r"(?<![\w.])module\.([A-Za-z_][\w-]*)(?:\[[^\]]*\])?(?:\.([A-Za-z_][\w-]*))?")


class Checker:
    def __init__(self, providers: dict[str, Provider], root: str):
        self.providers = providers
        self.root = root
        self.findings: list[str] = []

    def find(self, path: str, line: int, msg: str) -> None:
        self.findings.append(f"{os.path.relpath(path, self.root) if self.root else path}:{line}: {msg}")

    def provider_of(self, type_: str) -> Provider | None:
        return self.providers.get(type_.split("_", 1)[0])

    # --- modules ---

    def load_module(self, directory: str) -> dict[str, list]:
        files = {}
        for name in sorted(os.listdir(directory)):
            if name.endswith(".tf"):
                path = os.path.join(directory, name)
                with open(path, encoding="utf-8") as f:
                    files[path] = parse_hcl(f.read(), path)
        return files

    def check_tree(self) -> None:
        for directory, _dirs, names in sorted(os.walk(self.root)):
            if "/.terraform" in directory or not any(n.endswith(".tf") for n in names):
                continue
            self.check_module(directory)

    def check_module(self, directory: str) -> None:
        files = self.load_module(directory)
        declared = self.declarations(files)
        for path, body in files.items():
            for item in body:
                if isinstance(item, Attribute):
                    self.find(path, item.line, f"argument {item.name!r} outside of any block")
                    continue
                self.check_top_block(path, item, declared, directory)

    def declarations(self, files: dict[str, list]) -> dict:
        d = {"var": {}, "local": set(), "module": {}, "resource": set(), "data": set(), "output": set()}
        for body in files.values():
            for b in body:
                if not isinstance(b, Block):
                    continue
                if b.type == "variable" and b.labels:
                    d["var"][b.labels[0]] = "default" in b.attributes()
                elif b.type == "locals":
                    d["local"].update(b.attributes())
                elif b.type == "module" and b.labels:
                    d["module"][b.labels[0]] = b
                elif b.type == "resource" and len(b.labels) == 2:
                    d["resource"].add((b.labels[0], b.labels[1]))
                elif b.type == "data" and len(b.labels) == 2:
                    d["data"].add((b.labels[0], b.labels[1]))
                elif b.type == "output" and b.labels:
                    d["output"].add(b.labels[0])
        return d

    def check_top_block(self, path: str, b: Block, declared: dict, directory: str) -> None:
        where = f"{b.type} {'.'.join(b.labels)}".strip()
        if b.type in ("resource", "data"):
            if len(b.labels) != 2:
                self.find(path, b.line, f"{b.type} block needs two labels (type and name)")
                return
            type_ = b.labels[0]
            provider = self.provider_of(type_)
            if provider is None:
                self.find(path, b.line, f"{where}: no schema for the provider of {type_!r} (known: {', '.join(sorted(self.providers))})")
                return
            schema = provider.schema(b.type, type_)
            if schema is None:
                self.find(path, b.line, f"{where}: unknown {'data source' if b.type == 'data' else 'resource'} type {type_!r} in the {provider.describe()}")
                return
            meta = RESOURCE_META
            meta_blocks = RESOURCE_META_BLOCKS if b.type == "resource" else {"lifecycle"}
            self.check_body(path, where, b.body, schema, type_, "", meta, meta_blocks, provider, declared)
            self.check_known_warnings(path, where, type_, b)
        elif b.type == "provider":
            name = b.labels[0] if b.labels else "?"
            provider = self.providers.get(name)
            if provider is None:
                self.find(path, b.line, f"provider {name!r}: no schema for it")
                return
            schema = provider.schema("provider", name)
            if schema is None:
                self.find(path, b.line, f"provider {name!r}: no provider configuration schema in {provider.package}")
                return
            self.check_body(path, where, b.body, schema, name, "", {"alias"}, set(), provider, declared)
        elif b.type == "variable":
            self.check_body(path, where, b.body, VARIABLE, None, "", set(), set(), None, declared)
        elif b.type == "output":
            self.check_body(path, where, b.body, OUTPUT, None, "", set(), set(), None, declared)
        elif b.type == "locals":
            for a in b.attributes().values():
                self.check_refs(path, a, where, declared)
        elif b.type == "terraform":
            self.check_terraform(path, b)
        elif b.type == "module":
            self.check_module_call(path, b, declared, directory)
        elif b.type in ("moved", "import", "removed", "check"):
            pass
        else:
            self.find(path, b.line, f"unknown top-level block type {b.type!r}")

    def check_terraform(self, path: str, b: Block) -> None:
        for item in b.body:
            if isinstance(item, Attribute) and item.name not in TERRAFORM_ARGS:
                self.find(path, item.line, f"terraform: unknown argument {item.name!r}")
            if isinstance(item, Block) and item.type not in TERRAFORM_BLOCKS:
                self.find(path, item.line, f"terraform: unknown block {item.type!r}")
        for rp in b.blocks("required_providers"):
            for a in rp.attributes().values():
                provider = self.providers.get(a.name)
                if provider is None:
                    self.find(path, a.line, f"required_providers: {a.name!r} has no schema to check against")
                    continue
                m = re.search(r'version\s*=\s*"([^"]*)"', a.raw)
                if not m:
                    self.find(path, a.line, f"required_providers.{a.name}: no version constraint")
                    continue
                major = provider.version.split(".")[0]
                constraint = m.group(1)
                if not re.match(r"^\s*(~>|>=|=)?\s*" + re.escape(major) + r"\.", constraint):
                    self.find(path, a.line, f"required_providers.{a.name}: constraint {constraint!r} does not pin major version {major}, the schema checked here ({provider.describe()})")

    def check_module_call(self, path: str, b: Block, declared: dict, directory: str) -> None:
        where = f"module {'.'.join(b.labels)}"
        attrs = b.attributes()
        for a in attrs.values():
            self.check_refs(path, a, where, declared)
        source = attrs.get("source")
        m = re.fullmatch(r'"([^"$%]*)"', source.raw) if source else None
        if not m:
            self.find(path, b.line, f"{where}: source must be a literal string")
            return
        src = m.group(1)
        if not src.startswith(("./", "../")):
            return  # a registry module: its variables are not here to check
        target = os.path.normpath(os.path.join(directory, src))
        if not os.path.isdir(target):
            self.find(path, source.line, f"{where}: source {src!r} is not a directory")
            return
        variables = self.declarations(self.load_module(target))["var"]
        for name, a in attrs.items():
            if name not in MODULE_META and name not in variables:
                self.find(path, a.line, f"{where}: {src} has no variable {name!r}")
        for name, has_default in variables.items():
            if not has_default and name not in attrs:
                self.find(path, b.line, f"{where}: required variable {name!r} of {src} is not set")
        self.check_plan_time_known(path, where, attrs, target)

    # --- shapes the provider accepts with a warning that becomes an error ---

    def check_known_warnings(self, path: str, where: str, type_: str, b: Block) -> None:
        # An empty `filter {}` in an S3 lifecycle rule: provider 5.x/6.x warn "Invalid Attribute
        # Combination" (a future version rejects it). A rule for every object says so with
        # `filter { prefix = "" }`.
        if type_ == "aws_s3_bucket_lifecycle_configuration":
            for rule in b.blocks("rule"):
                for f in rule.blocks("filter"):
                    if not f.body:
                        self.find(path, f.line, f"{where}: empty 'rule.filter' block (provider warning \"Invalid Attribute Combination\"): write filter {{ prefix = \"\" }} for every object")

    # --- for_each / count over values unknown at plan time ---

    @staticmethod
    def unknown_sources(code: str) -> list[str]:
        """The resource, data source and module references in an expression: unknown on a first
        plan (a resource's attributes are known only once it exists)."""
        found = [m.group(0) for m in _REF_RES.finditer(code)]
        found += [m.group(0) for m in _REF_MODULE.finditer(code)]
        return found

    def check_plan_time_known(self, path: str, where: str, attrs: dict, target: str) -> None:
        unknown = {}  # input -> what makes it unknown
        known_length = set()  # inputs whose list length is known though their elements are not
        for name, a in attrs.items():
            if name in MODULE_META:
                continue
            sources = self.unknown_sources(a.code)
            if not sources:
                continue
            unknown[name] = sources[0]
            raw = a.raw.strip()
            if re.fullmatch(r"(data\.)?[a-z0-9_]+\.[A-Za-z_][\w-]*\[\*\]\.[A-Za-z_]\w*", raw) or (raw.startswith("[") and raw.endswith("]") and " for " not in raw):
                known_length.add(name)
        if not unknown:
            return
        files = self.load_module(target)
        # Locals that depend on an unknown input, directly or through other locals.
        local_code = {}
        for body in files.values():
            for blk in body:
                if isinstance(blk, Block) and blk.type == "locals":
                    for a in blk.attributes().values():
                        local_code[a.name] = a.code
        tainted: dict[str, str] = {}
        changed = True
        while changed:
            changed = False
            for name, code in local_code.items():
                if name in tainted:
                    continue
                why = next((f"var.{v} <- {unknown[v]}" for v in _REF_VAR.findall(code) if v in unknown), None)
                why = why or next((f"local.{l} <- {tainted[l]}" for l in _REF_LOCAL.findall(code) if l in tainted), None)
                if why:
                    tainted[name] = why
                    changed = True
        for fpath, body in files.items():
            for blk in body:
                if not (isinstance(blk, Block) and blk.type in ("resource", "data", "module")):
                    continue
                for meta in ("for_each", "count"):
                    a = blk.attributes().get(meta)
                    if a is None:
                        continue
                    code = a.code
                    if meta == "count":
                        # length(var.X) of a list whose length the caller knows.
                        code = re.sub(r"\blength\(\s*var\.([A-Za-z_][\w-]*)\s*\)",
                                      lambda m: "0" if m.group(1) in known_length else m.group(0), code)
                    whys = [f"var.{v} <- {unknown[v]}" for v in _REF_VAR.findall(code) if v in unknown]
                    whys += [f"local.{l} <- {tainted[l]}" for l in _REF_LOCAL.findall(code) if l in tainted]
                    if whys:
                        label = ".".join(blk.labels)
                        kind = {"data": "data.", "module": "module."}.get(blk.type, "")
                        self.find(fpath, a.line, f"{kind}{label}: {meta} depends on {whys[0]} ({where} in {os.path.relpath(path, self.root)}), unknown until apply on a first plan; use values known at plan time (count = length(...) of a list of known length, keys from variables)")

    def check_body(self, path, where, body, schema, type_, at, meta, meta_blocks, provider, declared) -> None:
        for item in body:
            here = f"{at}.{item.name if isinstance(item, Attribute) else item.type}".lstrip(".")
            if isinstance(item, Attribute):
                self.check_refs(path, item, where, declared)
                if item.name in meta and not at:
                    continue
                if item.name in schema.args:
                    continue
                if item.name in schema.blocks and schema.blocks[item.name] is not ANY:
                    self.find(path, item.line, f"{where}: {here!r} is a block in {self.describe(provider)}, not an argument (write {item.name} {{ ... }})")
                else:
                    self.find(path, item.line, f"{where}: unknown argument {here!r} in {self.describe(provider)}")
                continue
            b = item
            if b.type == "lifecycle" and not at and "lifecycle" in meta_blocks:
                self.check_body(path, where, b.body, LIFECYCLE, None, "lifecycle", set(), set(), None, declared)
                continue
            if b.type in meta_blocks and not at:
                continue
            if b.type == "dynamic":
                name = b.labels[0] if b.labels else "?"
                inner = schema.blocks.get(name)
                if inner is None:
                    self.find(path, b.line, f"{where}: dynamic block {f'{at}.{name}'.lstrip('.')!r}: no such block in {self.describe(provider)}")
                    continue
                for a in b.attributes().values():
                    if a.name not in ("for_each", "iterator", "labels"):
                        self.find(path, a.line, f"{where}: unknown argument {a.name!r} of a dynamic block")
                    self.check_refs(path, a, where, declared)
                for c in b.blocks():
                    if c.type != "content":
                        self.find(path, c.line, f"{where}: dynamic block takes only a content block, not {c.type!r}")
                    else:
                        self.check_nested(path, where, c.body, inner, type_, f"{at}.{name}".lstrip("."), provider, declared)
                continue
            if b.type in schema.args and b.type not in schema.blocks:
                self.find(path, b.line, f"{where}: {here!r} is an argument in {self.describe(provider)}, not a block (write {b.type} = ...)")
                continue
            inner = schema.blocks.get(b.type)
            if inner is None:
                self.find(path, b.line, f"{where}: unknown block {here!r} in {self.describe(provider)}")
                continue
            self.check_nested(path, where, b.body, inner, type_, here, provider, declared)

    def check_nested(self, path, where, body, inner, type_, here, provider, declared) -> None:
        if inner is ANY:
            allow = ANY_ALLOW.get((type_, here))
            if allow is None:
                self.find(path, self.first_line(body), f"{where}: {here!r} is untyped in {self.describe(provider)} and has no allow-list here: add one to ANY_ALLOW in scripts/check_tf_schema.py")
                return
            self.check_allowed(path, where, body, allow, here, declared)
            return
        self.check_body(path, where, body, inner, type_, here, set(), set(), provider, declared)

    def check_allowed(self, path, where, body, allow: dict, at: str, declared) -> None:
        for item in body:
            if isinstance(item, Attribute):
                self.check_refs(path, item, where, declared)
                if item.name not in allow.get("=", set()):
                    self.find(path, item.line, f"{where}: unknown argument '{at}.{item.name}' (not in the allow-list for this untyped part of the schema)")
            elif item.type not in allow or item.type == "=":
                self.find(path, item.line, f"{where}: unknown block '{at}.{item.type}' (not in the allow-list for this untyped part of the schema)")
            else:
                self.check_allowed(path, where, item.body, allow[item.type], f"{at}.{item.type}", declared)

    @staticmethod
    def first_line(body) -> int:
        return body[0].line if body else 0

    @staticmethod
    def describe(provider: Provider | None) -> str:
        return provider.describe() if provider else "Terraform's language"

    def check_refs(self, path: str, a: Attribute, where: str, declared: dict) -> None:
        code = a.code
        for m in _REF_VAR.finditer(code):
            if m.group(1) not in declared["var"]:
                self.find(path, a.line, f"{where}: reference to undeclared variable var.{m.group(1)}")
        for m in _REF_LOCAL.finditer(code):
            if m.group(1) not in declared["local"]:
                self.find(path, a.line, f"{where}: reference to undeclared local.{m.group(1)}")
        for m in _REF_MODULE.finditer(code):
            name, out = m.group(1), m.group(2)
            call = declared["module"].get(name)
            if call is None:
                self.find(path, a.line, f"{where}: reference to undeclared module.{name}")
                continue
            source = call.attributes().get("source")
            src = re.fullmatch(r'"([^"$%]*)"', source.raw) if source else None
            if out and src and src.group(1).startswith(("./", "../")):
                target = os.path.normpath(os.path.join(os.path.dirname(path), src.group(1)))
                outputs = self.declarations(self.load_module(target))["output"]
                if out not in outputs:
                    self.find(path, a.line, f"{where}: module.{name} ({src.group(1)}) has no output {out!r}")
        for m in _REF_RES.finditer(code):
            is_data, type_, name, attr = m.group(1), m.group(2), m.group(3), m.group(5)
            kind = "data" if is_data else "resource"
            if (type_, name) not in declared[kind]:
                self.find(path, a.line, f"{where}: reference to undeclared {'data.' if is_data else ''}{type_}.{name}")
                continue
            provider = self.provider_of(type_)
            schema = provider.schema(kind, type_) if provider else None
            if attr and schema is not None and attr not in schema.attrs:
                self.find(path, a.line, f"{where}: {'data.' if is_data else ''}{type_}.{name} has no attribute {attr!r} in {provider.describe()}")


# ---------------------------------------------------------------------------------------------

SELF_TEST = {
    "main.tf": '''
resource "aws_lb_target_group" "t" {
  name = "x"
  deregistration_dely = 30
  health_check {
    path = "/readyz"
    intervall = 10
  }
}
resource "aws_dynamodb_tabel" "t" {
  name = "x"
}
data "aws_iam_policy_document" "d" {
  statement {
    actions = ["s3:GetObject"]
  }
}
resource "aws_cloudwatch_metric_alarm" "a" {
  alarm_name = "${aws_lb_target_group.t.arn_sufix}"
  dynamic "metric_querry" {
    for_each = []
    content {}
  }
  metric_query {
    id = var.nope
  }
}
resource "aws_wafv2_web_acl" "w" {
  rule {
    statement {
      rate_based_statment { limit = 10 }
    }
  }
}
resource "random_password" "p" {
  lenght = 10
}
resource "aws_s3_bucket_lifecycle_configuration" "l" {
  bucket = "b"
  rule {
    id     = "r"
    status = "Enabled"
    filter {}
  }
}
resource "aws_subnet" "s" {
  count      = 2
  vpc_id     = "vpc-1"
  cidr_block = "10.0.0.0/24"
}
module "m" {
  source = "./mod"
  ids    = aws_subnet.s[*].id
  names  = aws_subnet.s[*].id
}
''',
    "mod/main.tf": '''
variable "ids" {
  type = list(string)
}
variable "names" {
  type = list(string)
}
locals {
  id_set = toset(var.ids)
}
data "aws_subnet" "each" {
  for_each = local.id_set
  id       = each.value
}
data "aws_subnet" "counted" {
  count = length(var.ids)
  id    = var.ids[count.index]
}
resource "aws_sns_topic" "by_name" {
  for_each = toset(var.names)
  name     = each.value
}
''',
}
SELF_TEST_EXPECT = [
    "unknown argument 'deregistration_dely'",
    "unknown argument 'health_check.intervall'",
    "unknown resource type 'aws_dynamodb_tabel'",
    "has no attribute 'arn_sufix'",
    "dynamic block 'metric_querry'",
    "undeclared variable var.nope",
    "unknown block 'rule.statement.rate_based_statment'",
    "unknown argument 'lenght'",
    "data.aws_subnet.each: for_each depends on local.id_set <- var.ids <- aws_subnet.s[*].id",
    "aws_sns_topic.by_name: for_each depends on var.names <- aws_subnet.s[*].id",
    "empty 'rule.filter' block",
]


def self_test(providers: dict[str, Provider]) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        for name, text in SELF_TEST.items():
            os.makedirs(os.path.dirname(os.path.join(tmp, name)), exist_ok=True)
            with open(os.path.join(tmp, name), "w", encoding="utf-8") as f:
                f.write(text)
        checker = Checker(providers, tmp)
        checker.check_tree()
    missing = [e for e in SELF_TEST_EXPECT if not any(e in f for f in checker.findings)]
    if missing or len(checker.findings) != len(SELF_TEST_EXPECT):
        print("check_tf_schema self-test FAILED", file=sys.stderr)
        for e in missing:
            print(f"  not reported: {e}", file=sys.stderr)
        for f in checker.findings:
            print(f"  reported: {f}", file=sys.stderr)
        return 1
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--aws", required=True, help="directory of the installed @cdktf/provider-aws package")
    ap.add_argument("--random", required=True, help="directory of the installed @cdktf/provider-random package")
    ap.add_argument("--self-test", action="store_true", help="check that deliberate typos are reported")
    ap.add_argument("root", nargs="?", help="directory of .tf files (searched recursively)")
    args = ap.parse_args()
    for pkg in (args.aws, args.random):
        if not os.path.isfile(os.path.join(pkg, "package.json")):
            print(f"check_tf_schema: {pkg} is not an installed package", file=sys.stderr)
            return 2
    providers = {"aws": Provider("aws", args.aws), "random": Provider("random", args.random)}
    if args.self_test:
        return self_test(providers)
    if not args.root or not os.path.isdir(args.root):
        print("check_tf_schema: give the directory to check", file=sys.stderr)
        return 2
    checker = Checker(providers, os.path.abspath(args.root))
    try:
        checker.check_tree()
    except HclError as e:
        print(e, file=sys.stderr)
        return 1
    for f in checker.findings:
        print(f"{os.path.join(args.root, f)}", file=sys.stderr)
    if checker.findings:
        print(f"check_tf_schema: {len(checker.findings)} finding(s) against the {providers['aws'].describe()} and the {providers['random'].describe()}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
