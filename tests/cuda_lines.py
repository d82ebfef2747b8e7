"""The lines of the project that run only on a GPU, found by reading the source.

A line is CUDA-only when it
- lies in the body of an `if` whose condition asks for CUDA (`device.type == "cuda"`, `torch.cuda.…`) and
  negates nothing (a `not` or `!=` condition guards the CPU's branch instead);
- lies in a function whose name says cuda (`_cuda_batches`);
- or calls into torch.cuda (other than the probes is_available and device_count, which every machine runs),
  or pins memory, copies without blocking or records a stream.
Only a statement's own line counts for a compound statement (a `with torch.cuda.stream(…)` line, not its body,
which the other rules judge). Line numbers are statements' first lines, as coverage reports them.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("trainables", "search", "results")
PROBES = {"is_available", "device_count"}
MARKERS = {"pin_memory", "non_blocking", "record_stream"}
_COMPOUND_BODIES = ("body", "orelse", "finalbody", "handlers")


def _mentions_cuda(node: ast.AST) -> bool:
    return any((isinstance(n, ast.Constant) and n.value == "cuda")
               or (isinstance(n, ast.Attribute) and n.attr == "cuda") for n in ast.walk(node))  # fmt: skip


def _negates(node: ast.AST) -> bool:
    return any(isinstance(n, (ast.Not, ast.NotEq, ast.IsNot, ast.NotIn)) for n in ast.walk(node))


def _header(stmt: ast.stmt) -> list[ast.AST]:
    """The parts of a statement that run on its own line: all of a simple one, the header of a compound one."""
    if not any(hasattr(stmt, name) for name in _COMPOUND_BODIES):
        return [stmt]
    if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        return []
    own = [value for name, value in ast.iter_fields(stmt)
           if name not in _COMPOUND_BODIES and isinstance(value, ast.AST)]  # fmt: skip
    return own + list(getattr(stmt, "items", []))


def _calls_cuda(parts: list[ast.AST]) -> bool:
    for part in parts:
        for n in ast.walk(part):
            if isinstance(n, ast.Attribute) and n.attr in MARKERS:
                return True
            if isinstance(n, ast.keyword) and n.arg in MARKERS:
                return True
            if (isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute) and n.func.attr not in PROBES
                    and isinstance(n.func.value, ast.Attribute) and n.func.value.attr == "cuda"):  # fmt: skip
                return True
    return False


def _statements(body: list[ast.stmt]) -> list[ast.stmt]:
    found = []
    for stmt in body:
        found.append(stmt)
        for name in _COMPOUND_BODIES:
            for child in getattr(stmt, name, []) or []:
                found.extend(_statements(child.body) if isinstance(child, ast.ExceptHandler) else _statements([child]))
    return found


def cuda_only_lines(path: Path) -> dict[int, str]:
    """Line number → source text of every CUDA-only statement in one file."""
    source = path.read_text()
    tree = ast.parse(source)
    text = source.splitlines()
    lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and _mentions_cuda(node.test) and not _negates(node.test):
            lines.update(s.lineno for s in _statements(node.body))
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and "cuda" in node.name.lower():
            lines.update(s.lineno for s in _statements(node.body))
        elif isinstance(node, ast.stmt) and _calls_cuda(_header(node)):
            lines.add(node.lineno)
    return {n: text[n - 1].strip() for n in sorted(lines)}


def project_cuda_lines() -> dict[Path, dict[int, str]]:
    """Every CUDA-only line of the project's code (tests and benchmarks aside), by file."""
    found = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            lines = cuda_only_lines(path)
            if lines:
                found[path] = lines
    return found
