"""The builder's input errors: a broken model folder or output folder is a build error that
names the field and the fix (never a traceback, never a published artifact), and a killed
build's staging folder is swept by the next build, never a live one's."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from optimodel.cli import app
from optimodel.model_builder.__main__ import main
from optimodel.model_builder.errors import ModelFilesError, OutputFolderError
from optimodel.model_builder.load import load_model
from optimodel.model_builder.repository import (
    LOCK_FILE,
    OWNER_FILE,
    STAGING_PREFIX,
    UNLOCKED_STALE_AFTER_S,
    staging_directory,
    sweep_stale_staging,
)
from optimodel.model_builder.spec import Source
from tests.builder_models import minilm_tokenizer, single_torch_thread, tiny_model_dir
from tests.conftest import REPO


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    with single_torch_thread():
        yield


def _copy_model(tmp_path: Path, keep: Callable[[str], bool] = lambda name: True) -> Path:
    folder = tmp_path / "model"
    folder.mkdir()
    for file in tiny_model_dir("bert").iterdir():
        if keep(file.name):
            shutil.copy(file, folder / file.name)
    return folder


def _load(folder: Path) -> ModelFilesError:
    with pytest.raises(ModelFilesError) as caught:
        load_model(Source(uri=f"file://{folder}", task="feature-extraction"))
    assert caught.value.field == "spec.source.uri"
    assert caught.value.fix
    return caught.value


def test_a_model_without_tokenizer_files_is_refused(tmp_path: Path) -> None:
    # Today transformers invents a 5-token tokenizer: all [UNK], the gate scores 1.0.
    folder = _copy_model(tmp_path, lambda name: not name.startswith("tokenizer"))
    error = _load(folder)
    assert "has no tokenizer" in error.message and "save_pretrained" in str(error.fix)


def test_a_tokenizer_that_does_not_cover_the_vocabulary_is_refused(tmp_path: Path) -> None:
    from transformers import BertTokenizer

    folder = _copy_model(tmp_path, lambda name: not name.startswith("tokenizer"))
    vocab = tmp_path / "vocab.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "a"]))
    BertTokenizer(str(vocab)).save_pretrained(str(folder))
    error = _load(folder)
    assert "7 tokens for a model vocabulary of 30522" in error.message


def test_a_tokenizer_larger_than_the_embedding_table_is_refused(tmp_path: Path) -> None:
    folder = _copy_model(tmp_path, lambda name: name != "config.json")
    config = json.loads((tiny_model_dir("bert") / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "vocab_size": 1000}))
    error = _load(folder)
    assert f"has {len(minilm_tokenizer())} tokens but the model's embedding table only 1000" in (
        error.message
    )


@pytest.mark.parametrize(
    ("file", "damage", "fragment"),
    [
        ("config.json", lambda p: p.write_text('{"model_type": "bert",'), "config.json"),
        (
            "config.json",
            lambda p: p.write_text('{"model_type": "bert", "a": 1, "a": 2}'),
            "appears twice",
        ),
        ("config.json", lambda p: p.write_text('{"model_type": "no-such-type"}'), "config.json"),
        ("config.json", lambda p: p.write_bytes(b'{"model_type": "b\xffrt"}'), "not UTF-8"),
        (
            "model.safetensors",
            lambda p: p.write_bytes(p.read_bytes()[: p.stat().st_size // 2]),
            "weights",
        ),
        ("model.safetensors", lambda p: p.write_bytes(b"\x00" * 64), "weights"),
        ("model.safetensors", lambda p: p.unlink(), "has no weights"),
        ("tokenizer.json", lambda p: p.write_text("{not json"), "tokenizer"),
    ],
    ids=[
        "config-truncated",
        "config-duplicate-key",
        "config-model-type",
        "config-not-utf8",
        "weights-truncated",
        "weights-garbage",
        "weights-missing",
        "tokenizer-corrupt",
    ],
)
def test_damaged_model_files_name_the_field_and_the_fix(
    tmp_path: Path, file: str, damage: Callable[[Path], object], fragment: str
) -> None:
    folder = _copy_model(tmp_path)
    damage(folder / file)
    error = _load(folder)
    assert fragment in error.message, error.message


def test_a_corrupt_modules_json_is_a_build_error(tmp_path: Path) -> None:
    folder = _copy_model(tmp_path)
    (folder / "modules.json").write_text("[{")
    assert "modules.json" in _load(folder).message


def _manifest(tmp_path: Path, model: Path) -> Path:
    document = {
        "apiVersion": "optimodel.io/v1alpha1",
        "kind": "OptimizedModel",
        "metadata": {"name": "tiny"},
        "spec": {
            "source": {"uri": f"file://{model}", "task": "feature-extraction"},
            "optimize": {"evalData": {"uri": "builtin://eval-texts", "maxSamples": 8}},
        },
    }
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(document))
    return path


def test_optimodel_build_reports_a_missing_tokenizer_without_publishing(tmp_path: Path) -> None:
    model = _copy_model(tmp_path, lambda name: not name.startswith("tokenizer"))
    out = tmp_path / "out"
    result = CliRunner().invoke(
        app,
        ["build", str(_manifest(tmp_path, model)), "--out", str(out), "--no-benchmark"],
        terminal_width=300,
    )
    assert result.exit_code == 2, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    flat = " ".join(result.output.split())  # rich wraps long lines at spaces
    assert "spec.source.uri" in flat and "has no tokenizer" in flat
    assert not (out / "tiny").exists()
    assert list(out.iterdir()) == []  # no staging folder left either


@pytest.mark.parametrize(
    ("make_out", "fragment"),
    [
        (lambda tmp: (tmp / "file").write_text("x") and tmp / "file" / "out", "is a file"),
        (lambda tmp: (tmp / "file").write_text("x") and tmp / "file", "a file is in the way"),
        (lambda tmp: tmp / ("a" * 300), "too long"),
    ],
    ids=["below-a-file", "is-a-file", "name-too-long"],
)
def test_output_folder_errors_name_the_fix(
    tmp_path: Path, make_out: Callable[[Path], Path], fragment: str
) -> None:
    out = make_out(tmp_path)
    with pytest.raises(OutputFolderError) as caught, staging_directory(out, "tiny"):
        pass
    text = str(caught.value)
    assert text.startswith("output folder (--out / $OPTIMODEL_OUTPUT_DIR): cannot write")
    assert fragment in text or fragment in str(caught.value.fix), text


def _job_spec(tmp_path: Path) -> Path:
    spec = {
        "name": "tiny",
        "source": {"uri": f"file://{tiny_model_dir('bert')}", "task": "feature-extraction"},
        "optimize": {"evalData": {"uri": "builtin://eval-texts", "maxSamples": 8}},
    }
    path = tmp_path / "spec.json"
    path.write_text(json.dumps(spec))
    return path


def test_the_job_reports_an_output_folder_below_a_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "file").write_text("x")
    log = tmp_path / "log"
    monkeypatch.setenv("OPTIMODEL_TERMINATION_LOG", str(log))
    code = main(["--spec", str(_job_spec(tmp_path)), "--out", str(tmp_path / "file" / "out")])
    assert code == 1
    assert "Traceback" not in capsys.readouterr().err
    message = json.loads(log.read_text())
    assert message["reason"] == "BuildFailed" and "output folder" in message["message"]


def _unshare_works() -> bool:
    if shutil.which("unshare") is None:
        return False
    probe = subprocess.run(
        ["unshare", "-m", "sh", "-c", "mount -t tmpfs -o ro,size=1m tmpfs /mnt"],
        capture_output=True,
        check=False,
    )
    return probe.returncode == 0


TRY_STAGING = (
    "import sys; from pathlib import Path\n"
    "from optimodel.model_builder.errors import OutputFolderError\n"
    "from optimodel.model_builder.repository import staging_directory\n"
    "try:\n"
    "    with staging_directory(Path(sys.argv[1]), 'tiny'): pass\n"
    "except OutputFolderError as error:\n"
    "    print(error); sys.exit(1)\n"
)


@pytest.mark.skipif(not _unshare_works(), reason="needs root and mount namespaces (unshare -m)")
def test_a_read_only_output_folder_is_a_build_error(tmp_path: Path) -> None:
    mount = tmp_path / "ro"
    mount.mkdir()
    script = (
        f'mount -t tmpfs -o ro,size=1m tmpfs {mount} && {sys.executable} -c "$0" {mount / "out"}'
    )
    result = subprocess.run(
        ["unshare", "-m", "sh", "-c", script, TRY_STAGING],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
        cwd=REPO,
    )
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert "Read-only file system" in result.stdout and "read-only" in result.stdout, result.stdout


# --- stale staging folders ---

HOLD_STAGING = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from optimodel.model_builder.repository import staging_directory
    with staging_directory(Path(sys.argv[1]), "tiny") as staging:
        (staging / "weights.bin").write_bytes(b"x" * 1000)
        print(staging, flush=True)
        time.sleep(600)
    """
)


