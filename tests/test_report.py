"The report layer: loaders and aggregations on hand-made run folders, and both report notebooks executed by papermill."
import json
import numpy as np
import pandas as pd
import pytest
from conftest import ROOT
from inscl.files import save_json, save_table
from inscl.report import (CONTINUAL_COLUMNS, DISTILL_COLUMNS, method_order, continual_runs, continual_experts, instruction_distances,
                          replay_allocation, continual_table, distill_runs, distill_predictions, bootstrap_ci, distill_table,
                          distill_table_text)

# ---------------------------------------------------------------- synthetic run folders, as the runners write them
def write_continual(root, order, tasks, method, seed, R, preset='p', stages=None, dist=None, budget=None, rid=None, weights='real'):
    "A run folder of `run_continual`: R[i][j] = score on tasks[j] after stage i (j <= i); `stages` < len(tasks) = unfinished."
    rid = rid or f'{preset}-{order}-{method}-s{seed}'
    run, n = root/'inscl'/rid, len(tasks) if stages is None else stages
    rows = [dict(run_id=rid, study='inscl', order=order, method=method, seed=seed, stage=i, trained_task=tasks[i], eval_task=tasks[j],
                 rougeL=float(R[i][j]), exact_match=0.0) for i in range(n) for j in range(i + 1)]
    save_table(pd.DataFrame(rows, columns=CONTINUAL_COLUMNS), run/'results.csv')
    save_json(dict(run_id=rid, preset=preset, order=order, tasks=list(tasks), method=method, seed=seed, weights=weights, replay_per_task=2),
              run/'run.json')
    save_json({'finished': [dict(stage=i, task=tasks[i]) for i in range(n)]}, run/'state.json')
    for i in range(n):
        prev = tasks[:i]
        b = budget(i, prev) if budget else {t: 0 for t in prev}
        d = {t: dist[frozenset((tasks[i], t))] for t in prev} if dist else None
        save_json(dict(stage=i, task=tasks[i], method=method, budget=b, distances=d, shortfall=0), run/'plans'/f'stage_{i:02d}.json')

def write_experts(root, U, preset='p', seed=0):
    rows = [dict(run_id=f'experts-{preset}-s{seed}', study='inscl', order='expert', method='expert', seed=seed, stage=0, trained_task=t,
                 eval_task=t, rougeL=u, exact_match=0.0) for t, u in U.items()]
    save_table(pd.DataFrame(rows, columns=CONTINUAL_COLUMNS), root/'inscl'/f'experts-{preset}-s{seed}'/'experts.csv')

def write_distill(root, method, mode, seed, preds, preset='p', mem=(np.nan, np.nan), finished=True, k=4):
    "A run folder of `run_distill` from a predictions table (columns of `predict_nli` plus `split`); results by `summarize_nli`."
    from inscl.distill import summarize_nli
    rid = f'{preset}-{method}' + (f'-{mode}' if mode != '-' else '') + f'-k{k}-gpt-3-s{seed}'
    run = root/'distill'/rid
    save_table(preds, run/'predictions.csv')
    peak = max((m for m in mem if not np.isnan(m)), default=np.nan)
    base = dict(run_id=rid, method=method, teacher='t', student='s', k=k, data_seed=seed, pattern='gpt-3', mode=mode, calibration='none', peak_mem_mb=peak, train_seconds=1.0)
    rows = [{**base, **r} for s in ('eval', 'ood') for r in summarize_nli(preds[preds.split == s], s)]
    save_table(pd.DataFrame(rows, columns=DISTILL_COLUMNS), run/'results.csv')
    save_json(dict(run_id=rid, preset=preset, method=method, mode=mode, k=k, data_seed=seed, finished=finished,
                   peak_mem_mb_train=mem[0], peak_mem_mb_infer=mem[1]), run/'run.json')

