"""The `dfarun` console script: a thin Hydra wrapper around runner.run."""
from __future__ import annotations

import logging
import sys

import hydra
from omegaconf import DictConfig

from .config import CONF_DIR, DfarunError
from .runner import run


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="config")
def _main(cfg: DictConfig) -> None:
    try:
        run(cfg)
    except DfarunError as err:
        print(f"dfarun: error: {err}", file=sys.stderr)
        sys.exit(2)


def main() -> None:
    # torch's compiler warns that a CUDA build found no CUDA runtime; on a CPU machine that is expected
    logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
    _main()
