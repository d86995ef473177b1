"""`emotionvision-eval`: the evaluation report of a checkpoint (or of an ensemble: `ckpt_path=[A,B]` or
a sweep's folder), on a split of the run that made it (its split.csv) or on any class-per-folder tree
(`data.root=`), with test-time augmentation `tta=`; see emotionvision/evaluation.py."""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from emotionvision.cli.hydra_compat import share_config_store
from emotionvision.cli.resume import register_resolvers
from emotionvision.cli.usage import reports_usage_errors
from emotionvision.errors import check_arguments
from emotionvision.runtime import set_torch_threads

# the resolvers of conf/hydra/default.yaml, before Hydra composes
register_resolvers()
share_config_store()


@hydra.main(version_base="1.3", config_path="pkg://emotionvision.conf", config_name="eval")
@reports_usage_errors("emotionvision-eval")
def main(cfg: DictConfig) -> None:
    """Console entry point."""
    from emotionvision.evaluation import evaluate  # torch and Lightning: not for --help or a config error

    set_torch_threads(cfg.threads)
    check_arguments(cfg.trainer, "trainer")
    evaluate(cfg)


if __name__ == "__main__":
    main()