def predictions(gold, p_entail, split, heuristic=None, top_is_answer=None):
    "A predictions table: prediction = p(entailed) > 0.5, calibrated prediction the same, heuristics given or `all`."
    gold, p = np.asarray(gold), np.asarray(p_entail, float)
    t = pd.DataFrame(dict(id=[f'{split}{i}' for i in range(len(gold))], gold=gold, p_not=1 - p, p_entail=p, pn_entail=p, pred=(p > 0.5).astype(int)))
    t['query_id'] = t.id                                    # the same queries under every seed
    t['correct'] = t.pred == t.gold
    t['top_is_answer'] = True if top_is_answer is None else top_is_answer
    t['vocab_correct'] = t.correct & t.top_is_answer
    t['top_token'] = 'Yes'
    t['pc_entail'], t['cal_pred'] = t.pn_entail, t.pred
    t['cal_correct'] = t.correct
    t['pp_entail'], t['prior_pred'], t['prior_correct'] = t.pn_entail, t.pred, t.correct
    t['phenomenon'] = 'negation' if split == 'eval' else ''
    t['heuristic'] = heuristic if heuristic is not None else 'all'
    t['subcase'], t['split'] = '', split
    return t

# ---------------------------------------------------------------- schema
def test_one_schema_for_writers_and_readers():
    "The runners and the reports use the very lists of inscl.schemas (no copies that could drift)."
    import inscl.continual, inscl.distill, inscl.report, inscl.schemas as S
    assert inscl.report.CONTINUAL_COLUMNS is S.CONTINUAL_COLUMNS is inscl.continual.CONTINUAL_COLUMNS
    assert inscl.report.DISTILL_COLUMNS is S.DISTILL_COLUMNS is inscl.distill.DISTILL_COLUMNS

# ---------------------------------------------------------------- continual
DIST = {frozenset('AB'): 0.3, frozenset('AC'): 0.9, frozenset('BC'): 0.5}

@pytest.fixture
def cruns(tmp_path):
    R = {'none': [[50, 0, 0], [0, 60, 0], [0, 0, 70]], 'random': [[50, 0, 0], [25, 60, 0], [20, 30, 70]],
         'inscl': [[50, 0, 0], [40, 60, 0], [30, 45, 70]]}
    bud = {'random': lambda i, prev: {t: 2 for t in prev}, 'inscl': lambda i, prev: {t: 2 * i - (len(prev) > 1) if t == prev[0] else 1 for t in prev}}
    for m in R:
        write_continual(tmp_path, 'curriculum', 'ABC', m, 0, R[m], dist=DIST if m == 'inscl' else None, budget=bud.get(m))
        write_continual(tmp_path, 'random', 'CBA', m, 0, R[m], dist=DIST if m == 'inscl' else None, budget=bud.get(m))
    write_continual(tmp_path, 'curriculum', 'ABC', 'inscl', 1, R['inscl'], stages=2)                  # unfinished
    write_continual(tmp_path, 'curriculum', 'ABC', 'inscl', 0, R['inscl'], preset='q')                # another preset
    write_continual(tmp_path, 'curriculum', 'ABC', 'inscl', 0, R['inscl'], dist={k: 9.0 for k in DIST}, weights='uniform',
                    rid='p-curriculum-inscl-s0-uniform')                                               # an ablation
    write_experts(tmp_path, {'A': 100, 'B': 60, 'C': 0})        # C's expert scored 0: left out of RG
    write_experts(tmp_path, {'A': 1, 'B': 1, 'C': 1}, preset='p-big')
    return tmp_path

def test_instruction_distances_and_allocation(cruns):
    D = instruction_distances(cruns, 'p')
    assert list(D.index) == ['A', 'B', 'C']
    np.testing.assert_allclose(D.values, [[0, .3, .9], [.3, 0, .5], [.9, .5, 0]])       # uniform-weight ablation not mixed in
    assert instruction_distances(cruns, 'p', weights='uniform').loc['A', 'C'] == 9.0
    al = replay_allocation(cruns, 'p')
    cur = al[(al.order == 'curriculum') & (al.method == 'inscl')]
    assert cur[cur.stage == 2].set_index('source_task').n.to_dict() == {'A': 3, 'B': 1}
    assert al[(al.method == 'random')].groupby(['order', 'stage']).n.sum().tolist() == [2, 4, 2, 4]

