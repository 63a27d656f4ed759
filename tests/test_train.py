"The training loop: overfitting, determinism, accumulation, LoRA, BitFit, packing, pluggable losses (formatting, batches and config: the notebook)."
import time
import numpy as np
import pytest
import torch
from inscl.benchmark import builtin_superni
from inscl.models import load_model
from inscl.train import (TrainConfig, collate, lm_loss, pad_fraction, random_batches, tokenize_records, train,
                         add_lora, merge_lora, is_lora, lora_targets, pack, pack_rows, packed_grid)

@pytest.fixture(scope='module', autouse=True)
def one_thread():
    "Tiny models gain nothing from intra-op threads, and on a busy CPU spinning threads make them 5-50x slower."
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)

@pytest.fixture(scope='module')
def tok():
    return load_model('tiny-smoke')[1]

@pytest.fixture(scope='module')
def records():
    return builtin_superni()['train']

def smoke(seed=0):
    return load_model('tiny-smoke', seed=seed, device='cpu')[0]

def weights(model):
    return {n: p.detach().clone() for n, p in model.named_parameters()}

def equal_features(n=8, length=12, n_target=3, seed=0):
    "Features of equal length and equal target size, random token ids (avoiding the special tokens)."
    g = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        ids = g.integers(4, 500, length).tolist()
        out.append({'input_ids': ids, 'labels': [-100] * (length - n_target) + ids[-n_target:]})
    return out

# --- training ----------------------------------------------------------------------------------

def test_overfits_eight_examples(tok, records):
    model, data = smoke(), records[:8]
    cfg = TrainConfig(lr=1e-2, epochs=60, batch_size=8, warmup_ratio=0.0, max_len=96)
    t0 = time.perf_counter()
    stats = train(model, tok, data, cfg, progress=False)
    secs = time.perf_counter() - t0
    print(f"overfit: {stats['steps']} steps, {secs:.1f} s, loss {stats['loss'][0]:.3f} -> {stats['final_loss']:.4f}")
    assert stats['steps'] == 60 and stats['loss'][0] > 5
    assert stats['final_loss'] < 0.05
    assert secs < 10
    feats = tokenize_records(data, tok, 96)
    assert stats['tokens'] == 60 * sum(len(f['input_ids']) for f in feats)
    L = [len(f['input_ids']) for f in feats]
    assert stats['pad_fraction'] == pytest.approx(1 - sum(L) / packed_grid(L, 96))   # the packed rows' padding
    with torch.no_grad(): assert lm_loss(model, collate(feats, tok.pad_token_id)).item() < 0.05
    assert not model.training

def test_same_seed_same_weights_bitwise(tok, records):
    cfg = TrainConfig(lr=1e-3, epochs=2, batch_size=4, max_len=64, seed=7)
    runs = []
    for seed in (7, 7, 8):
        m = smoke()
        train(m, tok, records[:24], TrainConfig(**{**cfg.__dict__, 'seed': seed}), progress=False)
        runs.append(weights(m))
    assert all(torch.equal(runs[0][k], runs[1][k]) for k in runs[0])
    assert any(not torch.equal(runs[0][k], runs[2][k]) for k in runs[0])

def test_grad_accumulation_matches_big_batch(tok):
    feats = equal_features(8)
    big, acc = smoke(), smoke()
    base = dict(lr=1e-3, epochs=3, warmup_ratio=0.0, seed=0)
    s1 = train(big, tok, feats, TrainConfig(batch_size=8, grad_accum=1, **base), progress=False)
    s2 = train(acc, tok, feats, TrainConfig(batch_size=4, grad_accum=2, **base), progress=False)
    assert (s1['steps'], s2['steps'], s2['micro_batches']) == (3, 3, 6)
    for (n, a), b in zip(big.named_parameters(), acc.parameters()):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4, msg=n)
    moved = max((a - b).abs().max().item() for a, b in zip(big.parameters(), smoke().parameters()))
    assert moved > 1e-3                                        # the runs did train

