"""rlroute.features."""
