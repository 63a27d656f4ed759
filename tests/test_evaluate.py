"Evaluation: ROUGE-L and exact match on hand cases, batched greedy generation, per-task rows."
import warnings
import numpy as np
import pytest
import torch
from inscl.evaluate import rouge_l, exact_match, normalize_answer, generate, evaluate_tasks
from inscl.models import load_model
from inscl.train import format_prompt

@pytest.fixture(scope='module')
def smoke():
    return load_model('tiny-smoke', device='cpu')

# ---------------------------------------------------------------- ROUGE-L

def test_rouge_identical_and_disjoint():
    assert rouge_l('the cat sat on the mat', ['the cat sat on the mat']) == 100.
    assert rouge_l('The Cat, sat!', 'the cat sat') == 100.          # case and punctuation are not words
    assert rouge_l('red green', ['blue yellow']) == 0.
    assert rouge_l('', ['anything']) == 0.

def test_rouge_lcs_by_hand():
    # pred 'a b c d e', ref 'a x c e': LCS = a c e (3); P = 3/5, R = 3/4, F = 2PR/(P+R) = 2/3 * 0.9 / ... computed below
    p, r = 3 / 5, 3 / 4
    assert rouge_l('a b c d e', 'a x c e') == pytest.approx(100 * 2 * p * r / (p + r), abs=1e-9)   # 66.67
    # order matters: 'x y z' vs 'z y x' has LCS 1 -> P = R = 1/3
    assert rouge_l('x y z', 'z y x') == pytest.approx(100 / 3, abs=1e-9)

def test_rouge_multi_reference_takes_max():
    refs = ['completely different words', 'the answer is four', 'answer']
    assert rouge_l('the answer is four', refs) == 100.
    assert rouge_l('answer four', refs) == pytest.approx(max(rouge_l('answer four', r) for r in refs))
    assert rouge_l('answer four', refs) == pytest.approx(100 * 2 * (2/2) * (2/4) / (1 + 0.5))      # vs 'the answer is four'

def test_rouge_stems_like_superni():
    assert rouge_l('cats running', ['cat runs']) == 100.                  # Porter stemmer, as SuperNI's English scorer

def test_rouge_needs_a_reference():
    with pytest.raises(ValueError, match='references is empty'): rouge_l('x', [])

# ---------------------------------------------------------------- exact match

def test_exact_match_normalisation():
    assert normalize_answer('  Two\t  Words \n') == 'two words'
    assert exact_match('  POSITIVE ', ['positive']) == 100.
    assert exact_match('New   York', ['new york', 'NYC']) == 100.
    assert exact_match('positive.', ['positive']) == 0.
    assert exact_match('no', 'No') == 100.                               # a single reference string
    assert exact_match('yes', ['no', 'maybe']) == 0.

# ---------------------------------------------------------------- generation

PROMPTS = ['Add the numbers.\n\n2 3', 'Reverse the list.\n\n[1, 2, 3, 4, 5, 6]',
           'Is the review positive or negative?\n\nA dull, slow film that I would not see again, not even for free.',
           'Name the colour.\n\nbanana', 'Count the letters in the word.\n\nelephant']

def test_batched_equals_one_at_a_time(smoke):
    model, tok = smoke
    batched = generate(model, tok, PROMPTS, max_new_tokens=8, batch_size=4, progress=False)
    single = generate(model, tok, PROMPTS, max_new_tokens=8, batch_size=1, progress=False)
    assert len(batched) == len(PROMPTS) and all(isinstance(x, str) for x in batched)
    mismatches = sum(a != b for a, b in zip(batched, single))
    assert mismatches == 0, f'{mismatches} of {len(PROMPTS)} batched greedy answers differ from unbatched ones'
    # and the unbatched path equals plain model.generate on the prompt alone
    for p, b in zip(PROMPTS, single):
        enc = tok(p, return_tensors='pt')
        with torch.inference_mode(): out = model.generate(**enc, max_new_tokens=8, do_sample=False, pad_token_id=tok.pad_token_id)
        assert tok.decode(out[0, enc['input_ids'].shape[1]:], skip_special_tokens=True).strip() == b

def test_generate_keeps_padding_side(smoke):
    model, tok = smoke
    tok.padding_side = 'right'
    try:
        generate(model, tok, PROMPTS[:2], max_new_tokens=2, progress=False)
        assert tok.padding_side == 'right'
    finally: tok.padding_side = 'left'

