"Wasserstein task distance: the labelled matrix of a small problem solved by hand."
import numpy as np
import pytest
from inscl.embeddings import Encoder
from inscl.similarity import distance_matrix, task_distributions

class _Lookup(Encoder):
    def __init__(self, vecs): self.vecs, self.key = vecs, None
    def encode(self, texts): return np.array([self.vecs[t] for t in texts], dtype=float)

def test_matrix_by_hand():
    # a=e1, b=e2, c=-e1, d=-e2. T0 = {a: 2/3, b: 1/3}, T1 = {a: 1/2, c: 1/2}, T2 = {d: 1}
    enc = _Lookup({'a': [1, 0], 'b': [0, 1], 'c': [-1, 0], 'd': [0, -1]})
    recs = [{'id': i, 'category': c, 'instruction': s} for i, (c, s) in enumerate(
        [('T0', 'a'), ('T0', 'a'), ('T0', 'b'), ('T1', 'a'), ('T1', 'c'), ('T2', 'd')])]
    D = distance_matrix(recs, 'real', enc)
    assert list(D.index) == list(D.columns) == ['T0', 'T1', 'T2']
    assert np.allclose(D.values, D.values.T) and np.allclose(np.diag(D.values), 0)
    # c needs 1/2: 1/3 from b at cost 1, 1/6 from a at cost 2; a->a 1/2 free: W = 1/3 + 1/3
    assert D.loc['T0', 'T1'] == pytest.approx(2/3)
    # everything to d: a at cost 1 (2/3), b at cost 2 (1/3)
    assert D.loc['T0', 'T2'] == pytest.approx(2/3 + 2/3)
    # uniform: T0 = {a: 1/2, b: 1/2}: c takes all of b (cost 1), a->a: W = 1/2
    assert distance_matrix(recs, 'uniform', enc).loc['T0', 'T1'] == pytest.approx(0.5)
    d = task_distributions(recs, 'real', enc)
    assert d['T0'][0] == ['a', 'b'] and np.allclose(d['T0'][2], [2/3, 1/3])
