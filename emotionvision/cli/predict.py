"""`emotionvision-predict`: label image files and folders with a trained checkpoint (see
emotionvision/inference.py for the Python API)."""

from __future__ import annotations

import logging
from pathlib import Path

import hydra
from omegaconf import DictConfig

from emotionvision.cli.hydra_compat import share_config_store
from emotionvision.cli.resume import register_resolvers
from emotionvision.cli.usage import reports_usage_errors
from emotionvision.outputs import check_prediction_output
from emotionvision.runtime import set_torch_threads

log = logging.getLogger(__name__)


# the resolvers of conf/hydra/default.yaml, before Hydra composes
register_resolvers()
share_config_store()


@hydra.main(version_base="1.3", config_path="pkg://emotionvision.conf", config_name="predict")
@reports_usage_errors("emotionvision-predict")
def main(cfg: DictConfig) -> None:
    """Console entry point: predict `inputs` with `ckpt_path` and write `output`."""
    output = Path(cfg.output)
    check_prediction_output(output)  # before torch: a bad value answers at once
    from emotionvision.inference import Predictor, write_predictions  # torch: not for --help
    from emotionvision.models.cam import check_explainable, explain_predictions

    set_torch_threads(cfg.threads)
    inputs = [cfg.inputs] if isinstance(cfg.inputs, str) else list(cfg.inputs)
    predictor = Predictor(
        cfg.ckpt_path,
        device=cfg.device,
        batch_size=cfg.batch_size,
        tta=cfg.tta,
        max_image_pixels=cfg.max_image_pixels,
    )
    if cfg.explain:
        check_explainable(predictor.model, cfg.cam_method)
    predictions = predictor.predict(inputs, top_k=cfg.top_k)
    write_predictions(predictions, output)
    if cfg.explain:
        overlays = explain_predictions(predictor, predictions, output.parent / "cam", cfg.cam_method)
        log.info("%d %s overlays written to %s", len(overlays), cfg.cam_method, output.parent / "cam")
    unreadable = sum(p.error is not None for p in predictions)
    log.info(
        "Predictions (tta=%s) for %d files written to %s (%d unreadable)",
        predictor.tta, len(predictions), output, unreadable,
    )  # fmt: skip


if __name__ == "__main__":
    main()
