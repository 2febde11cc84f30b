"""One job measured on its own: ``sci-agent measure -- CMD`` and ``sci.Tracker``.

``membership`` decides which processes belong to the job (its process tree, detached
descendants included); ``meter`` measures them with the agent's own pipeline (the
same sensors, attribution, shares and scoring as the daemon), so a job's numbers are
the numbers the dashboard would show for it.
"""