def test_lora_wrapped_model_trains_only_adapters(tok, records):
    model = smoke()
    before = weights(model)
    wrapped = add_lora(model, r=4, alpha=8)
    lora0 = {n: p.detach().clone() for n, p in wrapped.named_parameters() if 'lora_' in n}
    stats = train(wrapped, tok, records[:16], TrainConfig(lr=5e-3, epochs=2, batch_size=8, mode='lora', max_len=64), progress=False)
    assert is_lora(wrapped)                                    # a wrapped model stays wrapped
    trainable = {n for n, p in wrapped.named_parameters() if p.requires_grad}
    assert trainable == set(lora0) and stats['n_trainable'] == sum(p.numel() for n, p in wrapped.named_parameters() if n in lora0)
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters() if 'lora_' not in n and n in before)
    assert sum(torch.equal(p, before[n.replace('.base_layer', '')]) for n, p in model.named_parameters() if '.base_layer' in n) > 0
    assert any(not torch.equal(p, lora0[n]) for n, p in wrapped.named_parameters() if 'lora_B' in n)
    base = merge_lora(wrapped)
    assert base is model and any(not torch.equal(p, before[n]) for n, p in base.named_parameters())

def test_lora_mode_on_plain_model_merges_in_place(tok, records):
    model = smoke()
    before = weights(model)
    assert lora_targets(model) == ['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj']
    stats = train(model, tok, records[:16], TrainConfig(lr=5e-3, epochs=2, batch_size=8, mode='lora', lora_r=4, max_len=64), progress=False)
    assert not is_lora(model) and set(weights(model)) == set(before)
    assert stats['n_trainable'] < sum(p.numel() for p in model.parameters()) / 5
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert changed and all(n.endswith('_proj.weight') for n in changed)   # only the LoRA targets moved
    assert torch.equal(model.model.embed_tokens.weight, before['model.embed_tokens.weight'])
    assert all(p.requires_grad for p in model.parameters())

def test_bitfit_needs_biases(tok):
    with pytest.raises(ValueError, match="mode 'bitfit': LlamaForCausalLM has no bias parameters"):
        train(smoke(), tok, equal_features(4), TrainConfig(mode='bitfit'), progress=False)

def test_custom_loss_and_collate_are_used(tok):
    feats = [{**f, 'weight': 2.0} for f in equal_features(8)]
    seen, values = [], []
    def my_collate(fs):
        b = collate(fs, tok.pad_token_id)
        b['weight'] = torch.tensor([f['weight'] for f in fs])
        return b
    def my_loss(model, batch):
        w = batch.pop('weight')
        seen.append(w.shape[0])
        loss = w.mean() * lm_loss(model, batch)
        values.append(loss.item())
        return loss
    stats = train(smoke(), tok, feats, TrainConfig(batch_size=4, epochs=2), loss_fn=my_loss, collate_fn=my_collate, progress=False)
    assert seen == [4, 4, 4, 4] and stats['micro_batches'] == 4
    assert stats['loss'] == pytest.approx(values)
    with torch.no_grad(): plain = lm_loss(smoke(), collate(feats[:4], tok.pad_token_id)).item()
    assert values[0] == pytest.approx(2 * plain, rel=0.05)     # doubled (first batch, untrained weights)

def test_empty_data_is_an_error(tok):
    with pytest.raises(ValueError, match='no training data'): train(smoke(), tok, [], TrainConfig(), progress=False)

def test_failed_lora_stage_leaves_the_model_plain_and_unchanged(tok):
    model = smoke()
    before = weights(model)
    with pytest.raises(FloatingPointError, match='loss is nan at step 1'):
        train(model, tok, equal_features(8), TrainConfig(batch_size=4, mode='lora'),
              loss_fn=lambda m, b: lm_loss(m, b) * float('nan'), progress=False)
    assert not is_lora(model) and set(weights(model)) == set(before)
    assert all(torch.equal(p, before[n]) and p.requires_grad for n, p in model.named_parameters())

def test_bitfit_trains_only_biases_and_restores_flags(tok):
    from transformers import LlamaConfig, LlamaForCausalLM
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                         num_attention_heads=2, num_key_value_heads=2, attention_bias=True, mlp_bias=True))
    before = weights(model)
    stats = train(model, tok, equal_features(8), TrainConfig(lr=1e-2, batch_size=4, epochs=2, mode='bitfit'), progress=False)
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert changed and all(n.endswith('.bias') for n in changed)
    assert stats['n_trainable'] == sum(p.numel() for n, p in model.named_parameters() if n.endswith('.bias'))
    assert all(p.requires_grad for p in model.parameters())

