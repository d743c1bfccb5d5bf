"""The four training stages' data mixtures, as recipes over shard sets.

Not built yet: see the mixtures issue. It reads shard sets through ``manifests``.
"""
