"The shared training loop under `accelerate launch`: two CPU processes (gloo) take the steps one process takes."
import os, shutil, subprocess, sys
from pathlib import Path
import pytest
import torch

SCRIPT = Path(__file__).parent/'scripts'/'train_ranks.py'

def _run(cmd, tmp_path, cpu=False):
    env = {**os.environ, 'OMP_NUM_THREADS': '1', 'MKL_NUM_THREADS': '1', 'PYTHONUNBUFFERED': '1', **({'ACCELERATE_USE_CPU': 'true'} if cpu else {})}
    r = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, f"{' '.join(map(str, cmd))} failed:\n{r.stdout[-2000:]}\n{r.stderr[-4000:]}"

@pytest.mark.skipif(shutil.which('accelerate') is None and not (Path(sys.executable).parent/'accelerate').exists(),
                    reason='accelerate CLI not installed')
def test_two_processes_match_one_process_with_the_same_global_batch(tmp_path):
    """2 processes x batch 4 average the gradients of two batches per step; one process with batch 4 and 2
    accumulation steps averages the same two batches (the plan is the same seeded list: process k takes
    batches k, k+2, ...). Tolerance 1e-5: the all-reduce adds in another order than accumulation."""
    accelerate = shutil.which('accelerate') or str(Path(sys.executable).parent/'accelerate')
    # accelerate 1.16: `launch --cpu --num_processes 2` starts ONE process (its simple launcher); two CPU processes
    # need the distributed launcher with ACCELERATE_USE_CPU set, which makes each rank's Accelerator use gloo
    _run([accelerate, 'launch', '--multi_gpu', '--num_processes', '2', '--num_machines', '1', '--mixed_precision', 'no',
          '--dynamo_backend', 'no', '--main_process_port', '29517', str(SCRIPT), 'two.pt', '4', '1'], tmp_path, cpu=True)
    _run([sys.executable, str(SCRIPT), 'one.pt', '4', '2'], tmp_path)
    two, one = torch.load(tmp_path/'two.pt'), torch.load(tmp_path/'one.pt')
    assert two['processes'] == 2 and one['processes'] == 1
    assert two['stats']['steps'] == one['stats']['steps'] == 16              # 64 examples x 2 epochs / (4 x 2)
    assert two['stats']['tokens'] == one['stats']['tokens']
    for n, p in one['params'].items():
        assert torch.allclose(two['params'][n], p, atol=1e-5), (n, (two['params'][n] - p).abs().max())
    torch.testing.assert_close(torch.tensor(two['stats']['loss']), torch.tensor(one['stats']['loss']), atol=1e-5, rtol=0)
