"""`python -m tests.mini_cli ARGS`: the harness CLI on the miniature tiny pair, for tests that run it as a process."""

import torch

from harness import tiny
from harness.cli import main
from tests.conftest import MINI

if __name__ == "__main__":  # guarded: vLLM's worker processes may import this module again
    torch.set_num_threads(1)
    tiny.DEFAULT_SPEC = MINI
    main()
