"""What pinned CPU numerics cost: one `tiny` training stage sequence with the pinned variables and with the host's
native kernels, in fresh processes (the variables act before torch is imported), alternated, in one run.

    python bench/bench_pin.py [--stages 2] [--epochs 12] [--repeats 3]

Prints the seconds of each run, the median ratio pinned / native, and whether the two give the same final loss
(they need not: that is the point of the pin)."""
import argparse, json, os, statistics, subprocess, sys
from common import RESULTS, add_common_args

CHILD = r'''
import json, sys, time, torch
from inscl.presets import load_preset
from inscl.continual import study_data
from inscl.data import task_order
from inscl.models import load_model
from inscl.train import train, TrainConfig
stages, epochs, threads = map(int, sys.argv[1:4])
torch.set_num_threads(threads)
p = load_preset('tiny')
data = study_data(p)
model, tok = load_model(p.inscl.model, preset=p.name, seed=p.seed)
t0, losses = time.perf_counter(), []
for i, task in enumerate(task_order('curriculum')[:stages]):
    cfg = TrainConfig.from_preset(p.inscl, seed=i, epochs=epochs)
    losses.append(train(model, tok, [r for r in data['train'] if r['category'] == task], cfg, progress=False)['final_loss'])
print(json.dumps(dict(seconds=time.perf_counter() - t0, losses=losses, capability=torch.backends.cpu.get_cpu_capability())))
'''

def run(pinned:bool, stages:int, epochs:int, threads:int) -> dict:
    "One child process, pinned or native; its seconds, losses and the CPU capability torch used."
    from inscl.batch import numerics_env
    env = {**os.environ, **numerics_env(threads, native=not pinned)}
    if not pinned:
        for k in ('ATEN_CPU_CAPABILITY', 'MKL_CBWR', 'ONEDNN_MAX_CPU_ISA'): env.pop(k, None)
    r = subprocess.run([sys.executable, '-c', CHILD, str(stages), str(epochs), str(threads)], env=env, capture_output=True, text=True)
    if r.returncode: raise SystemExit(f'the {"pinned" if pinned else "native"} run failed:\n{r.stderr[-2000:]}')
    return json.loads(r.stdout.strip().splitlines()[-1])

def main():
    ap = add_common_args(argparse.ArgumentParser(description=__doc__.splitlines()[0]))
    ap.add_argument('--stages', type=int, default=2, help='curriculum stages trained')
    ap.add_argument('--epochs', type=int, default=12, help="epochs per stage (the tiny preset's 12)")
    ap.add_argument('--repeats', type=int, default=3, help='pairs of runs (pinned, native)')
    a = ap.parse_args()
    threads = a.threads or 1
    run(True, 1, 1, threads)                                  # warm-up: caches (tokenizer, data) and page cache
    rows = []
    for k in range(a.repeats):
        pin, nat = run(True, a.stages, a.epochs, threads), run(False, a.stages, a.epochs, threads)
        rows.append(dict(pinned=pin, native=nat, ratio=pin['seconds'] / nat['seconds']))
        print(f"pair {k}: pinned {pin['seconds']:.2f} s ({pin['capability']}), native {nat['seconds']:.2f} s ({nat['capability']}), "
              f"ratio {rows[-1]['ratio']:.3f}")
    same = rows[0]['pinned']['losses'] == rows[0]['native']['losses']
    print(f"final losses pinned {rows[0]['pinned']['losses']} native {rows[0]['native']['losses']}: {'identical' if same else 'different'}")
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS/'bench_pin.json').write_text(json.dumps(dict(args=vars(a), rows=rows), indent=1))
    print(f"pinned / native {statistics.median(r['ratio'] for r in rows):.3f}x")

if __name__ == '__main__': main()
