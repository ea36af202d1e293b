"""Subliminal learning in MLPs: auxiliary-logit distillation on noise (paper section 5).

Modules: ``config`` (the pydantic config, torch-free), ``data`` (digits and IDX
readers), ``model`` (N MLPs as one batched network), ``train`` (teacher training and
distillation), ``experiment`` (the six conditions and the run folder), ``plot``.
"""
