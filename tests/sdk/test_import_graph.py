"""The parts stay in their rooms: the import graph of ``hydro_serving`` read with ``ast``, checked against the nevers.

Every import counts, those inside functions too (a function-level import hides a dependency, it
does not remove it); only ``if TYPE_CHECKING:`` blocks are skipped. The rules are DESIGN.md's:
runtime imports neither builder nor gateway; store none of runtime, gateway, router, builder;
router reaches the gateway only over HTTP; no cycles. Added here: what the sdk and the template
registry must not know, and that templates stand on the sdk rather than the runtime.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from click.testing import CliRunner

from hydro_serving.cli.gateway import gateway
from hydro_serving.errors import ConfigError
from hydro_serving.gateway.config import GatewayConfig
from hydro_serving.gateway.providers import PROVIDERS, get_provider

REPO = Path(__file__).resolve().parents[2]
PACKAGE = REPO / "hydro_serving"

NEVERS: list[tuple[str, tuple[str, ...]]] = [
    ("hydro_serving.runtime", ("hydro_serving.builder", "hydro_serving.gateway")),
    ("hydro_serving.store", ("hydro_serving.runtime", "hydro_serving.gateway", "hydro_serving.router",
                             "hydro_serving.builder")),
    ("hydro_serving.router", ("hydro_serving.gateway",)),
    # the sdk: what templates import; it knows no HTTP, no gateway, no store backend, no runtime
    ("hydro_serving.sdk", ("hydro_serving.runtime", "hydro_serving.gateway", "hydro_serving.store",
                           "hydro_serving.builder", "hydro_serving.router", "flask", "werkzeug", "aiohttp",
                           "boto3", "gunicorn")),
    # the template registry: finding and parsing template.yml, imported by everyone, importing none of them
    ("hydro_serving.templates", ("hydro_serving.runtime", "hydro_serving.builder", "hydro_serving.gateway",
                                 "hydro_serving.stack", "hydro_serving.sdk")),
    ("hydro_serving.stack", ("hydro_serving.runtime", "hydro_serving.gateway", "hydro_serving.builder",
                             "hydro_serving.store", "hydro_serving.router")),
]


def module_name(root: Path, path: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path, package: str) -> set[str]:
    """Every module name ``path`` imports (absolute, relative resolved), outside ``TYPE_CHECKING`` blocks."""
    tree = ast.parse(path.read_text())
    skipped = {id(node) for block in ast.walk(tree)
               if isinstance(block, ast.If) and "TYPE_CHECKING" in ast.unparse(block.test)
               for node in ast.walk(block)}
    names: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return names


def package_graph(root: Path) -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    """(edges between the package's own modules, every name each module imports)."""
    modules = {module_name(root, p): p for p in (root / "hydro_serving").rglob("*.py")}
    edges: dict[str, set[str]] = {m: set() for m in modules}
    raw: dict[str, set[str]] = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        raw[name] = imports_of(path, package)
        for target in raw[name]:
            while target and target not in modules:
                target = target.rpartition(".")[0]
            if target and target != name:
                edges[name].add(target)
    return edges, raw


def cycles_in(edges: dict[str, set[str]]) -> list[list[str]]:
    color: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        color[node] = 1
        stack.append(node)
        for nxt in sorted(edges[node]):
            if color.get(nxt) == 1:
                found.append([*stack[stack.index(nxt):], nxt])
            elif not color.get(nxt):
                visit(nxt)
        stack.pop()
        color[node] = 2

    for node in sorted(edges):
        if not color.get(node):
            visit(node)
    return found


def _within(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def broken_nevers(raw: dict[str, set[str]]) -> list[str]:
    return sorted(f"{module} -> {target}" for source, forbidden in NEVERS for module, targets in raw.items()
                  if _within(module, source) for target in targets if any(_within(target, f) for f in forbidden))


# ---- the package ------------------------------------------------------------------------------------


def test_no_part_imports_what_it_must_not_know() -> None:
    _, raw = package_graph(REPO)
    assert broken_nevers(raw) == []


def test_the_package_has_no_import_cycle() -> None:
    edges, _ = package_graph(REPO)
    assert cycles_in(edges) == []


def test_templates_stand_on_the_sdk_not_on_the_runtime() -> None:
    """A template's handler imports the sdk (and contract/errors/templates), never the runtime or the builder."""
    offenders = []
    for path in sorted((REPO / "templates").rglob("*.py")):
        for name in imports_of(path, "templates"):
            if any(_within(name, p) for p in ("hydro_serving.runtime", "hydro_serving.builder",
                                              "hydro_serving.gateway", "hydro_serving.store")):
                offenders.append(f"{path.relative_to(REPO)} -> {name}")
        if "yaml" in imports_of(path, "templates") or '"template.yml")' in path.read_text():
            offenders.append(f"{path.relative_to(REPO)} reads its own template.yml (the sdk hands it the patterns)")
    assert offenders == []


# ---- the checker catches what it should (so the tests above cannot pass by seeing nothing) ---------------


def write(root: Path, module: str, source: str) -> None:
    path = root.joinpath(*module.split(".")).with_suffix(".py")
    path.parent.mkdir(parents=True, exist_ok=True)
    for parent in path.relative_to(root).parents:
        if str(parent) != ".":
            (root / parent / "__init__.py").touch()
    path.write_text(source)


def test_the_checker_sees_function_level_imports_cycles_and_relative_imports(tmp_path: Path) -> None:
    write(tmp_path, "hydro_serving.runtime.app", "def f():\n    from hydro_serving.builder import images\n")
    write(tmp_path, "hydro_serving.builder.images", "")
    write(tmp_path, "hydro_serving.stack.model", "from .loader import parse\n")
    write(tmp_path, "hydro_serving.stack.loader", "def g():\n    from hydro_serving.stack import model\n")
    write(tmp_path, "hydro_serving.sdk.model", "import flask\n")
    write(tmp_path, "hydro_serving.store.s3", "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
                                              "    from hydro_serving.runtime import app\n")
    edges, raw = package_graph(tmp_path)
    assert broken_nevers(raw) == ["hydro_serving.runtime.app -> hydro_serving.builder",
                                  "hydro_serving.runtime.app -> hydro_serving.builder.images",
                                  "hydro_serving.sdk.model -> flask"]
    assert ["hydro_serving.stack.loader", "hydro_serving.stack.model", "hydro_serving.stack.loader"] in cycles_in(
        edges)


# ---- the gateway is offered only providers it can run ------------------------------------------------------


def test_knative_is_not_a_gateway_provider(tmp_path: Path) -> None:
    """Knative scales its Services itself: ``hydro deploy --provider knative`` talks to it, the gateway does not."""
    assert "knative" not in PROVIDERS
    with pytest.raises(ConfigError) as caught:
        get_provider("knative", GatewayConfig(state_dir=tmp_path))
    assert caught.value.field == "provider" and "known: local, docker" in caught.value.message


def test_hydro_gateway_does_not_offer_knative() -> None:
    out = CliRunner().invoke(gateway, ["--provider", "knative"])
    assert out.exit_code == 2 and "'knative' is not one of 'docker', 'local'" in out.output, out.output
