"""Trust and durability of a run's files under fmkt_mm's runner: no file is
trusted for where it lies, a checkpoint that does not fit is never scored or
trained from, a crash or a full disk during a save never costs the last good
checkpoint, one training per work dir, and a run that fails at start leaves
the work dir as it was."""
import errno
import os
import os.path as osp
import pickle
import signal
import socket
import subprocess
import sys

import pytest
import torch

import fmkt_mm  # noqa: F401
from fmkt_mm import storage
from fmkt_mm.apis import build_runner
from fmkt_mm.checkpoint import (
    CheckpointMismatchError,
    NotACheckpointError,
    UnsafeCheckpointError,
    safe_torch_load,
)
from fmkt_mm.storage import CorruptCheckpointError
from fmkt_mm.work_dir import LOCK_NAME, WorkDirLockedError
from tiny_runs import ROOT, Payload, plain_model, tiny_cfg

PYTHON = sys.executable
TESTS = osp.dirname(osp.dirname(osp.abspath(__file__)))
ENV = dict(os.environ, OMP_NUM_THREADS='1',
           PYTHONPATH=os.pathsep.join([TESTS, ROOT, os.environ.get('PYTHONPATH', '')]))


@pytest.fixture
def marker(tmp_path):
    Payload.marker = str(tmp_path / 'payload-ran')
    yield Payload.marker
    assert not osp.exists(Payload.marker), 'the payload ran'


def plant(path, state=None):
    """A checkpoint at ``path`` whose unpickling would run the payload."""
    os.makedirs(osp.dirname(path), exist_ok=True)
    torch.save({'state_dict': state or {}, 'meta': {'x': Payload()}}, path)
    return str(path)


def trained(tmp_path, teacher_checkpoint, name='run', iters=2, variant='fmkt', **keep):
    cfg = tiny_cfg(variant, tmp_path / name, teacher_checkpoint, max_iters=iters)
    cfg.default_hooks.checkpoint.update(keep)
    runner = build_runner(cfg)
    runner.train()
    return runner, cfg


def entries(path):
    return sorted(os.listdir(path))


# -- no trust by location ----------------------------------------------------------------------


@pytest.mark.parametrize('route', ['test', 'resume', 'auto-resume', 'load_from'])
def test_a_payload_in_the_work_dir_never_runs(route, marker, teacher_checkpoint, tmp_path):
    work_dir = tmp_path / 'run'
    cfg = tiny_cfg('fmkt', work_dir, teacher_checkpoint, max_iters=2)
    planted = plant(work_dir / ('downloads/model.pth' if route == 'load_from' else 'iter_1.pth'))
    if route == 'auto-resume':
        (work_dir / 'last_checkpoint').write_text(planted)
        cfg.resume = True
    else:
        cfg.load_from, cfg.resume = planted, route == 'resume'
    with pytest.raises(UnsafeCheckpointError, match='posix.system|os.system') as info:
        runner = build_runner(cfg)
        runner.test() if route == 'test' else runner.train()
    assert '--allow-unsafe-pickle' in str(info.value)


def test_a_payload_teacher_in_the_work_dir_never_runs_and_the_refusal_names_the_teachers_opt_in(
        marker, teacher_checkpoint, tmp_path):
    work_dir = tmp_path / 'run'
    cfg = tiny_cfg('fmkt', work_dir, plant(work_dir / 'teacher.pth'))
    with pytest.raises(UnsafeCheckpointError) as info:
        build_runner(cfg)
    message = str(info.value)
    assert 'system' in message and "allow_unsafe_pickle=True in the teacher's dict" in message
    assert '--allow-unsafe-pickle' not in message  # that flag does not cover a teacher


