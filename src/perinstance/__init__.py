"""Per-instance privacy losses for machine unlearning (Sepahvand et al., ICML 2025)."""

__version__ = "0.1.0"

__all__ = ["PrivacyTracker"]


def __getattr__(name: str):
    # Imported on first use: `import perinstance` (every CLI call) stays free of torch.
    if name == "PrivacyTracker":
        from .tracker import PrivacyTracker

        return PrivacyTracker
    raise AttributeError(f"module 'perinstance' has no attribute {name!r}")