class Scripted(torch.nn.Module):
    "A stand-in LM whose `generate` answers each prompt with scripted tokens, then EOS, then junk; it records its batches."
    def __init__(self, tok, answers, ctx=512):
        super().__init__()
        self.tok, self.answers, self.batches = tok, answers, []
        self.config = type('C', (), {'max_position_embeddings': ctx})()
        self.generation_config = type('G', (), {'eos_token_id': tok.eos_token_id})()
        self.device = torch.device('cpu')
    def generate(self, input_ids, attention_mask, max_new_tokens, do_sample, pad_token_id, eos_token_id, **kw):
        assert do_sample is False and pad_token_id == self.tok.pad_token_id and self.tok.eos_token_id in eos_token_id
        assert (attention_mask[:, -1] == 1).all(), 'padding must be on the left'
        self.batches.append(attention_mask.sum(1).tolist())
        rows = []
        for x, m in zip(input_ids, attention_mask):
            prompt = self.tok.decode(x[m.bool()], skip_special_tokens=True)
            a = self.tok(self.answers.get(prompt, 'zzz'), add_special_tokens=False)['input_ids']
            row = a + [self.tok.eos_token_id] + self.tok('junk after eos', add_special_tokens=False)['input_ids']
            rows.append((row + [pad_token_id] * max_new_tokens)[:max_new_tokens])
        return torch.cat([input_ids, torch.tensor(rows)], 1)

def test_generate_strips_prompt_cuts_at_eos_restores_order(smoke):
    _, tok = smoke
    answers = {p: f'answer {k}' for k, p in enumerate(PROMPTS)}
    m = Scripted(tok, answers)
    out = generate(m, tok, PROMPTS, max_new_tokens=12, batch_size=2, progress=False)
    assert out == [f'answer {k}' for k in range(len(PROMPTS))]
    lens = [n for b in m.batches for n in b]
    assert lens == sorted(lens, reverse=True)                            # longest first, fewer pads per batch
    assert [len(b) for b in m.batches] == [2, 2, 1]

def test_generate_cuts_long_prompts_in_the_middle(smoke):
    _, tok = smoke
    m = Scripted(tok, {}, ctx=16)
    with pytest.warns(UserWarning, match='1 of 2 prompts are longer than 12 tokens'):
        generate(m, tok, ['short', ' '.join(['word'] * 40)], max_new_tokens=4, progress=False)
    assert max(n for b in m.batches for n in b) == 12

def test_generate_empty_and_bad_batch(smoke):
    model, tok = smoke
    assert generate(model, tok, [], 4) == []
    with pytest.raises(ValueError, match='batch_size=0'): generate(model, tok, PROMPTS, 4, batch_size=0)

# ---------------------------------------------------------------- per-task rows

RECS = [dict(category='A', instruction='Say hi.', input=f'x{i}', outputs=['hi'], id=f'a{i}') for i in range(3)] + \
       [dict(category='B', instruction='Count.', input='1 2', outputs=['two', '2'], id='b0')]

def test_evaluate_tasks_rows(smoke):
    model, tok = smoke
    rows = evaluate_tasks(model, tok, RECS, max_new_tokens=4, n_per_task=2, progress=False)
    assert [list(r) for r in rows] == [['eval_task', 'n', 'rougeL', 'exact_match']] * 2
    assert [(r['eval_task'], r['n']) for r in rows] == [('A', 2), ('B', 1)]
    assert all(0 <= r['rougeL'] <= 100 and 0 <= r['exact_match'] <= 100 for r in rows)
    by_task = evaluate_tasks(model, tok, {'B': RECS[3:], 'A': RECS[:3]}, max_new_tokens=4, progress=False)
    assert [(r['eval_task'], r['n']) for r in by_task] == [('B', 1), ('A', 3)]

def test_evaluate_tasks_scores_with_scripted_model(smoke):
    _, tok = smoke
    answers = {format_prompt(RECS[0]): 'hi', format_prompt(RECS[1]): 'hi there', format_prompt(RECS[2]): 'bye',
               format_prompt(RECS[3]): '2'}
    rows, ex = evaluate_tasks(Scripted(tok, answers), tok, RECS, max_new_tokens=10, predictions=True, progress=False)
    assert [e['prediction'] for e in ex] == ['hi', 'hi there', 'bye', '2']
    # A: 100, 2*(1/2*1)/(1.5)*100 = 66.67, 0 -> mean 55.56; exact: 100, 0, 0
    assert rows[0]['rougeL'] == pytest.approx((100 + 200/3 + 0) / 3)
    assert rows[0]['exact_match'] == pytest.approx(100 / 3)
    assert (rows[1]['rougeL'], rows[1]['exact_match']) == (100., 100.)   # matches the second reference

def test_evaluate_tasks_errors(smoke):
    model, tok = smoke
    with pytest.raises(ValueError, match="'outputs' is empty"):
        evaluate_tasks(model, tok, [dict(RECS[0], outputs=[])], 4, progress=False)
    with pytest.raises(ValueError, match="has no field 'category'"):
        evaluate_tasks(model, tok, [{k: v for k, v in RECS[0].items() if k != 'category'}], 4, progress=False)
