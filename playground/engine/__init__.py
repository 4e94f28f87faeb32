"""What touches weights: the base model and its adapters, exact scoring (the readable padded scorer and the packed
fast path beside it), generation, and the metrics of answers.

No gradio here; the UI reaches the engine through ``playground.serving``.
"""
