"""Tools around the product, not part of a run: the local stand-ins for a cluster's servers
(servers.py) and the rehearsal of the cluster workflow on them (rehearsal.py, `make
cluster-rehearsal`; rehearsal_nodes.py is its autoscaler's node provider), and the GPU machine's
check (gpu_check.py, `make gpu-check`). The benchmarks are in bench/."""
