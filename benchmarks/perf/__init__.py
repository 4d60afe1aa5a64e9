"""Speed questions (``python -m benchmarks.perf.<name>``): throughput of the recipe's step and collection
against the single-file example, the library's overheads, learner threads, scaling, the released code."""
