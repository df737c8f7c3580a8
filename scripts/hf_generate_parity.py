"""Greedy generation of transformers' DeepseekV3ForCausalLM on a `whale train` checkpoint, compared
with `whale generate --prompt-ids … --json` lines (plain and MTP-speculative). Usage:
    python scripts/hf_generate_parity.py CHECKPOINT_DIR WHALE_GENERATE.jsonl...
Exits non-zero unless every whale run produced exactly transformers' tokens."""

import json
import sys

import torch
from transformers import AutoModelForCausalLM

ckpt, runs = sys.argv[1], sys.argv[2:]
model = AutoModelForCausalLM.from_pretrained(ckpt, dtype=torch.float32)
model.eval()
ok = True
for path in runs:
    with open(path) as f:
        for line in f:
            run = json.loads(line)
            prompt = torch.tensor([run["prompt_ids"]])
            whale = run["generation"]["tokens"]
            with torch.no_grad():
                out = model.generate(
                    prompt,
                    max_new_tokens=len(whale),
                    min_new_tokens=len(whale),
                    do_sample=False,
                    eos_token_id=None,
                    pad_token_id=0,
                )
            hf = out[0, prompt.shape[1]:].tolist()
            same = hf == whale
            ok &= same
            g = run["generation"]
            drafts = f", drafts accepted {g['accepted']}/{g['drafts']}" if g["drafts"] else ""
            print(f"{path}: {len(whale)} tokens, {'identical to' if same else 'DIFFERENT from'} "
                  f"transformers' greedy generate{drafts}")
            if not same:
                print(f"  whale        {whale}\n  transformers {hf}")
sys.exit(0 if ok else 1)
