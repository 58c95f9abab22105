"""The builder: load, prune, export, quantize, evaluate, benchmark, write a Triton repository.

Knows nothing of Kubernetes; the operator imports its spec models, never the reverse.

    pipeline.run_build   the one entry point (CLI `optimodel build`, the Job, the demo)
    load / modeling      source URI → original model + task head (pooling or logits)
    prune / recover      magnitude and structured pruning; distillation from the original
    export / quantize    ONNX with dynamic axes; int8 dynamic/static, fp16, weight-only
    data / evaluate      eval and calibration texts; the accuracy gate
    benchmark            PyTorch fp32 vs the artifact, in the same run
    repository           the Triton model folder, written atomically
    report / errors      report.json, the termination message, typed failures
    __main__             the builder Job: `python -m optimodel.model_builder`
"""
