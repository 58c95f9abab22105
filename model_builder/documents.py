"""Read manifests, settings and build specs so that no input can crash, hang or mislead.

Every reader returns plain JSON data (mappings with string keys, lists, strings, 64-bit
integers, finite numbers, booleans, null) or raises DocumentError, whose problems name the
field or line and the fix. What a plain `yaml.safe_load` lets through, and this refuses:

- a duplicated key (YAML silently keeps the last one: a gate of 0.99 became 0.10);
- aliases that expand past the size cap (a "billion laughs" document), or that refer to
  themselves; nesting deeper than `max_depth` (checked on the parser's event stream, before
  anything recursive runs);
- files and documents larger than the API server accepts; bytes that are not UTF-8;
- keys that are not strings (`on:` is a boolean in YAML 1.1), integers outside int64 (the API
  server's range; Python's own conversion limit would raise), infinities and NaN, and tags
  JSON cannot carry (binary, sets, timestamps: unquoted dates stay strings, as in kubectl).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from optimodel.model_builder.spec import SpecProblem

KiB = 1024
MiB = 1024 * KiB
# The API server refuses request bodies over 3 MiB and etcd objects over 1.5 MiB
# (kube-apiserver defaults: MaxRequestBodyBytes, etcd --max-request-bytes).
API_REQUEST_BODY_BYTES = 3 * MiB
API_OBJECT_BYTES = 3 * MiB // 2
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
_MAX_INT_TEXT = 40  # longer integer literals are out of int64 range whatever their base
_MAX_PROBLEMS = 20

_TAG = "tag:yaml.org,2002:"
_SCALAR_TAGS = frozenset(_TAG + name for name in ("str", "int", "float", "bool", "null"))
_MERGE_TAG = _TAG + "merge"
_TIMESTAMP_TAG = _TAG + "timestamp"


@dataclass(frozen=True)
class DocumentLimits:
    """How much one file may hold: bytes on disk, bytes per document as JSON, depth, nodes."""

    max_file_bytes: int = API_REQUEST_BODY_BYTES
    max_document_bytes: int = API_OBJECT_BYTES
    max_depth: int = 100
    max_nodes: int = 200_000


MANIFEST_LIMITS = DocumentLimits()


class DocumentError(ValueError):
    """A file or text cannot be read as JSON data; carries every problem found."""

    def __init__(self, problems: list[SpecProblem]) -> None:
        self.problems = problems
        super().__init__("; ".join(str(problem) for problem in problems))


class _BudgetExceededError(Exception):
    def __init__(self, problem: SpecProblem) -> None:
        self.problem = problem


def _strict_resolvers() -> dict[Any, list[tuple[str, Any]]]:
    return {
        first: [(tag, regexp) for tag, regexp in resolvers if tag != _TIMESTAMP_TAG]
        for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
    }


_BaseLoader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _Loader(_BaseLoader):  # type: ignore[misc]
    """The safe loader (libyaml when present) without implicit timestamps."""

    yaml_implicit_resolvers = _strict_resolvers()


def _key_text(key: str) -> str:
    return key if len(key) <= 60 else key[:57] + "..."


def _join(path: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    if key.isidentifier():
        return f"{path}.{key}" if path else key
    return f"{path}[{_key_text(key)}]"


def _where(path: str) -> str:
    return path or "(document)"


def _line(node: Node, document: int | None) -> str:
    line = f"line {node.start_mark.line + 1}"
    return f"document {document}, {line}" if document else line


def _budget_problem(path: str, node: Node, document: int | None, what: str, fix: str) -> None:
    raise _BudgetExceededError(SpecProblem(_where(path), f"{what} ({_line(node, document)})", fix))


@dataclass
class _NodeCheck:
    """One pass over a composed YAML document: budgets (with aliases expanded) and types."""

    loader: Any
    limits: DocumentLimits
    document: int | None
    problems: list[SpecProblem]

    def __post_init__(self) -> None:
        # id(node) -> (nodes, bytes, height) of its expansion; a node of the active path
        # seen again is an alias to itself.
        self.measured: dict[int, tuple[int, int, int]] = {}
        self.active: set[int] = set()

    def problem(self, path: str, node: Node, message: str, fix: str) -> None:
        if len(self.problems) < _MAX_PROBLEMS:
            self.problems.append(
                SpecProblem(_where(path), f"{message} ({_line(node, self.document)})", fix)
            )

    def measure(self, node: Node, path: str, depth: int) -> tuple[int, int, int]:
        key = id(node)
        if key in self.active:
            _budget_problem(
                path,
                node,
                self.document,
                "a YAML alias refers to a node that contains it",
                "replace the alias with the value it should repeat",
            )
        known = self.measured.get(key)
        if known is None:
            self.active.add(key)
            known = self._measure_new(node, path, depth)
            self.active.discard(key)
            self.measured[key] = known
        nodes, size, height = known
        limits = self.limits
        if depth + height > limits.max_depth:
            _budget_problem(
                path,
                node,
                self.document,
                f"nested more than {limits.max_depth} levels deep",
                "flatten the structure: no manifest needs this depth",
            )
        if nodes > limits.max_nodes or size > limits.max_document_bytes:
            _budget_problem(
                path,
                node,
                self.document,
                f"the document expands to more than {limits.max_nodes} values or "
                f"{limits.max_document_bytes // KiB} KiB (YAML aliases included)",
                "remove the repeated aliases or split the data; the API server stores at most "
                f"{API_OBJECT_BYTES // KiB} KiB per object",
            )
        return known

    def _measure_new(self, node: Node, path: str, depth: int) -> tuple[int, int, int]:
        if depth > self.limits.max_depth:
            _budget_problem(
                path,
                node,
                self.document,
                f"nested more than {self.limits.max_depth} levels deep",
                "flatten the structure: no manifest needs this depth",
            )
        if isinstance(node, ScalarNode):
            return 1, self._scalar(node, path), 0
        nodes, size, height = 1, 2, 0
        if isinstance(node, SequenceNode):
            if node.tag != _TAG + "seq":
                self._unsupported_tag(node, path)
            for index, item in enumerate(node.value):
                count, length, below = self.measure(item, _join(path, index), depth + 1)
                nodes, size, height = nodes + count, size + length + 1, max(height, below + 1)
            return nodes, size, height
        if isinstance(node, MappingNode):
            if node.tag != _TAG + "map":
                self._unsupported_tag(node, path)
            seen: dict[str, Node] = {}
            for key_node, value_node in node.value:
                if isinstance(key_node, ScalarNode) and key_node.tag == _MERGE_TAG:
                    count, length, below = self.measure(value_node, path, depth)
                    nodes, size, height = nodes + count, size + length, max(height, below)
                    continue
                key = self._key(key_node, path, seen)
                child = _join(path, key if key is not None else "?")
                count, length, below = self.measure(value_node, child, depth + 1)
                key_length = len(key.encode("utf-8", "replace")) if key is not None else 0
                nodes = nodes + count + 1
                size = size + key_length + length + 4
                height = max(height, below + 1)
            return nodes, size, height
        self._unsupported_tag(node, path)  # pragma: no cover - the composer makes only these
        return 1, 0, 0

    def _key(self, node: Node, path: str, seen: dict[str, Node]) -> str | None:
        if not isinstance(node, ScalarNode):
            self.problem(
                path, node, "a mapping or list is used as a key", "use a plain string as the key"
            )
            return None
        if node.tag != _TAG + "str":
            kind = node.tag.removeprefix(_TAG)
            self.problem(
                _join(path, str(node.value)),
                node,
                f"the key {node.value!r} is not a string (YAML reads it as {kind})",
                f'quote the key: "{node.value}":',
            )
            return None
        key = str(node.value)
        first = seen.get(key)
        if first is not None:
            self.problem(
                _join(path, key),
                node,
                f"the key {_key_text(key)!r} appears twice (first on line "
                f"{first.start_mark.line + 1}); YAML would silently keep only the last value",
                "remove one of the two, keeping the value you mean",
            )
        else:
            seen[key] = node
        self._text(key, path, node)
        return key

    def _text(self, text: str, path: str, node: Node) -> int:
        try:
            return len(text.encode("utf-8"))
        except UnicodeEncodeError:
            self.problem(
                path,
                node,
                "the text holds an unpaired surrogate escape (\\uD800-\\uDFFF), not Unicode",
                "write the character itself or a valid escape",
            )
            return len(text)

    def _scalar(self, node: ScalarNode, path: str) -> int:
        tag = node.tag
        text = str(node.value)
        if tag not in _SCALAR_TAGS:
            self._unsupported_tag(node, path)
            return len(text)
        if tag == _TAG + "int":
            if len(text) > _MAX_INT_TEXT:
                self._int_out_of_range(node, path, text)
                return len(text)
            value = self.loader.construct_yaml_int(node)
            if not INT64_MIN <= value <= INT64_MAX:
                self._int_out_of_range(node, path, text)
            return len(text)
        if tag == _TAG + "float":
            number = self.loader.construct_yaml_float(node)
            if not math.isfinite(number):
                self.problem(
                    path,
                    node,
                    f"{_key_text(text)!r} is not a finite number (JSON has no infinity or NaN)",
                    "write a finite number, or quote it if it is meant as text",
                )
            return len(text)
        return self._text(text, path, node) + 2

    def _int_out_of_range(self, node: Node, path: str, text: str) -> None:
        self.problem(
            path,
            node,
            f"the integer {_key_text(text)!r} is outside the 64-bit range the API server stores",
            "write a value between -9223372036854775808 and 9223372036854775807",
        )

    def _unsupported_tag(self, node: Node, path: str) -> None:
        self.problem(
            path,
            node,
            f"YAML tag {node.tag!r} has no JSON form (manifests are JSON objects)",
            "drop the tag and write a plain string, number, list or mapping",
        )


def _yaml_error(error: yaml.YAMLError) -> SpecProblem:
    mark = getattr(error, "problem_mark", None)
    where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "(file)"
    problem = getattr(error, "problem", None) or str(error)
    return SpecProblem(
        where,
        f"not valid YAML: {problem}",
        "fix the YAML syntax (indentation, colons, quotes)",
    )


def decode_utf8(data: bytes) -> str:
    """UTF-8 text (a leading byte-order mark dropped); DocumentError names the bad byte."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line = data.count(b"\n", 0, error.start) + 1
        column = error.start - (data.rfind(b"\n", 0, error.start) + 1) + 1
        raise DocumentError(
            [
                SpecProblem(
                    f"line {line}, column {column}",
                    f"byte 0x{data[error.start]:02x} is not UTF-8 ({error.reason})",
                    "save the file as UTF-8",
                )
            ]
        ) from None


