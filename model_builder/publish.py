"""Upload a built Triton model repository to the S3 artifact store:
`python -m optimodel.model_builder.publish --from DIR --to s3://bucket/prefix`.

The builder Job runs it as its second container, after the build wrote DIR, with the artifact
store's endpoint and credentials in its environment (the build container never sees them).
Every file under DIR goes to <prefix>/<relative path>, report.json files last, so a listing
that shows a model's report.json shows a complete upload. Exit codes: 0 uploaded, 4 the store
refused (bucket missing, access denied, unreachable after retries), 2 bad arguments; the
reason is also written as a termination message, as the build container does.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from optimodel.model_builder.__main__ import termination_log_path
from optimodel.model_builder.errors import BuildError
from optimodel.model_builder.report import REPORT_FILE, TerminationMessage
from optimodel.model_builder.sources.base import FetchSettings
from optimodel.model_builder.sources.s3 import upload_folder

DEFAULT_FIELD = "spec.storage.s3.uri"


def publish_repository(
    repository: Path, destination: str, *, field: str = DEFAULT_FIELD
) -> list[str]:
    """Upload `repository` (a folder holding model folders) to `destination`; the keys."""
    if not any(repository.glob(f"*/{REPORT_FILE}")):
        raise BuildError(
            f"{repository} holds no built model (no */{REPORT_FILE})",
            field=field,
            fix="run the build first; publish uploads what it wrote",
        )
    return upload_folder(
        repository, destination, FetchSettings.from_env(), field=field, last=REPORT_FILE
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m optimodel.model_builder.publish", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--from", dest="source", type=Path, required=True)
    parser.add_argument("--to", dest="destination", required=True)
    parser.add_argument("--field", default=DEFAULT_FIELD, help="spec field named in errors")
    args = parser.parse_args(argv)
    try:
        keys = publish_repository(args.source, args.destination, field=args.field)
    except BuildError as error:
        message = TerminationMessage(reason=error.reason, message=str(error))
        print(f"{message.reason}: {message.message}", file=sys.stderr, flush=True)
        destination = termination_log_path()
        if destination is not None:
            destination.write_text(message.render())
        return error.exit_code
    print(f"uploaded {len(keys)} files to {args.destination}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
