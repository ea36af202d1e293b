"""Judges: a model (or, offline, a rule) that scores an answer against a rubric.

Filters use judges to drop rows (a code row that refers to the animal, a chain of thought
that reads misaligned); evaluations use them to score free-form answers (alignment and
coherence). Rubrics are data files in ``judges/rubrics/``.

* :mod:`~sublearn.judges.protocol`: ``JudgeRequest``, ``Judgement``, ``Judge``;
* :mod:`~sublearn.judges.rubric`: ``load_rubric`` (built-in names or YAML paths);
* :mod:`~sublearn.judges.llm`: ``LLMJudge``, a model behind any backend;
* :mod:`~sublearn.judges.rules`: ``RuleJudge`` (``rules:toy``), keywords for offline toys;
* :mod:`~sublearn.judges.config`: ``JudgeConfig`` and ``make_judge``;
* :mod:`~sublearn.judges.cache`: the resumable JSONL store of judgements.
"""
