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

def test_inscl_grid_summary_and_failures(kit, capsys, monkeypatch):
    "A small grid runs, prints the final RG/AP table, saves it; a failing cell is reported and makes the exit code 1."
    args = ['inscl', '--preset', 'smoke', '--orders', 'curriculum', '--methods', 'none', 'inscl']
    assert main(args) == 0
    out = capsys.readouterr().out
    assert 'final-stage Relative Gain and AP' in out and 'inscl grid: 2 runs' in out
    summ = pd.read_csv(kit/'reports'/'runs'/'inscl'/'summary-smoke.csv')
    assert summ.method.tolist() == ['inscl', 'none'] and (summ.n_stages == 16).all()
    import inscl.continual as C
    def boom(*a, **k): raise RuntimeError('boom')
    monkeypatch.setattr(C, 'run_continual', boom)
    assert main(['inscl', '--preset', 'smoke', '--orders', 'curriculum', '--methods', 'random']) == 1
    assert "FAILED curriculum/random/s0: RuntimeError('boom')" in capsys.readouterr().out

def test_grid_jobs_match_serial(kit, monkeypatch):
    "Two worker processes give the same numbers as the serial grid (seeded, CPU)."
    from inscl.batch import inscl_grid
    from inscl.presets import load_preset
    p = load_preset('smoke')
    a, _, fa = inscl_grid(p, ['curriculum'], ['none', 'random'], [0], out=kit/'serial')
    shutil.copytree(kit/'serial'/'experts-smoke-s0', kit/'par'/'experts-smoke-s0')   # experts are cached, not retrained
    b, _, fb = inscl_grid(p, ['curriculum'], ['none', 'random'], [0], out=kit/'par', jobs=2, threads=1)
    assert fa == fb == []
    key = ['run_id', 'stage', 'eval_task']
    pd.testing.assert_frame_equal(a.sort_values(key).reset_index(drop=True), b.sort_values(key).reset_index(drop=True))
