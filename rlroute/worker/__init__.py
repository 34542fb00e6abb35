"""rlroute.worker."""
