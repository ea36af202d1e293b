"""``sublearn view``: runs, sweeps and audits as web pages (a local server or report.html)."""
