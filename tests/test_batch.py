"The batch runner end to end on the smoke preset: stages run, results land atomically, a rerun resumes."
import json, shutil
import pandas as pd
import pytest
from inscl.batch import main
from conftest import ROOT

@pytest.fixture
def kit(tmp_path, monkeypatch):
    "A copy of settings.ini in a scratch folder, so runs land there."
    shutil.copy(ROOT/'settings.ini', tmp_path/'settings.ini')
    monkeypatch.setenv('INSCL_SETTINGS', str(tmp_path/'settings.ini'))
    return tmp_path

def test_prepare_smoke_then_resume(kit, capsys):
    assert main(['prepare', '--preset', 'smoke']) == 0
    out = kit/'reports'/'runs'/'prepare'/'smoke'
    files = sorted(p.name for p in out.glob('*.json'))
    assert files == ['data_inscl.json', 'data_nli.json', 'encoder_minilm.json', 'model_tiny-smoke.json']
    data = json.loads((out/'data_inscl.json').read_text())
    assert data['categories'] == 16 and data['n_train'] > 0 and data['n_test'] > 0
    nli = json.loads((out/'data_nli.json').read_text())
    assert nli['ood']['n'] > 0 and 0 < nli['train']['gold_1'] < nli['train']['n']
    assert json.loads((out/'model_tiny-smoke.json').read_text())['n_params'] > 0
    # an interrupted run: one stage's result is missing; only that stage runs again
    (out/'data_nli.json').unlink()
    capsys.readouterr()
    assert main(['prepare', '--preset', 'smoke']) == 0
    txt = capsys.readouterr().out
    assert txt.count('done before') == 6 and 'data: nli' in txt and ' ran ' in txt

def test_prepare_plans_every_order(kit):
    "Preparation plans InsCL replay for every stage of every order; budgets sum to replay_per_task * stage."
    assert main(['prepare', '--preset', 'smoke']) == 0
    for order in ['curriculum', 'random', 'difficult']:
        plan = json.loads((kit/'reports'/'runs'/'plans'/'smoke'/f'plan_{order}.json').read_text())
        assert [s['stage'] for s in plan['stages']] == list(range(16))
        for s in plan['stages']:
            assert sum(s['budget'].values()) == s['total'] == s['n_examples'] == 4*s['stage']

def test_inscl_grid_resumes_and_reports_failures(kit, capsys, monkeypatch):
    "Papermill cells, two seeds: a broken cell fails alone, named with its notebook; a rerun resumes and writes the verdict tables."
    import inscl.batch as b
    warm, run_cell = [], b.run_cell
    def spy(c, *args): warm.append(args[-1]); return run_cell(c, *args)   # the warm worker's variables each cell got
    monkeypatch.setattr(b, 'run_cell', spy)
    args = ['inscl', '--preset', 'smoke', '--orders', 'curriculum', '--methods', 'none', 'inscl', '--seeds', '0', '1', '--jobs', '2', '--threads', '1']
    runs = kit/'reports'/'runs'/'inscl'
    bad = runs/'smoke-curriculum-inscl-s0'
    bad.mkdir(parents=True)
    (bad/'state.json').write_text('{not json')          # a corrupt state file: this cell must fail, the others run
    assert main(args) == 1
    out = capsys.readouterr().out
    assert 'FAILED inscl:smoke-curriculum-inscl-s0' in out and f"executed notebook: {bad/'experiment.ipynb'}" in out
    assert (bad/'experiment.ipynb').is_file() and not (bad/'record.json').exists()
    for rid in ['experts-smoke-s0', 'smoke-curriculum-none-s0']:
        rec = json.loads((runs/rid/'record.json').read_text())
        assert rec['finished'] and rec['params']['preset'] == 'smoke' and rec['versions']['torch'] and (runs/rid/'experiment.ipynb').is_file()
    # six cells on two jobs: every cell's papermill and kernel were forked by a warm worker, none fell back to a cold start
    assert len(warm) == 6 and all(w and 'INSCL_WARM' in w for w in warm)
    logs = list(runs.glob('*/papermill.log'))
    assert len(logs) == 6 and not [l.parent.name for l in logs if 'inscl.warm:' in l.read_text()]
    (bad/'state.json').unlink()
    assert main(args) == 0
    assert warm[6:] == [None]                            # one cell left for two jobs: no warm workers, the cell starts cold
    out = capsys.readouterr().out
    assert out.count('done before') == 5 and 'final-stage Relative Gain' in out and 'paired differences' in out
    summ = pd.read_csv(runs/'summary-smoke.csv')
    assert summ.method.tolist() == ['inscl', 'inscl', 'none', 'none'] and summ.seed.tolist() == [0, 1, 0, 1] and (summ.n_stages == 16).all()
    # the verdict tables: one row per run; one row per comparison and metric, pairs matched on (order, seed)
    vr = pd.read_csv(runs/'continual_runs-smoke.csv')
    assert list(vr.columns)[:8] == ['order', 'method', 'weights', 'seed', 'rg', 'ap', 'forgetting', 'bwt'] and len(vr) == 4
    pr = pd.read_csv(runs/'continual_paired-smoke.csv')
    assert list(pr.columns) == ['comparison', 'metric', 'n_pairs', 'mean_diff', 'ci_low', 'ci_high', 'interval', 'sd_diff', 'paper_effect', 'pairs_for_80pct_power']
    assert set(pr.comparison) == {'inscl-random', 'inscl-none', 'wdist-random', 'insinfo-random', 'inscl-inscl_uniform'}
    assert {'rg', 'ap', 'forgetting', 'bwt'} <= set(pr.metric) and (pr.interval == 't').all()
    row = pr.set_index(['comparison', 'metric']).loc[('inscl-none', 'ap')]
    assert row.n_pairs == 2 and row.ci_low <= row.mean_diff <= row.ci_high
    assert pr.set_index(['comparison', 'metric']).loc[('inscl-none', 'rg')].paper_effect == 27.96
    assert pr.set_index(['comparison', 'metric']).loc[('inscl-random', 'rg')].n_pairs == 0

