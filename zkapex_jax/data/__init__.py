"""Data the stages run on, read only from files installed on this machine (nothing is
downloaded).

- :mod:`.images` — Fashion-MNIST (Debian ``dataset-fashion-mnist``), the provider / client /
  forget splits and the client's domain shift (re-exported here);
- :mod:`.code` — the code corpus from installed source files, the tokenizer, LM splits;
- :mod:`.files` — your own data: an ``.npz`` (``x``, ``y``) or an image folder per class.
"""

from .images import *  # noqa: F401,F403
from .images import __all__  # noqa: F401
