"Warm workers (`inscl.warm`): a notebook run through one equals it run cold, and killing any process of it leaves nothing running."
import json, os, signal, subprocess, sys, time
from pathlib import Path
import nbformat, psutil, pytest
from inscl.warm import WarmWorkers

LIGHT = ('papermill.cli', 'ipykernel.kernelapp')   # enough to fork papermill and kernels; no torch, so the tests start fast

def _notebook(path:Path, *sources:str) -> Path:
    nbformat.write(nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(s) for s in sources],
                                            metadata=dict(kernelspec=dict(name='python3', display_name='Python 3', language='python'))), path)
    return path

def _papermill(nb:Path, out:Path, env:dict, warm:bool=True, **kw) -> subprocess.Popen:
    cmd = [sys.executable, '-m', *(['inscl.warm'] if warm else []), 'papermill', str(nb), str(out), '-k', 'python3', '--no-progress-bar', '-y', json.dumps(kw)]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

def _gone(pid:int, within:float=15) -> bool:
    t = time.time()
    while time.time() - t < within:
        if not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE: return True
        time.sleep(0.2)
    return False

def _sleeping(tmp_path:Path, worker:WarmWorkers, marker:str) -> tuple[subprocess.Popen, list[int]]:
    "Start a notebook that writes `marker` (its kernel's pids) and sleeps; return its stand-in and the worker's forked processes, once it runs."
    nb = _notebook(tmp_path/'in.ipynb', f'import os, time\nopen({str(tmp_path/marker)!r}, "w").write(f"{{os.getpid()}} {{os.getppid()}}")\ntime.sleep(300)')
    p = _papermill(nb, tmp_path/'out.ipynb', {**os.environ, **worker.env(0)})
    t = time.time()
    while not (tmp_path/marker).exists() and time.time() - t < 60: time.sleep(0.2)
    return p, [c.pid for c in psutil.Process(worker.procs[0].pid).children()]

@pytest.fixture
def worker():
    with WarmWorkers([dict(os.environ)], imports=LIGHT) as w: yield w

def test_warm_notebook_equals_cold(tmp_path, worker):
    "The same notebook, through the worker and cold: same outputs and metadata; the warm kernel is the worker's child, in the cell's folder."
    nb = _notebook(tmp_path/'in.ipynb', 'x = 3', 'import os, random\nprint(sum(range(x)), sorted({"b", "a"}))', 'print(os.getppid())')
    p = _papermill(nb, tmp_path/'warm.ipynb', {**os.environ, **worker.env(0)}); so, se = p.communicate(timeout=120)
    assert p.returncode == 0 and 'inscl.warm:' not in se, se[-2000:]
    p = _papermill(nb, tmp_path/'cold.ipynb', dict(os.environ), warm=False); p.communicate(timeout=120)
    assert p.returncode == 0
    warm, cold = (nbformat.read(tmp_path/f, as_version=4) for f in ('warm.ipynb', 'cold.ipynb'))
    assert [c.outputs for c in warm.cells[:2]] == [c.outputs for c in cold.cells[:2]]
    assert int(warm.cells[2].outputs[0]['text']) == worker.procs[0].pid
    assert warm.metadata.kernelspec == cold.metadata.kernelspec and warm.metadata.language_info == cold.metadata.language_info

def test_a_failing_cell_gives_papermills_exit_code(tmp_path, worker):
    "A notebook that raises fails through the worker as it does cold: exit code 1, the error in the log."
    nb = _notebook(tmp_path/'in.ipynb', 'raise ValueError("tasks/task039.json: empty")')
    p = _papermill(nb, tmp_path/'out.ipynb', {**os.environ, **worker.env(0)}); so, se = p.communicate(timeout=120)
    assert p.returncode == 1 and 'tasks/task039.json: empty' in se

def test_killing_the_stand_in_stops_papermill_and_kernel(tmp_path, worker):
    "SIGKILL of the stand-in (as `run_cell`'s timeout does): the worker kills its forked papermill, whose kernel then stops."
    p, forked = _sleeping(tmp_path, worker, 'pids')
    kernel, _ = map(int, (tmp_path/'pids').read_text().split())
    assert kernel in forked and len(forked) == 2          # papermill and its kernel, both forked by the worker
    p.kill(); p.wait()
    assert all(_gone(pid) for pid in forked)
    assert worker.procs[0].poll() is None                 # the worker keeps serving

def test_sigterm_reaches_the_forked_papermill(tmp_path, worker):
    "SIGTERM of the stand-in (Ctrl-C in the runner) is forwarded; the stand-in exits as its papermill did."
    p, forked = _sleeping(tmp_path, worker, 'go')
    p.terminate(); p.wait(timeout=30)
    assert p.returncode != 0 and all(_gone(pid) for pid in forked)

def test_no_worker_or_refused_runs_cold(tmp_path, worker, capsys):
    "No worker at the socket, a worker that has died, or a request the worker refuses: papermill runs cold and says why."
    nb = _notebook(tmp_path/'in.ipynb', 'print(1)')
    for env, why in [({'INSCL_WARM': str(tmp_path/'none.sock')}, 'no warm worker'),
                     ({**worker.env(0), 'MKL_CBWR': 'AVX512'}, 'MKL_CBWR')]:
        p = _papermill(nb, tmp_path/'out.ipynb', {**os.environ, **env}); so, se = p.communicate(timeout=120)
        assert p.returncode == 0 and 'starting papermill cold' in se and why in se, se[-2000:]
    worker.procs[0].kill(); worker.procs[0].wait()
    assert worker.env(0) == {} and 'warm worker 0 ended' in capsys.readouterr().err
