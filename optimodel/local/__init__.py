"""Local serving on the real Triton server: no cluster, same manifest, same batching config.

- `installation`: find `tritonserver` (nvidia-pytriton wheel) and assemble its backend dir.
- `repository`: derive the python-backend repository from a built onnxruntime repository.
- `triton_model`: the python-backend model that runs the built model.onnx with onnxruntime.
- `server`: start, wait for readiness, stop cleanly (no stray processes or /dev/shm segments).
- `loadtest`: concurrency sweeps with tritonclient (gRPC aio) and perf_analyzer.
- `demo`: build → serve → query → load test → table and plot.
"""
