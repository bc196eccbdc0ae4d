"""The layering rule, read from the source with ``ast``: engine and accounting know nothing of HTTP or of each
other, the service knows nothing of ``api``, nothing below ``api`` imports the process entry points, and the
shared modules (errors, settings, metrics, logs) import no layer.

Every import counts, including those inside functions and ``if TYPE_CHECKING:`` blocks."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src"
PACKAGE = SRC / "embedserve"

HTTP = ("fastapi", "starlette", "uvicorn", "embedserve.api")
ENTRY_POINTS = ("embedserve.server", "embedserve.cli", "embedserve.service")
# errors, settings, metrics and logs sit under every layer: they import none of them.
LAYERS = (*ENTRY_POINTS, "embedserve.api", "embedserve.engine", "embedserve.accounting", "embedserve.batch")
FORBIDDEN: dict[str, tuple[str, ...]] = {
    "embedserve.engine": (*HTTP, *ENTRY_POINTS, "embedserve.accounting"),
    "embedserve.accounting": (*HTTP, *ENTRY_POINTS, "embedserve.engine"),
    "embedserve.service": ("embedserve.api", "embedserve.server", "embedserve.cli", "fastapi", "starlette"),
    **{
        shared: LAYERS
        for shared in ("embedserve.errors", "embedserve.settings", "embedserve.metrics", "embedserve.logs")
    },
}


def module_name(path: Path) -> str:
    parts = path.relative_to(SRC).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported(tree: ast.AST, module: str, *, is_package: bool) -> Iterator[tuple[int, str]]:
    """Every module name ``tree`` imports (relative imports resolved against ``module``), with its line."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from ((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = module.split(".")[: len(module.split(".")) - node.level + (1 if is_package else 0)]
                base = ".".join([*anchor, base] if base else anchor)
            yield node.lineno, base
            yield from ((node.lineno, f"{base}.{alias.name}") for alias in node.names)


def _within(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def file_violations(path: Path, source: str) -> list[str]:
    """``module:line: imports name`` for each import in ``source`` (the text of ``path``) its layer forbids."""
    module = module_name(path)
    banned = [b for layer, rule in FORBIDDEN.items() if _within(module, layer) for b in rule]
    tree = ast.parse(source, filename=str(path))
    return sorted(
        {
            f"{module}:{line}: imports {name}"
            for line, name in imported(tree, module, is_package=path.name == "__init__.py")
            if any(_within(name, b) for b in banned)
        }
    )


def violations(root: Path) -> list[str]:
    return [found for path in sorted(root.rglob("*.py")) for found in file_violations(path, path.read_text())]


def test_no_layer_imports_what_the_layering_forbids() -> None:
    assert violations(PACKAGE) == []


@pytest.mark.parametrize(
    ("module", "statement"),
    [
        ("engine/scheduler.py", "from fastapi import Request"),
        ("engine/engine.py", "from embedserve.accounting.gateway import Principal"),
        ("accounting/ratelimit.py", "from starlette.datastructures import Headers"),
        ("accounting/credits.py", "from ..api import errors"),
        ("accounting/keys.py", "import embedserve.engine.engine"),
        ("service.py", "from embedserve.api.deps import get_engine"),
        ("metrics.py", "from embedserve.engine.engine import Engine"),
    ],
)
def test_a_forbidden_import_is_reported_with_its_place(module: str, statement: str, tmp_path: Path) -> None:
    """The check itself can fail: a copy of the source with one planted import (inside a function, where a
    careless lazy import would sit) is reported at that file."""
    path = PACKAGE / module
    source = path.read_text()
    planted = f"{source}\n\ndef _planted() -> None:\n    {statement}\n"
    line = planted.count("\n")
    found = file_violations(path, planted)
    assert found and all(f":{line}: imports " in v for v in found), found
