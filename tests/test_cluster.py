"""The scale-out parts with the real programs: a single-node SLURM cluster (munged, slurmctld, slurmd started here,
as root) running the smoke continual grid through `inscl-repro --executor slurm`, compared with the local executor;
and a continual run under `accelerate launch` with two CPU processes (gloo), compared with one process."""
import os, shutil, signal, socket, subprocess, sys, time
from pathlib import Path
import pandas as pd
import pytest

from inscl.files import load_json

KIT = Path(__file__).resolve().parent.parent
DAEMONS = ('munged', 'slurmctld', 'slurmd')
SLURM_BIN = {'sbatch': shutil.which('sbatch'), 'sinfo': shutil.which('sinfo')}

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0)); return s.getsockname()[1]

def _missing() -> str|None:
    "Why this machine cannot start a SLURM cluster for the test, or None."
    gone = [d for d in (*DAEMONS, 'sbatch', 'sinfo', 'squeue', 'scancel') if shutil.which(d) is None and not Path('/usr/sbin', d).exists()]
    if gone: return f"SLURM/munge not installed ({', '.join(gone)} missing): apt-get install slurm-wlm munge (.ci/run does)"
    if os.geteuid() != 0: return 'the test starts munged, slurmctld and slurmd as root; not root here'
    try: import submitit  # noqa: F401
    except ImportError: return "submitit not installed: pip install -e '.[dev]'"
    return None

def _exe(name:str) -> str: return shutil.which(name) or f'/usr/sbin/{name}'

def slurm_conf(d:Path, # the cluster's folder (state, spool, logs)
               munge_socket:Path) -> str:
    "A single-node slurm.conf: this host, all its cores, a default partition, everything under `d`; its own ports."
    host, cpus = socket.gethostname().split('.')[0], os.cpu_count()
    mem = int(next(l.split()[1] for l in Path('/proc/meminfo').read_text().splitlines() if l.startswith('MemTotal')) ) // 1024 * 9 // 10
    return f"""ClusterName=insclci
SlurmctldHost={host}
SlurmctldPort={_free_port()}
SlurmdPort={_free_port()}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket={munge_socket}
CredType=cred/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
StateSaveLocation={d}/state
SlurmdSpoolDir={d}/spool
SlurmctldPidFile={d}/slurmctld.pid
SlurmdPidFile={d}/slurmd.pid
SlurmctldLogFile={d}/log/slurmctld.log
SlurmdLogFile={d}/log/slurmd.log
ReturnToService=2
MpiDefault=none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
MinJobAge=600
NodeName={host} CPUs={cpus} RealMemory={mem} State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
"""

class Cluster:
    "A single-node SLURM cluster in a folder: `up()` starts munged, slurmctld and slurmd; `down()` stops exactly those."
    def __init__(self, d:Path):
        self.d, self.procs = Path(d), {}
        for sub in ('state', 'spool', 'log', 'munge'): (self.d/sub).mkdir(parents=True, exist_ok=True)
        self.socket, self.conf = self.d/'munge'/'munge.socket', self.d/'slurm.conf'
        self.env = {**os.environ, 'SLURM_CONF': str(self.conf)}

    def _start(self, name:str, *args):
        log = open(self.d/'log'/f'{name}.out', 'w')
        def die_with_parent():   # a killed pytest (timeout, SIGKILL) runs no finally: the kernel stops the daemons instead
            import ctypes
            ctypes.CDLL('libc.so.6', use_errno=True).prctl(1, signal.SIGTERM)   # PR_SET_PDEATHSIG
        self.procs[name] = subprocess.Popen([_exe(name), *args], stdout=log, stderr=subprocess.STDOUT, env=self.env,
                                            start_new_session=True, preexec_fn=die_with_parent)

    def up(self, timeout:float=60) -> 'Cluster':
        key = self.d/'munge'/'munge.key'
        key.write_bytes(os.urandom(1024)); key.chmod(0o400)
        m = self.d/'munge'
        self._start('munged', '-F', f'--key-file={key}', f'--socket={self.socket}', f'--pid-file={m}/munged.pid',
                    f'--log-file={m}/munged.log', f'--seed-file={m}/munge.seed', '--force')
        self._wait(lambda: self.socket.exists(), 'munged socket', timeout)
        self.conf.write_text(slurm_conf(self.d, self.socket))
        self._start('slurmctld', '-D', '-f', str(self.conf))
        self._start('slurmd', '-D', '-f', str(self.conf))
        def idle():
            r = subprocess.run(['sinfo', '-h', '-o', '%T'], env=self.env, capture_output=True, text=True)
            return r.returncode == 0 and r.stdout.strip() in ('idle', 'mixed', 'allocated')
        self._wait(idle, 'an idle node in sinfo', timeout)
        return self

    def _wait(self, ok, what:str, timeout:float):
        t0 = time.time()
        while not ok():
            dead = [n for n, p in self.procs.items() if p.poll() is not None]
            if dead or time.time() - t0 > timeout:
                raise RuntimeError(f"SLURM test cluster: no {what} after {time.time() - t0:.0f} s"
                                   f"{f' ({dead} exited)' if dead else ''}; logs in {self.d/'log'}:\n{self.logs()}")
            time.sleep(0.2)

    def logs(self) -> str:
        return '\n'.join(f'== {f.name}\n' + f.read_text(errors='replace')[-1500:] for f in sorted((self.d/'log').glob('*')) if f.is_file())

    def down(self):
        "Stop the daemons this object started (by their process ids), slurmd first."
        for name in ('slurmd', 'slurmctld', 'munged'):
            p = self.procs.pop(name, None)
            if p is None or p.poll() is not None: continue
            p.send_signal(signal.SIGTERM)
            try: p.wait(timeout=15)
            except subprocess.TimeoutExpired: p.kill(); p.wait()

