"""A small reader for our .smk rule files: rule names, inputs, outputs and the params sections they hash.

It reads the conventions of workflow/rules/*.smk (one `params_hash(...)` per rule, paths as string literals),
enough to check dvc.yaml against the workflow without running Snakemake.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

RULE_RE = re.compile(r"^rule (\w+):\n((?:[ \t]+.*\n|\n)*)", re.MULTILINE)
BLOCK_RE = re.compile(r"^    (\w+):\n((?:        .*\n)*)", re.MULTILINE)
PATH_RE = re.compile(r'"((?:data|results)/[^"]*)"')


@dataclass
class Rule:
    name: str
    inputs: list[str] = field(default_factory=list)
    outputs: list[str] = field(default_factory=list)
    params_sections: list[str] = field(default_factory=list)


def read_rules(workflow_dir: Path) -> dict[str, Rule]:
    rules: dict[str, Rule] = {}
    for smk in sorted((workflow_dir / "rules").glob("*.smk")):
        for match in RULE_RE.finditer(smk.read_text()):
            rule = Rule(match.group(1))
            for block in BLOCK_RE.finditer(match.group(2)):
                kind, body = block.group(1), block.group(2)
                if kind == "input":
                    rule.inputs = PATH_RE.findall(body)
                elif kind == "output":
                    rule.outputs = PATH_RE.findall(body)
                elif kind == "params":
                    hashed = re.search(r"params_hash\(([^)]*)\)", body)
                    if hashed:
                        rule.params_sections = re.findall(r'"(\w+)"', hashed.group(1))
            rules[rule.name] = rule
    return rules
