"""Many KL students trained as one batched model.

Students that share an architecture, a tokenizer and a fine-tuning recipe (everything
but the seed) differ only in their starting weights, their data, their data order and
their teacher. This module stacks the N students' weights along a new leading model
axis, ``(N, *shape)``, and trains all of them with one batched forward and backward:
every linear layer is one ``torch.bmm`` over the model axis, as ``BatchedMLP`` does for
the MLP experiment, and one AdamW steps all stacked weights.

Each student still trains as :func:`~sublearn.finetune.distill.train_kl` would train it
alone: the same encoding, its own data order (``random.Random(cfg.seed)``), the same
loss (its ``loss_mask`` spans left out), gradient clipping by its own gradient norm,
the same optimizer (AdamW, or SGD with momentum) and the same schedule. Models
never mix: model i only reads the i-th slice of every weight and input, and its loss
only depends on its slice, so the summed loss's gradient is each model's own. Up to
floating-point rounding the weights equal those of ``train_kl``;
``tests/finetune/test_batched.py`` checks it.

The forward is a small functional Llama (RMSNorm, rotary positions, grouped-query
attention, SwiGLU MLP) over the Hugging Face weights, checked against the Hugging Face
forward by :func:`batched_logits` in the tests. Besides the model axis it skips work
that ``train_kl`` does and throws away, which on a CPU is most of the speed-up (see
``benchmarks/student_training.py``, whose N=1 line measures it):

- tokens are packed per model instead of padded to the longest row, and attention runs
  on rows bucketed by length (:class:`_Packed`);
- the last layer after its keys and values, and the output layer, run only at the
  positions that predict reply tokens, and the output layer only over the token subset;
- each distinct teacher row runs once, however many students see it (students of one
  seed on two bases share their batches) and its hidden states are kept for the next
  epoch (:class:`_Teachers`).

Running the Hugging Face module itself under ``torch.vmap`` also works with eager
attention (SDPA's mask building branches on data), but keeps all of that waste.

Modules by concern: ``grouping`` (which jobs stack), ``packing`` (rows packed per model),
``llama`` (the functional forward), ``loss`` (the per-model KL and its backward) and
``loop`` (the training loop).
"""

from sublearn.finetune.batched.grouping import KLJob, batch_problem, compatible, group_compatible
from sublearn.finetune.batched.llama import batched_hidden, batched_logits
from sublearn.finetune.batched.loop import train_kl_batched

__all__ = [
    "KLJob",
    "batch_problem",
    "batched_hidden",
    "batched_logits",
    "compatible",
    "group_compatible",
    "train_kl_batched",
]