def test_a_raw_pickle_refusal_names_the_global_it_would_call(marker, tmp_path):
    path = tmp_path / 'raw.pkl'
    with open(path, 'wb') as f:
        pickle.dump({'state_dict': {}, 'x': Payload()}, f, protocol=4)
    with pytest.raises(UnsafeCheckpointError, match=r'(posix|os)\.system'):
        safe_torch_load(str(path))
    legacy = tmp_path / 'legacy.pth'
    torch.save({'x': Payload()}, legacy, _use_new_zipfile_serialization=False)
    with pytest.raises(UnsafeCheckpointError, match=r'(posix|os)\.system'):
        safe_torch_load(str(legacy))


@pytest.mark.slow
def test_the_runs_own_checkpoints_resume_with_weights_only(teacher_checkpoint, tmp_path):
    runner, cfg = trained(tmp_path, teacher_checkpoint, iters=2)
    cfg.train_cfg.max_iters, cfg.resume = 3, True
    resumed = build_runner(cfg)
    resumed.train()
    assert resumed.iter == 3


# -- fit or fail -----------------------------------------------------------------------------


def test_a_plain_student_checkpoint_is_not_scored_by_a_distillation_config(teacher_checkpoint, tmp_path):
    runner, cfg = trained(tmp_path, teacher_checkpoint, iters=1)
    student = runner.model.student_state_dict()
    torch.save({'state_dict': student}, tmp_path / 'student.pth')
    torch.save({'state_dict': {'stray': torch.zeros(1)}}, tmp_path / 'stray.pth')
    for name, cause in (('student.pth', 'plain model checkpoint'), ('stray.pth', 'another config')):
        cfg = tiny_cfg('fmkt', tmp_path / f'test-{name}', teacher_checkpoint)
        cfg.load_from = str(tmp_path / name)
        runner = build_runner(cfg)
        with pytest.raises(CheckpointMismatchError, match=cause) as info:
            runner.test()
        assert 'missing keys' in str(info.value) and '--allow-partial-load' in str(info.value)
        assert not osp.exists(tmp_path / f'test-{name}')  # nothing left behind
    cfg = tiny_cfg('fmkt', tmp_path / 'lenient', teacher_checkpoint)
    cfg.load_from, cfg.allow_partial_load = str(tmp_path / 'student.pth'), True
    build_runner(cfg).test()  # MMEngine's lenient loading, when asked for


def test_load_from_that_maps_nothing_is_refused(teacher_checkpoint, tmp_path):
    other = plain_model('teacher_resnet18_w8.py')  # another model: no key fits the student
    torch.save({'state_dict': other.state_dict()}, tmp_path / 'other.pth')
    cfg = tiny_cfg('fmkt', tmp_path / 'run', teacher_checkpoint, max_iters=1)
    cfg.load_from = str(tmp_path / 'other.pth')
    with pytest.raises(CheckpointMismatchError, match='another student'):
        build_runner(cfg).train()
    assert not osp.exists(tmp_path / 'run')


def test_a_distillation_checkpoint_names_the_export_for_a_plain_config(teacher_checkpoint, tmp_path):
    from fmkt_mm import experiment
    trained(tmp_path, teacher_checkpoint, iters=1)
    cfg = experiment.load('fashion_mnist/student_resnet18_w4.py')
    cfg.test_dataloader.dataset.num_samples = 8
    experiment.finalize(cfg, 'student', str(tmp_path / 'plain'))
    cfg.load_from = str(tmp_path / 'run' / 'iter_1.pth')
    with pytest.raises(CheckpointMismatchError, match='export_student.py') as raised:
        build_runner(cfg).test()
    # the hint's command runs as written
    hint = str(raised.value).split('export the student first: ')[1].split(')')[0].split('.\n')[0]
    assert hint == 'python tools/export_student.py DISTILLATION_CONFIG CHECKPOINT student.pth', hint
    config = str(tmp_path / 'distillation_config.py')
    trained_cfg = tiny_cfg('fmkt', tmp_path / 'unused', teacher_checkpoint, max_iters=1)
    trained_cfg.dump(config)
    import runpy
    argv = hint.replace('DISTILLATION_CONFIG', config).replace('CHECKPOINT', cfg.load_from).split()[1:]
    argv[0], argv[-1] = osp.join(ROOT, argv[0]), str(tmp_path / argv[-1])
    saved = sys.argv
    sys.argv = argv
    try:
        runpy.run_path(argv[0], run_name='__main__')  # as `python tools/export_student.py ...` runs it
    finally:
        sys.argv = saved
    assert (tmp_path / 'student.pth').is_file()


