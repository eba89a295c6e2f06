"""Every module of fmkt_mm and every script and module of tools/ stays short
enough to read whole, and every function short enough to read at once.

* a file has at most :data:`MAX_FILE_LINES` lines;
* a function or method (nested ones included) spans at most
  :data:`MAX_FUNCTION_LINES` lines, from its ``def`` line to its last line,
  unless its docstring has a line starting with ``Long:`` that says why it
  cannot be split.
"""
import ast
from pathlib import Path
from typing import Iterator, List, Optional, Set, Union

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / 'fmkt_mm'
#: the folders whose Python files are held to the limits
CHECKED = (PACKAGE, ROOT / 'tools')

MAX_FILE_LINES = 420
MAX_FUNCTION_LINES = 60

#: files exempt while they are split into smaller parts (paths as
#: ``'fmkt_mm/distill/detector.py'``); a file leaves the list as soon as it
#: is within the limits (the tests below insist)
PENDING: Set[str] = set()

Function = Union[ast.FunctionDef, ast.AsyncFunctionDef]


def _functions(body: list, prefix: str = '') -> Iterator[tuple]:
    """``(qualified name, node)`` of every function in ``body``, nested
    ones and methods included."""
    for node in body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            name = prefix + node.name
            yield name, node
            yield from _functions(node.body, name + '.')
        elif isinstance(node, ast.ClassDef):
            yield from _functions(node.body, prefix + node.name + '.')
        else:  # functions defined under if / try / with blocks
            for field in ('body', 'orelse', 'finalbody', 'handlers'):
                yield from _functions(getattr(node, field, []), prefix)


def long_reason(node: Function) -> Optional[str]:
    """The text after ``Long:`` on a line of the function's docstring, if
    there is one that gives a reason."""
    for line in (ast.get_docstring(node) or '').splitlines():
        line = line.strip()
        if line.startswith('Long:') and line[len('Long:'):].strip():
            return line[len('Long:'):].strip()
    return None


def oversized(path: Path, root: Path = ROOT) -> List[str]:
    """``path:line name (N lines)`` (``path`` relative to ``root``) of the
    file itself, if too long, and of every function of it that is too long
    and gives no ``Long:`` reason."""
    relative = path.relative_to(root).as_posix()
    text = path.read_text()
    found = []
    file_lines = len(text.splitlines())
    if file_lines > MAX_FILE_LINES:
        found.append(f'{relative}:1 <module> ({file_lines} lines)')
    for name, node in _functions(ast.parse(text, relative).body):
        lines = node.end_lineno - node.lineno + 1
        if lines > MAX_FUNCTION_LINES and long_reason(node) is None:
            found.append(f'{relative}:{node.lineno} {name} ({lines} lines)')
    return found


def test_files_and_functions_are_short():
    offenders = []
    for path in sorted(p for folder in CHECKED for p in folder.rglob('*.py')):
        if path.relative_to(ROOT).as_posix() not in PENDING:
            offenders.extend(oversized(path))
    assert not offenders, (
        f'files over {MAX_FILE_LINES} lines or functions over {MAX_FUNCTION_LINES} lines (split them, '
        f"or give a function's reason on a docstring line starting with 'Long:'):\n" + '\n'.join(offenders))


def test_pending_files_still_need_the_exemption():
    """A pending file that was moved, removed or brought within the limits
    is dropped from the list."""
    missing = sorted(name for name in PENDING if not (ROOT / name).is_file())
    assert not missing, f'PENDING names files that do not exist: {missing}'
    within = sorted(name for name in PENDING if not oversized(ROOT / name))
    assert not within, f'these files are within the limits now, remove them from PENDING: {within}'


def _sample_function(name: str, lines: int, doc: str = '', indent: str = '') -> List[str]:
    """The source lines of a function ``lines`` long."""
    head = [f'{indent}def {name}():'] + (f'{indent}    """{doc}"""'.splitlines() if doc else [])
    return head + [f'{indent}    x = 0'] * (lines - len(head) - 1) + [f'{indent}    return x']


def test_the_checker_finds_what_is_too_long(tmp_path):
    n = MAX_FUNCTION_LINES
    source_lines = (_sample_function('short', n) + _sample_function('long', n + 1)
                    + _sample_function('excused', n + 5, doc='One loop.\n\n    Long: one table, read in order.')
                    + _sample_function('no_reason', n + 1, doc='Long:')
                    + ['class Holder:'] + _sample_function('method', n + 2, indent='    '))
    source = tmp_path / 'fmkt_mm' / 'sample.py'
    source.parent.mkdir()
    source.write_text('\n'.join(source_lines) + '\n')

    def line_of(name: str) -> int:
        return next(i for i, line in enumerate(source_lines, 1) if line.strip().startswith(f'def {name}('))

    assert oversized(source, root=tmp_path) == [
        f'fmkt_mm/sample.py:{line_of("long")} long ({n + 1} lines)',
        f'fmkt_mm/sample.py:{line_of("no_reason")} no_reason ({n + 1} lines)',
        f'fmkt_mm/sample.py:{line_of("method")} Holder.method ({n + 2} lines)',
    ]
    source.write_text('x = 0\n' * (MAX_FILE_LINES + 1))
    assert oversized(source, root=tmp_path) == [f'fmkt_mm/sample.py:1 <module> ({MAX_FILE_LINES + 1} lines)']