# ---------------------------------------------------------------- distillation
@pytest.fixture
def druns(tmp_path):
    g = [1, 1, 0, 0]
    # in-domain 4 queries, HANS 4 (lexical_overlap: 2, subsequence: 2)
    h = ['lexical_overlap', 'lexical_overlap', 'subsequence', 'subsequence']
    def pr(e, o, nonans=None): return pd.concat([predictions(g, e, 'eval', top_is_answer=nonans), predictions([1, 0, 1, 0], o, 'ood', h)])
    write_distill(tmp_path, 'icl-teacher', '-', 0, pr([.9, .8, .2, .1], [.9, .9, .9, .9]), mem=(np.nan, 700.))   # eval 4/4, ood 2/4
    write_distill(tmp_path, 'icl-teacher', '-', 1, pr([.9, .4, .2, .1], [.9, .1, .1, .1]))                        # eval 3/4, ood 3/4
    write_distill(tmp_path, 'cd', 'full', 0, pr([.9, .4, .6, .1], [.9, .9, .1, .1], nonans=[True, False, False, False]), mem=(1500., 600.))
    write_distill(tmp_path, 'cd', 'full', 1, pr([.9, .9, .9, .9], [.9, .9, .9, .9]), finished=False)             # still running
    write_distill(tmp_path, 'cd', 'lora', 0, pr([.9, .9, .1, .1], [.9, .9, .1, .1]), preset='other')
    return tmp_path

def test_distill_runs_and_table_by_hand(druns):
    runs, preds = distill_runs(druns, 'p'), distill_predictions(druns, 'p')
    assert method_order(runs.method, 'distill') == ['icl-teacher', 'cd-full'] and len(preds) == 3 * 8
    tab = distill_table(runs, preds, n_boot=200)
    t = tab.loc['icl-teacher']
    assert t.eval_accuracy == pytest.approx(0.875) and t.eval_accuracy_sd == pytest.approx(np.std([1, .75], ddof=1))
    assert t.ood_accuracy == pytest.approx(0.625)
    assert t.ood_entailed_accuracy == pytest.approx((1 + 0.5) / 2) and t.ood_non_entailed_accuracy == pytest.approx((0 + 1) / 2)
    assert t.eval_auc == pytest.approx(1.0) and t.eval_accuracy_lo <= t.eval_accuracy <= t.eval_accuracy_hi
    assert t.mem_infer_mb == 700 and np.isnan(t.mem_train_mb) and t.seeds == 2          # memory: the seed that measured it
    c = tab.loc['cd-full']
    assert c.seeds == 1 and np.isnan(c.eval_accuracy_sd) and c.eval_accuracy == 0.5 and c.eval_non_answer_rate == 0.75
    assert (c.mem_train_mb, c.mem_infer_mb, c.peak_mem_mb) == (1500, 600, 1500)
    assert distill_table_text(tab).loc['icl-teacher', 'eval_accuracy'].startswith('0.88 ± 0.18 [')

# ---------------------------------------------------------------- the report notebooks, end to end
TASKS = ['Classification', 'Code', 'Detection', 'Misc']

def synthetic_study(root):
    "Both studies, small: 4 tasks x 2 orders x 3 methods x 2 seeds; 5 distillation methods x 2 seeds."
    rng = np.random.default_rng(0)
    def budget(m):   # random: 2 per previous task; inscl: the same total, split at random
        def b(i, prev):
            if m == 'random' or not prev: return {t: 2 for t in prev}
            return dict(zip(prev, rng.multinomial(2 * len(prev), np.ones(len(prev)) / len(prev)).tolist()))
        return b
    dist = {frozenset((a, b)): float(rng.uniform(0.3, 0.9)) for i, a in enumerate(TASKS) for b in TASKS[:i]}
    for order, tasks in [('curriculum', TASKS), ('random', TASKS[::-1])]:
        for m in ('none', 'random', 'inscl'):
            for s in (0, 1):
                R = np.tril(rng.uniform(0, 60, (4, 4))) * (np.eye(4) if m == 'none' else 1)
                write_continual(root, order, tasks, m, s, R, dist=dist if m == 'inscl' else None, budget=None if m == 'none' else budget(m))
    for s in (0, 1): write_experts(root, dict(zip(TASKS, [50, 40, 0, 30])), seed=s)
    gold = np.tile([1, 0], 30)
    heur = np.repeat(['lexical_overlap', 'subsequence', 'constituent'], 20)
    for method, mode, skill in [('icl-teacher', '-', 0.3), ('icl-student', '-', 0.1), ('zero_shot', '-', 0.0), ('pbft', 'full', 0.6), ('cd', 'lora', 0.5)]:
        for s in (0, 1):
            sc = lambda n, g, k: np.clip(0.5 + (g - 0.5) * k + rng.normal(0, 0.2, n), 0.01, 0.99)
            p = pd.concat([predictions(gold[:40], sc(40, gold[:40], skill), 'eval'), predictions(gold, sc(60, gold, skill / 3), 'ood', heur)])
            write_distill(root, method, mode, s, p, mem=(1000. + 500 * (mode != '-'), 800.) if s == 0 else (np.nan, np.nan))

