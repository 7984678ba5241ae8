"""The store contract is split by role, and each consumer keeps to the role it takes.

Two checks: every abstract method of the SQL store is declared in exactly one role of
``checkpoint.base`` (the composition, :class:`CheckpointStore`, adds only the life cycle),
and every use of a store held under a role annotation names a method of that role. The
second is read from the source (parameters, ``self.x = store``, local aliases and functions
returning a role), so an import under ``TYPE_CHECKING`` or a reference passed to
``asyncio.to_thread`` counts too; each check is also run on a sample that breaks it.
"""

from __future__ import annotations

import abc
import ast
import inspect
from pathlib import Path

from checkpoint.base import (
    CheckpointStore,
    DispatchStore,
    OperationsStore,
    PartitionsView,
    PipelineStore,
    StepStore,
)
from checkpoint.sql import SqlStore

ROOT = Path(__file__).resolve().parents[2]
SCANNED = ("kec", "checkpoint", "listeners", "connector", "devkit", "examples")
ROLES: tuple[type, ...] = (
    PartitionsView,
    PipelineStore,
    DispatchStore,
    OperationsStore,
    StepStore,
    CheckpointStore,
)
BY_NAME = {role.__name__: role for role in ROLES}

# The main consumers and the role each takes as ``store`` (a class: its __init__'s).
EXPECTED = {
    "Pipeline": "PipelineStore",
    "Dispatcher": "DispatchStore",
    "Pruner": "OperationsStore",
    "collect_status": "OperationsStore",
    "list_dlq": "OperationsStore",
    "not_dead": "OperationsStore",
    "replay_actions": "OperationsStore",
    "list_partitions": "OperationsStore",
    "reset_partitions": "OperationsStore",
    "replay": "OperationsStore",
    "configure": "StepStore",
    "wait_for_event": "StepStore",
}


# -- the partition --------------------------------------------------------------------------


def _declared(cls: type) -> set[str]:
    return {n for n, v in vars(cls).items() if getattr(v, "__isabstractmethod__", False)}


def partition_problems(composition: type, roles: tuple[type, ...]) -> list[str]:
    """Abstract methods of ``composition`` declared in no role or in several."""
    problems = []
    for name in sorted(composition.__abstractmethods__):
        owners = [r.__name__ for r in roles if name in _declared(r)]
        if len(owners) != 1:
            problems.append(f"{name}: declared in {owners or 'no role'}")
    return problems


def test_each_method_of_the_store_belongs_to_exactly_one_role() -> None:
    assert partition_problems(CheckpointStore, ROLES) == []
    assert _declared(CheckpointStore) == {"open", "close"}, "the composition adds the life cycle"
    assert all(_declared(role) for role in ROLES), "no empty role"
    assert not SqlStore.__abstractmethods__, "the SQL store implements every role"


def test_the_sql_store_has_no_public_method_outside_the_contract() -> None:
    contract = {n for n in dir(CheckpointStore) if not n.startswith("_")}
    public = {
        n for n, v in vars(SqlStore).items() if not n.startswith("_") and inspect.isfunction(v)
    }
    assert public - contract == set()


def test_the_partition_check_can_fail() -> None:
    class One(abc.ABC):
        @abc.abstractmethod
        def read(self) -> None: ...

    class Two(abc.ABC):
        @abc.abstractmethod
        def read(self) -> None: ...

        @abc.abstractmethod
        def write(self) -> None: ...

    class Both(One, Two):
        @abc.abstractmethod
        def extra(self) -> None: ...

    assert partition_problems(Both, (One, Two)) == [
        "extra: declared in no role",
        "read: declared in ['One', 'Two']",
    ]


# -- the consumers --------------------------------------------------------------------------


def _role_of(annotation: ast.expr | None) -> str | None:
    """The role an annotation names (``X``, ``X | None``, ``"X"``, ``base.X``), if any."""
    if annotation is None:
        return None
    for node in ast.walk(annotation):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            try:
                found = _role_of(ast.parse(node.value, mode="eval").body)
            except SyntaxError:
                continue
            if found:
                return found
        name = node.id if isinstance(node, ast.Name) else getattr(node, "attr", None)
        if name in BY_NAME:
            return name
    return None


Function = ast.FunctionDef | ast.AsyncFunctionDef


