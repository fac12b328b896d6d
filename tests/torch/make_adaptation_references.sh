#!/usr/bin/env bash
# make_adaptation_references.sh — regenerates the committed PyTorch fixtures of issue 14
# (fine-tuning and adaptation): tests/ref/lora (a GPT-2 base, a PEFT-format LoRA adapter, a
# masked SFT batch, the adapted logits, the loss and the adapters' gradients, layer 0's merged
# weights) and tests/ref/classify (a Hugging Face GPT2ForSequenceClassification directory, a
# right-padded batch, the last-token logits, the loss and every gradient; and fm's mean-pooled
# head's logits, loss and a few gradients on the same weights). Both scripts draw
# their weights from fixed seeds and compute the expected values in float64, so a re-run
# rewrites the same files; each runs its self-check before writing expected.safetensors and
# exits 1 (stopping this script) if a check fails.
# Usage: tests/torch/make_adaptation_references.sh        (needs /usr/bin/python3 with torch)
set -euo pipefail
cd "$(dirname "$0")/../.."
export OPENBLAS_CORETYPE=SkylakeX
rm -rf tests/ref/lora tests/ref/classify
/usr/bin/python3 tests/torch/lora_reference.py tests/ref/lora --self-check
/usr/bin/python3 tests/torch/classify_reference.py tests/ref/classify --self-check
echo "wrote tests/ref/lora and tests/ref/classify"
