"""rlroute.export."""