@pytest.fixture(scope='module')
def slurm(tmp_path_factory):
    "A running single-node cluster for this module's tests; its daemons are stopped afterwards, also on failure."
    if (why := _missing()): pytest.skip(why)
    c = Cluster(tmp_path_factory.mktemp('slurm'))
    try:
        c.up()
        yield c
    finally: c.down()


# ---------------------------------------------------------------- the smoke grid through SLURM

GRID = ['inscl', '--preset', 'smoke', '--orders', 'curriculum', '--methods', 'none', '--seeds', '0', '--jobs', '2', '--threads', '1']

def _kit(folder:Path, monkeypatch) -> Path:
    "A settings.ini copy in `folder`: its runs land there."
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(KIT/'settings.ini', folder/'settings.ini')
    monkeypatch.setenv('INSCL_SETTINGS', str(folder/'settings.ini'))
    return folder/'reports'/'runs'/'inscl'

def _results(runs:Path) -> dict:
    return {f.parent.name: f.read_bytes() for f in sorted(runs.glob('*/*.csv')) if f.name in ('results.csv', 'experts.csv')}

@pytest.mark.slow
def test_smoke_grid_through_slurm_equals_local(slurm, tmp_path, monkeypatch, capsys):
    """A 2-cell subset of the smoke continual grid (seed 0's experts and its curriculum run without replay; the whole
    smoke grid has 10 cells, several minutes on 2 cores) runs through `--executor slurm` with the same results, byte
    for byte, as through the local executor; each record names its SLURM job, as does its status row; a broken third
    cell fails alone, as a failed row, the summary is printed as locally, and a rerun submits nothing."""
    from inscl.batch import main
    monkeypatch.setenv('SLURM_CONF', str(slurm.conf))
    monkeypatch.delenv('SLURM_JOB_ID', raising=False)
    local = _kit(tmp_path/'local', monkeypatch)
    assert main(GRID) == 0
    want = _results(local)
    assert sorted(want) == ['experts-smoke-s0', 'smoke-curriculum-none-s0']
    assert all('slurm_job_id' not in load_json(local/r/'record.json') for r in want)
    capsys.readouterr()

    runs = _kit(tmp_path/'slurm', monkeypatch)
    bad = runs/'smoke-random-none-s0'
    bad.mkdir(parents=True)
    (bad/'state.json').write_text('{not json')        # this cell's job runs and fails; the others go on
    t0 = time.time()
    assert main([*GRID[:4], 'curriculum', 'random', *GRID[5:], '--executor', 'slurm']) == 1
    out = capsys.readouterr().out
    print(f'slurm grid: {time.time() - t0:.0f} s')
    assert 'FAILED inscl:smoke-random-none-s0' in out and 'final-stage Relative Gain' in out
    got = _results(runs)
    assert {k: got[k] for k in want} == want             # identical results
    lines = {l.split()[1]: l.split() for l in out.splitlines() if l.strip().startswith('inscl ')}
    for rid in want:
        job = load_json(runs/rid/'record.json')['slurm_job_id']
        assert job.isdigit() and lines[rid][-1] == job and (runs.parent/'slurm'/job).is_dir(), (rid, job, lines.get(rid))
    assert lines['smoke-random-none-s0'][2] == 'failed'
    # a rerun skips the finished cells and submits no job
    jobs = sorted((runs.parent/'slurm').iterdir())
    assert main([*GRID, '--executor', 'slurm']) == 0
    assert capsys.readouterr().out.count('done before') == 2 and sorted((runs.parent/'slurm').iterdir()) == jobs


