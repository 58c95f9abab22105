"""The builder: load, prune, export, quantize, evaluate, benchmark, write a Triton repository.

Knows nothing of Kubernetes; the operator imports its spec models, never the reverse.
"""
