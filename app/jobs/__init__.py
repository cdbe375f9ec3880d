"""Check records, the worker pool, and the task every worker runs (``run_job``)."""
