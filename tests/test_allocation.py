"allocate_replay against hand-computed roundings and its degenerate inputs."
import math
import numpy as np
import pytest
from inscl.allocation import allocate_replay

def test_rounding_case_by_hand():
    # shares (1.4, 2.1, 3.5) floor to (1, 2, 3) = 6; the missing one goes to the largest weight
    assert allocate_replay([0.2, 0.3, 0.5], 7) == [1, 2, 4]
    # shares (0.6, 0.6, 0.8) floor to zeros; two missing: largest weight, then the first of the tie
    assert allocate_replay([0.3, 0.3, 0.4], 2) == [1, 0, 1]
    # the paper's rule is not largest remainder: (0.1, 0.45, 0.45) x 9 -> (0.9, 4.05, 4.05) -> (0, 4, 4) + 1 to task 1
    assert allocate_replay([0.1, 0.45, 0.45], 9) == [0, 5, 4]

def test_more_distant_gets_more_and_sums_exactly():
    W = [0.30, 0.35, 0.50, 0.32, 0.41]
    n = allocate_replay(W, 1000)
    assert sum(n) == 1000
    assert np.argsort(W).tolist() == np.argsort(n, kind='stable').tolist()
    assert all(abs(k - w / sum(W) * 1000) < 1 for k, w in zip(n, W))

def test_dict_keeps_keys_in_order():
    assert allocate_replay({'b': 1.0, 'a': 3.0}, 8) == {'b': 2, 'a': 6}

@pytest.mark.parametrize('W,N,want', [([0, 0, 0], 10, [4, 3, 3]), ([0.7], 200, [200]), ([0.2, 0.8], 0, [0, 0]), ([], 0, [])])
def test_degenerate(W, N, want):
    assert allocate_replay(W, N) == want

@pytest.mark.parametrize('W,msg', [([0.2, -0.1], 'distance 1 is -0.1'), ([float('nan')], 'distance 0 is nan'),
                                   ([1.0, float('inf')], 'distance 1 is inf')])
def test_bad_distances_named(W, msg):
    with pytest.raises(ValueError, match=msg): allocate_replay(W, 5)

def test_bad_total():
    with pytest.raises(ValueError, match='total is -1'): allocate_replay([1.0], -1)
    with pytest.raises(ValueError, match='no previous task'): allocate_replay([], 4)

def test_budget_tv():
    from inscl.allocation import budget_tv
    assert budget_tv([8, 8, 8, 8]) == 0 and math.isclose(budget_tv({'a': 12, 'b': 4}), 0.25)
    assert math.isclose(budget_tv([16, 0, 0, 0]), 0.75) and math.isnan(budget_tv([]))
