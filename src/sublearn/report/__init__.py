"""Statistics, tables, figures and markdown reports."""
