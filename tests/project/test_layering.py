"""The package's layering rules, held by tests.

* ``fmkt_mm.flow`` is plain PyTorch: it imports torch and the standard
  library only, and works in a process where MMEngine cannot be imported;
* the library never imports the scripts under ``tools/`` (nor edits
  ``sys.path`` to reach them).
"""
import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / 'fmkt_mm'


def imported_modules(path: Path):
    """``(module, level)`` of every import statement in a file."""
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, 0
        elif isinstance(node, ast.ImportFrom):
            yield node.module or '', node.level


def test_flow_imports_only_torch_and_the_standard_library():
    stdlib = sys.stdlib_module_names
    offending = []
    for path in sorted((PACKAGE / 'flow').glob('*.py')):
        for module, level in imported_modules(path):
            top = module.split('.')[0]
            if level > 1 or (level == 0 and top not in stdlib and top != 'torch'):
                offending.append(f'{path.name}: {"." * level}{module}')
    assert not offending, f'fmkt_mm.flow must import torch only: {offending}'


def test_flow_runs_in_a_process_without_mmengine(tmp_path):
    script = '''
import sys
for name in ('mmengine', 'mmcv', 'mmdet', 'mmpretrain'):
    sys.modules[name] = None  # importing them now raises ImportError
import torch
from torch import nn
import fmkt_mm.flow as flow

class L2(nn.Module):  # any module with forward_steps is a metric loss
    def forward_steps(self, steps, target, labels=None):
        return (steps - target).pow(2).flatten(2).mean(2).mean(1)

torch.manual_seed(0)
model = flow.FlowTransfer(6, path='ve', encoder=dict(type='mlp', hidden_ratio=1.0), num_steps=3,
                          loss=L2(), condition='pooled')
out = model.run(torch.randn(4, 6, 2, 2))
model.step_losses(out, torch.randn(4, 6, 2, 2)).sum().backward()
assert out.steps.shape == (3, 4, 6, 2, 2), out.steps.shape
try:
    flow.FlowTransfer(6, loss=dict(type='KDLoss'))
except ValueError as error:  # no framework: no loss is known by name
    assert "unknown loss 'KDLoss'" in str(error), error
else:
    raise AssertionError('a loss name resolved without a framework')
loaded = sorted(m for m in sys.modules if m.split('.')[0] in ('mmengine', 'mmcv', 'mmdet', 'mmpretrain')
                and sys.modules[m] is not None)
assert not loaded, loaded
print('ok')
'''
    result = subprocess.run([sys.executable, '-c', script], cwd=str(ROOT), capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0 and result.stdout.strip().endswith('ok'), result.stderr[-3000:]


def test_the_library_never_imports_tools():
    offending = []
    for path in sorted(PACKAGE.rglob('*.py')):
        text = path.read_text()
        for module, level in imported_modules(path):
            if level == 0 and module.split('.')[0] == 'tools':
                offending.append(f'{path.relative_to(ROOT)}: import {module}')
        if 'sys.path' in text:
            offending.append(f'{path.relative_to(ROOT)}: edits sys.path')
    assert not offending, offending


def test_flow_parts_registered_once_are_found_by_the_flow_and_by_mmengine():
    import fmkt_mm  # noqa: F401  (registration)
    from fmkt_mm import flow
    from fmkt_mm.registry import META_ENCODERS, MODELS

    for name, cls in flow.META_ENCODERS.items():
        assert META_ENCODERS.get(name) is cls and MODELS.get(cls.__name__) is cls
    assert MODELS.get('FlowTransfer') is flow.FlowTransfer

    @META_ENCODERS.register_module(name='tiny_identity_for_test')
    class Zero(flow.MLPMetaEncoder):  # a user's meta-encoder, registered with MMEngine only
        pass
    try:
        built = flow.FlowTransfer(4, encoder='tiny_identity_for_test')
        assert type(built.encoder) is Zero
        assert 'tiny_identity_for_test' in flow.META_ENCODERS.names()
    finally:
        META_ENCODERS.module_dict.pop('tiny_identity_for_test')
    assert flow.LOSSES.build(dict(type='fmkt_mm.DISTLoss', beta=1.0)).beta == 1.0


def test_hooks_change_a_distiller_only_through_its_methods():
    """No hook assigns an attribute of the runner or its model (``model.x =
    ...``, ``unwrap(runner.model).x = ...``): every setting a hook drives has
    one owner, a ``set_*`` method of :class:`fmkt_mm.distill.base.BaseDistiller`."""
    def root(node):
        while isinstance(node, (ast.Attribute, ast.Subscript)):
            node = node.value
        if isinstance(node, ast.Call):  # unwrap(runner.model)
            return 'model' if ast.unparse(node.func) == 'unwrap' else None
        return node.id if isinstance(node, ast.Name) else None

    offending = []
    for path in sorted((PACKAGE / 'hooks').glob('*.py')):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            targets = node.targets if isinstance(node, ast.Assign) else \
                [node.target] if isinstance(node, (ast.AugAssign, ast.AnnAssign)) else []
            for target in targets:
                for leaf in (target.elts if isinstance(target, ast.Tuple) else [target]):
                    if isinstance(leaf, ast.Attribute) and root(leaf) in ('model', 'distiller', 'runner'):
                        offending.append(f'{path.name}:{leaf.lineno}: {ast.unparse(leaf)}')
    assert not offending, offending


def test_a_distiller_without_a_setting_says_which_distiller_has_it():
    import pytest

    from fmkt_mm.distill.base import BaseDistiller

    class Plain(BaseDistiller):  # no flows, levels or curriculum
        def __init__(self):
            super(BaseDistiller, self).__init__()

        def forward(self, *args, **kwargs):
            raise NotImplementedError

    plain = Plain()
    with pytest.raises(TypeError, match='Plain has no flows: .*FM-KT distiller'):
        plain.set_train_steps(4)
    with pytest.raises(TypeError, match='Plain has no flows to evaluate'):
        plain.set_eval_steps(4)
    with pytest.raises(TypeError, match='Plain has no distilled levels: .*DetectionDistiller'):
        plain.set_level_scales([1.0])
    with pytest.raises(TypeError, match='Plain has no per-sample targets to rank: .*ClassificationDistiller'):
        plain.set_curriculum(0.5)
    plain.set_distillation(False)
    assert plain.distillation_enabled is False


def test_tools_share_the_library_harness_not_each_other():
    """Each script under tools/ imports the library (fmkt_mm.experiment is
    the one harness), never another script, and never edits sys.path. A
    script is a file that runs as ``__main__``; the benchmark scripts also
    share the modules of their folder (``common.py`` and the modules beside
    it without a ``__main__`` block), which import no script."""
    tools = ROOT / 'tools'
    benchmarks = tools / 'benchmarks'
    paths = sorted(tools.rglob('*.py'))
    scripts = {path.stem for path in paths if "__name__ == '__main__'" in path.read_text()}
    shared = {path.stem for path in benchmarks.glob('*.py')} - scripts
    assert {'common', 'pool', 'task_runs', 'study_tables', 'options', 'reporting', 'cost_rows'} <= shared, shared
    offending = []
    for path in paths:
        for module, level in imported_modules(path):
            top = module.split('.')[0]
            if top in scripts or (top in shared and path.parent != benchmarks):
                offending.append(f'{path.name}: import {module}')
        if 'sys.path' in path.read_text():
            offending.append(f'{path.name}: edits sys.path')
    assert not offending, offending


def _runtime_imports(path: Path):
    """``(module, level)`` of the imports that run (not those under
    ``if TYPE_CHECKING:``), at any depth (function-level imports included)."""
    tree = ast.parse(path.read_text(), str(path))
    skipped = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and getattr(node.test, 'id', None) == 'TYPE_CHECKING':
            skipped.update(id(n) for child in node.body for n in ast.walk(child))
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.ImportFrom):
            yield node.module or '', node.level, [a.name for a in node.names]
        elif isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, 0, []


