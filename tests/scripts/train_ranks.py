"""Train the smoke model with `inscl.train.train` and save its parameters: run once plainly and once under
`accelerate launch --num_processes 2` by tests/test_multiprocess.py.

    python train_ranks.py OUT.pt BATCH_SIZE GRAD_ACCUM"""
import sys
import torch
from inscl.benchmark import builtin_superni
from inscl.models import load_model
from inscl.train import TrainConfig, train

out, bs, accum = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
torch.set_num_threads(1)
model, tok = load_model('tiny-smoke', seed=0, device='cpu')
records = builtin_superni()['train'][::11][:64]
cfg = TrainConfig(lr=1e-3, epochs=2, batch_size=bs, grad_accum=accum, group_by_length=False, max_len=96, seed=0)
stats = train(model, tok, records, cfg, progress=False)
from accelerate import PartialState
if PartialState().is_main_process:
    torch.save({'params': {n: p.detach().clone() for n, p in model.named_parameters()}, 'stats': stats,
                'processes': PartialState().num_processes}, out)
