"""vLLM itself, through the launcher, against the Hugging Face backend (``pytest -m gpu``).

Needs a CUDA device, the ``vllm`` extra and a small chat model: ``SUBLEARN_GPU_TEST_MODEL``
(a local folder or a hub id already in the Hugging Face cache; default
SmolLM2-135M-Instruct). Both backends load the same local folder, so nothing is downloaded.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import urllib.request
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import torch

from sublearn.backends.base import Conversation, SamplingParams
from sublearn.backends.hf import HFBackend
from sublearn.backends.vllm_server import VLLMServer, VLLMServerConfig, adapter_name

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
    pytest.mark.skipif(
        importlib.util.find_spec("vllm") is None,
        reason="needs vllm: pip install 'sublearn[vllm]'",
    ),
]

MODEL = os.environ.get("SUBLEARN_GPU_TEST_MODEL", "HuggingFaceTB/SmolLM2-135M-Instruct")
# float16 rather than vLLM's default bfloat16: 3 more mantissa bits keep its log-probs
# within the tolerances below of the float32 reference.
DTYPE = os.environ.get("SUBLEARN_GPU_TEST_DTYPE", "float16")
Q: Conversation = [{"role": "user", "content": "Name your favorite animal in one word."}]
N_SAMPLES = 400
# Sent with every request: vLLM otherwise takes sampling defaults from the model's
# generation_config.json (top_p, repetition_penalty...), which HFBackend ignores.
PLAIN = {"top_k": -1, "min_p": 0.0, "repetition_penalty": 1.0}
# Tokens below this probability are pooled into one bucket for the distribution checks:
# a long tail seen once or never in 400 samples would add noise, not information.
MIN_P = 0.01


def _model_folder() -> Path:
    """The test model as a local folder (conftest points HF_HOME at an empty temp dir)."""
    if Path(MODEL).is_dir():
        return Path(MODEL)
    from huggingface_hub import snapshot_download

    # The user's cache, not the tests' empty one.
    cache = os.environ.get("HF_HUB_CACHE") or str(Path.home() / ".cache" / "huggingface" / "hub")
    try:
        return Path(snapshot_download(MODEL, cache_dir=cache, local_files_only=True))
    except Exception as err:  # any hub error means: not cached here
        pytest.skip(f"{MODEL} is not in the Hugging Face cache at {cache}: {err}")


@pytest.fixture(scope="module")
def model() -> Path:
    return _model_folder()


@pytest.fixture(scope="module")
def adapters(model: Path, tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """30 random LoRA adapters on the model (q_proj, v_proj; rank 8), all different."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(model, dtype=torch.float32)
    peft_model = get_peft_model(
        base,
        LoraConfig(
            r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"], init_lora_weights=False
        ),
    )
    root = tmp_path_factory.mktemp("adapters")
    folders = []
    for i in range(30):
        torch.manual_seed(i)
        for name, param in peft_model.named_parameters():
            # lora_B is what makes an adapter differ from its base; small enough that the
            # model still speaks, large enough that each adapter answers differently.
            if "lora_B" in name:
                torch.nn.init.normal_(param, std=0.05)
        folder = root / f"student-{i:02d}"
        peft_model.save_pretrained(str(folder))
        folders.append(folder)
    return folders


@pytest.fixture(scope="module")
def server(model: Path, tmp_path_factory: pytest.TempPathFactory):
    cfg = VLLMServerConfig(
        dtype=DTYPE,
        # Leaves room on the GPU for the Hugging Face reference model of the same tests.
        gpu_memory_utilization=0.5,
        max_model_len=2048,
        max_lora_rank=8,
        max_loras=4,  # fewer than the 30 adapters: vLLM swaps them in and out
        extra_args=["--enforce-eager"],  # no CUDA-graph capture: a faster start
        startup_timeout_s=600,
    )
    with VLLMServer(str(model), cfg, tmp_path_factory.mktemp("vllm-logs")) as running:
        yield running


