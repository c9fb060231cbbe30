"""The paper's studies, built on the protocol's stages.

- :mod:`.image` — the image study's settings, splits and evaluation (ViT on Fashion-MNIST with
  a domain shift), and the stage calls the CLI demo uses;
- :mod:`.seed` — one study seed as one sequence of the protocol's stages, for any model family
  (:class:`~.seed.SeedWorld`, :func:`~.seed.run_seed`); :mod:`.vit_fmnist` and :mod:`.opt_code`
  supply their worlds;
- :mod:`.baselines` — the compared unlearning methods (fine-tune after mask, gradient ascent,
  SSD, SalUn);
- :mod:`.metrics` — accuracies, recovery, membership inference.

Entry points with command lines are in ``experiments/``.
"""
