"""rlroute.workload."""
