"encode_instructions with MiniLM (against mean pooling by hand) and with a (model, tokenizer) pair (never cached)."
import numpy as np
import pytest
from inscl.embeddings import encode_instructions, get_encoder, MeanPoolEncoder

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
