"""Training, evaluation, export and the whole loop on the command line (filled in by the
training and evaluation modules)."""
from __future__ import annotations

HANDLERS: dict = {}


def add_commands(sub, add_model_args, add_run_params) -> None:
    return None