def test_a_tested_checkpoint_is_read_once(teacher_checkpoint, tmp_path, monkeypatch):
    """The teacher comes from the tested checkpoint, which is read (and,
    with the opt-in, unpickled) once, not once for the teacher and once for
    the weights."""
    trained(tmp_path, teacher_checkpoint, iters=1)
    path = str(tmp_path / 'run' / 'iter_1.pth')
    cfg = tiny_cfg('fmkt', tmp_path / 'test', teacher_checkpoint, max_iters=1)
    cfg.load_from, cfg.allow_unsafe_pickle = path, True
    reads = []
    real = torch.load
    monkeypatch.setattr(torch, 'load', lambda f, *a, **k: reads.append(str(f)) or real(f, *a, **k))
    build_runner(cfg).test()
    assert reads.count(path) == 1, reads


@pytest.mark.parametrize('tool, role', [('train.py', 'train'), ('test.py', 'test'),
                                        ('export_student.py', 'export')])
def test_every_opt_in_a_refusal_names_exists_in_that_tool(tool, role, capsys):
    import runpy

    from fmkt_mm.checkpoint import OPT_INS
    flag = OPT_INS[role].split(f'tools/{tool} ')[1].split()[0]
    argv = sys.argv
    sys.argv = [tool, '--help']
    try:
        with pytest.raises(SystemExit):
            runpy.run_path(osp.join(ROOT, 'tools', tool), run_name='__main__')
    finally:
        sys.argv = argv
    assert flag in capsys.readouterr().out, flag


def test_the_export_tool_refuses_a_payload_naming_its_own_opt_in(marker, teacher_checkpoint, tmp_path):
    from fmkt_mm.export import export_student
    config = str(tmp_path / 'distillation_config.py')
    tiny_cfg('fmkt', tmp_path / 'unused', teacher_checkpoint, max_iters=1).dump(config)
    with pytest.raises(UnsafeCheckpointError, match=r'tools/export_student\.py --allow-unsafe-pickle'):
        export_student(config, plant(tmp_path / 'payload.pth'), str(tmp_path / 'student.pth'))


NOT_CHECKPOINTS = {
    'text': (b'these are my notes\n', 'a text file'),
    'json': (b'{"state_dict": {}}', 'JSON text'),
    'html': (b'<!DOCTYPE html><html><body>404 Not Found</body></html>', 'HTML or XML page'),
    'yaml': (b'model:\n  type: RetinaNet\n', 'a text file'),
    'random': (bytes(range(7, 200)), 'binary data that is neither a zip archive nor a pickle'),
    'empty': (b'', 'an empty file'),
}


@pytest.mark.parametrize('kind', sorted(NOT_CHECKPOINTS))
def test_a_file_that_is_no_checkpoint_is_told_apart_from_an_unsafe_pickle(kind, tmp_path):
    data, said = NOT_CHECKPOINTS[kind]
    path = tmp_path / 'teacher.pth'
    path.write_bytes(data)
    with pytest.raises(NotACheckpointError) as raised:
        safe_torch_load(str(path), what='teacher checkpoint', role='teacher')
    message = str(raised.value)
    assert f"teacher checkpoint '{path}' is not a checkpoint: it is" in message and said in message
    assert 'allow_unsafe_pickle' not in message and 'unsafe' not in message


