"Continual-learning metrics on small score matrices computed by hand."
import numpy as np
import pandas as pd
import pytest
from inscl.metrics import (score_matrix, score_matrices, trained_order, expert_scores, relative_gain, average_performance,
                           forgetting, backward_transfer, final_metrics)

# Training order X, Y, Z (stage 0 trains X). R[i][j] = score on task j after stage i.
R = [[50, 10, 0],
     [20, 60, 30],
     [40, 30, 70]]
U = {'X': 100, 'Y': 50, 'Z': 70}
# By hand:
#   RG_0 = NaN; RG_1 = 100/1 * 20/100 = 20; RG_2 = 100/2 * (40/100 + 30/50) = 50
#   AP = 50, (20+60)/2 = 40, (40+30+70)/3 = 46.67
#   F_X = max(R00, R10) - R20 = 50 - 40 = 10; F_Y = R11 - R21 = 60 - 30 = 30
#   BWT = ((40-50) + (30-60)) / 2 = -20

def tidy(R, tasks=('X', 'Y', 'Z'), run_id='r1', method='none', seed=0, order='curriculum', drop=(), em=None):
    return pd.DataFrame([dict(run_id=run_id, study='inscl', order=order, method=method, seed=seed, stage=i,
                              trained_task=tasks[i], eval_task=t, rougeL=float(R[i][j]),
                              exact_match=float((em or R)[i][j]))
                         for i in range(len(R)) for j, t in enumerate(tasks) if (i, t) not in drop])

def test_score_matrix_orders_tasks_by_training():
    df = tidy(R, tasks=('Z', 'X', 'Y')).sample(frac=1, random_state=1)  # training order is not alphabetical; rows shuffled
    m = score_matrix(df)
    assert list(m.columns) == ['Z', 'X', 'Y'] and list(m.index) == [0, 1, 2]
    assert m.values.tolist() == [[50., 10., 0.], [20., 60., 30.], [40., 30., 70.]]
    assert trained_order(df) == ['Z', 'X', 'Y']

def test_score_matrix_missing_cell_is_nan_and_extra_tasks_last():
    extra = pd.DataFrame([dict(run_id='r1', study='inscl', order='curriculum', method='none', seed=0, stage=2,
                               trained_task='Z', eval_task='W', rougeL=5., exact_match=0.)])
    m = score_matrix(pd.concat([tidy(R, drop=[(0, 'Z')]), extra]))
    assert list(m.columns) == ['X', 'Y', 'Z', 'W']
    assert np.isnan(m.at[0, 'Z']) and np.isnan(m.at[0, 'W']) and m.at[2, 'W'] == 5.

def test_score_matrix_errors():
    df = tidy(R)
    with pytest.raises(ValueError, match='holds 2 runs'): score_matrix(pd.concat([df, tidy(R, run_id='r2')]))
    with pytest.raises(ValueError, match="no column.*'trained_task'"): score_matrix(df.drop(columns='trained_task'))
    bad = df.copy(); bad.loc[(bad.stage == 1) & (bad.eval_task == 'Y'), 'trained_task'] = 'Q'
    with pytest.raises(ValueError, match='stage 1 has trained_task'): score_matrix(bad)
    with pytest.raises(ValueError, match=r'no rows for stage\(s\) \[0\]'): score_matrix(df[df.stage > 0])
    with pytest.raises(ValueError, match='trained at more than one stage'): score_matrix(tidy(R, tasks=('X', 'Y', 'X')))

def test_relative_gain_by_hand():
    rg = relative_gain(tidy(R), U)
    assert rg.stage.tolist() == [0, 1, 2] and rg.trained_task.tolist() == ['X', 'Y', 'Z']
    assert np.isnan(rg.RG[0])
    assert rg.RG[1:].tolist() == pytest.approx([20., 50.])
    # the current task's cell and the not-yet-trained cells are not used
    assert relative_gain(tidy(R, drop=[(0, 'Y'), (0, 'Z'), (1, 'Y'), (1, 'Z'), (2, 'Z')]), U).RG[1:].tolist() == pytest.approx([20., 50.])

def test_relative_gain_expert_errors_name_the_task():
    with pytest.raises(ValueError, match="no expert score for task 'Y'"): relative_gain(tidy(R), {'X': 100})
    with pytest.raises(ValueError, match="expert score of task 'X' is 0"): relative_gain(tidy(R), {'X': 0, 'Y': 50})
    with pytest.raises(ValueError, match="no expert score for task 'Y'"): relative_gain(tidy(R), {'X': 100, 'Y': float('nan')})

def test_relative_gain_missing_needed_cell():
    with pytest.raises(ValueError, match="run 'r1': no score for task 'X' after stage 2, which RG_2 needs"):
        relative_gain(tidy(R, drop=[(2, 'X')]), U)