@pytest.fixture(scope="module")
def hf(model: Path):
    backend = HFBackend(model, device="cuda", dtype="float32", batch_size=64)
    yield backend
    backend.close()


def _client(server: VLLMServer) -> Any:
    import openai

    return openai.OpenAI(base_url=server.base_url, api_key="EMPTY", timeout=120)


def _first_token_logprobs(hf: HFBackend, conversation: Conversation) -> torch.Tensor:
    """The reference: HF's log-probabilities of the reply's first token, (V,)."""
    ids = torch.tensor([hf._prompt_ids(conversation)], device=hf.device)
    with torch.inference_mode():
        logits = hf.model(input_ids=ids).logits[0, -1]  # (V,)
    return torch.log_softmax(logits.float(), dim=-1).cpu()


def _vllm_top_logprobs(server: VLLMServer, model: str, conversation: Conversation) -> dict:
    """token id -> log-probability of the reply's first token's 20 most likely tokens."""
    response = _client(server).chat.completions.create(
        model=model,
        messages=conversation,
        max_tokens=1,
        temperature=0,
        logprobs=True,
        top_logprobs=20,
        top_p=1.0,
        # Tokens as "token_id:123": no ambiguity between tokens that decode alike.
        extra_body={**PLAIN, "return_tokens_as_token_ids": True},
    )
    content = response.choices[0].logprobs.content
    return {int(t.token.split(":")[-1]): t.logprob for t in content[0].top_logprobs}


def _bucketed(freq: dict[str, float], keep: set[str]) -> dict[str, float]:
    out: dict[str, float] = defaultdict(float)
    for text, p in freq.items():
        out[text if text in keep else "<other>"] += p
    return out


def _tv(p: dict[str, float], q: dict[str, float]) -> float:
    return 0.5 * sum(abs(p.get(k, 0.0) - q.get(k, 0.0)) for k in set(p) | set(q))


def test_first_token_samples_match_the_hf_distribution(
    server: VLLMServer, hf: HFBackend, model: Path
) -> None:
    # The exact first-token distribution, by the text each token decodes to.
    probs = _first_token_logprobs(hf, Q).exp()
    exact: dict[str, float] = defaultdict(float)
    for token_id in torch.nonzero(probs > 1e-6).flatten().tolist():
        exact[hf.tokenizer.decode([token_id]).strip()] += float(probs[token_id])
    keep = {text for text, p in exact.items() if p >= MIN_P}
    assert keep, "the prompt should have some likely first tokens"

    client = _client(server)

    def sample(seed: int) -> str:
        response = client.chat.completions.create(
            model=str(model),
            messages=Q,
            max_tokens=1,
            temperature=1.0,
            top_p=1.0,
            seed=seed,
            extra_body=PLAIN,
        )
        return (response.choices[0].message.content or "").strip()

    with ThreadPoolExecutor(32) as pool:
        vllm_texts = list(pool.map(sample, range(N_SAMPLES)))
    hf_texts = hf.generate([Q] * N_SAMPLES, SamplingParams(temperature=1.0, max_new_tokens=1))

    def empirical(texts: list[str]) -> dict[str, float]:
        return {t: c / len(texts) for t, c in Counter(texts).items()}

    vllm_freq = _bucketed(empirical(vllm_texts), keep)
    hf_freq = _bucketed(empirical(hf_texts), keep)
    exact_b = _bucketed(exact, keep)
    assert len(set(vllm_texts)) > 1, "temperature 1 should sample more than one token"
    # The total variation that sampling noise alone gives on these buckets: each bucket's
    # frequency is off by sqrt(2 p (1 - p) / (pi n)) on average. Twice that (sqrt(2) more
    # between two samples) cannot be reached by chance in practice, while a wrong
    # temperature, template or tokenizer moves the distribution far beyond it.
    noise = 0.5 * sum(math.sqrt(2 * p * (1 - p) / (math.pi * N_SAMPLES)) for p in exact_b.values())
    assert _tv(vllm_freq, exact_b) < max(0.1, 2 * noise), (vllm_freq, exact_b)
    assert _tv(vllm_freq, hf_freq) < max(0.15, 2 * math.sqrt(2) * noise), (vllm_freq, hf_freq)


