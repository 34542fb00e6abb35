"""rlroute.env."""
