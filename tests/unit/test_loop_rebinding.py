"""A project rule, checked over src/ and tests/: a `for` loop must not rebind a name that its function bound
before the loop and reads after it. In Python a loop has no scope of its own, so such a loop silently replaces
the earlier value: eligibility answered every person with the region of the last tariff loaded because a loop
over the tariff regions was named `region` (issue 15, item 1). Ruff has no rule for this shape (PLW2901 checks
the opposite: a loop variable overwritten inside its body), hence this check; the planted copy of the old
eligibility code below shows it catches the bug it was written for."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCOPES = (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda, ast.ClassDef)
COMPREHENSIONS = (ast.ListComp, ast.SetComp, ast.DictComp, ast.GeneratorExp)


def _own_nodes(function: ast.AST) -> list[ast.AST]:
    """The nodes of a function's body, without those of the functions and classes defined in it, nor the names a
    comprehension binds for itself (its targets, where they are used inside it)."""
    found: list[ast.AST] = []
    stack: list[tuple[ast.AST, frozenset[str]]] = [(child, frozenset()) for child in ast.iter_child_nodes(function)]
    while stack:
        node, private = stack.pop()
        if isinstance(node, ast.Name) and node.id in private:
            continue
        found.append(node)
        if isinstance(node, COMPREHENSIONS):
            private = private | {name for generator in node.generators for name in _target_names(generator.target)}
        if not isinstance(node, SCOPES):
            stack.extend((child, private) for child in ast.iter_child_nodes(node))
    return found


def _target_names(target: ast.AST) -> set[str]:
    return {node.id for node in ast.walk(target) if isinstance(node, ast.Name)}


def loop_rebindings(source: str, filename: str = "<source>") -> list[str]:
    """`file:line: name` for every loop target that rebinds an earlier binding which is read after the loop."""
    problems = []
    for function in ast.walk(ast.parse(source, filename)):
        if not isinstance(function, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        nodes = _own_nodes(function)
        loops = [node for node in nodes if isinstance(node, ast.For | ast.AsyncFor)]
        loop_targets = {id(name) for loop in loops for name in ast.walk(loop.target)}
        arguments = function.args
        parameters = {a.arg for a in (*arguments.posonlyargs, *arguments.args, *arguments.kwonlyargs,
                                      *filter(None, (arguments.vararg, arguments.kwarg)))}
        # Where each name is bound (other than as a loop target) and read, in source order.
        stores = [(n.lineno, n.id) for n in nodes if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)
                  and id(n) not in loop_targets]
        events = sorted(((n.lineno, isinstance(n.ctx, ast.Store), n.id) for n in nodes if isinstance(n, ast.Name)),
                        key=lambda event: (event[0], event[1]))  # on one line the reads come first (x = x + 1)
        for loop in loops:
            end = loop.end_lineno or loop.lineno
            for name in _target_names(loop.target):
                bound_before = name in parameters or any(line < loop.lineno and stored == name
                                                         for line, stored in stores)
                after = [is_store for line, is_store, used in events if line > end and used == name]
                if bound_before and after and not after[0]:
                    problems.append(f"{filename}:{loop.lineno}: loop variable {name!r} replaces the value bound "
                                    "before the loop, which is read after it")
    return problems


# The eligibility use case as it was (issue 15, item 1): the planted fault.
OLD_ELIGIBILITY = '''
def eligibility(self, caller, id_number, day):
    with self.ctx.uow() as tx:
        person = tx.repo.person(id_number)
        scheme, region = (person.scheme, person.region) if person else (None, None)
        tariffs = self.ctx.tariffs.current(tx.repo)
    names = {}
    for region in tariffs.regions():
        for version in tariffs.versions(region):
            names.update(version.raw.get("categories") or {})
    return {"scheme": scheme, "region": region, "names": names}
'''


def test_the_old_eligibility_code_is_caught() -> None:
    assert loop_rebindings(OLD_ELIGIBILITY) == [
        "<source>:8: loop variable 'region' replaces the value bound before the loop, which is read after it"]


def test_what_the_rule_lets_through() -> None:
    allowed = '''
def f(rows, other):
    for row in rows:          # a name of its own
        pass
    for row in other:         # two loops sharing a target: neither replaces a value bound otherwise
        pass
    total = 0
    for total in rows:        # replaced, but never read afterwards as the old value: assigned first
        pass
    total = 1
    return total, row
'''
    assert loop_rebindings(allowed) == []
    parameter = "def f(region, regions):\n    for region in regions:\n        pass\n    return region\n"
    assert len(loop_rebindings(parameter)) == 1


def test_no_loop_in_the_project_rebinds_a_value_it_reads_later() -> None:
    problems = []
    for folder in ("src", "tests", "benchmarks"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            problems += loop_rebindings(path.read_text(encoding="utf-8"), str(path.relative_to(ROOT)))
    assert problems == []