def test_a_copied_work_dir_resumes_from_its_own_files(tmp_path):
    """``last_checkpoint`` holds the original's absolute path: the copy's
    candidates are its own files, never the original folder's."""
    import shutil

    from fmkt_mm.runner import checkpoint_candidates
    original = tmp_path / 'original'
    original.mkdir()
    for step in (1, 2):
        (original / f'iter_{step}.pth').write_bytes(b'x')
    (original / 'last_checkpoint').write_text(str(original / 'iter_2.pth'))
    copy = tmp_path / 'copy'
    shutil.copytree(original, copy)
    assert checkpoint_candidates(str(copy)) == [str(copy / 'iter_2.pth'), str(copy / 'iter_1.pth')]
    elsewhere = tmp_path / 'out' / 'iter_3.pth'  # a checkpoint hook's out_dir is still followed
    elsewhere.parent.mkdir()
    elsewhere.write_bytes(b'x')
    (copy / 'last_checkpoint').write_text(str(elsewhere))
    assert checkpoint_candidates(str(copy))[0] == str(elsewhere)


def test_leftovers_of_interrupted_saves_are_removed(tmp_path):
    storage.atomic_write(str(tmp_path / 'iter_1.pth'), b'complete')
    storage.write_checksum(str(tmp_path / 'iter_1.pth'))
    (tmp_path / '.iter_2.pth.k3j_x9q2.tmp').write_bytes(b'half')  # a killed save
    (tmp_path / 'iter_0.pth.sha256').write_text('abc  iter_0.pth\n')  # its checkpoint deleted
    (tmp_path / 'notes.tmp').write_text('not ours')
    assert storage.remove_leftovers(str(tmp_path)) == ['.iter_2.pth.k3j_x9q2.tmp', 'iter_0.pth.sha256']
    assert entries(tmp_path) == ['iter_1.pth', 'iter_1.pth.sha256', 'notes.tmp']
    storage.AtomicLocalBackend().remove(tmp_path / 'iter_1.pth')  # how MMEngine's hook deletes
    assert entries(tmp_path) == ['notes.tmp']


def test_a_resume_keeps_max_keep_ckpts_and_seals_a_checkpoint_without_a_sidecar(teacher_checkpoint, tmp_path):
    """A resumed run that lowers max_keep_ckpts keeps that many (sidecars
    deleted with their checkpoints); a checkpoint resumed from without a
    sidecar gets one once it has loaded and fitted, so flipped bytes in it
    are caught from then on."""
    trained(tmp_path, teacher_checkpoint, iters=3)
    work_dir = tmp_path / 'run'
    os.remove(work_dir / 'iter_3.pth.sha256')
    cfg = tiny_cfg('fmkt', work_dir, teacher_checkpoint, max_iters=4)
    cfg.default_hooks.checkpoint.max_keep_ckpts = 2
    cfg.resume = True
    build_runner(cfg).train()
    assert [f for f in entries(work_dir) if '.pth' in f] == \
        ['iter_3.pth', 'iter_3.pth.sha256', 'iter_4.pth', 'iter_4.pth.sha256']
    path = work_dir / 'iter_3.pth'
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(CorruptCheckpointError, match='does not match its checksum'):
        safe_torch_load(str(path))


# -- the last good checkpoint ----------------------------------------------------------------


def _fault_script(tmp_path, fault):
    """A script that trains CONFIG with tools/train.py, dying (SIGKILL) or
    failing (ENOSPC) half way through writing iter_2.pth."""
    script = tmp_path / 'fault.py'
    script.write_text(f'''
import errno, os, runpy, signal, sys
from fmkt_mm import storage
real = storage.atomic_write
def faulty(path, data):
    if not str(path).endswith('iter_2.pth'):
        return real(path, data)
    def half(f):
        f.write(data[:len(data) // 2]); f.flush()
        if {fault!r} == 'kill':
            os.kill(os.getpid(), signal.SIGKILL)
        raise OSError(errno.ENOSPC, 'No space left on device')
    return real(path, half)
storage.atomic_write = faulty
sys.argv = ['train.py'] + sys.argv[1:]
runpy.run_path({osp.join(ROOT, 'tools', 'train.py')!r}, run_name='__main__')
''')
    return str(script)


