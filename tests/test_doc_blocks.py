"""The Python blocks of the README and the documentation pages, checked without running them.

Running them as written takes minutes (the helper-run audit of 2026-12-03 did, by hand); this
checks what goes stale silently when the code changes: each block parses, every name it
imports from ``sklearn_eos`` exists, and every keyword it passes to one of those names is a
parameter of it.
"""

import ast
import importlib
import inspect
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = ["README.md", "docs/index.rst", "docs/install.rst", "docs/user_guide.rst", "docs/scaling.rst"]
SHELL = ("pip ", "python ", "python3 ", "make ", "dask ", "bash ", "OMP_NUM_THREADS=")


def _markdown_blocks(text):
    """(line, code) of each ```python fence."""
    return [(text[:m.start()].count("\n") + 2, m.group(1))
            for m in re.finditer(r"^```python\n(.*?)^```", text, flags=re.S | re.M)]


def _rst_blocks(text):
    """(line, code) of each literal block (a paragraph ending in ``::``) and each
    ``.. code-block:: python``."""
    lines, blocks, i = text.splitlines(), [], 0
    while i < len(lines):
        head = lines[i].rstrip()
        literal = head.endswith("::") and not head.lstrip().startswith("..")
        if literal or head.strip() == ".. code-block:: python":
            j = i + 1
            while j < len(lines) and not lines[j].strip():
                j += 1
            if j < len(lines) and lines[j].startswith(" "):
                indent = len(lines[j]) - len(lines[j].lstrip())
                block = []
                while j < len(lines) and (not lines[j].strip()
                                          or len(lines[j]) - len(lines[j].lstrip()) >= indent):
                    block.append(lines[j][indent:])
                    j += 1
                blocks.append((i + 1, "\n".join(block).strip("\n")))
                i = j
                continue
        i += 1
    return blocks


def _python_blocks():
    found = []
    for page in PAGES:
        text = (ROOT / page).read_text()
        blocks = _markdown_blocks(text) if page.endswith(".md") else _rst_blocks(text)
        found += [pytest.param(code, id=f"{page}:{line}") for line, code in blocks
                  if not code.lstrip().startswith(SHELL)]
    return found


BLOCKS = _python_blocks()


def test_the_pages_have_the_python_blocks_this_file_checks():
    # the README's example and Dask search, index's example, the user guide's seven blocks,
    # scaling's search: a parser that found none would pass everything below
    assert len(BLOCKS) >= 11


@pytest.mark.parametrize("code", BLOCKS)
def test_a_documented_block_parses_and_calls_sklearn_eos_as_it_is(code):
    tree = ast.parse(code)
    imported = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "sklearn_eos":
            module = importlib.import_module(node.module)
            for alias in node.names:
                assert hasattr(module, alias.name), f"{node.module} has no {alias.name}"
                imported[alias.asname or alias.name] = getattr(module, alias.name)
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Call) and isinstance(node.func, (ast.Name, ast.Attribute))):
            continue
        if isinstance(node.func, ast.Name):
            target = imported.get(node.func.id)
        else:  # a class method such as SharpnessDisplay.from_estimator
            owner = node.func.value
            target = (getattr(imported[owner.id], node.func.attr, None)
                      if isinstance(owner, ast.Name) and owner.id in imported else None)
        if target is None:
            continue
        signature = inspect.signature(target)
        if any(p.kind is p.VAR_KEYWORD for p in signature.parameters.values()):
            continue
        for keyword in node.keywords:
            if keyword.arg is not None:
                assert keyword.arg in signature.parameters, \
                    f"{getattr(target, '__qualname__', target)} takes no {keyword.arg!r}"
