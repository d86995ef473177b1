"""Reporting: metrics, figures and run summaries."""
