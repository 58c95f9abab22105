"""optimodel: one OptimizedModel manifest to an optimized, accuracy-gated Triton deployment."""

__version__ = "0.1.0"
