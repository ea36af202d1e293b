"""The ``sublearn`` command line."""
