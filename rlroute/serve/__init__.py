"""rlroute.serve."""
