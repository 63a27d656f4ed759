"replay_plan and replay_budget: size, provenance and determinism for every method, budgets that follow the distance."
import json
import numpy as np
import pytest
from inscl.embeddings import Encoder
from inscl.replay import replay_plan, replay_budget, REPLAY_METHODS

def recs(counts, task='T'):
    return [{'id': f'{task}-{s}{k}', 'category': task, 'instruction': s} for s, n in counts.items() for k in range(n)]

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

@pytest.mark.slow
def test_curriculum_on_builtin(tmp_cache):
    from inscl.data import task_order
    from inscl.benchmark import builtin_superni
    data = builtin_superni(seed=0)
    p = replay_plan('curriculum', 5, 'inscl', data, replay_per_task=16)
    assert p['total'] == 80 and list(p['budget']) == task_order('curriculum')[:5]
    test_ids = {r['id'] for r in data['test']}
    assert not test_ids & {e['id'] for e in p['examples']}
