"The training loop: formatting, batching, determinism, accumulation, NaN handling, LoRA, pluggable losses."
import time
import numpy as np
import pytest
import torch
from inscl.benchmark import builtin_superni
from inscl.models import load_model
from inscl.presets import load_preset
from inscl.train import (TrainConfig, collate, format_example, format_prompt, length_grouped_batches, lm_loss,
                         pad_fraction, random_batches, tokenize_records, train, truncate_middle, add_lora, merge_lora,
                         is_lora, lora_targets, pack, pack_rows, packed_grid, TargetLM)

REC = {'category': 'Mathematics', 'task': 't', 'instruction': 'Add the numbers.', 'input': '2 3',
       'outputs': ['5', 'five'], 'id': 'r0'}

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

# --- formatting --------------------------------------------------------------------------------

def test_prompt_is_the_papers_template():
    assert format_prompt(REC) == 'Add the numbers.\n\n2 3'

def test_labels_mask_exactly_the_prompt(tok):
    ex = format_example(REC, tok, max_len=64)
    prompt = tok('Add the numbers.\n\n2 3')['input_ids']
    target = tok('5', add_special_tokens=False)['input_ids']
    assert prompt[0] == tok.bos_token_id                       # the tiny tokenizer adds BOS
    assert ex['input_ids'] == prompt + target + [tok.eos_token_id]
    assert ex['labels'] == [-100] * len(prompt) + target + [tok.eos_token_id]
    assert tok.decode(ex['input_ids'][:len(prompt)], skip_special_tokens=True) == 'Add the numbers.\n\n2 3'

def test_target_is_first_output_then_eos(tok):
    ex = format_example(REC, tok, max_len=64)
    assert ex['input_ids'][-1] == tok.eos_token_id
    assert tok.decode([i for i in ex['labels'] if i != -100]) == '5</s>'

def test_truncation_keeps_target_and_prompt_ends(tok):
    rec = {**REC, 'input': ' '.join(f'w{i}' for i in range(200)), 'outputs': ['the answer is five']}
    full = tok(format_prompt(rec))['input_ids']
    ex = format_example(rec, tok, max_len=40)
    target = tok('the answer is five', add_special_tokens=False)['input_ids'] + [tok.eos_token_id]
    assert len(ex['input_ids']) == 40
    assert ex['labels'][-len(target):] == target and ex['input_ids'][-len(target):] == target
    p = 40 - len(target)
    assert ex['input_ids'][:p // 2] == full[:p // 2]           # BOS and the instruction's start
    assert ex['input_ids'][p // 2:p] == full[-(p - p // 2):]   # the input's end
    assert ex['labels'][:p] == [-100] * p

def test_truncate_middle():
    assert truncate_middle(list(range(10)), 5) == [0, 1, 7, 8, 9]
    assert truncate_middle([1, 2], 5) == [1, 2]

def test_tokenize_records_matches_format_example(tok, records):
    recs = records[::37]
    assert tokenize_records(recs, tok, 40) == [format_example(r, tok, 40) for r in recs]

def test_record_without_output_is_an_error(tok):
    with pytest.raises(ValueError, match="record 'r0' has no outputs"): format_example({**REC, 'outputs': []}, tok, 32)

# --- batches -----------------------------------------------------------------------------------

def test_grouped_batches_cover_every_index_once_and_are_seeded():
    lengths = np.random.default_rng(1).integers(5, 60, 1003)
    b0 = length_grouped_batches(lengths, 16, seed=0)
    flat = [i for b in b0 for i in b]
    assert sorted(flat) == list(range(1003))
    assert all(len(b) <= 16 for b in b0) and sum(len(b) < 16 for b in b0) == 1   # windows of 800 and 203: one short batch
    assert b0 == length_grouped_batches(lengths, 16, seed=0)
    assert b0 != length_grouped_batches(lengths, 16, seed=1)

def test_grouped_batches_reduce_padding(tok, records):
    L = [len(f['input_ids']) for f in tokenize_records(records, tok, 128)]
    rand = np.mean([pad_fraction(L, random_batches(len(L), 16, s)) for s in range(3)])
    grouped = np.mean([pad_fraction(L, length_grouped_batches(L, 16, s)) for s in range(3)])
    print(f'padding share: random {rand:.3f}, grouped {grouped:.3f}')
    assert rand > 0.2 and grouped < rand / 5

def test_collate_pads_right_with_masked_labels():
    b = collate([{'input_ids': [1, 5, 6], 'labels': [-100, 5, 6]}, {'input_ids': [1, 7], 'labels': [-100, 7]}], pad_id=0)
    assert b['input_ids'].tolist() == [[1, 5, 6], [1, 7, 0]]
    assert b['attention_mask'].tolist() == [[1, 1, 1], [1, 1, 0]]
    assert b['labels'].tolist() == [[-100, 5, 6], [-100, 7, -100]]

# --- config ------------------------------------------------------------------------------------

def test_config_from_preset():
    c = TrainConfig.from_preset(load_preset('smoke').inscl)
    assert (c.lr, c.epochs, c.batch_size, c.grad_accum, c.max_len, c.mode) == (1e-3, 1, 8, 1, 96, 'full')
    assert TrainConfig.from_preset(load_preset('smoke').inscl, mode='lora', seed=4).mode == 'lora'
    with pytest.raises(ValueError, match="unknown training mode 'qlora'"): TrainConfig(mode='qlora')
    with pytest.raises(ValueError, match='TrainConfig.grad_accum=0'): TrainConfig(grad_accum=0)

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

def test_nan_loss_stops_with_the_step(tok):
    feats, calls = equal_features(16), []
    def nan_on_fifth(model, batch):
        calls.append(1)
        loss = lm_loss(model, batch)
        return loss * float('nan') if len(calls) == 5 else loss
    with pytest.raises(FloatingPointError, match=r'loss is nan at step 3 of 4 \(micro-batch 5\)'):
        train(smoke(), tok, feats, TrainConfig(batch_size=4, grad_accum=2, epochs=2), loss_fn=nan_on_fifth, progress=False)
    assert len(calls) == 5                                     # stopped at once

def test_inf_loss_is_an_error_too(tok):
    with pytest.raises(FloatingPointError, match='loss is inf at step 1'):
        train(smoke(), tok, equal_features(4), TrainConfig(batch_size=4),
              loss_fn=lambda m, b: lm_loss(m, b) * float('inf'), progress=False)

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

def test_packed_loss_and_gradients_equal_padded(tok, records):
    m = smoke()
    feats = tokenize_records(records[5::41][:24], tok, 96)
    a = lm_loss(m, collate(feats, tok.pad_token_id)); a.backward()
    ga = {n: p.grad.clone() for n, p in m.named_parameters()}; m.zero_grad()
    bt = pack(feats, tok.pad_token_id, 96)
    b = TargetLM(m)(**bt); b.backward()
    assert abs(a.item() - b.item()) < 1e-5
    for n, p in m.named_parameters(): assert torch.allclose(p.grad, ga[n], atol=1e-5), n
    assert bt['input_ids'].numel() == packed_grid([len(f['input_ids']) for f in feats], 96)

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
