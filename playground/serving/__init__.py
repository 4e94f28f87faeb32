"""What the UI and the headless API share: the Services container, settings parsing, ZeroGPU wrappers, hub push.

This package imports no torch at import time (``zerogpu.prepare`` must run before torch on a ZeroGPU Space).
"""
