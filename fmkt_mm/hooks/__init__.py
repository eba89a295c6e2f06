"""MMEngine hooks of fmkt_mm."""
