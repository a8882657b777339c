"""caviar against the tools a user would pick instead, on one workload (`make bench-peers`).

Each system runs in a process of its own, started by `bench.peers.command`; the process writes
what it measured to a JSON file (see `workload.Measured`) and the parent adds the whole
process's wall time. The peers' code follows their own documentation's idioms.
"""
