"""A folder of training checkpoints, scanned after the fact: ``weightscope.scan_run`` (see docs/runs.md).

Modules: ``discovery`` (which files, which steps), ``identity`` (is a
checkpoint whole, the cache key), ``cache``, ``analyse`` (scan and drift of
one checkpoint), ``trajectory`` (``scan_run``, ``Trajectory``), ``report``
(terminal). Nothing is imported here, so the CLI's run-folder check stays cheap.
"""
