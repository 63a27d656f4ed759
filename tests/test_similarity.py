"Wasserstein task distance: a 3-point problem solved by hand, weights, and the labelled matrix."
import numpy as np
import pytest
from inscl.embeddings import Encoder
from inscl.similarity import task_distance, instruction_weights, distance_matrix, task_distributions

A = np.array([[1., 0.], [0., 1.], [-1., 0.]])
B = np.array([[1., 0.], [0., 1.], [0., -1.]])

def test_three_point_by_hand():
    # cosine costs [[0,1,1],[1,0,2],[2,1,1]]; -e2 must receive mass 1/3 at cost >= 1, and
    # e1->e1, e2->e2, -e1->-e2 achieves exactly that
    assert task_distance(A, B) == pytest.approx(1/3, abs=1e-12)
    # real weights a=(1/2,1/4,1/4), b=(1/4,1/4,1/2): -e2 needs 1/2 at cost >= 1; achieved
    assert task_distance(A, B, [.5, .25, .25], [.25, .25, .5]) == pytest.approx(0.5, abs=1e-12)
    assert task_distance(B, A, [.25, .25, .5], [.5, .25, .25]) == pytest.approx(0.5, abs=1e-12)

def test_identity_and_scaling():
    assert task_distance(A, A) == pytest.approx(0, abs=1e-12)
    assert task_distance(A, 3 * B) == pytest.approx(1/3, abs=1e-12)   # cosine ignores norms

def test_weights_from_records():
    ins, w = instruction_weights([{'instruction': s} for s in 'xyyyzx'])
    assert ins == ['x', 'y', 'z'] and np.allclose(w, [2/6, 3/6, 1/6])
    with pytest.raises(ValueError, match='empty'): instruction_weights([])

def test_errors_name_the_value():
    with pytest.raises(ValueError, match=r'weights_b has shape \(2,\)'): task_distance(A, B, None, [1, 1])
    with pytest.raises(ValueError, match='emb_a has shape'): task_distance(np.zeros((0, 2)), B)
    with pytest.raises(ValueError, match="unknown weights 'flat'"): distance_matrix([{'category': 'T', 'instruction': 'a'}], 'flat', 'hash')

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
