"""Training tokens/s of transformers' DeepseekV3ForCausalLM built from a whale checkpoint's
config.json (same shapes, random init), with the same batch, sequence length and threads, fp32 on
CPU, AdamW. Usage: python scripts/bench_train_hf.py CHECKPOINT_DIR SEQ_LEN BATCH STEPS THREADS
Prints the mean tokens/s over the steps after the first two (warm-up)."""

import sys
import time

import torch
from transformers import AutoConfig, AutoModelForCausalLM

ckpt, seq, batch, steps, threads = sys.argv[1], *map(int, sys.argv[2:6])
torch.set_num_threads(threads)
torch.manual_seed(0)
config = AutoConfig.from_pretrained(ckpt)
model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
print(
    f"experts: {model.config._experts_implementation}, attention: {model.config._attn_implementation}",
    file=sys.stderr,
)
model.train()
opt = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.9, 0.95), weight_decay=0.1)
rates = []
for step in range(steps):
    tokens = torch.randint(config.vocab_size, (batch, seq + 1))
    start = time.perf_counter()
    out = model(tokens[:, :-1], labels=tokens[:, :-1].clone())
    out.loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    opt.zero_grad(set_to_none=True)
    rates.append(batch * seq / (time.perf_counter() - start))
warm = rates[2:] or rates
print(f"{sum(warm) / len(warm):.1f}")
