"""A compact VideoLLaMA3 (transformers' ``VideoLlama3ForConditionalGeneration``) and the
four-stage trainer that consumes our mixtures.

- ``presets``: ``tiny`` | ``small`` | ``2b`` (the one size knob); ``build``: model + processor
  offline, or from a local checkpoint; ``tokenizer``: a byte-level BPE trained on our records;
- ``collate``: mixture samples of every kind -> ``VideoLlama3Processor`` inputs with labels on the
  assistant turns, visual-token budget, DiffFP; ``stages``: the paper's per-stage policies;
- ``loop``: the one train loop (``run``, ``run_stage``), built from ``distributed`` (ranks),
  ``starting_point``, ``stream`` (the data), ``step`` (one optimizer step), ``checkpoints``
  (resume), ``metrics`` and ``train_report``; ``heldout``: the split the trainer leaves out and
  ``evaluate`` scores; ``precision``: the autocast rule both share;
- ``train``: the command line, ``main(argv)``, locally, under torchrun or on Ray Train
  (``ray_launch``); ``vl3data train configs/train_compact.yaml --stage all``.

It reads through ``mixtures`` and ``manifests``. Its modules import each other one way only,
counting imports inside functions (``tests/model/test_layering.py``).
"""
