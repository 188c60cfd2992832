"""``python -m spinedx`` — the entry point torchrun uses: ``torchrun --nproc-per-node 2 -m spinedx train …``."""

from spinedx.cli import main

main()