def test_distill_grid(kit, capsys):
    "The distillation grid: cells named by the run id, memory on the first data seed only, the summary averages seeds."
    assert main(['distill', '--preset', 'smoke', '--methods', 'zero_shot', 'pbft-full', '--data-seeds', '0', '1', '--jobs', '2', '--threads', '1']) == 0
    out = capsys.readouterr().out
    runs = kit/'reports'/'runs'/'distill'
    res = {s: pd.read_csv(runs/f'smoke-zero_shot-k0-gpt-3-s{s}'/'results.csv') for s in (0, 1)}
    assert res[0].peak_mem_mb.notna().all() and res[1].peak_mem_mb.isna().all()
    summ = pd.read_csv(runs/'summary-smoke.csv').set_index('method')
    assert summ.loc['zero_shot', 'seeds'] == 2 and sorted(summ.index) == ['pbft-full', 'zero_shot']
    acc = [r.query("split == 'eval' and heuristic == 'all' and label == 'all'").accuracy.item() for r in res.values()]
    assert abs(summ.loc['zero_shot', 'eval_accuracy'] - round(sum(acc) / 2, 3)) < 1e-9
    assert 'distillation study' in out and main(['distill', '--preset', 'smoke', '--methods', 'zero_shot', '--data-seeds', '0', '--dry-run']) == 0
    assert 'distill:smoke-zero_shot-k0-gpt-3-s0' in capsys.readouterr().out

def test_bad_grid_arguments(kit, capsys):
    "A bad value is one line on stderr naming it (exit 2); --debug shows the traceback instead."
    from inscl.batch import grid_method
    with pytest.raises(ValueError, match="unknown distillation method 'icl-tutor'"): grid_method('icl-tutor')
    assert main(['inscl', '--preset', 'smoke', '--orders', 'curriculm', '--dry-run']) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "unknown order 'curriculm'" in err[0] and 'Traceback' not in err[0]
    with pytest.raises(ValueError, match="unknown order 'curriculm'"): main(['inscl', '--preset', 'smoke', '--orders', 'curriculm', '--dry-run', '--debug'])

@pytest.mark.parametrize('flag,value', [('--threads', '-3'), ('--jobs', '0'), ('--jobs', 'two'), ('--seeds', '-1')])
def test_bad_flags_are_one_line(kit, capsys, flag, value):
    "Flags are checked by the parser: one line naming the flag and the value, exit code 2."
    with pytest.raises(SystemExit) as e: main(['inscl', '--preset', 'smoke', flag, value, '--dry-run'])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f'argument {flag}' in err[0] and value in err[0], err

