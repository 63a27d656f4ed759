"encode_instructions: normalisation, caching by content hash, pluggable encoders, MiniLM."
import numpy as np
import pytest
from inscl import embeddings
from inscl.embeddings import encode_instructions, get_encoder, HashEncoder, MeanPoolEncoder

class Counting(HashEncoder):
    def __init__(self): super().__init__(8); self.key = 'counting'; self.calls = []
    def encode(self, texts): self.calls.append(list(texts)); return 3 * super().encode(texts)

def test_unit_float32_and_order(tmp_cache):
    E = encode_instructions(['b', 'a', 'b'], 'hash:32')
    assert E.dtype == np.float32 and E.shape == (3, 32)
    assert np.allclose(np.linalg.norm(E, axis=1), 1, atol=1e-6) and np.array_equal(E[0], E[2])

def test_cache_by_content(tmp_cache):
    enc = Counting()
    a = encode_instructions(['x', 'y'], enc)
    embeddings._STORES.clear()
    b = encode_instructions(['y', 'z', 'x'], enc)
    assert enc.calls == [['x', 'y'], ['z']]                 # only the new text was encoded
    assert np.array_equal(b[[2, 0]], a)
    assert len(list((tmp_cache/'embeddings'/'counting').glob('*.npz'))) == 2

def test_errors():
    with pytest.raises(ValueError, match='no texts'): encode_instructions([], 'hash')
    with pytest.raises(ValueError, match="text 1 is None"): encode_instructions(['a', None], 'hash')
    with pytest.raises(ValueError, match="'hash:0'"): get_encoder('hash:0')

@pytest.fixture(scope='module')
def minilm():
    return get_encoder('minilm')

@pytest.mark.slow
def test_minilm_matches_hand_mean_pooling(minilm, tmp_cache):
    import torch
    texts = ['Classify the sentiment of the review.', 'Add the two numbers and give the sum.']
    E = encode_instructions(texts, minilm)
    tok, model = minilm.tokenizer, minilm.model
    with torch.no_grad():
        rows = []
        for t in texts:                                          # one at a time: no padding at all
            h = model(**tok(t, return_tensors='pt')).last_hidden_state[0].mean(0).numpy()
            rows.append(h / np.linalg.norm(h))
    assert E.shape == (2, 384) and np.allclose(E, np.array(rows), atol=1e-5)
    # related instructions are closer than unrelated ones
    F = encode_instructions(['Decide if the movie review is positive or negative.'], minilm)
    assert float(F[0] @ E[0]) > float(F[0] @ E[1])

@pytest.mark.slow
def test_pair_encoder_is_not_cached(minilm, tmp_cache):
    enc = get_encoder((minilm.model, minilm.tokenizer))
    assert isinstance(enc, MeanPoolEncoder) and enc.key is None
    encode_instructions(['hello there'], enc)
    assert not (tmp_cache/'embeddings').exists() or not any((tmp_cache/'embeddings').iterdir())
