"""`siloflow demo`: the whole pipeline on this machine, with a live view of it working."""
