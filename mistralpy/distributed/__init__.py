"""Beyond one process: engine replicas behind one endpoint on Ray Serve (replicas.py)."""