def _check_depth(text: str, limits: DocumentLimits) -> None:
    """Refuse deep nesting from the event stream (iterative), before any recursive composer."""
    depth = 0
    for event in yaml.parse(text, Loader=_Loader):
        if isinstance(event, yaml.CollectionStartEvent):
            depth += 1
            if depth > limits.max_depth:
                mark = event.start_mark
                where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "(file)"
                raise DocumentError(
                    [
                        SpecProblem(
                            where,
                            f"nested more than {limits.max_depth} levels deep",
                            "flatten the structure: no manifest needs this depth",
                        )
                    ]
                )
        elif isinstance(event, yaml.CollectionEndEvent):
            depth -= 1


def _as_json(value: Any, where: str) -> Any:
    """A copy of `value` through JSON: shared (aliased) parts become independent."""
    try:
        return json.loads(json.dumps(value, ensure_ascii=False, allow_nan=False))
    except (ValueError, TypeError, RecursionError) as error:  # pragma: no cover - checked above
        raise DocumentError(
            [SpecProblem(where, f"cannot be represented as JSON: {error}", "simplify the value")]
        ) from None


def load_yaml_documents(text: str, limits: DocumentLimits = MANIFEST_LIMITS) -> list[Any]:
    """Every document of a YAML text as JSON data (empty documents dropped)."""
    if len(text) > limits.max_file_bytes:
        raise DocumentError([_too_large("(file)", len(text), limits.max_file_bytes)])
    try:
        _check_depth(text, limits)
        loader = _Loader(text)
        try:
            nodes: list[Node] = []
            while loader.check_node():
                node = loader.get_node()
                if node is not None:
                    nodes.append(node)
            many = len(nodes) > 1
            documents: list[Any] = []
            problems: list[SpecProblem] = []
            for index, node in enumerate(nodes):
                check = _NodeCheck(loader, limits, index + 1 if many else None, problems)
                try:
                    check.measure(node, "", 0)
                except _BudgetExceededError as exceeded:
                    raise DocumentError([*problems, exceeded.problem]) from None
                if not problems:
                    documents.append(_as_json(loader.construct_document(node), "(document)"))
            if problems:
                raise DocumentError(problems)
            return documents
        finally:
            loader.dispose()
    except yaml.YAMLError as error:
        raise DocumentError([_yaml_error(error)]) from None
    except RecursionError:  # pragma: no cover - depth is checked first
        raise DocumentError(
            [SpecProblem("(file)", "nested too deeply", "flatten the structure")]
        ) from None


