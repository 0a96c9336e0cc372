"""The layers point one way: domain ← store ← activities ← workflows ← client, CLI, demo, bench, worker.

Every import in chipclear/, workflows/, activities/ and worker.py is read from the source (ast, nothing is
imported), wherever it stands: at the top, inside a function, under `if TYPE_CHECKING:` or inside
`with workflow.unsafe.imports_passed_through():`. A dependency is a dependency wherever it is written.

`chipclear.contracts` (ids, task queues, start operations, the models a workflow shares with its callers)
sits just above the domain, so that activities, workflows and their callers all import it and none of
them imports another's code for it.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("chipclear", "workflows", "activities")
FIRST_PARTY = (*PACKAGES, "worker")

# The top layer: what runs chipclear or talks to it from outside. Nothing below imports these.
TOP = (
    "worker",
    "chipclear.worker",
    "chipclear.client",
    "chipclear.cli",
    "chipclear.demo",
    "chipclear.demo_shipments",
    "chipclear.bench",
    "chipclear.bulk",
)
# The bench's yardstick workflow and its activity: registered by `chipclear bench` alone.
BENCH_ONLY = ("workflows.bench", "activities.bench")


@dataclass(frozen=True)
class Import:
    module: str  # the importing module
    target: str  # what it imports, resolved to a module where the name is one
    path: str  # relative to the repository root
    line: int

    def __str__(self) -> str:
        return f"{self.path}:{self.line} {self.module} imports {self.target}"


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def source_files() -> list[Path]:
    files = [path for package in PACKAGES for path in sorted((ROOT / package).rglob("*.py"))]
    return [*files, ROOT / "worker.py"]


def imports_of(
    source: str, module: str, *, is_package: bool, known: set[str], path: str = ""
) -> list[Import]:
    """Every import in `source`, anywhere in it. `from a import b` counts as `a.b` when that is a module."""
    # The package a relative import starts from: a package's own name, or a module's parent.
    here = module.split(".") if is_package else module.split(".")[:-1]
    found: list[Import] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [Import(module, alias.name, path, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = here[: len(here) - (node.level - 1)]
                parent = ".".join([*base, *([node.module] if node.module else [])])
            else:
                parent = node.module or ""
            for alias in node.names:
                candidate = f"{parent}.{alias.name}"
                target = candidate if candidate in known else parent
                found.append(Import(module, target, path, node.lineno))
    return found


def parse_all() -> list[Import]:
    files = source_files()
    known = {module_name(path) for path in files}
    found: list[Import] = []
    for path in files:
        found += imports_of(
            path.read_text(),
            module_name(path),
            is_package=path.name == "__init__.py",
            known=known,
            path=str(path.relative_to(ROOT)),
        )
    return found


IMPORTS = parse_all()
MODULES = {module_name(path) for path in source_files()}


def under(name: str, prefixes: Iterable[str]) -> bool:
    return any(name == prefix or name.startswith(prefix + ".") for prefix in prefixes)


def first_party(name: str) -> bool:
    return under(name, FIRST_PARTY)


# -- the rules ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Rule:
    """Modules under `sources` (but not under `exempt`) must not import anything under `never`, and, if
    `only` is given, nothing of chipclear's own outside `only`."""

    name: str
    why: str
    sources: tuple[str, ...]
    never: tuple[str, ...] = ()
    only: tuple[str, ...] | None = None
    exempt: tuple[str, ...] = ()

    def broken_by(self, found: Iterable[Import]) -> list[Import]:
        return [
            imp
            for imp in found
            if under(imp.module, self.sources)
            and not under(imp.module, self.exempt)
            and (
                under(imp.target, self.never)
                or (self.only is not None and first_party(imp.target) and not under(imp.target, self.only))
            )
        ]


