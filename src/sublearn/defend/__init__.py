"""Data-level defences against subliminal learning: write a cleaned copy of a chat dataset.

Defences drop rows (``drop_lls``), mask reply spans from the loss (``mask_logratio``,
``mask_random``: a ``"loss_mask"`` field of character spans the trainer skips), or
rewrite replies or prompts (``replace_logratio``, ``canonicalize``, ``shuffle_numbers``,
``paraphrase``, ``mix_teachers``). :mod:`~sublearn.defend.config` holds their settings,
:mod:`~sublearn.defend.transforms` the model-free functions and
:mod:`~sublearn.defend.run` the command that scores, applies and writes.
"""