@pytest.mark.slow
def test_a_job_slurm_cancels_is_a_failed_row(slurm, tmp_path, monkeypatch):
    "A job that SLURM ends before its cell finishes (here scancel; a time or memory limit alike) becomes a failed row naming the job and its logs."
    import threading
    from inscl.batch import Cell
    from inscl.cluster import SlurmExecutor, SlurmResources, slurm_state
    monkeypatch.setenv('SLURM_CONF', str(slurm.conf))
    ex = SlurmExecutor(tmp_path/'slurm', SlurmResources(mem_gb=1, time_min=5), poll=0.5, grace=3)
    c = Cell('inscl', 'smoke-curriculum-none-s0', dict(preset='smoke', order='curriculum', method='none', seed=0, out_dir=str(tmp_path)),
             tmp_path/'smoke-curriculum-none-s0')
    def cancel_when_running():
        t0 = time.time()
        while time.time() - t0 < 60:
            jobs = list(ex._live)
            if jobs and slurm_state(jobs[0]) == 'RUNNING':
                subprocess.run(['scancel', jobs[0]], env=slurm.env, check=True); return
            time.sleep(0.2)
    th = threading.Thread(target=cancel_when_running); th.start()
    row = ex.run(c, threads=1)
    th.join()
    assert row['status'] == 'failed' and row['error'].startswith(f"SLURM job {row['job_id']}") and 'CANCELLED' in row['error'], row
    assert not c.finished()


# ---------------------------------------------------------------- a continual run on two processes

def _files(folder:Path) -> dict:
    return {str(f.relative_to(folder)): (f.stat().st_mtime_ns, f.stat().st_size) for f in folder.rglob('*') if f.is_file()}

def test_a_non_main_rank_writes_nothing(tmp_path, monkeypatch):
    "With the rank guards saying 'not the main process', a stage is trained but no file of the run changes; the rows read are the main process's."
    import inscl.continual as ct
    ct.run_continual('curriculum', 'none', 0, 'smoke', out_dir=tmp_path, stages=1, progress=False)
    before = _files(tmp_path)
    waits = []
    monkeypatch.setattr(ct, 'is_main_process', lambda: False)
    monkeypatch.setattr(ct, 'wait_for_everyone', lambda: waits.append(1))
    df = ct.run_continual('curriculum', 'none', 0, 'smoke', out_dir=tmp_path, stages=2, progress=False)
    assert _files(tmp_path) == before and len(waits) == 2        # after resuming, and after the stage
    assert df.stage.tolist() == [0]                              # what state.json holds: the main process commits stage 1

@pytest.mark.slow
def test_two_processes_write_once_and_match_one_process(tmp_path, monkeypatch):
    """Two stages of the smoke curriculum, method none, with `inscl.grad_accum = 2`, under `accelerate launch` with 2 CPU
    processes (gloo) and in one process. Each stage has 16 examples = 2 batches of 8: one process accumulates both into
    one step; the launch gives each process one (grad_accum 2 / 2 processes) and averages them (tests/test_multiprocess.py
    shows the loop agrees to 1e-5). The launched run folder holds exactly the files of the one-process run (no stray
    checkpoint or temporary file from a second writer); its scores equal the one-process run's (greedy decoding,
    tolerance 1e-9) and its stage losses agree within 1e-4."""
    from inscl.cluster import launch_continual, continual_args
    from inscl.continual import run_continual
    from inscl.presets import load_preset
    ini = (KIT/'settings.ini').read_text().replace('[smoke]\n', '[smoke]\ninscl.grad_accum = 2\n', 1)
    (tmp_path/'settings.ini').write_text(ini)
    monkeypatch.setenv('INSCL_SETTINGS', str(tmp_path/'settings.ini'))
    p = load_preset('smoke')
    assert p.inscl.grad_accum == 2
    t0 = time.time()
    secs = launch_continual(p, continual_args('curriculum', 'none', 0, 'smoke', tmp_path/'two', stages=2, threads=1),
                            tmp_path/'two'/'launch.log', processes=2)
    rid = 'smoke-curriculum-none-s0'
    two = tmp_path/'two'/rid
    log = (tmp_path/'two'/'launch.log').read_text()
    one = run_continual('curriculum', 'none', 0, p, out_dir=tmp_path/'one', stages=2, progress=False)
    print(f'two-process launch: {secs:.0f} s; with the one-process run {time.time() - t0:.0f} s')
    assert 'not a multiple' not in log
    assert sorted(_files(two)) == sorted(_files(tmp_path/'one'/rid)), log[-2000:]
    res = pd.read_csv(two/'results.csv')
    assert res.stage.tolist() == [0, 1, 1] and len(load_json(two/'state.json')['finished']) == 2
    pd.testing.assert_frame_equal(res, one, check_exact=False, atol=1e-9, rtol=0)
    for a, b in zip(load_json(two/'state.json')['finished'], load_json(tmp_path/'one'/rid/'state.json')['finished']):
        assert a['n_train'] == b['n_train'] and abs(a['final_loss'] - b['final_loss']) < 1e-4, (a, b)
