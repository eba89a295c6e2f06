"""Every public function and method of fmkt_mm annotates its parameters and
its return.

Public: a module-level function or a method whose name does not start with
``_`` (``__init__`` included), in a class whose name does not start with
``_``. Nested functions are not checked; ``self`` / ``cls`` need no
annotation.
"""
import ast
from pathlib import Path
from typing import List

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / 'fmkt_mm'

#: files not checked yet: they are being annotated as they are rewritten
PENDING = set()


def _is_static(node: ast.AST) -> bool:
    return any(isinstance(d, ast.Name) and d.id == 'staticmethod' for d in node.decorator_list)


def unannotated(path: Path, root: Path = ROOT) -> List[str]:
    """``path:line name`` (``path`` relative to ``root``) of every public
    function or method of the file that leaves a parameter or its return
    unannotated."""
    relative = path.relative_to(root).as_posix()
    found = []

    def visit(body: list, in_class: bool) -> None:
        for node in body:
            if isinstance(node, ast.ClassDef):
                if not node.name.startswith('_'):
                    visit(node.body, True)
            elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                if node.name.startswith('_') and node.name != '__init__':
                    continue
                args = node.args
                params = args.posonlyargs + args.args
                if in_class and params and not _is_static(node):
                    params = params[1:]  # self / cls
                params = params + args.kwonlyargs + [a for a in (args.vararg, args.kwarg) if a]
                missing = [p.arg for p in params if p.annotation is None]
                if node.returns is None:
                    missing.append('return')
                if missing:
                    found.append(f'{relative}:{node.lineno} {node.name} (no annotation: {", ".join(missing)})')

    visit(ast.parse(path.read_text(), relative).body, False)
    return found


def test_public_functions_are_annotated():
    offenders = []
    for path in sorted(PACKAGE.rglob('*.py')):
        if path.relative_to(ROOT).as_posix() not in PENDING:
            offenders.extend(unannotated(path))
    assert not offenders, 'public functions without full type hints:\n' + '\n'.join(offenders)


def test_pending_files_exist():
    """A pending file that was moved or removed is dropped from the list."""
    missing = sorted(name for name in PENDING if not (ROOT / name).is_file())
    assert not missing, f'PENDING names files that do not exist: {missing}'


def test_the_checker_finds_what_is_missing(tmp_path):
    source = tmp_path / 'fmkt_mm' / 'sample.py'
    source.parent.mkdir()
    source.write_text(
        'def good(x: int) -> int:\n    return x\n\n'
        'def bad(x, *args: int, **kwargs):\n    pass\n\n'
        'def _private(x):\n    pass\n\n'
        'class Public:\n'
        '    def __init__(self, a: int):\n        pass\n\n'
        '    @staticmethod\n'
        '    def static(a: int) -> None:\n        pass\n\n'
        '    def _helper(self, a):\n        pass\n\n'
        'class _Private:\n'
        '    def method(self, a):\n        pass\n')
    assert unannotated(source, root=tmp_path) == ['fmkt_mm/sample.py:4 bad (no annotation: x, kwargs, return)',
                     'fmkt_mm/sample.py:11 __init__ (no annotation: return)']
