"""itercomp: composition-aware preference learning for text-to-image diffusion models (after IterComp)."""

__version__ = "0.1.0"