def test_random_batches_option(tok, records):
    feats = tokenize_records(records[:64], tok, 96)
    g = train(smoke(), tok, feats, TrainConfig(batch_size=8, epochs=1, pack=False), progress=False)
    r = train(smoke(), tok, feats, TrainConfig(batch_size=8, epochs=1, group_by_length=False, pack=False), progress=False)
    rp = train(smoke(), tok, feats, TrainConfig(batch_size=8, epochs=1, group_by_length=False), progress=False)
    L = [len(f['input_ids']) for f in feats]
    assert r['pad_fraction'] == pytest.approx(pad_fraction(L, random_batches(64, 8, np.random.default_rng(0))))
    assert g['pad_fraction'] < r['pad_fraction'] / 3 and g['steps'] == r['steps'] == rp['steps'] == 8
    assert rp['pad_fraction'] < r['pad_fraction'] / 2     # packing the same random draw removes most padding

# --- packed batches ------------------------------------------------------------------------------

def test_pack_rows_places_every_example_once_in_balanced_rows():
    g = np.random.default_rng(0)
    for _ in range(50):
        L = g.integers(1, 60, g.integers(1, 40)).tolist()
        rows = pack_rows(L, 64)
        assert sorted(i for r in rows for i in r) == list(range(len(L)))
        assert len(rows) == max(1, min(len(L), -(-sum(L) // 64)))
        fills = [sum(L[i] for i in r) for r in rows]
        assert max(fills) - min(fills) <= max(L)            # greedy balance: rows differ by at most one example

def test_packed_example_sees_only_itself(tok, records):
    "An example's logits do not depend on the examples packed beside it."
    m = smoke()
    feats = tokenize_records(records[3::97][:6], tok, 96)
    alone = pack(feats[:1], tok.pad_token_id, 96)
    with_others = pack(feats, tok.pad_token_id, 200)          # one long row holds several examples
    dec = m.get_decoder()
    with torch.no_grad():
        h1 = dec(input_ids=alone['input_ids'], attention_mask=alone['attention_mask'], position_ids=alone['position_ids']).last_hidden_state
        h2 = dec(input_ids=with_others['input_ids'], attention_mask=with_others['attention_mask'], position_ids=with_others['position_ids']).last_hidden_state
    n = len(feats[0]['input_ids'])
    row, col = [(r, c) for r in range(with_others['input_ids'].shape[0]) for c in range(with_others['input_ids'].shape[1] - n + 1)
                if with_others['input_ids'][r, c:c + n].tolist() == feats[0]['input_ids'] and with_others['position_ids'][r, c] == 0][0]
    assert torch.allclose(h1[0, :n], h2[row, col:col + n], atol=1e-5)

def test_packed_and_padded_training_agree_up_to_rounding(tok, records):
    feats = tokenize_records(records[::53][:32], tok, 96)
    cfg = TrainConfig(lr=1e-3, epochs=2, batch_size=8, group_by_length=False, max_len=96, seed=0)
    m1, m2 = smoke(), smoke()
    s1 = train(m1, tok, feats, cfg, progress=False)
    s2 = train(m2, tok, feats, TrainConfig(**{**cfg.__dict__, 'pack': False}), progress=False)
    assert s1['tokens'] == s2['tokens'] and s1['steps'] == s2['steps']
    assert s1['pad_fraction'] < s2['pad_fraction']
    np.testing.assert_allclose(s1['loss'], s2['loss'], atol=1e-4)
    for (n, a), b in zip(m1.named_parameters(), m2.parameters()): assert torch.allclose(a, b, atol=1e-4), n

def test_packed_lora_trains_adapters_through_target_lm(tok, records):
    m = smoke(); w0 = weights(m)
    stats = train(m, tok, records[:16], TrainConfig(lr=1e-2, epochs=1, batch_size=8, mode='lora', max_len=64), progress=False)
    assert stats['mode'] == 'lora' and not is_lora(m) and type(m).__name__.endswith('ForCausalLM')
    assert any(not torch.equal(p, w0[n]) for n, p in m.named_parameters())