def test_unwritable_runs_folder_fails_at_start(kit, capsys):
    "A runs folder that cannot be written stops the command at once with one line (a file stands where a folder should)."
    (kit/'blocker').write_text('a file, not a folder')
    ini = (kit/'settings.ini').read_text().replace('runs_dir = reports/runs', 'runs_dir = blocker/runs')
    (kit/'settings.ini').write_text(ini)
    assert main(['inscl', '--preset', 'smoke', '--orders', 'curriculum', '--methods', 'none']) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and 'runs folder' in err[0] and 'blocker/runs' in err[0] and 'not writable' in err[0], err

def test_second_command_on_a_runs_folder_is_told_who_holds_it(kit, capsys):
    "While one command holds the runs folder, a second one stops at once and names the holder."
    import os
    from inscl.batch import runs_lock
    from inscl.presets import load_preset
    with runs_lock(load_preset('smoke').runs_dir, 'inscl-repro all --preset smoke'):
        assert main(['inscl', '--preset', 'smoke', '--orders', 'curriculum', '--methods', 'none']) == 2
        err = capsys.readouterr().err
        assert f'pid {os.getpid()}: inscl-repro all --preset smoke' in err and 'in use' in err
        assert main(['inscl', '--preset', 'smoke', '--dry-run']) == 0   # a dry run writes nothing and needs no lock
    assert main(['prepare', '--preset', 'smoke', '--dry-run']) == 0

