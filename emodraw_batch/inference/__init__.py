"""Inference: texts in, emotion probabilities out.

    classifier.py   EmotionClassifier (load once, `classifier(texts)`, submit/collect), the per-process cache
    batcher.py      tokenize in bulk, sort by length, pack under the token budget, pad (numpy only)
    backends/       one batch -> probabilities: torch_forward.py (transformers on torch), onnx_forward.py
    loaded.py       open a checkpoint: pick and prepare the backend
    loading.py      read a checkpoint (safetensors, offline), its input limits, int8, fused GELU
    device.py       the device, the precision, the token budget that fits them
    fast_paths.py   the GPU fast paths' settings and the pinned staging ring
    batching.py     sorted-length packing under a token budget

Imports only the base modules (errors, config, atomic).
"""
