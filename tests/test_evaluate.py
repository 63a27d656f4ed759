"Evaluation: generation and per-task scores through a scripted stand-in model (the hand cases are in nbs/continual/07_evaluate)."
import pytest
import torch
from inscl.evaluate import generate, evaluate_tasks
from inscl.models import load_model
from inscl.train import format_prompt

@pytest.fixture(scope='module')
def smoke():
    return load_model('tiny-smoke', device='cpu')

# ---------------------------------------------------------------- generation

PROMPTS = ['Add the numbers.\n\n2 3', 'Reverse the list.\n\n[1, 2, 3, 4, 5, 6]',
           'Is the review positive or negative?\n\nA dull, slow film that I would not see again, not even for free.',
           'Name the colour.\n\nbanana', 'Count the letters in the word.\n\nelephant']

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

# ---------------------------------------------------------------- per-task rows

RECS = [dict(category='A', instruction='Say hi.', input=f'x{i}', outputs=['hi'], id=f'a{i}') for i in range(3)] + \
       [dict(category='B', instruction='Count.', input='1 2', outputs=['two', '2'], id='b0')]

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
