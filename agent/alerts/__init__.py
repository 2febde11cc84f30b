"""Alerts: rules evaluated on the agent's own numbers, notifications to webhooks.

``config`` (the ``[alerts]`` table), ``model`` (the notification record), and the
stages: rule evaluation and state, formats and signing, the persistent outbox and its
delivery threads. Nothing here runs on the sampling loop's thread.
"""
