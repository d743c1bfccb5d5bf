"""A compact VideoLLaMA3 (transformers' ``VideoLlama3ForConditionalGeneration``) and the
four-stage trainer that consumes our mixtures.

- ``presets``: ``tiny`` | ``small`` | ``2b`` (the one size knob); ``build``: model + processor
  offline, or from a local checkpoint; ``tokenizer``: a byte-level BPE trained on our records;
- ``collate``: mixture samples of every kind -> ``VideoLlama3Processor`` inputs with labels on the
  assistant turns, visual-token budget, DiffFP; ``stages``: the paper's per-stage policies;
- ``train``: one loop, ``main(argv)``; ``vl3data train configs/train_compact.yaml --stage all``.

It reads through ``mixtures`` and ``manifests``.
"""
