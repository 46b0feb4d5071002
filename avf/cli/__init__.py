"""Command-line interface: ``avf`` and its stage aliases."""
