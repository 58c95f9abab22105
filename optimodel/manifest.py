"""From an OptimizedModel manifest file to the builder's BuildSpec (what `optimodel build`
and `optimodel demo` run): the manifest is validated exactly as `optimodel validate` does.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape

from optimodel.model_builder.spec import BuildSpec, SpecProblem
from optimodel.operator.api import KIND
from optimodel.operator.validation import ManifestError, parse_spec, validate_file


def one_manifest(path: Path) -> dict[str, Any]:
    """The one valid OptimizedModel document in `path`.

    Raises ManifestError listing every problem when the manifest is invalid, or when the
    file holds no OptimizedModel or more than one.
    """
    results = [r for r in validate_file(path) if r.kind == KIND or not r.valid]
    problems = [problem for result in results for problem in result.problems]
    if problems:
        raise ManifestError(problems)
    if len(results) != 1:
        found = ", ".join(str(r.name) for r in results) or "none"
        raise ManifestError(
            [
                SpecProblem(
                    "(file)",
                    f"{path} holds {len(results)} {KIND} manifests ({found})",
                    f"pass a file with exactly one {KIND}",
                )
            ]
        )
    document: dict[str, Any] = results[0].document
    return document


def build_spec_from_manifest(path: Path) -> BuildSpec:
    """The BuildSpec of the one OptimizedModel in `path` (name = metadata.name); raises
    ManifestError as `one_manifest` does."""
    document = one_manifest(path)
    spec = parse_spec(document)
    return BuildSpec(
        name=str(document["metadata"]["name"]),
        source=spec.source,
        optimize=spec.optimize,
        serving=spec.serving,
    )


def print_problems(
    console: Console, problems: Sequence[SpecProblem], *, label: str | None = None
) -> None:
    """Every problem as `field: message` and its fix, the way all commands show them.

    With a `label` (e.g. "warning") each line says what it is, in yellow."""
    prefix = f"[yellow]{escape(label)}[/yellow] " if label else ""
    for problem in problems:
        console.print(f"    {prefix}[bold]{escape(problem.path)}[/bold]: {escape(problem.message)}")
        console.print(f"      fix: {escape(problem.fix)}")
