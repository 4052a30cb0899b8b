"""Per-instance privacy losses for machine unlearning (Sepahvand et al., ICML 2025)."""

__version__ = "0.1.0"