RULES = (
    Rule(
        "domain-is-pure",
        "the domain (decide/evolve, models, policy) does no I/O and knows nothing of Temporal: it imports "
        "only itself, so the workflow, the projections and the audit can all run it",
        sources=("chipclear.domain",),
        only=("chipclear.domain",),
        never=("temporalio",),
    ),
    Rule(
        "store-below-activities",
        "the store keeps events; it knows neither Temporal, nor the code that runs on it, nor the "
        "request aggregate (the domain registers its projection with the store, not the other way)",
        sources=("chipclear.store",),
        never=(
            *TOP,
            "activities",
            "workflows",
            "chipclear.contracts",
            "chipclear.domain.state",
            "chipclear.domain.decider",
            "chipclear.domain.gates",
            "temporalio",
        ),
    ),
    Rule(
        "contracts-are-low",
        "activities, workflows and their callers all import chipclear.contracts, so it may import only "
        "the domain and the configuration",
        sources=("chipclear.contracts",),
        only=("chipclear.contracts", "chipclear.domain", "chipclear.config"),
    ),
    Rule(
        "activities-below-workflows",
        "activities are the leaves the workflows call: ids, start operations and shared models come from "
        "chipclear.contracts, never from a workflow module",
        sources=("activities",),
        never=(*TOP, "workflows"),
    ),
    Rule(
        "workflows-below-callers",
        "workflows are orchestration only: they reach the store through activities and know nothing of "
        "who starts them",
        sources=("workflows",),
        never=(*TOP, "chipclear.store"),
    ),
    Rule(
        "shared-modules-below-workflows",
        "chipclear's shared modules (config, logs, codec, temporal, health, search attributes, …) serve "
        "every layer, so they import no activity, workflow, client, CLI, demo, bench or worker",
        sources=("chipclear",),
        exempt=(*TOP, "chipclear.domain", "chipclear.store", "chipclear.contracts"),
        never=(*TOP, "activities", "workflows"),
    ),
    Rule(
        "client-below-its-users",
        "chipclear.client is the library the CLI, the demo and the bench share; it uses none of them",
        sources=("chipclear.client",),
        never=tuple(top for top in TOP if top != "chipclear.client"),
    ),
    Rule(
        "worker-py-is-only-an-entry",
        "worker.py is the process entry and nothing else; code imports chipclear.worker (main, "
        "run_worker, build_worker) instead",
        sources=PACKAGES,
        never=("worker",),
    ),
    Rule(
        "bench-workflow-only-in-the-bench",
        "the production worker registers no benchmark code: `chipclear bench` adds its bare workflow to "
        "its own worker",
        sources=("worker", "chipclear.worker"),
        never=BENCH_ONLY,
    ),
)


@pytest.mark.parametrize("rule", RULES, ids=[rule.name for rule in RULES])
def test_layer_rule(rule: Rule) -> None:
    offenders = sorted(set(rule.broken_by(IMPORTS)), key=str)
    if offenders:
        pytest.fail(
            f"layer rule {rule.name!r} broken: {rule.why}.\n" + "\n".join(f"  {imp}" for imp in offenders),
            pytrace=False,
        )


def test_every_rule_sees_modules() -> None:
    """A rule whose sources match nothing would pass for ever; a renamed folder must fail here instead."""
    empty = [rule.name for rule in RULES if not any(under(module, rule.sources) for module in MODULES)]
    assert not empty, f"rules that match no module: {empty}"


def test_the_production_worker_registers_no_bench_workflow() -> None:
    from chipclear.worker import WORKFLOWS

    bench = [workflow.__qualname__ for workflow in WORKFLOWS if under(workflow.__module__, BENCH_ONLY)]
    assert not bench, f"chipclear.worker.WORKFLOWS registers benchmark workflows {bench}: only the bench may"


# -- no circle in the store ---------------------------------------------------------------------------
def cycles(nodes: set[str], edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module, or one that imports itself."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:  # Tarjan; the store is small enough for recursion
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(edges.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component: list[str] = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1 or node in edges.get(node, ()):
                found.append(sorted(component))

    for node in sorted(nodes):
        if node not in index:
            visit(node)
    return found


def test_no_import_cycle_in_the_store() -> None:
    store = {module for module in MODULES if under(module, ("chipclear.store",))}
    edges: dict[str, set[str]] = {}
    lines: dict[tuple[str, str], Import] = {}
    for imp in IMPORTS:
        if imp.module in store and imp.target in store and imp.target != imp.module:
            edges.setdefault(imp.module, set()).add(imp.target)
            lines.setdefault((imp.module, imp.target), imp)
    circles = cycles(store, edges)
    if circles:
        report = []
        for members in circles:
            report.append("  circle: " + ", ".join(members))
            report += [
                f"    {lines[(a, b)]}" for a in members for b in sorted(edges.get(a, set()) & set(members))
            ]
        pytest.fail(
            "import cycles in chipclear/store (a package's __init__ counts as a module):\n"
            + "\n".join(report),
            pytrace=False,
        )


# -- the parser itself --------------------------------------------------------------------------------
SAMPLE = """
from __future__ import annotations
import json
from temporalio import workflow
from . import sibling
from .. import config
from .sibling import thing

with workflow.unsafe.imports_passed_through():
    from activities.events import AppendInput
    from pkg import sub

def later() -> None:
    import worker
    from pkg.sub import name
"""


def targets(found: list[Import]) -> set[str]:
    return {imp.target for imp in found}


def test_the_parser_finds_imports_everywhere() -> None:
    known = {"pkg", "pkg.sub", "pkg.inner", "pkg.inner.sibling", "pkg.config", "activities.events"}
    found = imports_of(SAMPLE, "pkg.inner.mod", is_package=False, known=known)
    assert targets(found) == {
        "__future__",
        "json",
        "temporalio",
        "pkg.inner.sibling",  # `from . import sibling`: a module
        "pkg.config",  # `from .. import config`
        "activities.events",  # inside imports_passed_through
        "pkg.sub",  # `from pkg import sub`: a module, not just the package
        "worker",  # inside a function
    }


def test_the_parser_resolves_relative_imports_from_a_package() -> None:
    found = imports_of("from . import sub\nfrom .sub import x\n", "pkg", is_package=True, known={"pkg.sub"})
    assert targets(found) == {"pkg.sub"}
