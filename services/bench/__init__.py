"""`siloflow bench`: siloflow measured against a hand-written baseline on the same workload."""
