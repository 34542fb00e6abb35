"""rlroute.train."""
