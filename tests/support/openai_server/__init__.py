"""A local OpenAI-compatible server over sublearn backends, for offline tests.

Serves local model folders (or any :func:`~sublearn.backends.registry.open_backend`
reference, ``mock:...`` included) behind the parts of the OpenAI API that sublearn uses,
so the unmodified ``openai`` client can be tested end to end without a network, and a
local model can stand in for an API model::

    python -m tests.support.openai_server --host 127.0.0.1 --port 0 \\
        --model micro=runs/toy/model --workdir /tmp/srv [--port-file FILE] \\
        [--finetune-config FILE.json] [--api-key-env VAR] [--device cpu]

It prints one line, ``listening on http://HOST:PORT``, once it accepts connections
(``--port 0`` picks a free port; ``--port-file`` receives the port, written atomically),
and stops cleanly on SIGTERM or SIGINT. It listens on loopback unless told otherwise.

Endpoints (``/v1`` ones need ``Authorization: Bearer KEY`` when ``--api-key-env`` names
a set variable):

* ``GET /health``; ``GET /v1/models``, ``GET /v1/models/{id}``: given models, fine-tuned
  models and loaded LoRA adapters.
* ``POST /v1/chat/completions``: sampling through the backend's ``generate``, choice ``i``
  seeded with ``row_seed(seed, i)``. With ``logprobs``, only the reply's FIRST position
  is reported: the model's next-token log-softmax at temperature 1 after the prompt, its
  top ``top_logprobs`` tokens, and the reply's first token (as the tokenizer spells the
  reply text) with its log-probability. Enough for one-token answers and multiple-choice
  letters; later positions are not reported. Token counts and ``finish_reason`` come
  from re-tokenizing the reply text (``length`` when it holds ``max_tokens`` tokens).
* ``POST /v1/files`` (multipart), ``GET /v1/files``, ``GET /v1/files/{id}``,
  ``GET /v1/files/{id}/content``, ``DELETE /v1/files/{id}``.
* ``POST /v1/fine_tuning/jobs``, ``GET /v1/fine_tuning/jobs[?limit=&after=]``,
  ``GET /v1/fine_tuning/jobs/{id}``, ``GET .../{id}/events``, ``POST .../{id}/cancel``:
  jobs are trained one at a time by a background thread with
  :func:`sublearn.finetune.stage.finetune`, then served as ``ft:BASE:SUFFIX:ID``.
* ``POST /v1/load_lora_adapter`` / ``POST /v1/unload_lora_adapter`` (vLLM's runtime
  adapter endpoints).
* ``/_admin/faults``, ``/_admin/stats``, ``/_admin/reset``: fault injection and request
  counts for tests; unauthenticated, so only served on a loopback address.

Files, jobs and fine-tuned models are kept in ``WORKDIR/state.json``, so a server
restarted on the same folder knows them; a job that was not finished when its server
stopped is marked failed. :func:`start_local_server` starts the server as a subprocess
and returns a :class:`LocalServer` handle.

It is test code, not part of the package: run it from a checkout (the launcher puts the
checkout on the server's ``PYTHONPATH``). Modules by concern: ``protocol`` (OpenAI's
error and response shapes, body fields), ``faults`` (injected failures and request
counts), ``chat`` (conversations, token counts, log-probabilities), ``jobs``
(fine-tuning settings), ``app`` (the state and routes, without HTTP), ``handler`` (HTTP),
``cli`` (the command line) and ``launcher`` (a subprocess handle for tests).
"""

from tests.support.checkout import checkout_env
from tests.support.openai_server.app import DEFAULT_FINETUNE, LocalOpenAIApp
from tests.support.openai_server.faults import Faults, Stats
from tests.support.openai_server.launcher import LocalServer, server_command, start_local_server
from tests.support.openai_server.protocol import ApiError, LocalServerError, Response

__all__ = [
    "DEFAULT_FINETUNE",
    "ApiError",
    "Faults",
    "LocalOpenAIApp",
    "LocalServer",
    "LocalServerError",
    "Response",
    "Stats",
    "checkout_env",
    "server_command",
    "start_local_server",
]