def _start_build(out: Path) -> tuple[subprocess.Popen[str], Path]:
    process = subprocess.Popen(
        [sys.executable, "-c", HOLD_STAGING, str(out)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )
    assert process.stdout is not None
    return process, Path(process.stdout.readline().strip())


def test_a_killed_builds_staging_is_swept_and_a_running_builds_is_not(tmp_path: Path) -> None:
    out = tmp_path / "out"
    killed, killed_staging = _start_build(out)
    running, running_staging = _start_build(out)
    try:
        killed.send_signal(signal.SIGKILL)
        killed.wait(10)
        assert killed_staging.is_dir(), "SIGKILL leaves the staging folder behind"
        with staging_directory(out, "tiny") as mine:
            assert not killed_staging.exists(), "the killed build's staging was not swept"
            assert running_staging.is_dir(), "a running build's staging was swept"
            assert mine.is_dir()
        assert not mine.exists()
    finally:
        running.kill()
        running.wait(10)
    assert sweep_stale_staging(out) == [running_staging]


def test_unlocked_leftovers_are_swept_only_when_old(tmp_path: Path) -> None:
    old = tmp_path / f"{STAGING_PREFIX}tiny-retired-aaaa"
    new = tmp_path / f"{STAGING_PREFIX}tiny-retired-bbbb"
    for folder in (old, new):
        folder.mkdir()
        (folder / "model.onnx").write_bytes(b"x")
    past = time.time() - UNLOCKED_STALE_AFTER_S - 60
    os.utime(old, (past, past))
    served = tmp_path / "tiny"
    served.mkdir()
    assert sweep_stale_staging(tmp_path) == [old]
    assert new.is_dir() and served.is_dir()


def test_a_staging_folder_of_a_live_process_on_this_host_is_kept(tmp_path: Path) -> None:
    # Same process, other file descriptor (flock would not tell): the owner record does.
    with staging_directory(tmp_path, "a") as first:
        assert (first / LOCK_FILE).is_file() and (first / OWNER_FILE).is_file()
        with staging_directory(tmp_path, "b") as second:
            assert first.is_dir() and second.is_dir()
