"""Layer 7: timing harness, bundle and sweep suites, plots."""
