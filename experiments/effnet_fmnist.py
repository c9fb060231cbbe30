"""Study 1b — personalized unlearning of a pretrained EfficientNet-Lite0 (ImageNet weights) on
Fashion-MNIST: the image study with a pretrained global model, as in the paper.

Command line (the options of ``experiments/vit_fmnist.py``)::

    python -m experiments.effnet_fmnist --config default --out experiments/results/effnet_fmnist.json \\
        --figures docs/figures --cache-dir /tmp/zk_effnet_cache --sweeps fraction,damping
    python -m experiments.effnet_fmnist --config tiny --out /tmp/effnet_tiny.json --sweeps none   # CI smoke
"""

from __future__ import annotations

from experiments import vit_fmnist
from experiments.configs import effnet_fmnist as configs


def main(argv=None) -> int:
    return vit_fmnist.main(argv, configs=configs, prog="python -m experiments.effnet_fmnist",
                           description=__doc__.split("\n")[0])


if __name__ == "__main__":
    raise SystemExit(main())