def _too_large(where: str, size: int, limit: int) -> SpecProblem:
    return SpecProblem(
        where,
        f"{size / KiB:.0f} KiB is more than the {limit // KiB} KiB the API server accepts",
        "keep manifests small: large data belongs in a volume or bucket, referenced by URI",
    )


def _json_hooks(problems: list[SpecProblem]) -> dict[str, Any]:
    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        mapping: dict[str, Any] = {}
        for key, value in items:
            if key in mapping and len(problems) < _MAX_PROBLEMS:
                problems.append(
                    SpecProblem(
                        f"[{_key_text(key)}]",
                        f"the key {_key_text(key)!r} appears twice in one object; JSON readers "
                        "would silently keep only the last value",
                        "remove one of the two, keeping the value you mean",
                    )
                )
            mapping[key] = value
        return mapping

    def integer(text: str) -> int:
        value = int(text) if len(text) <= _MAX_INT_TEXT else INT64_MAX + 1
        if not INT64_MIN <= value <= INT64_MAX and len(problems) < _MAX_PROBLEMS:
            problems.append(
                SpecProblem(
                    "(number)",
                    f"the integer {_key_text(text)!r} is outside the 64-bit range",
                    "write a value between -9223372036854775808 and 9223372036854775807",
                )
            )
            return 0
        return value

    def number(text: str) -> float:
        value = float(text)
        if not math.isfinite(value) and len(problems) < _MAX_PROBLEMS:
            problems.append(
                SpecProblem(
                    "(number)",
                    f"{_key_text(text)!r} is not a finite number",
                    "write a finite number",
                )
            )
            return 0.0
        return value

    def constant(text: str) -> float:
        if len(problems) < _MAX_PROBLEMS:
            problems.append(
                SpecProblem("(number)", f"{text} is not JSON", "write a finite number or a string")
            )
        return 0.0

    return {
        "object_pairs_hook": pairs,
        "parse_int": integer,
        "parse_float": number,
        "parse_constant": constant,
    }


