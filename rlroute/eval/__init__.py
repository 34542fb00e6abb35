"""rlroute.eval."""
