"""rlroute.cluster."""
