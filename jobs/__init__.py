"""Stage jobs: one module per stage, run on the cluster as `python -m vlkd.jobs.<stage> --spec URI`.

A job reads its spec, reads its inputs from the artifact store or a URI, publishes its output artifact, and
nothing else: it never knows which backend launched it."""
