"""The command lines: generate, train, feedback check, evaluate, precompute, prepare the model. Each exits with a
documented code and never a traceback on bad input.
"""
