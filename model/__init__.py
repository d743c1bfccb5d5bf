"""A compact VideoLLaMA3 (from transformers) and the four-stage trainer.

Not built yet: see the trainer issue. It reads through ``mixtures`` and ``manifests``.
"""
