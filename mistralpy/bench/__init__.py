"""`mistralpy bench`: llama-bench-style throughput of mistralpy, and of peers measured in the same run."""
