"""Scaling search: the compound-coefficient grid (EfficientNet step 1 and 2), the paper's
single-dimension experiment, and a latency-aware block search (EfficientNetV2).

``effnet search compound`` and ``effnet search blocks`` (docs/search.md).  Nothing else in effnet
imports this package.
"""