@pytest.mark.slow
@pytest.mark.parametrize('fault', ['kill', 'disk-full'])
def test_a_crash_during_save_keeps_the_last_good_checkpoint(fault, teacher_checkpoint, tmp_path):
    cfg = tiny_cfg('fmkt', tmp_path / 'run', teacher_checkpoint, max_iters=3)
    cfg.default_hooks.checkpoint.max_keep_ckpts = 1
    config = str(tmp_path / 'config.py')
    cfg.dump(config)
    work_dir = str(tmp_path / 'run')
    result = subprocess.run([PYTHON, _fault_script(tmp_path, fault), config, '--work-dir', work_dir],
                            capture_output=True, text=True, env=ENV, timeout=300)
    if fault == 'kill':
        assert result.returncode == -signal.SIGKILL, result.stderr[-2000:]
        assert [f for f in os.listdir(work_dir) if f.endswith('.tmp')]  # what the killed save left
    else:
        assert result.returncode != 0 and 'No space left' in result.stderr, result.stderr[-2000:]
        assert "writing '" in result.stderr and "iter_2.pth' failed" in result.stderr
        assert 'was not created' in result.stderr
    assert osp.isfile(osp.join(work_dir, 'iter_1.pth'))  # not deleted before iter_2 was complete
    assert not osp.exists(osp.join(work_dir, 'iter_2.pth'))
    assert open(osp.join(work_dir, 'last_checkpoint')).read().endswith('iter_1.pth')
    resumed = subprocess.run([PYTHON, osp.join(ROOT, 'tools', 'train.py'), config, '--work-dir', work_dir,
                              '--resume'], capture_output=True, text=True, env=ENV, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    log = resumed.stdout + resumed.stderr
    assert 'resumed' in log and 'iter_1.pth' in log
    if fault == 'kill':
        assert 'taking over the lock' in log  # the killed run's lock
        assert 'removed what interrupted saves left' in log
    assert sorted(f for f in os.listdir(work_dir) if '.pth' in f) == ['iter_3.pth', 'iter_3.pth.sha256']


def test_rotation_writes_and_verifies_before_it_deletes(teacher_checkpoint, tmp_path):
    runner, cfg = trained(tmp_path, teacher_checkpoint, iters=3, max_keep_ckpts=1)
    work_dir = tmp_path / 'run'
    assert [f for f in entries(work_dir) if '.pth' in f] == ['iter_3.pth', 'iter_3.pth.sha256']
    assert (work_dir / 'last_checkpoint').read_text() == str(work_dir / 'iter_3.pth')
    assert not [f for f in entries(work_dir) if f.endswith('.tmp')]


@pytest.mark.slow
def test_resume_falls_back_from_a_truncated_or_missing_latest_checkpoint(teacher_checkpoint, tmp_path):
    runner, cfg = trained(tmp_path, teacher_checkpoint, iters=3)
    work_dir = tmp_path / 'run'
    latest = work_dir / 'iter_3.pth'
    latest.write_bytes(latest.read_bytes()[:1000])
    (work_dir / 'iter_3.pth.sha256').unlink()  # as a copy without its sidecar
    with pytest.raises(CorruptCheckpointError, match='truncated'):
        safe_torch_load(str(latest))
    cfg.train_cfg.max_iters, cfg.resume = 4, True
    resumed = build_runner(cfg)
    resumed.train()
    assert resumed.iter == 4
    log = open(resumed.log_file).read() if hasattr(resumed, 'log_file') else ''
    log += open(osp.join(resumed.log_dir, f'{resumed.timestamp}.log')).read()
    assert 'newest complete checkpoint' in log and 'iter_2.pth' in log

    (work_dir / 'iter_4.pth').unlink()  # last_checkpoint names a file that is gone
    (work_dir / 'iter_4.pth.sha256').unlink()
    cfg.train_cfg.max_iters = 5
    again = build_runner(cfg)
    again.train()
    assert again.iter == 5


def test_flipped_bytes_are_detected_by_the_checksum(teacher_checkpoint, tmp_path):
    trained(tmp_path, teacher_checkpoint, iters=1)
    path = tmp_path / 'run' / 'iter_1.pth'
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle:middle + 64] = bytes(b ^ 0xFF for b in data[middle:middle + 64])
    path.write_bytes(bytes(data))
    with pytest.raises(CorruptCheckpointError, match='does not match its checksum'):
        safe_torch_load(str(path))