def test_damaged_results_of_a_finished_cell_are_redone(kit, capsys):
    "A finished cell whose results no longer match its record is set aside with one line and run again; the summary does not crash."
    args = ['inscl', '--preset', 'smoke', '--orders', 'curriculum', '--methods', 'none', '--threads', '1']
    assert main(args) == 0
    run = kit/'reports'/'runs'/'inscl'/'smoke-curriculum-none-s0'
    good = (run/'results.csv').read_bytes()
    rec = json.loads((run/'record.json').read_text())
    assert rec['results'] == 'results.csv' and rec['n_rows'] == good.count(b'\n') - 1 and len(rec['digest']) == 64
    (run/'results.csv').write_bytes(good[:len(good) // 2])          # truncated mid-line, record intact
    capsys.readouterr()
    assert main(args) == 0
    out = capsys.readouterr().out
    assert f"{run/'results.csv'}: truncated" in out and 'runs again' in out
    assert (run/'results.csv').read_bytes() == good and (run/'results.csv.damaged').exists()
    assert 'final-stage Relative Gain (per-seed experts) and AP' in out

def test_sigterm_stops_the_cells_and_resumes(kit):
    "SIGTERM to the runner alone: its kernels are stopped (none is left behind), exit 143, and the same command resumes."
    import signal, subprocess, psutil
    proc, cmd, env, run, before = _runner_mid_run(kit, 2)
    kids = psutil.Process(proc.pid).children(recursive=True)
    assert kids, 'the runner has no papermill child'
    proc.send_signal(signal.SIGTERM)                           # the runner only, as a service manager or `kill` does
    assert proc.wait(timeout=60) == 143
    gone, alive = psutil.wait_procs(kids, timeout=30)
    assert not alive, f'left running: {[p.cmdline()[:3] for p in alive]}'
    assert not (run/'record.json').exists()
    r = subprocess.run(cmd, env=env, cwd=kit, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-2000:]
    after = json.loads((run/'state.json').read_text())['finished']
    assert len(after) == 16 and after[:len(before)] == before

def test_reports_of_another_preset_render_beside_the_committed_ones(kit):
    "Executed reports belong to the preset papermill recorded in them: another preset's go to reports/<preset>/."
    from inscl.batch import figures_dir, report_dir, report_owner
    from inscl.presets import load_preset
    smoke = load_preset('smoke')
    home = kit/'reports'
    assert report_owner(home) is None and report_dir(smoke) == home          # nothing rendered yet: in place
    home.mkdir(exist_ok=True)
    (home/'20_continual.ipynb').write_text(json.dumps({'metadata': {'papermill': {'parameters': {'preset': 'tiny'}}}, 'cells': []}))
    assert report_owner(home) == 'tiny'
    assert report_dir(smoke) == home/'smoke' and report_dir(load_preset('tiny')) == home
    assert figures_dir(smoke) == home/'figures'/'smoke' and figures_dir(load_preset('tiny')) == home/'figures'   # where tiny's report looks
    assert report_owner(ROOT/'reports') == 'tiny'                             # the committed reports are tiny's

def test_reports_are_executed_with_relative_paths(kit, monkeypatch):
    "run_reports runs papermill in the reports' folder with every path relative to it: the executed report names no folder of this machine."
    import subprocess, sys
    import inscl.batch as b
    from inscl.presets import load_preset
    smoke = load_preset('smoke')
    for study in ('inscl', 'distill'):
        (smoke.runs_dir/study/f'smoke-{study}').mkdir(parents=True)
        (smoke.runs_dir/study/f'smoke-{study}'/'results.csv').write_text('x\n1\n')
    (kit/'reports'/'20_continual.ipynb').write_text(json.dumps({'metadata': {'papermill': {'parameters': {'preset': 'tiny'}}}, 'cells': []}))
    seen = []
    def fake_run(cmd, cwd=None, **kw):
        seen.append((cmd, cwd))
        return subprocess.CompletedProcess(cmd, 1, '', 'stopped by the test')
    monkeypatch.setattr(b.subprocess, 'run', fake_run)
    rows = b.run_reports(smoke)
    assert [r['status'] for r in rows] == ['failed', 'failed'] and len(seen) == 2
    for (cmd, cwd), nb in zip(seen, b.report_notebooks()):
        assert cwd == nb.parent and cmd[0] == sys.executable
        assert not any(a.startswith('/') for a in cmd[1:]), cmd                 # no absolute path is handed to papermill
        params = json.loads(cmd[cmd.index('-y') + 1])
        assert (cwd/cmd[4]).resolve() == (b.report_dir(smoke)/nb.name).resolve()
        assert (cwd/params['figures_dir']).resolve() == (kit/'reports'/'figures'/'smoke').resolve()
        assert (cwd/params['runs_dir']).resolve() == smoke.runs_dir.resolve()

def _runner_mid_run(kit, stages:int):
    "Start `inscl-repro inscl` (smoke, curriculum, random) in its own session; return it, its command, env and run folder once `stages` stages finished."
    import os, subprocess, sys, time
    cmd = [sys.executable, '-c', 'import sys; from inscl.batch import main; sys.exit(main())', 'inscl', '--preset', 'smoke', '--orders', 'curriculum', '--methods', 'random', '--threads', '1']
    env = {**os.environ, 'INSCL_SETTINGS': str(kit/'settings.ini')}
    run = kit/'reports'/'runs'/'inscl'/'smoke-curriculum-random-s0'
    proc = subprocess.Popen(cmd, env=env, cwd=kit, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    t0, before = time.time(), []
    while time.time() - t0 < 300 and proc.poll() is None:
        try: before = json.loads((run/'state.json').read_text())['finished']
        except (OSError, ValueError): before = []
        if len(before) >= stages: break
        time.sleep(0.05)
    assert stages <= len(before) < 16, f'could not interrupt mid-run: {len(before)} stages finished'
    return proc, cmd, env, run, before

def test_interrupted_main_job_resumes(kit):
    "Ctrl-C in the middle of a grid cell, then the same command again: finished stages are kept, the run completes."
    import os, signal, subprocess
    proc, cmd, env, run, before = _runner_mid_run(kit, 3)
    os.killpg(proc.pid, signal.SIGINT)                         # what Ctrl-C in a terminal does
    proc.wait(timeout=60)
    assert not (run/'record.json').exists()
    r = subprocess.run(cmd, env=env, cwd=kit, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-2000:]
    after = json.loads((run/'state.json').read_text())['finished']
    assert len(after) == 16 and after[:len(before)] == before   # the stages done before the interrupt were not redone
    assert json.loads((run/'record.json').read_text())['finished']

def test_report_without_runs_keeps_reports(kit, capsys):
    "No finished runs of the preset: no report is rendered, nothing is written, and the command says why."
    assert main(['report', '--preset', 'smoke']) == 0
    out = capsys.readouterr().out
    assert "20_continual.ipynb: no finished inscl runs of preset 'smoke'" in out and "21_distill.ipynb: no finished distill runs" in out
    assert not (kit/'reports'/'20_continual.ipynb').exists() and not (kit/'reports'/'figures').exists()

def test_probe_grid_smoke(kit, capsys):
    "The probe grid: one papermill cell per model and pattern, the teacher's k sweep, the pattern table and the phenomenon verdict."
    args = ['probe', '--preset', 'smoke', '--roles', 'teacher', '--patterns', 'gpt-3', 'minimal', '--ks', '0', '--jobs', '2', '--threads', '1']
    assert main(args) == 0
    out = capsys.readouterr().out
    runs = kit/'reports'/'runs'/'probe'
    ids = sorted(p.name for p in runs.iterdir() if p.is_dir())
    assert ids == ['smoke-teacher-gpt-3', 'smoke-teacher-minimal']
    preds = pd.read_csv(runs/'smoke-teacher-gpt-3'/'predictions.csv')      # the preset's pattern (gpt-3): k 0 and the preset's k 4
    assert sorted(preds.k.unique()) == [0, 4] and len(preds) == 2 * 32     # one data seed, 32 dev queries
    assert sorted(pd.read_csv(runs/'smoke-teacher-minimal'/'predictions.csv').k.unique()) == [4]
    assert json.loads((runs/'smoke-teacher-gpt-3'/'record.json').read_text())['finished']
    assert 'chosen' in out and 'teacher per phenomenon' in out
    summ = pd.read_csv(runs/'summary-smoke.csv')
    assert {'negation', 'quantifier', 'all'} <= set(summ.phenomenon) and set(summ.role) == {'teacher'}
    assert main(args) == 0 and capsys.readouterr().out.count('done before') == 2

def test_executed_reports_record_their_versions(tmp_path):
    "stamp_report writes the package versions, commit and numerics into an executed report's metadata, keeping its cells."
    import nbformat
    from inscl.batch import stamp_report
    from inscl.presets import load_preset
    nb = tmp_path/'20_continual.ipynb'
    book = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell('# a report')])
    book.metadata['papermill'] = dict(input_path='20_continual.ipynb', output_path='20_continual.ipynb', parameters={})
    nbformat.write(book, nb)
    stamp_report(nb, load_preset('smoke'))
    book = nbformat.read(nb, as_version=4)
    meta = book.metadata['inscl']
    assert meta['preset'] == 'smoke' and meta['versions']['torch'] and meta['versions']['pandas'] and meta['cpu_model']
    assert meta['numerics'].get('OMP_NUM_THREADS') == '1' and book.cells[0].source == '# a report'

def test_local_workers_get_their_own_gpus(tmp_path, monkeypatch):
    "With --jobs 2 and four (fake) GPUs, each running cell holds its own pair, and a freed slot is reused; without GPUs nothing is set."
    import threading, time
    import inscl.batch as b, inscl.cluster as cl
    from inscl.batch import Cell, run_grid
    seen, lock, live = [], threading.Lock(), set()
    def fake_run_cell(c, threads=None, timeout=None, native=False, gpus=None, warm=None):
        with lock: live.add(gpus); seen.append((c.run_id, gpus, len(live)))
        time.sleep(0.3)
        with lock: live.discard(gpus)
        return dict(study=c.study, run_id=c.run_id, status='ran', seconds=0.3, notebook='', error='')
    monkeypatch.setattr(b, 'run_cell', fake_run_cell)
    cells = [Cell('inscl', f'c{i}', {}, tmp_path/f'c{i}') for i in range(4)]
    monkeypatch.setattr(cl, 'visible_gpus', lambda: ['0', '1', '2', '3'])
    rows = run_grid(cells, jobs=2, warm=False)         # run_cell is faked: warm workers would import for nothing
    assert [r['status'] for r in rows] == ['ran'] * 4
    assert {g for _, g, _ in seen} == {'0,2', '1,3'} and max(n for *_, n in seen) == 2   # two disjoint groups, never shared
    seen.clear()
    monkeypatch.setattr(cl, 'visible_gpus', lambda: [])
    run_grid(cells, jobs=2, warm=False)
    assert {g for _, g, _ in seen} == {None}

def test_executor_flags(kit, capsys, monkeypatch):
    "--executor slurm takes the preset's cluster resources and the partition/account from the flags or the environment."
    import inscl.batch as b
    from inscl.batch import _parser, _executor
    from inscl.presets import load_preset
    pytest.importorskip('submitit')
    monkeypatch.setenv('INSCL_SLURM_ACCOUNT', 'lab')
    a = _parser().parse_args(['inscl', '--preset', 'paper', '--executor', 'slurm', '--partition', 'a100'])
    ex = _executor(a, load_preset('paper'))
    assert (ex.resources.gpus, ex.resources.partition, ex.resources.account) == (8, 'a100', 'lab')
    assert ex.folder == load_preset('paper').runs_dir/'slurm'
    assert _executor(_parser().parse_args(['inscl', '--preset', 'smoke']), load_preset('smoke')) is None   # local: the default
    with pytest.raises(SystemExit): _parser().parse_args(['inscl', '--executor', 'pbs'])
    assert "invalid choice: 'pbs'" in capsys.readouterr().err
