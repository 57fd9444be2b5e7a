"""`make deploy` publishes new function versions whenever the built layer changed, and only then."""

from __future__ import annotations

from pathlib import Path

import pytest

from twelvefactor.local.deploy import LayerNotBuilt, layer_sha256, main, parameter_overrides


@pytest.fixture
def layer(tmp_path: Path) -> Path:
    built = tmp_path / "TwelvefactorLayer"
    (built / "python" / "twelvefactor").mkdir(parents=True)
    (built / "python" / "twelvefactor" / "runtime.py").write_text("x = 1\n")
    (built / "prompts").mkdir()
    (built / "prompts" / "deploybot.jinja").write_text("You deploy.\n")
    return built


def test_the_same_build_gives_the_same_hash_and_any_change_another(layer: Path) -> None:
    # Given a built layer and its hash
    first = layer_sha256(layer)
    # When nothing changes, Then the hash is the same (timestamps do not count)
    (layer / "prompts" / "deploybot.jinja").touch()
    assert layer_sha256(layer) == first
    # When only a prompt changes, Then the hash changes
    (layer / "prompts" / "deploybot.jinja").write_text("You deploy carefully.\n")
    changed = layer_sha256(layer)
    assert changed != first
    # When a file is renamed with the same bytes, Then it changes too
    (layer / "prompts" / "deploybot.jinja").rename(layer / "prompts" / "other.jinja")
    assert layer_sha256(layer) not in (first, changed)


def test_an_unbuilt_layer_is_refused(tmp_path: Path) -> None:
    with pytest.raises(LayerNotBuilt, match="make build"):
        layer_sha256(tmp_path / "missing")


def test_overrides_keep_the_environments_own_and_add_the_hash(layer: Path, tmp_path: Path) -> None:
    # Given an environment whose samconfig already overrides parameters (sam would drop them when
    # --parameter-overrides is given on the command line)
    samconfig = tmp_path / "samconfig.toml"
    samconfig.write_text(
        'version = 0.1\n[dev.deploy.parameters]\nparameter_overrides = "Stage=dev LayerCodeSha256=stale"\n'
    )
    # When the overrides for `make deploy` are made
    overrides = parameter_overrides(samconfig, "dev", layer)
    # Then the environment's own are kept, and the hash is the built layer's, once
    assert overrides == f"Stage=dev LayerCodeSha256={layer_sha256(layer)}"
    # And an environment without overrides gets the hash alone
    assert parameter_overrides(samconfig, "prod", layer) == f"LayerCodeSha256={layer_sha256(layer)}"


def test_the_command_prints_the_overrides_or_says_to_build(
    layer: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    samconfig = tmp_path / "samconfig.toml"
    samconfig.write_text("version = 0.1\n")
    assert main(["--samconfig", str(samconfig), "--layer", str(layer)]) == 0
    assert capsys.readouterr().out.strip() == f"LayerCodeSha256={layer_sha256(layer)}"
    assert main(["--samconfig", str(samconfig), "--layer", str(tmp_path / "none")]) == 1
    assert "run `make build` first" in capsys.readouterr().err
