"Continual-learning metrics of several runs at once, grouped by run_id or by (order, method, seed), against values computed by hand."
import pandas as pd
import pytest
from inscl.metrics import score_matrices, relative_gain, backward_transfer

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

def tidy(R, tasks=('X', 'Y', 'Z'), run_id='r1', method='none', seed=0, order='curriculum', drop=()):
    return pd.DataFrame([dict(run_id=run_id, study='inscl', order=order, method=method, seed=seed, stage=i,
                              trained_task=tasks[i], eval_task=t, rougeL=float(R[i][j]),
                              exact_match=float(R[i][j]))
                         for i in range(len(R)) for j, t in enumerate(tasks) if (i, t) not in drop])

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