def _execute(nb, tmp_path, name, **params):
    import papermill as pm
    out = tmp_path/f'{name}.ipynb'
    pm.execute_notebook(str(ROOT/'reports'/nb), str(out), parameters=params, kernel_name='python3', cwd=str(ROOT/'reports'), progress_bar=False)
    return json.loads(out.read_text())

def _stream(nb):
    return ''.join(''.join(o.get('text', '')) for c in nb['cells'] if c['cell_type'] == 'code' for o in c.get('outputs', []))

def test_reports_execute_and_save_their_figures(tmp_path):
    pytest.importorskip('papermill')
    runs, figs = tmp_path/'runs', tmp_path/'figs'
    synthetic_study(runs)
    _execute('20_continual.ipynb', tmp_path, 'c', preset='p', runs_dir=str(runs), figures_dir=str(figs))
    _execute('21_distill.ipynb', tmp_path, 'd', preset='p', runs_dir=str(runs), figures_dir=str(figs), n_boot=100)
    want = [f'continual_{n}.{e}' for n in ('distances', 'replay', 'stages', 'matrix', 'forgetting') for e in ('png', 'svg')]
    want += [f'distill_{n}.{e}' for n in ('accuracy', 'memory', 'hans') for e in ('png', 'svg')] + ['continual_table.csv', 'distill_table.csv']
    have = {p.name for p in figs.iterdir()}
    assert set(want) <= have, f'missing: {sorted(set(want) - have)}'
    assert all((figs/n).stat().st_size > 1000 for n in want if not n.endswith('.csv'))
    ct = pd.read_csv(figs/'continual_table.csv').set_index('method')
    res, ex = continual_runs(runs, 'p'), continual_experts(runs, 'p')
    assert ct.loc['inscl', 'RG mean'] == pytest.approx(continual_table(res, ex).loc['inscl', 'RG mean'])
    dt = pd.read_csv(figs/'distill_table.csv').set_index('method')
    assert list(dt.index) == ['icl-teacher', 'icl-student', 'zero_shot', 'pbft-full', 'cd-lora'] and (dt.seeds == 2).all()

def test_reports_without_runs_say_so(tmp_path):
    pytest.importorskip('papermill')
    for nb, name in [('20_continual.ipynb', 'c'), ('21_distill.ipynb', 'd')]:
        out = _execute(nb, tmp_path, name, preset='none-here', runs_dir=str(tmp_path/'empty'), figures_dir=str(tmp_path/'figs'))
        assert "No finished" in _stream(out) and "preset 'none-here'" in _stream(out)
    assert not (tmp_path/'figs').exists()

# ---------------------------------------------------------------- the two-stage cluster bootstrap (issue 13)
def _crossed(rng, Q=120, S=5, sd_query=1.0, sd_seed=0.3, mu=1.0):
    from scipy.special import expit
    b, u = rng.normal(0, sd_query, Q), rng.normal(0, sd_seed, S)
    c = rng.random((S, Q)) < expit(mu + b[None] + u[:, None])
    return pd.DataFrame(dict(data_seed=np.repeat(np.arange(S), Q), query_id=np.tile(np.arange(Q), S), correct=c.ravel()))

def test_cluster_bootstrap_is_seeded_aligned_and_checked():
    rng = np.random.default_rng(1)
    t = _crossed(rng, Q=30, S=3)
    a = bootstrap_ci(t, 'accuracy', by='data_seed', cluster='query_id', n_boot=200, seed=4)
    assert a == bootstrap_ci(t.sample(frac=1, random_state=0), 'accuracy', by='data_seed', cluster='query_id', n_boot=200, seed=4)  # row order
    assert a[0] == pytest.approx(t.groupby('data_seed').correct.mean().mean())
    one = bootstrap_ci(t, 'accuracy', by='data_seed', cluster='query_id', n_boot=200, seed=4, resample_by=False)
    assert one[0] == a[0] and (one[2] - one[1]) <= (a[2] - a[1]) + 1e-12        # the seed stage only widens
    with pytest.raises(ValueError, match="repeats within group"):
        bootstrap_ci(pd.concat([t, t]), 'accuracy', by='data_seed', cluster='query_id')
