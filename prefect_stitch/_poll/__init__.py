"""One poll per Stitch account: the process's poller, and its sharing across processes."""
