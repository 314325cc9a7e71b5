"""llmaccel's CPU kernels (C++), built once per machine and loaded by `skinny`; `python -m llmaccel.kernels`
builds them ahead of time."""
