"""Grafana Alloy's configuration language, read in Python, and its ``loki.process`` stages
applied to a log line. No Alloy binary can be had from the package registries this project
uses, so tests/monitoring/test_monitoring_logs_traces.py runs the pipeline's own expressions here:
the regexes (RE2's named groups, which Python's ``re`` reads alike), the JSON expressions (JMESPath,
which Alloy uses, by the ``jmespath`` library), and the label, structured metadata, match and drop
stages as Alloy's documentation defines them. An unknown stage fails."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

import jmespath

_TOKEN = re.compile(
    r'\s+|//[^\n]*|(?P<string>"(?:\\.|[^"\\])*")|(?P<number>-?\d+(?:\.\d+)?)'
    r"|(?P<ident>[A-Za-z_][A-Za-z0-9_]*)|(?P<punct>[{}\[\]=,.])"
)


@dataclass
class Block:
    name: str
    label: str | None
    attributes: dict[str, Any] = field(default_factory=dict)
    blocks: list[Block] = field(default_factory=list)

    def find(self, name: str, label: str | None = None) -> Block:
        [found] = [b for b in self.blocks if b.name == name and label in (None, b.label)]
        return found


def _tokens(text: str) -> list[tuple[str, str]]:
    tokens, position = [], 0
    while position < len(text):
        match = _TOKEN.match(text, position)
        if match is None:
            raise ValueError(f"cannot read Alloy syntax at {text[position : position + 30]!r}")
        position = match.end()
        if match.lastgroup:
            tokens.append((match.lastgroup, match.group()))
    return tokens


class _Parser:
    def __init__(self, text: str) -> None:
        self.tokens = _tokens(text)
        self.at = 0

    def peek(self, offset: int = 0) -> tuple[str, str] | None:
        index = self.at + offset
        return self.tokens[index] if index < len(self.tokens) else None

    def take(self, value: str | None = None) -> tuple[str, str]:
        token = self.tokens[self.at]
        if value is not None and token[1] != value:
            raise ValueError(f"expected {value!r}, found {token[1]!r}")
        self.at += 1
        return token

    def body(self, into: Block, closing: str | None) -> Block:
        while self.peek() is not None and (closing is None or self.peek()[1] != closing):
            name = self.take()[1]
            while self.peek()[1] == ".":
                self.take(".")
                name += "." + self.take()[1]
            if self.peek()[1] == "=":
                self.take("=")
                into.attributes[name] = self.value()
                continue
            label = json.loads(self.take()[1]) if self.peek()[0] == "string" else None
            self.take("{")
            into.blocks.append(self.body(Block(name, label), "}"))
            self.take("}")
        return into

    def value(self) -> Any:
        kind, text = self.take()
        if kind == "string":
            return json.loads(text)
        if kind == "number":
            return float(text)
        if text in ("true", "false"):
            return text == "true"
        if text == "[":
            items = []
            while self.peek()[1] != "]":
                items.append(self.value())
                if self.peek()[1] == ",":
                    self.take(",")
            self.take("]")
            return items
        if text == "{":
            fields = {}
            while self.peek()[1] != "}":
                key_kind, key = self.take()
                self.take("=")
                fields[json.loads(key) if key_kind == "string" else key] = self.value()
                if self.peek()[1] == ",":
                    self.take(",")
            self.take("}")
            return fields
        while self.peek() is not None and self.peek()[1] == ".":  # a reference
            self.take(".")
            text += "." + self.take()[1]
        return ("reference", text)


def parse(text: str) -> Block:
    return _Parser(text).body(Block("config", None), None)


# The cri stage's format, as Alloy's documentation gives it: time, stream, flags, content.
_CRI = re.compile(
    r"^(?P<time>\S+?) (?P<stream>stdout|stderr) (?P<flags>\S+?) (?P<content>.*)$", re.S
)
_SELECTOR = re.compile(r'(\w+)\s*=\s*"([^"]*)"')


@dataclass
class Entry:
    line: str
    labels: dict[str, str]
    extracted: dict[str, Any]
    structured_metadata: dict[str, str] = field(default_factory=dict)


def _named(values: dict[str, str], extracted: dict[str, Any]) -> dict[str, str]:
    """A labels/structured_metadata stage's values: name = source (empty: the same name)."""
    found = {}
    for name, source in values.items():
        value = extracted.get(source or name)
        if value is not None:
            found[name] = str(value)
    return found


def run_stages(stages: list[Block], entry: Entry) -> Entry:
    for stage in stages:
        kind, options = stage.name, stage.attributes
        if kind == "stage.cri":
            match = _CRI.match(entry.line)
            assert match, f"not a CRI line: {entry.line!r}"
            entry.extracted |= match.groupdict()
            entry.labels["stream"] = match["stream"]
            entry.line = match["content"]
        elif kind == "stage.regex":
            source = (
                entry.extracted.get(options.get("source")) if "source" in options else entry.line
            )
            match = re.search(options["expression"], source or "")
            if match:
                entry.extracted |= {k: v for k, v in match.groupdict().items() if v is not None}
        elif kind == "stage.json":
            try:
                document = json.loads(entry.line)
            except ValueError:
                continue
            for name, expression in options["expressions"].items():
                entry.extracted[name] = jmespath.search(expression or name, document)
        elif kind == "stage.labels":
            entry.labels |= _named(options["values"], entry.extracted)
        elif kind == "stage.structured_metadata":
            entry.structured_metadata |= _named(options["values"], entry.extracted)
        elif kind == "stage.label_drop":
            for name in options["values"]:
                entry.labels.pop(name, None)
        elif kind == "stage.match":
            wanted = dict(_SELECTOR.findall(options["selector"]))
            if wanted.items() <= entry.labels.items():
                run_stages(stage.blocks, entry)
        else:
            message = f"{kind}: not a stage this test knows; teach tests/helpers/alloy.py"
            raise AssertionError(message)
    return entry


def process(config: Block, component: str, *, filename: str, line: str) -> Entry:
    """What ``loki.process "<component>"`` makes of a line read from ``filename`` by
    ``loki.source.file`` (which sets the ``filename`` label)."""
    stages = config.find("loki.process", component).blocks
    labels = {"filename": filename}
    return run_stages(stages, Entry(line, labels, dict(labels)))
