"""How many of edgeseg's uses of TensorRT's Python API the tensorrt-stubs type check really checks.

    python scripts/trt_stubs.py && python scripts/trt_coverage.py edgeseg/deploy/build.py edgeseg/runtime/trt ...

A use is an attribute of the ``tensorrt`` module (``trt.Builder``), of one of its classes or enums
(``trt.BuilderFlag.FP16``), or of a value mypy types as a TensorRT class (``builder.create_network``). It is
checked when mypy, with the stubs, knows the type it is read from. It is not when a TensorRT value reaches it as
``Any`` on the way (a helper returning ``Any``, an ``Any`` parameter, a dict value): such a use is counted when
its attribute name is one the stubs define and its ``Any`` does not come from another untyped library (pycuda,
cv2, onnx, openvino), so the count errs towards too many unchecked uses, never too few.

Prints one line per unchecked use and a last line ``checked N of M``; tests/test_typecheck_trt.py reads it.
Exit status 1 when mypy reports an error in the modules.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
STUB = ROOT / ".typecheck" / "stubs" / "tensorrt_bindings" / "tensorrt.pyi"
TENSORRT = ("tensorrt", "tensorrt_bindings")


def stub_names(stub: Path = STUB) -> set[str]:
    """Every class, function, attribute and enum member name the stubs define."""
    names = set()
    for node in ast.walk(ast.parse(stub.read_text())):
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
        elif isinstance(node, ast.Assign):
            names.update(target.id for target in node.targets if isinstance(target, ast.Name))
    return names


def main(paths: list[str]) -> int:
    from mypy import build
    from mypy.main import process_options

    sources, options = process_options(["--config-file", str(ROOT / "pyproject.toml"), "--no-incremental", *paths])
    options.export_types = True
    options.preserve_asts = True
    options.mypy_path = [str(STUB.parent.parent), *options.mypy_path]
    result = build.build(sources, options)
    if result.errors:
        print("\n".join(result.errors))
        return 1
    names = stub_names()
    checked, unchecked = 0, []
    for source in sources:
        for expression in _member_expressions(result.graph[source.module].tree):
            kind = _kind(expression, result.types, names)
            if kind == "checked":
                checked += 1
            elif kind == "unchecked":
                unchecked.append(f"{source.path}:{expression.line}: .{expression.name} (read from Any)")
    print("\n".join(unchecked))
    print(f"checked {checked} of {checked + len(unchecked)}")
    return 0


def _kind(expression, types, names: set[str]) -> str | None:
    """checked, unchecked, or None for an attribute that is not TensorRT's."""
    from mypy.nodes import MypyFile, RefExpr, TypeInfo
    from mypy.types import AnyType, TypeOfAny, get_proper_type

    receiver = expression.expr
    if isinstance(receiver, RefExpr) and isinstance(receiver.node, (MypyFile, TypeInfo)):
        return "checked" if receiver.node.fullname.startswith(TENSORRT) else None
    found = types.get(receiver)
    if found is None:
        return None
    if _is_tensorrt(found):
        return "checked"
    any_type = get_proper_type(found)
    if not isinstance(any_type, AnyType) or expression.name not in names:
        return None
    while any_type.source_any is not None and any_type.source_any is not any_type:
        any_type = any_type.source_any
    other = any_type.type_of_any == TypeOfAny.from_unimported_type and not str(any_type.missing_import_name).startswith(TENSORRT)
    return None if other else "unchecked"


def _is_tensorrt(found) -> bool:
    from mypy.types import CallableType, Instance, Overloaded, TypeType, UnionType, get_proper_type

    found = get_proper_type(found)
    if isinstance(found, UnionType):  # Optional[trt.X]
        return any(_is_tensorrt(item) for item in found.items)
    if isinstance(found, TypeType):
        return _is_tensorrt(found.item)
    if isinstance(found, Instance):
        return found.type.fullname.startswith(TENSORRT)
    if isinstance(found, (CallableType, Overloaded)) and found.is_type_obj():
        return found.type_object().fullname.startswith(TENSORRT)
    return False


def _member_expressions(tree):
    """Every ``x.name`` expression in a module (mypy's compiled visitors cannot be subclassed here: a plain walk)."""
    from mypy.nodes import MemberExpr, MypyFile, Node, TypeInfo, Var

    seen, stack = set(), [tree]
    while stack:
        node = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        if isinstance(node, MemberExpr):
            yield node
        for value in _children(node):
            if isinstance(value, Node) and not isinstance(value, (MypyFile, TypeInfo, Var)):
                stack.append(value)
        if isinstance(node, MypyFile):
            stack.extend(node.defs)


def _children(node):
    fields = set()
    for cls in type(node).__mro__:  # mypy's nodes list their fields in __slots__, or __mypyc_attrs__ when compiled
        fields.update(getattr(cls, "__slots__", ()) or ())
        fields.update(getattr(cls, "__mypyc_attrs__", ()) or ())
    for field in fields - {"node", "info", "type", "definition", "unanalyzed_type"}:
        value = getattr(node, field, None)
        for item in value if isinstance(value, (list, tuple)) else [value]:
            if isinstance(item, (list, tuple)):
                yield from item
            else:
                yield item


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
