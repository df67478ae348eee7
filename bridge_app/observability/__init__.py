"""Observability: metrics, the audit trail of calls, health."""
