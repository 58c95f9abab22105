"""What a candidate recipe is: a named way to turn the exported fp32 graph into an artifact.

The candidates live beside the hardware they are for (cpu_recipe.py, gpu_recipe.py, named as
Optimum names its presets); recipe_search.py builds, gates, benchmarks and picks among them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from optimodel.model_builder.fusion import AttentionShape
from optimodel.model_builder.serving_target import RecipeName, Target


@dataclass
class RecipeInputs:
    """Everything a recipe may use: the export, a scratch folder, the attention shape and the
    MatMuls ranked by int8 sensitivity (computed on first use, once per build)."""

    exported: Path
    work: Path
    attention: AttentionShape | None
    rank_sensitive_matmuls: Callable[[], list[str]]
    per_channel: bool = True
    _ranked: list[str] | None = field(default=None, repr=False)

    def most_sensitive(self, count: int) -> list[str]:
        if self._ranked is None:
            self._ranked = self.rank_sensitive_matmuls()
        return self._ranked[:count]

    def scratch(self, name: str) -> Path:
        return self.work / name


@dataclass(frozen=True)
class Recipe:
    """One candidate: its name, the target it serves on, and how to make it."""

    name: RecipeName
    target: Target
    summary: str
    make: Callable[[RecipeInputs, Path], str]  # writes the artifact; returns what it did
    # fp16 recipes are scored with their fp16 weights, as served, even on a CPU provider.
    precision: str = "fp32"
