"""The engine: a config compiles into a graph of typed tasks (``plan``), each task's output
lives in a content-addressed store (``store``), and an executor runs what is missing
(``executors``: inline, local processes, Ray)."""