def store_misuses(source: str, where: str = "<sample>") -> list[str]:
    """``where:line: Role has no method m`` for each use of a role-typed store outside it."""
    tree = ast.parse(source, where)
    returns = {  # functions of the module that return a role: default_store()
        f.name: role
        for f in ast.walk(tree)
        if isinstance(f, Function) and (role := _role_of(f.returns))
    }
    problems: list[str] = []

    def check(scope: ast.AST, names: dict[str, str], attrs: dict[str, str]) -> None:
        for node in ast.walk(scope):
            if not isinstance(node, ast.Attribute):
                continue
            held, role = node.value, None
            if isinstance(held, ast.Name):
                role = names.get(held.id)
            elif (
                isinstance(held, ast.Attribute)
                and isinstance(held.value, ast.Name)
                and held.value.id == "self"
            ):
                role = attrs.get(held.attr)
            if role and not hasattr(BY_NAME[role], node.attr):
                problems.append(f"{where}:{node.lineno}: {role} has no method {node.attr}")

    def alias(value: ast.expr, names: dict[str, str]) -> str | None:
        """The role of the store an expression yields: ``x``, ``f()``, ``a if c else b``,
        ``a or b``."""
        if isinstance(value, ast.Name):
            return names.get(value.id)
        if isinstance(value, ast.Call) and isinstance(value.func, ast.Name):
            return returns.get(value.func.id)
        if isinstance(value, ast.IfExp):
            return alias(value.body, names) or alias(value.orelse, names)
        if isinstance(value, ast.BoolOp):
            return next((r for v in value.values if (r := alias(v, names))), None)
        return None

    def typed_names(function: Function) -> dict[str, str]:
        args = function.args
        names = {
            a.arg: role
            for a in (*args.posonlyargs, *args.args, *args.kwonlyargs)
            if (role := _role_of(a.annotation))
        }
        for node in ast.walk(function):  # local aliases: x = store, x = a or default_store()
            if isinstance(node, ast.Assign) and len(node.targets) == 1:
                target = node.targets[0]
                if isinstance(target, ast.Name) and (role := alias(node.value, names)):
                    names[target.id] = role
            elif (
                isinstance(node, ast.AnnAssign)
                and isinstance(node.target, ast.Name)
                and (role := _role_of(node.annotation))
            ):
                names[node.target.id] = role
        return names

    def self_attrs(cls: ast.ClassDef) -> dict[str, str]:
        attrs: dict[str, str] = {}
        for method in (m for m in cls.body if isinstance(m, Function)):
            names = typed_names(method)
            for node in ast.walk(method):
                target, value = None, None
                if isinstance(node, ast.Assign) and len(node.targets) == 1:
                    target, value = node.targets[0], node.value
                elif isinstance(node, ast.AnnAssign):
                    target, value = node.target, node.value
                    if (role := _role_of(node.annotation)) and isinstance(target, ast.Attribute):
                        attrs[target.attr] = role
                        continue
                if (
                    isinstance(target, ast.Attribute)
                    and isinstance(target.value, ast.Name)
                    and target.value.id == "self"
                    and isinstance(value, ast.Name)
                    and value.id in names
                ):
                    attrs[target.attr] = names[value.id]
        for node in cls.body:  # dataclass fields and class-level annotations
            if (
                isinstance(node, ast.AnnAssign)
                and isinstance(node.target, ast.Name)
                and (role := _role_of(node.annotation))
            ):
                attrs[node.target.id] = role
        return attrs

    def visit(node: ast.AST, attrs: dict[str, str]) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.ClassDef):
                visit(child, self_attrs(child))
            elif isinstance(child, Function):
                check(child, typed_names(child), attrs)
            else:
                visit(child, attrs)

    visit(tree, {})
    return problems


def _sources() -> list[Path]:
    return sorted(p for top in SCANNED for p in (ROOT / top).rglob("*.py"))


def test_each_consumer_uses_only_the_role_it_takes() -> None:
    problems = [
        problem
        for path in _sources()
        for problem in store_misuses(path.read_text(), str(path.relative_to(ROOT)))
    ]
    assert problems == []


def _store_parameter(node: ast.ClassDef | Function) -> str | None:
    """The role of ``store`` in a function's parameters (a class: its ``__init__``'s)."""
    if isinstance(node, ast.ClassDef):
        inits = [m for m in node.body if isinstance(m, Function) and m.name == "__init__"]
        if not inits:
            return None
        node = inits[0]
    args = node.args
    store = [a for a in (*args.args, *args.kwonlyargs) if a.arg == "store"]
    return _role_of(store[0].annotation) if store else None


def test_the_main_consumers_take_the_narrowest_role() -> None:
    found: dict[str, list[str | None]] = {}
    for path in _sources():
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if (
                isinstance(node, ast.ClassDef | Function)
                and node.name in EXPECTED
                and (role := _store_parameter(node))
            ):
                found.setdefault(node.name, []).append(role)
    assert found == {name: [role] for name, role in EXPECTED.items()}


def test_the_consumer_check_can_fail() -> None:
    sample = """
from checkpoint.base import DispatchStore, PipelineStore, StepStore

class Dispatcher:
    def __init__(self, store: DispatchStore) -> None:
        self._store = store

    def run(self) -> None:
        self._store.settle({})
        self._store.claim("me", [])

def pipeline(store: "PipelineStore | None" = None) -> None:
    target = store if store is not None else default()
    target.batch()
    asyncio.to_thread(target.prune, 0.0)

def default() -> StepStore: ...

def steps() -> None:
    store = default()
    store.get_step("s")
    store.requeue()
"""
    assert store_misuses(sample) == [
        "<sample>:10: DispatchStore has no method claim",
        "<sample>:15: PipelineStore has no method prune",
        "<sample>:22: StepStore has no method requeue",
    ]
