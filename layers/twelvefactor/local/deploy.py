"""What `make deploy` adds to ``sam deploy``: the built layer's hash, as the LayerCodeSha256 parameter.

Every function publishes its versions on that hash (``AutoPublishCodeSha256``), because SAM derives a
new version only from the function's own code: a deploy that changes only the layer (nearly all our
code, the dependencies and the prompts) would otherwise leave every ``live`` alias on the old layer.

``sam deploy --parameter-overrides`` replaces samconfig.toml's ``parameter_overrides`` instead of
adding to it, so the environment's own overrides are read here and the hash is appended to them.

    python -m twelvefactor.local.deploy --config-env dev [--layer .aws-sam/build/TwelvefactorLayer]
"""

from __future__ import annotations

import argparse
import hashlib
import shlex
import sys
import tomllib
from collections.abc import Sequence
from pathlib import Path

DEFAULT_LAYER = Path(".aws-sam/build/TwelvefactorLayer")
PARAMETER = "LayerCodeSha256"


class LayerNotBuilt(RuntimeError):
    pass


def layer_sha256(directory: Path) -> str:
    """SHA-256 over every file of the built layer: its path, whether it is executable, its bytes.
    Timestamps are left out, so two builds of the same sources give the same hash."""
    if not directory.is_dir() or not any(directory.iterdir()):
        raise LayerNotBuilt(f"{directory} holds no built layer: run `make build` first")
    digest = hashlib.sha256()
    for path in sorted(p for p in directory.rglob("*") if p.is_file()):
        digest.update(path.relative_to(directory).as_posix().encode() + b"\0")
        digest.update(b"x" if path.stat().st_mode & 0o111 else b"-")
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


def parameter_overrides(samconfig: Path, config_env: str, layer: Path) -> str:
    """The environment's parameter_overrides from samconfig.toml, with the layer's hash appended."""
    config = tomllib.loads(samconfig.read_text(encoding="utf-8"))
    configured = str(
        config.get(config_env, {}).get("deploy", {}).get("parameters", {}).get("parameter_overrides", "")
    )
    kept = [item for item in shlex.split(configured) if not item.startswith(f"{PARAMETER}=")]
    return " ".join([*kept, f"{PARAMETER}={layer_sha256(layer)}"])


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m twelvefactor.local.deploy", description=__doc__)
    parser.add_argument(
        "--config-env", default="default", help="samconfig.toml environment (default, dev, prod)"
    )
    parser.add_argument("--samconfig", type=Path, default=Path("samconfig.toml"))
    parser.add_argument("--layer", type=Path, default=DEFAULT_LAYER, help="the built layer's directory")
    arguments = parser.parse_args(argv)
    try:
        print(parameter_overrides(arguments.samconfig, arguments.config_env, arguments.layer))
    except LayerNotBuilt as error:
        print(error, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
