"""adapterhub: a catalog of LoRA adapters that composes new adapters from them on demand."""

__version__ = "0.1.0"
