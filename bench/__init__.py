"""Benchmarks of the DPO vs KTO alignment playground. ``python -m bench.run_all`` runs them and writes BENCHMARKS.md.

Timings live here, never in tests. Every comparison is measured side by side in one process run, contenders
interleaved (ABAB...), and reported as a ratio of medians, because the machines this project runs on are small and
shared: absolute seconds say more about the neighbours than about the code.
"""
