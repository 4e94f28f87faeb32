"""The DPO vs KTO alignment playground: engine, math, training and UI."""

__version__ = "0.1.0"
