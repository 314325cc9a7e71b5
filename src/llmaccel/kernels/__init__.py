"""llmaccel's CPU kernels (C++): `loader` builds them once per machine and loads them, `skinny` is their
Python API; `python -m llmaccel.kernels` builds them ahead of time."""
