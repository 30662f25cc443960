def throughput(names=None): return []