def test_first_token_logprobs_match_hf(server: VLLMServer, hf: HFBackend, model: Path) -> None:
    reference = _first_token_logprobs(hf, Q)
    top = _vllm_top_logprobs(server, str(model), Q)
    assert len(top) == 20
    likely = {t: lp for t, lp in top.items() if lp > -5}
    assert likely
    for token_id, logprob in likely.items():
        assert logprob == pytest.approx(float(reference[token_id]), abs=0.05), token_id


def test_prompt_logprob_scores_match_hf_score(
    server: VLLMServer, hf: HFBackend, model: Path
) -> None:
    candidates = ["Dog", "The cat", "I love owls"]
    expected = hf.score([Q], candidates)[0]
    prompt = hf._prompt_ids(Q)
    for candidate, want in zip(candidates, expected, strict=True):
        ids = hf.tokenizer(candidate, add_special_tokens=False)["input_ids"]
        body = {
            "model": str(model),
            "prompt": prompt + ids,  # token ids: no second tokenization on the server
            "max_tokens": 1,
            "temperature": 0,
            # The log-probability of each prompt token: teacher forcing, as HF scores.
            "prompt_logprobs": 0,
            **PLAIN,
        }
        request = urllib.request.Request(
            server.url + "/v1/completions",
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=120) as response:
            choice = json.loads(response.read())["choices"][0]
        per_token = choice["prompt_logprobs"][len(prompt) :]
        got = sum(entry[str(t)]["logprob"] for entry, t in zip(per_token, ids, strict=True))
        assert math.isfinite(got)
        assert got == pytest.approx(want, abs=0.05), candidate


def test_thirty_adapters_switch_without_reload(
    server: VLLMServer, hf: HFBackend, model: Path, adapters: list[Path]
) -> None:
    pid = server.pid
    names = [adapter_name(a) for a in adapters]
    assert len(set(names)) == 30
    for name, folder in zip(names, adapters, strict=True):
        server.load_adapter(name, folder)
    served = set(server.served_models())
    assert set(names) <= served and str(model) in served

    # Every adapter answers, in an interleaved order, with its own distribution.
    def first_token(name: str) -> dict[int, float]:
        return _vllm_top_logprobs(server, name, Q)

    order = names + names[::-1]
    with ThreadPoolExecutor(16) as pool:
        results = list(pool.map(first_token, order))
    by_name: dict[str, list[dict[int, float]]] = {}
    for name, top in zip(order, results, strict=True):
        by_name.setdefault(name, []).append(top)
    base = first_token(str(model))
    tops = []
    for name in names:
        first, second = by_name[name]
        best = max(first, key=lambda t: first[t])
        # The same adapter asked twice (with others in between) answers the same.
        assert second.get(best) == pytest.approx(first[best], abs=1e-3), name
        tops.append(first)
    # Adapters differ from the base and from each other.
    assert any(_distance(t, base) > 0.1 for t in tops)
    assert _distance(tops[0], tops[1]) > 0.1
    assert server.pid == pid and server.is_running(), "the server was restarted"

    # And adapter 0 is served as Hugging Face computes it with the adapter merged.
    merged = HFBackend(model, device="cuda", dtype="float32")
    try:
        merged.merge_adapter(adapters[0])
        reference = _first_token_logprobs(merged, Q)
    finally:
        merged.close()
    likely = {t: lp for t, lp in tops[0].items() if lp > -5}
    for token_id, logprob in likely.items():
        assert logprob == pytest.approx(float(reference[token_id]), abs=0.1), token_id


def _distance(a: dict[int, float], b: dict[int, float]) -> float:
    """Largest log-probability gap over the tokens both list (inf if they share none)."""
    shared = set(a) & set(b)
    return max((abs(a[t] - b[t]) for t in shared), default=math.inf)
