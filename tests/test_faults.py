"Faults and damaged files: a continual cell killed at each step of a stage resumes to the uninterrupted tables; damaged files are named and redone."
import json, os, shutil, signal, subprocess, sys, time
import pandas as pd
import pytest
import inscl.continual as C
import inscl.files as F
from inscl.continual import run_continual, train_experts
from inscl.files import atomic_write, load_table, save_json, save_table
from inscl.schemas import CONTINUAL_COLUMNS
from conftest import ROOT

STAGES, KILL_STAGE = 3, 1
RUN = 'smoke-curriculum-random-s0'

# The child runs one smoke continual cell. With a file kind it stops dead right after the atomic rename that makes
# stage KILL_STAGE's file of that kind appear (checkpoint folder, results.csv or state.json) and says so; the test
# then finds the file in the run folder and SIGKILLs the child's process group there, as a power cut or OOM kill would.
CHILD = r'''
import os, re, sys, time
import torch
torch.set_num_threads(int(os.environ.get('INSCL_TEST_THREADS', '1')))
kind, out, stages, kill_stage = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
if kind != 'none':
    pattern = {'checkpoint': r'checkpoint(-\d+)?', 'results': r'results\.csv', 'state': r'state\.json'}[kind]
    seen = [0]
    def stop_after(rename):
        def wrapped(src, dst, *a, **k):
            rename(src, dst, *a, **k)
            if re.fullmatch(pattern, os.path.basename(os.fspath(dst))):
                seen[0] += 1
                if seen[0] == kill_stage + 1:
                    print('APPEARED', os.fspath(dst), flush=True)
                    time.sleep(600)
        return wrapped
    os.replace, os.rename = stop_after(os.replace), stop_after(os.rename)
from inscl.continual import run_continual
run_continual('curriculum', 'random', 0, 'smoke', out_dir=out, stages=stages, progress=False)
print('FINISHED', flush=True)
'''

@pytest.fixture(scope='module')
def child_env(tmp_path_factory):
    "The children's environment: a copy of settings.ini, and one cache for all of them (the tokenizer is built once)."
    d = tmp_path_factory.mktemp('faults')
    shutil.copy(ROOT/'settings.ini', d/'settings.ini')
    return dict(os.environ, INSCL_SETTINGS=str(d/'settings.ini'), INSCL_CACHE=str(d/'cache'), PYTHONUNBUFFERED='1')

def _child(env, out, kind='none'):
    "Start the child in its own process group."
    return subprocess.Popen([sys.executable, '-c', CHILD, kind, str(out), str(STAGES), str(KILL_STAGE)], env=env, cwd=out.parent,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)

def _finish(env, out) -> str:
    "Run the child to the end; return its stderr."
    p = _child(env, out)
    so, se = p.communicate(timeout=300)
    assert p.returncode == 0 and 'FINISHED' in so, se[-3000:]
    return se

@pytest.fixture(scope='module')
def uninterrupted(child_env, tmp_path_factory):
    out = tmp_path_factory.mktemp('straight')
    _finish(child_env, out)
    return out/RUN

def _losses(run) -> list:
    return [(e['stage'], e['final_loss']) for e in json.loads((run/'state.json').read_text())['finished']]

@pytest.mark.parametrize('kind', ['checkpoint', 'results', 'state'])
def test_sigkill_after_each_file_then_resume(kind, child_env, uninterrupted, tmp_path):
    out = tmp_path/'runs'; out.mkdir()
    p = _child(child_env, out, kind)
    try:
        line = p.stdout.readline()                      # blocks until the file has appeared (or the child ends)
        assert line.startswith('APPEARED'), (line, p.stderr.read()[-3000:] if p.poll() is not None else '')
        path = out/RUN/os.path.basename(line.split()[1])
        assert path.exists()                            # the run folder shows it
        if kind == 'results': assert load_table(path).stage.max() == KILL_STAGE
        if kind == 'state': assert len(json.loads(path.read_text())['finished']) == KILL_STAGE + 1
        os.killpg(p.pid, signal.SIGKILL)
        p.wait(timeout=30)
    finally:
        if p.poll() is None: os.killpg(p.pid, signal.SIGKILL); p.wait()
        p.stdout.close(); p.stderr.close()
    assert p.returncode == -signal.SIGKILL
    err = _finish(child_env, out)
    run = out/RUN
    assert (run/'results.csv').read_bytes() == (uninterrupted/'results.csv').read_bytes()
    assert _losses(run) == _losses(uninterrupted)
    assert sorted(f.name for f in (run/'plans').iterdir()) == sorted(f.name for f in (uninterrupted/'plans').iterdir())
    assert sorted(d.name for d in run.glob('*checkpoint*')) == sorted(d.name for d in uninterrupted.glob('*checkpoint*'))
    if kind != 'state': assert 'not part of the' in err   # the uncommitted stage's files were removed, with a message

# ---------------------------------------------------------------- in-process faults (the smoke preset, 3 stages)
@pytest.fixture(scope='module')
def straight3(tmp_path_factory):
    "An uninterrupted 3-stage run and its folder."
    out = tmp_path_factory.mktemp('straight3')
    df = run_continual('curriculum', 'random', 0, 'smoke', out_dir=out, stages=3, progress=False)
    return df, out/RUN

def _two_stages(tmp_path):
    run_continual('curriculum', 'random', 0, 'smoke', out_dir=tmp_path, stages=2, progress=False)
    return tmp_path/RUN