def test_no_module_of_the_package_imports_itself_in_a_circle():
    """The package's runtime import graph (function-level imports included)
    has no circle: the front door (apis) sits above the runner, config
    preparation (config_prep) below it."""
    modules = {}
    for path in PACKAGE.rglob('*.py'):
        parts = list(path.relative_to(ROOT).with_suffix('').parts)
        modules['.'.join(parts[:-1] if parts[-1] == '__init__' else parts)] = path
    graph = {}
    for name, path in modules.items():
        package = name if path.name == '__init__.py' else name.rsplit('.', 1)[0]
        deps = set()
        for module, level, names in _runtime_imports(path):
            if level:
                base = package.split('.')[:len(package.split('.')) - (level - 1)]
                target = '.'.join(base + ([module] if module else []))
            elif module.startswith('fmkt_mm'):
                target = module
            else:
                continue
            deps.update(m for m in [target] + [f'{target}.{n}' for n in names]
                        if m in modules and m != name and modules[m].name != '__init__.py')
        graph[name] = deps
    circles = []

    def visit(node, trail):
        for dep in graph.get(node, ()):
            if dep in trail:
                circles.append(trail[trail.index(dep):] + [dep])
            elif dep not in done:
                visit(dep, trail + [dep])
        done.add(node)

    done = set()
    for name in sorted(graph):
        if name not in done and modules[name].name != '__init__.py':
            visit(name, [name])
    assert not circles, circles[:3]
