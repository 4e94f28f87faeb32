"""Pure torch math: the DPO and KTO families, the V constructions, thresholds tau, the prospect view, R_phi.

Nothing here imports transformers, peft or gradio (tests/test_architecture.py enforces it).
"""
