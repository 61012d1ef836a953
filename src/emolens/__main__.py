"""``python -m emolens`` is the same as the ``emolens`` command."""

from emolens.cli import run

run()
