"""sgtui: SELF-GUIDE self-synthetic fine-tuning for local models, in the terminal."""

__version__ = "0.1.0"
