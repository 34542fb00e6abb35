"""rlroute.quality."""