# -- one run per work dir, clean failures -----------------------------------------------------


def test_a_second_training_in_a_held_work_dir_is_refused_and_leaves_nothing(teacher_checkpoint, tmp_path):
    trained(tmp_path, teacher_checkpoint, iters=1)
    work_dir = tmp_path / 'run'
    holder = subprocess.Popen(['sleep', '60'])
    try:
        (work_dir / LOCK_NAME).write_text(
            f'{{"pid": {holder.pid}, "host": "{socket.gethostname()}", "started": "now", '
            f'"command": "tools/train.py other"}}')
        before = {name: (work_dir / name).read_bytes() if (work_dir / name).is_file() else None
                  for name in entries(work_dir)}
        cfg = tiny_cfg('fmkt', work_dir, teacher_checkpoint, max_iters=2)
        cfg.randomness.seed = 1  # another run, another config copy
        second = build_runner(cfg)
        (work_dir / 'iter_9.pth').write_bytes(b'written by the holder meanwhile')
        before['iter_9.pth'] = b'written by the holder meanwhile'
        with pytest.raises(WorkDirLockedError, match=f'pid {holder.pid}'):
            second.train()
        after = {name: (work_dir / name).read_bytes() if (work_dir / name).is_file() else None
                 for name in entries(work_dir)}
        assert after == before  # its own log folder gone, the holder's files kept
    finally:
        holder.kill()
        holder.wait()
    cfg = tiny_cfg('fmkt', work_dir, teacher_checkpoint, max_iters=2)
    with pytest.warns(UserWarning, match='taking over the lock'):
        build_runner(cfg).train()  # the holder is gone: its lock is stale
    assert not (work_dir / LOCK_NAME).exists()


def test_a_failure_at_resume_leaves_the_work_dir_as_it_was(marker, teacher_checkpoint, tmp_path):
    trained(tmp_path, teacher_checkpoint, iters=1)
    work_dir = tmp_path / 'run'
    before = {name: (work_dir / name).read_bytes() if (work_dir / name).is_file() else None
              for name in entries(work_dir)}
    cfg = tiny_cfg('fmkt', work_dir, teacher_checkpoint, max_iters=2)
    cfg.randomness.seed = 7  # the config copy would change
    cfg.resume, cfg.load_from = True, plant(tmp_path / 'elsewhere' / 'bad.pth')
    with pytest.raises(UnsafeCheckpointError):
        build_runner(cfg).train()
    after = {name: (work_dir / name).read_bytes() if (work_dir / name).is_file() else None
             for name in entries(work_dir)}
    assert after == before


def test_atomic_backend_writes_the_checksum_of_what_it_wrote(tmp_path):
    backend = storage.AtomicLocalBackend()
    backend.put(b'checkpoint bytes', tmp_path / 'iter_1.pth')
    assert storage.verify_checksum(str(tmp_path / 'iter_1.pth'))
    with pytest.raises(OSError) as raised:
        def full(f):
            raise OSError(errno.ENOSPC, 'No space left on device')
        storage.atomic_write(str(tmp_path / 'iter_1.pth'), full)
    assert (tmp_path / 'iter_1.pth').read_bytes() == b'checkpoint bytes'
    assert raised.value.errno == errno.ENOSPC
    message = str(raised.value)
    assert str(tmp_path / 'iter_1.pth') in message and 'No space left on device' in message
    assert "'iter_1.pth' keeps its previous content" in message and 'temporary file was removed' in message
    assert entries(tmp_path) == ['iter_1.pth', 'iter_1.pth.sha256']
