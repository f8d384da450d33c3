"""The CPU smoke mode end to end: every section runs, JSON and Markdown are written."""

import json

import pytest
import torch

from attngan_fast.bench import cli, results
from attngan_fast.bench.ops import PASSES, implementations
from attngan_fast.bench.shapes import OPS


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    assert cli.main(["--cpu-smoke", "--out", str(out)]) == 0
    (json_path,) = out.glob("*.json")
    (md_path,) = out.glob("*.md")
    return json.loads(json_path.read_text()), md_path.read_text(), json_path


def test_files_are_named_after_the_device_and_date(smoke):
    payload, _, json_path = smoke
    assert json_path.name.startswith("cpu_") and payload["env"]["date_utc"][:10] in json_path.name


def test_environment_stamp(smoke):
    env = smoke[0]["env"]
    for key in ("date_utc", "torch", "triton", "python", "commit", "backends", "device"):
        assert key in env
    assert env["torch"] == torch.__version__ and env["device"] == "cpu"
    ceilings = smoke[0]["ceilings"]
    assert ceilings["hbm_gbps"] > 0 and set(ceilings["matmul_tflops"]) == {"bf16", "tf32", "fp32"}


def test_rows_for_every_op_backend_and_pass(smoke):
    rows = smoke[0]["ops"]["rows"]
    status = {(r["op"], r["backend"], r["pass"]): r["status"] for r in rows}
    expected = {
        (op, name, p)
        for op in OPS
        for name in implementations(op, torch.device("cpu"))
        for p in PASSES
    }
    assert set(status) == expected
    # every implementation runs on the CPU (Triton through its interpreter): a row that records
    # an error is a broken harness or backend, never a pass
    assert {key: s for key, s in status.items() if s != "ok"} == {}
    assert {name for op, name, _ in expected} >= {"eager", "compiled", "torch", "triton"}
    for r in rows:
        assert r["median_ms"] > 0 and r["reps"] >= 1 and r["roofline_frac"] > 0
        if r["backend"] == "eager":
            assert r["speedup_vs_eager"] == pytest.approx(1.0)
        assert r["speedup_vs_compiled"] is not None


def test_end_to_end_rows_with_flops_and_phases(smoke):
    rows = {r["variant"]: r for r in smoke[0]["e2e"]["rows"]}
    assert set(rows) == {"a", "b"}
    for r in rows.values():
        assert r["status"] == "ok" and r["median_ms"] > 0 and r["images_per_s"] > 0
        assert r["model_flops_per_iter"] > 0 and r["speedup_vs_a"] > 0
    assert rows["a"]["damsm"] == "original loop" and rows["b"]["damsm"] == "fused"
    for key in ("a", "b"):
        phases = rows[key]["phases_ms"]
        assert {"G", "D", "image_encoder", "DAMSM"} <= set(phases)


def test_markdown_and_headline(smoke):
    payload, md, _ = smoke
    assert "CPU smoke run" in md and "## Op microbenchmarks" in md
    assert "## End-to-end training iteration" in md and "| word_attention |" in md
    head = results.headline_table(payload)
    assert "| config | batch |" in head


def test_cpu_numbers_are_not_written_to_the_results_folder(capsys):
    assert cli.main(["--cpu-smoke", "--out", str(results.RESULTS_DIR)]) == 2
    assert "not results" in capsys.readouterr().err
