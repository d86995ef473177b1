"""`emotionvision-export`: a checkpoint's classifier as an ONNX (or torch.export .pt2) file, checked
against PyTorch (the library: emotionvision/exporting.py).

`emotionvision-export ckpt_path=RUN/checkpoints/best-epoch007.ckpt` writes `best-epoch007.onnx` beside it
and checks it with onnxruntime; `emotionvision-predict ckpt_path=...onnx` runs it. ONNX needs the
`export` extra (onnx, onnxscript for torch's exporter, onnxruntime).
"""

from __future__ import annotations

import logging

import hydra
from omegaconf import DictConfig

from emotionvision.cli.hydra_compat import share_config_store
from emotionvision.cli.resume import register_resolvers
from emotionvision.cli.usage import reports_usage_errors
from emotionvision.outputs import export_path

log = logging.getLogger(__name__)


# the resolvers of conf/hydra/default.yaml, before Hydra composes
register_resolvers()
share_config_store()


@hydra.main(version_base="1.3", config_path="pkg://emotionvision.conf", config_name="export")
@reports_usage_errors("emotionvision-export")
def main(cfg: DictConfig) -> None:
    """Console entry point: export `ckpt_path` to `format` and check it."""
    export_path(cfg.ckpt_path, cfg.format, cfg.output)  # before torch: a bad value answers at once
    from emotionvision.exporting import export  # torch: not for --help

    images = [cfg.check_images] if isinstance(cfg.check_images, str) else list(cfg.check_images or [])
    path, _ = export(cfg.ckpt_path, cfg.format, cfg.output, cfg.opset, cfg.check, images, cfg.tolerance)
    log.info("Exported %s to %s", cfg.ckpt_path, path)


if __name__ == "__main__":
    main()
