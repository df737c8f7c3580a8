"""Load a `whale train` checkpoint with transformers (the architecture its config.json names:
DeepseekV3ForCausalLM, DeepseekV2ForCausalLM or LlamaForCausalLM) and compare its logits with the ones whale computed
(`whale model logits`). Usage:
    python scripts/hf_parity.py CHECKPOINT_DIR WHALE_LOGITS.safetensors
Exits non-zero when a main-model tensor is missing or unused (DeepseekV2 has no routing bias: a
zero `e_score_correction_bias` may go unused), or when the max absolute difference exceeds 1e-4
(both run in fp32)."""

import sys

import torch
from safetensors.torch import load_file
from transformers import AutoConfig, AutoModelForCausalLM

ckpt, reference = sys.argv[1], sys.argv[2]
ref = load_file(reference)
config = AutoConfig.from_pretrained(ckpt)
model, loading = AutoModelForCausalLM.from_pretrained(
    ckpt, config=config, torch_dtype=torch.float32, output_loading_info=True
)
model.eval()
# transformers does not implement MTP: only layers past num_hidden_layers may go unused.
mtp_prefixes = tuple(f"model.layers.{i}." for i in range(config.num_hidden_layers, 1000))
weights = load_file(f"{ckpt}/model.safetensors")
unused = [
    k
    for k in loading["unexpected_keys"]
    if not k.startswith(mtp_prefixes)
    and not (k.endswith("e_score_correction_bias") and not weights[k].any())
]
if loading["missing_keys"] or unused:
    print(f"missing {loading['missing_keys']}, unused {unused}")
    sys.exit(1)
with torch.no_grad():
    logits = model(ref["tokens"]).logits
diff = (logits - ref["logits"]).abs().max().item()
scale = ref["logits"].abs().max().item()
rope = getattr(config, "rope_parameters", None) or getattr(config, "rope_scaling", None)
print(f"transformers {type(model).__name__} (RoPE {rope}): max |logit diff| {diff:.3e} "
      f"(max |logit| {scale:.3f}) over {ref['tokens'].numel()} tokens")
sys.exit(0 if diff < 1e-4 else 1)
