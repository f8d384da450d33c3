"""``attngan-fast experiment``: a two-setting tiny sweep writes its table, is killed in the middle
of its second setting and, run again, continues where it stopped."""

from __future__ import annotations

import json

import pytest
import torch

from attngan_fast import cli
from attngan_fast.errors import UsageError
from attngan_fast.experiment import sweep
from attngan_fast.experiment.report import markdown_table
from attngan_fast.experiment.settings import SIZES, SWEEPS
from attngan_fast.experiment.sweep import SweepOptions, run_sweep, setting_config, sweep_settings
from attngan_fast.train import gan_trainer

pytestmark = pytest.mark.filterwarnings("ignore:the attribute classifier:RuntimeWarning")

ONLY = ("attngan1-lambda0", "attngan1-lambda1")


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _count_steps(monkeypatch) -> list[int]:
    """The number of every training step the trainer runs from now on."""
    steps: list[int] = []
    real_step = gan_trainer.gan_train_step

    def counted(state, batch):
        steps.append(state.step + 1)
        return real_step(state, batch)

    monkeypatch.setattr(gan_trainer, "gan_train_step", counted)
    return steps


def test_sweep_is_killed_and_resumes(tmp_path, monkeypatch, capsys):
    opts = SweepOptions(out_dir=tmp_path / "exp", size="tiny", only=ONLY, progress=False)
    trained: list[str] = []
    real_train = sweep.train_gan

    def train(cfg, train_opts):
        trained.append(train_opts.out_dir.name)
        if train_opts.out_dir.name == ONLY[1] and len(trained) == 2:  # the first time there
            real_step = gan_trainer.gan_train_step

            def step_or_die(state, batch):
                if state.step == 2:
                    raise KeyboardInterrupt  # killed during its third step
                return real_step(state, batch)

            monkeypatch.setattr(gan_trainer, "gan_train_step", step_or_die)
        return real_train(cfg, train_opts)

    monkeypatch.setattr(sweep, "train_gan", train)
    with pytest.raises(KeyboardInterrupt):
        run_sweep("lambda", opts)
    out = tmp_path / "exp"
    encoders = json.loads((out / "damsm" / "experiment.json").read_text())
    assert encoders["text_encoder"].endswith("text_encoder_best.pth")  # the best epoch's
    assert (out / "results" / f"{ONLY[0]}.json").is_file()
    assert not (out / "results" / f"{ONLY[1]}.json").exists() and not (out / "lambda.md").exists()
    killed = out / "runs" / ONLY[1] / "checkpoint.pt"
    assert torch.load(killed, weights_only=False)["step"] == 2

    monkeypatch.undo()
    monkeypatch.setattr(sweep, "train_gan", train)
    steps = _count_steps(monkeypatch)
    trained.clear()
    capsys.readouterr()
    result = run_sweep("lambda", opts)
    assert trained == [ONLY[1]]  # the finished setting is not trained again
    assert steps == [3]  # and the killed one continues from its checkpoint at step 2
    printed = capsys.readouterr().out
    assert f"{ONLY[0]}: done before" in printed and "at step 2" in printed
    assert [r["setting"] for r in result.rows] == list(ONLY)
    table = json.loads(result.table_json.read_text())
    assert [r["lambda"] for r in table["rows"]] == [0.0, 1.0]
    assert all(r["steps"] == SIZES["tiny"].budget for r in table["rows"])
    # the killed session's time is in the killed setting's training time
    assert [r["train_sessions"] for r in table["rows"]] == [1, 2]
    md = result.table_md.read_text()
    assert "AttnGAN1, no DAMSM" in md and "AttnGAN1, λ = 1" in md and "34.96" in md
    assert result.plot is None or result.plot.is_file()

    trained.clear()
    again = run_sweep("lambda", opts)  # nothing left to do
    assert trained == [] and again.rows == result.rows


def test_a_new_budget_continues_the_runs(tmp_path, monkeypatch):
    opts = SweepOptions(out_dir=tmp_path / "exp", size="tiny", only=ONLY[:1], progress=False)
    run_sweep("lambda", opts)
    steps = _count_steps(monkeypatch)
    opts.budget = 4
    result = run_sweep("lambda", opts)
    assert result.rows[0]["steps"] == 4 and steps == [4]


def test_settings_share_budget_sizes_and_differ_in_what_defines_them():
    sizes = SIZES["tiny"]
    configs = {s.name: setting_config(s, sizes, 16) for s in SWEEPS["baselines"]}
    for cfg in configs.values():
        assert (cfg.GAN.GF_DIM, cfg.GAN.DF_DIM, cfg.TRAIN.BATCH_SIZE) == (2, 2, 4)
        assert cfg.TRAIN.GENERATOR_LR == sizes.lr and cfg.WORKERS == 0
    assert configs["attngan2-lambda5"].TREE.BRANCH_NUM == 3
    assert configs["attngan1-lambda5"].TREE.BRANCH_NUM == 2
    stackgan2 = configs["stackgan2"]
    assert stackgan2.TRAIN.SMOOTH.LAMBDA == 0 and not stackgan2.GAN.B_ATTENTION
    assert configs["gan-int-cls"].GAN.CONDITIONING == "PROJECTION"
    lambdas = [setting_config(s, sizes, 16).TRAIN.SMOOTH.LAMBDA for s in SWEEPS["lambda"]]
    assert lambdas == [0.0, 0.1, 1.0, 5.0, 10.0]


def test_unknown_settings_and_experiments_are_usage_errors(tmp_path, capsys):
    with pytest.raises(UsageError, match="attngan9"):
        sweep_settings("lambda", ["attngan9"])
    assert cli.main(["experiment", "lambda", "--only", "nope", "--out", str(tmp_path)]) == 2
    assert "no setting 'nope'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(["experiment", "gamma"])


def test_markdown_table_shows_scores_and_the_talks_numbers():
    row = {
        "label": "AttnGAN1, λ = 5", "steps": 300, "r_precision": 41.234, "r_precision_std": 3.21,
        "attribute_accuracy": 30.0, "train_seconds": 600, "talk_is": 4.35,
        "talk_r_precision": 58.65,
    }  # fmt: skip
    lines = markdown_table([row]).splitlines()
    assert lines[0].startswith("| setting | steps | R-precision (%) | attribute acc. (%)")
    assert lines[2] == "| AttnGAN1, λ = 5 | 300 | 41.2 ± 3.2 | 30.0 | 10.0 | 4.35 | 58.65 |"