def test_experts_from_a_table():
    rows = [dict(run_id=f'e-{t}-{s}', stage=0, trained_task=t, eval_task=e, seed=s,
                 rougeL=(u + (10 if s else -10)) if e == t else 999.) for t, u in U.items() for s in (0, 1) for e in U]
    ex = pd.DataFrame(rows)
    assert expert_scores(ex) == {'X': 100., 'Y': 50., 'Z': 70.}            # own task only, mean over seeds
    assert relative_gain(tidy(R), ex).RG[1:].tolist() == pytest.approx([20., 50.])
    assert expert_scores(pd.Series(U)) == {'X': 100., 'Y': 50., 'Z': 70.}
    with pytest.raises(ValueError, match="expert table has no column"): expert_scores(ex.drop(columns='rougeL'))

def test_average_performance_by_hand():
    ap = average_performance(tidy(R))
    assert ap.AP.tolist() == pytest.approx([50., 40., 140 / 3])
    with pytest.raises(ValueError, match="task 'Y' after stage 1, which AP_1 needs"):
        average_performance(tidy(R, drop=[(1, 'Y')]))
    assert average_performance(tidy(R, drop=[(0, 'Y'), (1, 'Z')])).AP.tolist() == pytest.approx([50., 40., 140 / 3])

def test_forgetting_by_hand():
    f = forgetting(tidy(R))
    assert f[['eval_task', 'task_index']].values.tolist() == [['X', 0], ['Y', 1]]
    assert f.forgetting.tolist() == pytest.approx([10., 30.])
    # only stages l >= j count: a high zero-shot score on Y at stage 0 is not forgotten knowledge
    R2 = [[50, 95, 0], [20, 60, 30], [40, 30, 70]]
    assert forgetting(tidy(R2)).forgetting.tolist() == pytest.approx([10., 30.])
    with pytest.raises(ValueError, match="task 'X' after stage 1, which forgetting of 'X' needs"):
        forgetting(tidy(R, drop=[(1, 'X')]))
    with pytest.raises(ValueError, match="task 'Y' after stage 2"):
        forgetting(tidy(R, drop=[(2, 'Y')]))

def test_backward_transfer_by_hand():
    b = backward_transfer(tidy(R))
    assert b.n_stages.tolist() == [3] and b.BWT.tolist() == pytest.approx([-20.])
    assert backward_transfer(tidy(R, drop=[(1, 'X'), (0, 'Y')])).BWT.tolist() == pytest.approx([-20.])   # unneeded cells
    with pytest.raises(ValueError, match="task 'Y' after stage 1, which BWT needs"):
        backward_transfer(tidy(R, drop=[(1, 'Y')]))
    one = tidy([[50, 10, 0]])
    assert np.isnan(backward_transfer(one).BWT[0]) and len(forgetting(one)) == 0

def test_other_metric_column():
    em = [[100, 0, 0], [0, 100, 0], [100, 0, 100]]
    df = tidy(R, em=em)
    assert average_performance(df, metric='exact_match').AP.tolist() == pytest.approx([100., 50., 200 / 3])
    assert backward_transfer(df, metric='exact_match').BWT.tolist() == pytest.approx([-50.])

def test_grouping_by_run_or_by_order_method_seed():
    Rgood = [[50, 0, 0], [50, 50, 0], [50, 50, 50]]
    df = pd.concat([tidy(R, run_id='a', seed=0), tidy(Rgood, run_id='b', seed=1), tidy(Rgood, run_id='c', method='inscl')])
    for by in ('run_id', ['order', 'method', 'seed']):
        b = backward_transfer(df, by=by)
        assert b.run_id.tolist() == ['a', 'b', 'c'] and b.BWT.tolist() == pytest.approx([-20., 0., 0.])
        assert {'order', 'method', 'seed', 'study'} <= set(b.columns)
    assert len(score_matrices(df)) == 3
    rg = relative_gain(df, U, by=['order', 'method', 'seed'])
    assert rg.groupby('run_id').RG.last().to_dict() == pytest.approx({'a': 50., 'b': 50 * (50/100 + 50/50), 'c': 75.})
    # two runs under the same (order, method, seed) cannot be told apart
    dup = pd.concat([tidy(R, run_id='a'), tidy(R, run_id='z')])
    with pytest.raises(ValueError, match=r'share \(stage, eval_task\)'): backward_transfer(dup, by=['order', 'method', 'seed'])

def test_final_metrics():
    df = pd.concat([tidy(R, run_id='a'), tidy([[50, 0, 0], [50, 50, 0], [50, 50, 50]], run_id='b', method='inscl')])
    fm = final_metrics(df, U)
    assert fm.run_id.tolist() == ['a', 'b'] and fm.final_stage.tolist() == [2, 2]
    assert fm.RG.tolist() == pytest.approx([50., 75.])
    assert fm.AP.tolist() == pytest.approx([140 / 3, 50.])
    assert fm.forgetting.tolist() == pytest.approx([20., 0.])
    assert fm.BWT.tolist() == pytest.approx([-20., 0.])
    assert 'RG' not in final_metrics(df).columns
