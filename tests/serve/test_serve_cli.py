"""``attngan-fast serve``: its arguments, and the core package without the serve extra."""

import subprocess
import sys

import pytest

from attngan_fast.cli import main


def test_the_core_package_does_not_import_the_web_stack():
    modules = [
        "attngan_fast", "attngan_fast.cli", "attngan_fast.generate", "attngan_fast.demo",
        "attngan_fast.eval.cli", "attngan_fast.serve", "attngan_fast.serve.cli",
    ]  # fmt: skip
    code = (
        f"import importlib, sys\nfor m in {modules!r}: importlib.import_module(m)\n"
        "print(sorted({'fastapi', 'uvicorn', 'starlette', 'sklearn', 'matplotlib'} "
        "& set(sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_without_the_extra_serve_says_how_to_install_it(tiny_run, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "uvicorn", None)  # import uvicorn -> ModuleNotFoundError
    monkeypatch.delitem(sys.modules, "attngan_fast.serve.app", raising=False)
    assert main(["serve", str(tiny_run)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and 'pip install "attngan-fast[serve]"' in err[0] and "uvicorn" in err[0]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "give RUN_DIR or --checkpoint"),
        (["RUN", "--checkpoint", "RUN"], "give RUN_DIR or --checkpoint"),
        (["RUN", "--port", "70000"], "--port must be 1..65535"),
        (["RUN", "--max-n", "0"], "--max-n must be >= 1"),
    ],
)
def test_bad_arguments_are_usage_errors(tiny_run, args, message, capsys):
    args = [str(tiny_run) if a == "RUN" else a for a in args]
    with pytest.raises(SystemExit) as exc:
        main(["serve", *args])
    assert exc.value.code == 2 and message in capsys.readouterr().err


def test_a_missing_model_is_reported_in_one_line(tmp_path, capsys):
    pytest.importorskip("fastapi")
    pytest.importorskip("uvicorn")
    assert main(["serve", str(tmp_path / "nothing")]) == 2
    assert "no checkpoint file or folder" in capsys.readouterr().err


def test_serve_is_listed_in_the_help(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    assert "serve" in capsys.readouterr().out


def test_legacy_mask_reaches_the_attention(tiny_run):
    from attngan_fast.serve.engine import DrawingEngine

    for legacy in (False, True):
        engine = DrawingEngine.from_checkpoint(tiny_run, device="cpu", legacy_mask=legacy)
        assert engine.models.netG.h_net2.att.legacy_mask is legacy