def test_half_swapped_checkpoint_is_recovered(straight3, tmp_path, capfd):
    "A kill between the two renames of a checkpoint swap left only `<checkpoint>.old` and `<checkpoint>.tmp`."
    run = _two_stages(tmp_path)
    for d in [d for d in run.iterdir() if d.is_dir() and d.name.startswith('checkpoint') and not d.name.endswith(('.old', '.tmp'))]:
        d.rename(d.with_name(d.name + '.old'))
        shutil.copytree(d.with_name(d.name + '.old'), d.with_name(d.name + '.tmp'))
    capfd.readouterr()
    df = run_continual('curriculum', 'random', 0, 'smoke', out_dir=tmp_path, stages=3, progress=False)
    pd.testing.assert_frame_equal(df, straight3[0], check_exact=True)
    assert (run/'results.csv').read_bytes() == (straight3[1]/'results.csv').read_bytes()
    assert 'checkpoint' in capfd.readouterr().err

def test_damaged_checkpoint_is_redone(straight3, tmp_path, capfd):
    "A half-written model.safetensors in the current checkpoint: named, and the run redone from a point that loads."
    run = _two_stages(tmp_path)
    (w,) = [f for f in run.glob('*checkpoint*/model.safetensors')]
    w.write_bytes(w.read_bytes()[:w.stat().st_size // 2])
    capfd.readouterr()
    df = run_continual('curriculum', 'random', 0, 'smoke', out_dir=tmp_path, stages=3, progress=False)
    pd.testing.assert_frame_equal(df, straight3[0], check_exact=True)
    err = capfd.readouterr().err
    assert f'{w.parent}: the checkpoint does not load' in err and 'starts again from stage 0' in err

def test_damaged_results_of_a_finished_run_are_rebuilt(straight3, tmp_path, capfd):
    run = tmp_path/RUN
    shutil.copytree(straight3[1], run)
    good = (run/'results.csv').read_bytes()
    (run/'results.csv').write_bytes(good[:len(good) // 2])   # truncated mid-line
    capfd.readouterr()
    df = run_continual('curriculum', 'random', 0, 'smoke', out_dir=tmp_path, stages=3, progress=False)
    pd.testing.assert_frame_equal(df, straight3[0], check_exact=True)
    assert (run/'results.csv').read_bytes() == good
    assert f"{run/'results.csv'}: differs from the 3 committed stage(s)" in capfd.readouterr().err

def test_truncated_experts_csv_is_named_and_redone(tmp_path, capfd):
    tasks = ['Classification', 'Code']
    ex = train_experts('smoke', 0, out_dir=tmp_path, tasks=tasks, progress=False)
    f = tmp_path/'experts-smoke-s0'/'experts.csv'
    good = f.read_bytes()
    f.write_bytes(good[:-7])                                 # the last expert's scores cut off
    capfd.readouterr()
    pd.testing.assert_frame_equal(train_experts('smoke', 0, out_dir=tmp_path, tasks=tasks, progress=False), ex, check_exact=True)
    assert f'{f}: truncated' in capfd.readouterr().err and f.read_bytes() == good

def test_check_results_names_the_damage(straight3, tmp_path):
    src = straight3[1]/'results.csv'
    n, dig = len(load_table(src)), F.file_digest(src)
    assert C.check_results(src, n_rows=n, digest=dig).shape == (n, len(CONTINUAL_COLUMNS))
    bad = tmp_path/'results.csv'
    text = src.read_text()
    for body, msg in [('', r'results\.csv: the file is empty'), (text[:-3], r'results\.csv: truncated'),
                      (text.splitlines()[0] + '\n', r'results\.csv: a header but no rows'),
                      (text.replace('rougeL', 'rouge_l', 1), r'results\.csv: columns .*\(unexpected: rouge_l\)'),
                      (text + text.splitlines()[1] + '\n', rf'results\.csv line {n + 2}: repeats run_id=')]:
        bad.write_text(body)
        with pytest.raises(ValueError, match=msg): C.check_results(bad)
    shutil.copy(src, bad)
    with pytest.raises(ValueError, match=f'{n} rows; the run recorded {n + 1}'): C.check_results(bad, n_rows=n + 1)
    bad.write_text(text.replace('curriculum', 'Curriculum', 1))
    with pytest.raises(ValueError, match='differs from the recorded'): C.check_results(bad, n_rows=n, digest=dig)
    with pytest.raises(ValueError, match='no such file'): C.check_results(tmp_path/'absent.csv')

def test_load_table_names_the_file(tmp_path):
    (tmp_path/'e.csv').write_text('')
    with pytest.raises(ValueError, match=r'e\.csv: the file is empty'): load_table(tmp_path/'e.csv')
    (tmp_path/'p.csv').write_text('a,b\n1,2\n3,"4\n')
    with pytest.raises(ValueError, match=r'p\.csv: not a valid CSV table'): load_table(tmp_path/'p.csv')

# ---------------------------------------------------------------- files respect the umask
@pytest.mark.parametrize('mask', [0o022, 0o077, 0o002])
def test_atomic_files_respect_umask(tmp_path, mask):
    old = os.umask(mask)
    try:
        save_json({'a': 1}, tmp_path/'x.json')
        save_table(pd.DataFrame({'a': [1]}), tmp_path/'t.csv')
        atomic_write(tmp_path/'b.txt', 'x')
    finally: os.umask(old)
    for f in ('x.json', 't.csv', 'b.txt'):
        assert (tmp_path/f).stat().st_mode & 0o777 == 0o666 & ~mask, f
