"""Side-by-side benchmark of optimodel against its peers (issue 8): `python -m benchmarks.compare`.

- `schedule`: the alternating (serpentine) timing schedule and the medians and ratios.
- `classifier`: the small text classifier (MiniLM + a head fine-tuned on shipped reviews).
- `candidates`: the contenders (PyTorch, torch.ao, onnxruntime, Optimum, optimodel variants).
- `optimum_presets`: run inside a separate venv, where Optimum's pins can be satisfied.
- `serving`: the concurrency sweep on the real Triton server.
- `tables`, `plots`: markdown tables (also into README.md), PNG plots.
- `run`: the command that runs all of it and writes benchmarks/results/.
"""
