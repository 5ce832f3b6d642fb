"""Layer 7: checks of a bundle as dataclasses, per model x provider x query source."""
