"""Several nodes on one box: the supervisor that runs and restarts them on
one port, and the box view that answers /metrics and /health for all of them."""
