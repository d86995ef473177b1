"""benchmarks/predict_speed.py runs end to end, and the onnxruntime session it measures follows torch's
thread count without spinning."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch

from emotionvision.models.onnx import OnnxClassifier

REPO_ROOT = Path(__file__).resolve().parents[1]
onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")


def tiny_onnx(path: Path, classes: list[str], size: int) -> Path:
    """An ONNX file with emotionvision-export's metadata: the softmax of the channel means (3 classes)."""
    from onnx import TensorProto, helper

    nodes = [
        helper.make_node("GlobalAveragePool", ["images"], ["pooled"]),
        helper.make_node("Flatten", ["pooled"], ["flat"]),
        helper.make_node("Softmax", ["flat"], ["probabilities"], axis=1),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, ["batch", 3, size, size])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["batch", 3])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=10)
    helper.set_model_props(model, {"class_names": json.dumps(classes), "input_size": str(size)})
    onnx.save(model, path)
    return path


def test_onnx_session_takes_torchs_threads_and_sleeps_between_runs(tmp_path: Path) -> None:
    path = tiny_onnx(tmp_path / "tiny.onnx", ["anger", "happy", "sad"], 8)
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # onnxruntime's own default is every core (0)
    try:
        classifier = OnnxClassifier(path)
    finally:
        torch.set_num_threads(before)
    options = classifier.session.get_session_options()
    assert options.intra_op_num_threads == 1
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    images = torch.zeros(2, 3, 8, 8)
    images[:, 1] = 1.0  # the 'happy' channel is brightest
    assert classifier.probabilities(images).argmax(dim=1).tolist() == [1, 1]


@pytest.mark.slow
def test_benchmark_quick_run_measures_every_row(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    spec = importlib.util.spec_from_file_location(
        "predict_speed", REPO_ROOT / "benchmarks" / "predict_speed.py"
    )
    benchmark = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(benchmark)
    before = torch.get_num_threads()
    try:
        rows = benchmark.main(["--quick", "--threads", "1", "--work-dir", str(tmp_path)])
    finally:
        torch.set_num_threads(before)
    output = capsys.readouterr().out
    model = [row for row in rows if row["kind"] == "model"]
    assert [(row["size"], row["batch"]) for row in model] == [(32, 1), (32, 32)]
    for row in model:
        assert row["images"] == 8 and all(row[side] > 0 for side in benchmark.SIDES)
        assert row["predictor/plain"] > 0 and row["onnx/plain"] > 0
    ends = {(row["faces"], row["batch"]): row for row in rows if row["kind"] == "end_to_end"}
    assert sorted(ends) == [("mtcnn", 1), ("mtcnn", 32), ("none", 1), ("none", 32)]
    for (faces, _), row in ends.items():
        assert row["images_per_s"] > 0 and 0 < row["decode"] < 1
        # the detector's time is part of decode's, and there only with face crops
        assert (0 < row["detect"] <= row["decode"]) if faces == "mtcnn" else row["detect"] == 0
    printed = [line.split() for line in output.splitlines()]
    assert sum(line[:2] in (["32", "1"], ["32", "32"]) for line in printed) == 6  # 2 model + 4 end-to-end
    assert "reproduce:" in output and "load before:" in output
