"sample_replay (hand-computed quotas, overflow) and replay_plan (budgets, provenance, errors)."
import json
from collections import Counter
import numpy as np
import pytest
from inscl.embeddings import Encoder
from inscl.replay import sample_replay, replay_plan, replay_budget, REPLAY_METHODS

def recs(counts, task='T'):
    return [{'id': f'{task}-{s}{k}', 'category': task, 'instruction': s} for s, n in counts.items() for k in range(n)]

def per_ins(rs): return dict(Counter(r['instruction'] for r in rs))

def test_fewer_than_instructions_takes_top():
    got = sample_replay(recs({'a': 5, 'b': 5, 'c': 5}), [('c', .5), ('a', .3), ('b', .2)], 2, np.random.default_rng(0))
    assert per_ins(got) == {'a': 1, 'c': 1}

def test_quotas_by_hand():
    # n=10, scores (.5, .3, .2): quotas floor(5), floor(3), floor(2) = (5, 3, 2) exactly
    got = sample_replay(recs({'a': 9, 'b': 9, 'c': 9}), {'a': .5, 'b': .3, 'c': .2}, 10, np.random.default_rng(0))
    assert per_ins(got) == {'a': 5, 'b': 3, 'c': 2}
    # n=4, scores (.9, .05, .05): quotas (3, 1, 1) = 5 > 4, only 'a' may lose one -> (2, 1, 1)
    got = sample_replay(recs({'a': 9, 'b': 9, 'c': 9}), {'a': .9, 'b': .05, 'c': .05}, 4, np.random.default_rng(0))
    assert per_ins(got) == {'a': 2, 'b': 1, 'c': 1}

@pytest.mark.parametrize('seed', range(10))
def test_quota_overflow(seed):
    # 'a' has quota floor(.7 * 10) = 7 but only 2 examples: all of them, the 5 missing come from b and c
    got = sample_replay(recs({'a': 2, 'b': 10, 'c': 10}), {'a': .7, 'b': .2, 'c': .1}, 10, np.random.default_rng(seed))
    k = per_ins(got)
    assert len(got) == 10 and len({r['id'] for r in got}) == 10
    assert k['a'] == 2 and k['b'] >= 2 and k['c'] >= 1

def test_sample_errors():
    r = recs({'a': 2, 'b': 2})
    with pytest.raises(ValueError, match='n=5 but the task has only 4'): sample_replay(r, {'a': .5, 'b': .5}, 5, np.random.default_rng(0))
    with pytest.raises(ValueError, match="'b' has records but no score"): sample_replay(r, {'a': 1.}, 2, np.random.default_rng(0))

TOY = recs({'Sort.': 6, 'Sort, reverse and dedup.': 4}, 'Lists') + recs({'Add.': 8, 'Solve step by step.': 4}, 'Math') \
    + recs({'Summarize.': 10}, 'Summary') + recs({'Title.': 5, 'Short title.': 5}, 'Titles')
ORDER = ['Lists', 'Math', 'Summary', 'Titles']
KW = dict(records=TOY, replay_per_task=4, encoder='hash', seed=3)

@pytest.mark.parametrize('method', REPLAY_METHODS)
def test_plan_size_provenance_determinism(method, tmp_cache):
    p = replay_plan(ORDER, 3, method, **KW)
    assert p['total'] == (0 if method == 'none' else 12) == len(p['examples']) == sum(p['budget'].values())
    byid = {r['id']: r for r in TOY}
    for e in p['examples']:
        assert set(e) == {'source_task', 'instruction', 'id'}
        assert byid[e['id']]['category'] == e['source_task'] != 'Titles'
        assert byid[e['id']]['instruction'] == e['instruction']
    assert len({e['id'] for e in p['examples']}) == len(p['examples'])
    assert json.loads(json.dumps(p)) == p and p == replay_plan(ORDER, 3, method, **KW)

class Lookup(Encoder):
    def __init__(self, vecs): self.vecs, self.key = vecs, None
    def encode(self, texts): return np.array([self.vecs[t] for t in texts], dtype=float)

def test_wasserstein_budget_follows_distance(tmp_cache):
    enc = Lookup({'Sort.': [1, 0, 0], 'Sort, reverse and dedup.': [1, .1, 0], 'Add.': [0, 1, 0], 'Solve step by step.': [.1, 1, 0],
                  'Summarize.': [0, .2, 1], 'Title.': [0, 0, 1], 'Short title.': [0, .1, 1]})
    b = replay_budget(ORDER, 3, 'wdist', TOY, 3, 'uniform', enc)
    d = b['distances']
    assert d['Summary'] < 0.05 < 0.9 < d['Lists'] and d['Math'] > 0.9
    # by hand: shares 9 * W / sum W = (~4.4, ~4.4, ~0.1) -> floors (4, 4, 0), the missing one to the largest W
    assert sum(b['budget'].values()) == 9 and b['budget']['Summary'] == 0
    assert sorted(b['budget'].values()) == [0, 4, 5]
    assert replay_budget(ORDER, 3, 'insinfo', TOY, 3, encoder='hash')['budget'] == {'Lists': 3, 'Math': 3, 'Summary': 3}

def test_plan_never_uses_test_records(tmp_cache):
    with pytest.raises(ValueError, match="is in both the train and the test split"):
        replay_plan(ORDER, 1, 'random', records={'train': TOY, 'test': TOY[:1]}, encoder='hash')
    p = replay_plan(ORDER, 2, 'random', records={'train': TOY[:-5], 'test': TOY[-5:]}, replay_per_task=4, encoder='hash')
    assert not {e['id'] for e in p['examples']} & {r['id'] for r in TOY[-5:]}

def test_plan_errors_name_value(tmp_cache):
    with pytest.raises(ValueError, match="unknown method 'replay'"): replay_plan(ORDER, 1, 'replay', **KW)
    with pytest.raises(ValueError, match='curiculum'): replay_plan('curiculum', 1, 'inscl', **KW)
    with pytest.raises(ValueError, match="task 'Poetry'"): replay_plan(['Lists', 'Poetry'], 1, 'inscl', **KW)

@pytest.mark.slow
def test_curriculum_on_builtin(tmp_cache):
    from inscl.data import task_order
    from inscl.benchmark import builtin_superni
    data = builtin_superni(seed=0)
    p = replay_plan('curriculum', 5, 'inscl', data, replay_per_task=16)
    assert p['total'] == 80 and list(p['budget']) == task_order('curriculum')[:5]
    test_ids = {r['id'] for r in data['test']}
    assert not test_ids & {e['id'] for e in p['examples']}
