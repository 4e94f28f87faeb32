"""The Inspect engine: scores of a data set under each variant, their caches, and the pure slider views.

``datasets`` normalises any feedback frame to pairs; ``scores`` is the one expensive step (log-probs, cached in
``cache``, precomputed on disk by ``precomputed``); ``views`` recomputes every number a slider changes, with no model
call.
"""
