"The continual runner on the smoke preset: the table's shape, determinism, resume after a crash, experts, bad input."
import json
import pandas as pd
import pytest
import inscl.continual as C
from inscl.continual import run_continual, train_experts
from inscl.schemas import CONTINUAL_COLUMNS
from inscl.metrics import final_metrics

STAGES = 4

@pytest.fixture(scope='module')
def straight(tmp_path_factory):
    "An uninterrupted 4-stage run with InsCL replay."
    out = tmp_path_factory.mktemp('straight')
    return out, run_continual('curriculum', 'inscl', 0, 'smoke', out_dir=out, stages=STAGES, progress=False)

def test_table_shape(straight):
    out, df = straight
    assert list(df.columns) == CONTINUAL_COLUMNS
    assert df.groupby('stage').size().tolist() == [1, 2, 3, 4]          # every seen task after every stage
    assert df.trained_task.unique().tolist() == ['Classification', 'Text_Quality_Evaluation', 'Code', 'Detection']
    assert df.rougeL.between(0, 100).all() and df.exact_match.isin([0.0, 100.0]).sum() >= 0
    run = out/'smoke-curriculum-inscl-s0'
    assert pd.read_csv(run/'results.csv').shape == df.shape
    plans = [json.loads((run/'plans'/f'stage_{i:02d}.json').read_text()) for i in range(STAGES)]
    assert [len(p['examples']) for p in plans] == [0, 4, 8, 12]            # replay_per_task * stage
    assert all(e['id'] for p in plans for e in p['examples'])              # provenance kept

def test_crash_then_resume_equals_straight_run(straight, tmp_path, monkeypatch):
    "Stage 2 crashes; the rerun resumes from the stage-1 checkpoint and ends with exactly the uninterrupted numbers."
    real = C.train
    def crash(model, tok, data, cfg, **kw):
        if cfg.seed == 2: raise RuntimeError('power cut')
        return real(model, tok, data, cfg, **kw)
    monkeypatch.setattr(C, 'train', crash)
    with pytest.raises(RuntimeError, match='power cut'):
        run_continual('curriculum', 'inscl', 0, 'smoke', out_dir=tmp_path, stages=STAGES, progress=False)
    run = tmp_path/'smoke-curriculum-inscl-s0'
    assert [s['stage'] for s in json.loads((run/'state.json').read_text())['finished']] == [0, 1]
    assert pd.read_csv(run/'results.csv').stage.max() == 1
    monkeypatch.setattr(C, 'train', real)
    df = run_continual('curriculum', 'inscl', 0, 'smoke', out_dir=tmp_path, stages=STAGES, progress=False)
    pd.testing.assert_frame_equal(df, straight[1])

def test_finished_run_is_not_redone(straight, monkeypatch):
    out, df = straight
    monkeypatch.setattr(C, 'train', lambda *a, **k: pytest.fail('a finished run was trained again'))
    pd.testing.assert_frame_equal(run_continual('curriculum', 'inscl', 0, 'smoke', out_dir=out, stages=STAGES, progress=False), df)

def test_experts_cached_and_metrics(straight, tmp_path, monkeypatch):
    out, df = straight
    ex = train_experts('smoke', 0, out_dir=tmp_path, tasks=df.trained_task.unique().tolist(), progress=False)
    assert ex.eval_task.tolist() == df.trained_task.unique().tolist()
    monkeypatch.setattr(C, 'train', lambda *a, **k: pytest.fail('experts were trained again'))
    pd.testing.assert_frame_equal(train_experts('smoke', 0, out_dir=tmp_path, tasks=['Code'], progress=False).reset_index(drop=True),
                                  ex[ex.eval_task == 'Code'].reset_index(drop=True))
    fm = final_metrics(df, experts=ex.assign(rougeL=ex.rougeL.clip(lower=1.0)))  # smoke experts can score 0; RG needs U_j > 0
    assert fm.shape[0] == 1 and {'AP', 'BWT'} <= set(fm.columns)

def test_bad_input(tmp_path):
    with pytest.raises(ValueError, match="unknown method 'replay'"): run_continual('curriculum', 'replay', 0, 'smoke', out_dir=tmp_path)
    with pytest.raises(ValueError, match="unknown order 'curiculum'"): run_continual('curiculum', 'none', 0, 'smoke', out_dir=tmp_path)
    with pytest.raises(ValueError, match=r"tasks missing from the data.*Poetry"):
        run_continual(['Classification', 'Poetry'], 'none', 0, 'smoke', out_dir=tmp_path)

def test_plans_record_what_the_mechanisms_did(straight):
    "Each InsCL plan records the budget's TV distance from the equal split and the DBSCAN tag merges."
    from inscl.allocation import budget_tv
    out, _ = straight
    plans = [json.loads((out/'smoke-curriculum-inscl-s0'/'plans'/f'stage_{i:02d}.json').read_text()) for i in range(STAGES)]
    assert plans[0]['budget_tv'] is None and plans[0]['tag_merges'] is None          # stage 0 replays nothing
    for p in plans[1:]:
        assert p['budget_tv'] == budget_tv(p['budget']) and 0 <= p['budget_tv'] < 1
        assert isinstance(p['tag_merges'], int) and p['tag_merges'] >= 0