def _json_depth(value: Any, limit: int) -> int:
    """The nesting depth of parsed JSON, walked iteratively and stopped past `limit`."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if depth > limit:
            return depth
        deepest = max(deepest, depth)
        if isinstance(item, dict):
            stack.extend((child, depth + 1) for child in item.values())
        elif isinstance(item, list):
            stack.extend((child, depth + 1) for child in item)
    return deepest


def load_json_document(text: str, limits: DocumentLimits = MANIFEST_LIMITS) -> Any:
    """One JSON document as data, with the same rules as the YAML reader."""
    if len(text) > limits.max_document_bytes:
        raise DocumentError([_too_large("(document)", len(text), limits.max_document_bytes)])
    problems: list[SpecProblem] = []
    try:
        value = json.loads(text, **_json_hooks(problems))
    except json.JSONDecodeError as error:
        raise DocumentError(
            [
                SpecProblem(
                    f"line {error.lineno}, column {error.colno}",
                    f"not valid JSON: {error.msg}",
                    "fix the JSON syntax (quotes, commas, brackets)",
                )
            ]
        ) from None
    except RecursionError:
        raise DocumentError(
            [
                SpecProblem(
                    "(document)",
                    f"nested more than {limits.max_depth} levels deep",
                    "flatten the structure",
                )
            ]
        ) from None
    if problems:
        raise DocumentError(problems)
    if _json_depth(value, limits.max_depth) > limits.max_depth:
        raise DocumentError(
            [
                SpecProblem(
                    "(document)",
                    f"nested more than {limits.max_depth} levels deep",
                    "flatten the structure",
                )
            ]
        )
    return value


def read_bytes(path: Path, limit: int) -> bytes:
    """At most `limit` bytes of `path`; DocumentError when it is unreadable or larger."""
    try:
        with path.open("rb") as stream:
            data = stream.read(limit + 1)
    except OSError as error:
        raise DocumentError(
            [
                SpecProblem(
                    "(file)",
                    f"cannot read {path}: {error.strerror or error}",
                    "check the path and its permissions",
                )
            ]
        ) from None
    if len(data) > limit:
        raise DocumentError(
            [
                SpecProblem(
                    "(file)",
                    f"{path} is larger than {limit // KiB} KiB, the most the API server accepts",
                    "keep manifests small: large data belongs in a volume or bucket",
                )
            ]
        )
    return data


def read_yaml_file(path: Path, limits: DocumentLimits = MANIFEST_LIMITS) -> list[Any]:
    """Every document of a YAML (or JSON) file as data; DocumentError on any problem."""
    return load_yaml_documents(decode_utf8(read_bytes(path, limits.max_file_bytes)), limits)


def read_data_file(path: Path, limits: DocumentLimits = MANIFEST_LIMITS) -> Any:
    """The one document of a .json file (JSON rules) or a YAML file (None when empty)."""
    text = decode_utf8(read_bytes(path, limits.max_file_bytes))
    if path.suffix == ".json":
        return load_json_document(text, limits)
    documents = load_yaml_documents(text, limits)
    if len(documents) > 1:
        raise DocumentError(
            [
                SpecProblem(
                    "(file)",
                    f"{path} holds {len(documents)} YAML documents",
                    "keep exactly one document in the file",
                )
            ]
        )
    return documents[0] if documents else None


def json_data_problems(value: Any, limits: DocumentLimits = MANIFEST_LIMITS) -> list[SpecProblem]:
    """What keeps already-parsed data (an API object, a dict built in code) from being JSON.

    The readers above never return such data; this guards the other doors: string keys,
    int64 integers, finite numbers, the depth and size budgets. Walked iteratively."""
    problems: list[SpecProblem] = []
    nodes = 0
    stack: list[tuple[Any, str, int]] = [(value, "", 0)]
    # A cycle (a dict containing itself) never ends a walk: the node budget stops it.
    while stack and len(problems) < _MAX_PROBLEMS:
        item, path, depth = stack.pop()
        nodes += 1
        if depth > limits.max_depth or nodes > limits.max_nodes:
            what = (
                f"nested more than {limits.max_depth} levels deep"
                if depth > limits.max_depth
                else f"holds more than {limits.max_nodes} values"
            )
            return [*problems, SpecProblem(_where(path), what, "flatten or shrink the data")]
        if isinstance(item, dict):
            for key, child in item.items():
                if not isinstance(key, str):
                    problems.append(
                        SpecProblem(
                            _join(path, str(key)),
                            f"the key {key!r} is not a string ({type(key).__name__})",
                            f'quote the key: "{key}":',
                        )
                    )
                    continue
                stack.append((child, _join(path, key), depth + 1))
        elif isinstance(item, list):
            stack.extend((child, _join(path, index), depth + 1) for index, child in enumerate(item))
        elif isinstance(item, bool) or item is None or isinstance(item, str):
            continue
        elif isinstance(item, int):
            if not INT64_MIN <= item <= INT64_MAX:
                problems.append(
                    SpecProblem(
                        _where(path),
                        "the integer is outside the 64-bit range the API server stores",
                        "write a value between -9223372036854775808 and 9223372036854775807",
                    )
                )
        elif isinstance(item, float):
            if not math.isfinite(item):
                problems.append(
                    SpecProblem(
                        _where(path), f"{item!r} is not a finite number", "write a finite number"
                    )
                )
        else:
            problems.append(
                SpecProblem(
                    _where(path),
                    f"a {type(item).__name__} value has no JSON form",
                    "write a string, number, boolean, list or mapping",
                )
            )
    return problems
