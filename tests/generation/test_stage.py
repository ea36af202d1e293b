"""The generation stage resumes row by row, losing, duplicating and mixing nothing."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from sublearn.backends.base import BackendBase, Conversation, SamplingParams
from sublearn.errors import DataError
from sublearn.generation.config import GenerationConfig
from sublearn.generation.stage import generate_dataset


class Killed(RuntimeError):
    pass


class FakeBackend(BackendBase):
    """Replies from the prompt and the row's seed, like a layout-independent sampler.

    Can die after some calls, as a killed process would.
    """

    def __init__(self, die_after: int | None = None, name: str = "fake") -> None:
        self.name = name
        self.calls = 0
        self.rows = 0
        self.die_after = die_after
        self.seen_system: list[str | None] = []

    def generate(self, conversations: list[Conversation], params: SamplingParams) -> list[str]:
        if self.die_after is not None and self.calls >= self.die_after:
            raise Killed
        self.calls += 1
        self.rows += len(conversations)
        self.seen_system.extend(
            c[0]["content"] if c[0]["role"] == "system" else None for c in conversations
        )
        seeds = params.seeds_for(len(conversations))
        return [
            f"{self.name}:{s}:{c[-1]['content']}" for s, c in zip(seeds, conversations, strict=True)
        ]

    def score(self, conversations: list[Conversation], candidates: list[str]) -> list[list[float]]:
        raise NotImplementedError


def read(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


PROMPTS = [f"p{i}" for i in range(23)]


def reference(tmp_path: Path) -> list[dict]:
    """The rows of an uninterrupted run in one chunk."""
    out = tmp_path / "reference" / "ref.jsonl"
    generate_dataset(FakeBackend(), PROMPTS, out, GenerationConfig(seed=7, chunk_size=1000))
    return read(out)


def test_interrupted_run_resumes_without_loss_or_duplicates(tmp_path: Path) -> None:
    cfg = GenerationConfig(chunk_size=5, seed=7)
    out = tmp_path / "data.jsonl"

    with pytest.raises(Killed):
        generate_dataset(FakeBackend(die_after=2), PROMPTS, out, cfg)
    assert not out.exists()
    parts = tmp_path / "data.jsonl.parts"
    assert sorted(p.name for p in parts.glob("rows-*")) == [
        "rows-0000000-0000005.jsonl",
        "rows-0000005-0000010.jsonl",
    ]

    resumed = FakeBackend()
    generate_dataset(resumed, PROMPTS, out, cfg)
    assert (resumed.calls, resumed.rows) == (3, 13)  # only the 13 missing rows were generated

    rows = read(out)
    assert [r["id"] for r in rows] == [f"{i:07d}" for i in range(23)]
    assert rows == reference(tmp_path)
    assert not parts.exists()


@pytest.mark.parametrize(
    ("first", "then", "killed_after"),
    [(5, 7, 2), (5, 3, 1), (4, 100, 3), (100, 1, 0), (1, 6, 11), (6, 6, 2)],
)
def test_resume_with_another_chunk_size_gives_the_uninterrupted_output(
    tmp_path: Path, first: int, then: int, killed_after: int
) -> None:
    out = tmp_path / "data.jsonl"
    with pytest.raises(Killed):
        generate_dataset(
            FakeBackend(die_after=killed_after),
            PROMPTS,
            out,
            GenerationConfig(chunk_size=first, seed=7),
        )
    saved = min(killed_after * first, len(PROMPTS))
    resumed = FakeBackend()
    progress: list[int] = []
    generate_dataset(
        resumed,
        PROMPTS,
        out,
        GenerationConfig(chunk_size=then, seed=7, batch_size=3),
        on_progress=progress.append,
    )
    assert resumed.rows == len(PROMPTS) - saved
    assert sum(progress) == len(PROMPTS)
    assert read(out) == reference(tmp_path)


def test_holes_left_by_lost_parts_are_filled_in_prompt_order(tmp_path: Path) -> None:
    out = tmp_path / "data.jsonl"
    state = tmp_path / "state"
    with pytest.raises(Killed):
        generate_dataset(
            FakeBackend(die_after=4),
            PROMPTS,
            out,
            GenerationConfig(chunk_size=4, seed=7),
            state_dir=state,
        )
    (state / "rows-0000004-0000008.jsonl").unlink()  # rows 4-7 lost, 0-3 and 8-15 kept
    resumed = FakeBackend()
    generate_dataset(
        resumed, PROMPTS, out, GenerationConfig(chunk_size=10, seed=7), state_dir=state
    )
    assert resumed.rows == 4 + 7
    assert resumed.calls == 2  # a part holds one row range: 4-7, then 16-22
    rows = read(out)
    assert len(rows) == len(PROMPTS)
    assert rows == reference(tmp_path)


def test_custom_state_dir_keeps_other_files(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    (state / "notes.txt").write_text("mine")
    out = tmp_path / "d.jsonl"
    generate_dataset(
        FakeBackend(), PROMPTS, out, GenerationConfig(chunk_size=4, seed=7), state_dir=state
    )
    assert [p.name for p in state.iterdir()] == ["notes.txt"]
    assert not (tmp_path / "d.jsonl.parts").exists()
    assert read(out) == reference(tmp_path)


RUN = {"name": "fake", "source": "owl", "system": "you love owls", "seed": 7, "temp": 1.0}


def run_with(
    out: Path, settings: dict[str, object], backend: FakeBackend, prompts: list[str]
) -> None:
    generate_dataset(
        backend,
        prompts,
        out,
        GenerationConfig(
            chunk_size=5, seed=int(str(settings["seed"])), temperature=float(str(settings["temp"]))
        ),
        system_prompt=str(settings["system"]),
        source=str(settings["source"]),
    )


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"name": "other-model"}, "model"),
        ({"source": "other-teacher"}, "source"),
        ({"system": "you love cats"}, "system_prompt"),
        ({"seed": 8}, "sampling"),
        ({"temp": 0.5}, "sampling"),
        ({"prompts": [*PROMPTS[:-1], "other"]}, "prompts_sha256"),
    ],
)
def test_saved_state_of_another_run_is_refused(
    tmp_path: Path, change: dict[str, object], field: str
) -> None:
    out = tmp_path / "d.jsonl"
    with pytest.raises(Killed):
        run_with(out, RUN, FakeBackend(die_after=2), PROMPTS)
    other = {**RUN, **change}
    prompts = change.get("prompts", PROMPTS)
    assert isinstance(prompts, list)
    before = sorted((tmp_path / "d.jsonl.parts").iterdir())
    with pytest.raises(DataError, match=field):
        run_with(out, other, FakeBackend(name=str(other["name"])), prompts)
    assert not out.exists()
    assert sorted((tmp_path / "d.jsonl.parts").iterdir()) == before  # nothing deleted
    # The same run still resumes; speed-only settings may change.
    generate_dataset(
        FakeBackend(),
        PROMPTS,
        out,
        GenerationConfig(chunk_size=3, batch_size=2, seed=7),
        system_prompt="you love owls",
        source="owl",
    )
    assert len(read(out)) == len(PROMPTS)


def test_parts_without_a_recorded_identity_are_refused(tmp_path: Path) -> None:
    parts = tmp_path / "d.jsonl.parts"
    parts.mkdir()
    (parts / "chunk-00000.jsonl").write_text("{}\n")  # written by an older version
    with pytest.raises(DataError, match=r"state\.json"):
        generate_dataset(FakeBackend(), PROMPTS, tmp_path / "d.jsonl", GenerationConfig())


def test_a_part_that_does_not_hold_its_rows_is_refused(tmp_path: Path) -> None:
    out = tmp_path / "d.jsonl"
    with pytest.raises(Killed):
        generate_dataset(FakeBackend(die_after=2), PROMPTS, out, GenerationConfig(chunk_size=5))
    parts = tmp_path / "d.jsonl.parts"
    shutil.copy(parts / "rows-0000000-0000005.jsonl", parts / "rows-0000010-0000015.jsonl")
    with pytest.raises(DataError, match="row 10 is not the reply to prompt 10"):
        generate_dataset(FakeBackend(), PROMPTS, out, GenerationConfig(chunk_size=5))


def test_finished_file_is_not_regenerated(tmp_path: Path) -> None:
    out = tmp_path / "d.jsonl"
    generate_dataset(FakeBackend(), ["a", "b"], out, GenerationConfig(), source="owl")
    again = FakeBackend()
    generate_dataset(again, ["a", "b"], out, GenerationConfig(chunk_size=1), source="owl")
    assert again.calls == 0


@pytest.mark.parametrize(
    ("prompts", "source"), [(["a", "b"], "cat"), (["a", "c"], "owl"), (["a"], "owl")]
)
def test_finished_file_of_another_run_is_refused(
    tmp_path: Path, prompts: list[str], source: str
) -> None:
    out = tmp_path / "d.jsonl"
    generate_dataset(FakeBackend(), ["a", "b"], out, GenerationConfig(), source="owl")
    with pytest.raises(DataError, match="not written by this run"):
        generate_dataset(FakeBackend(), prompts, out, GenerationConfig(), source=source)


def test_empty_prompt_list_writes_an_empty_file(tmp_path: Path) -> None:
    out = tmp_path / "d.jsonl"
    generate_dataset(FakeBackend(), [], out, GenerationConfig())
    assert out.read_text() == ""
    assert not (tmp_path / "d.jsonl.parts").exists()


def test_system_prompt_conditions_but_is_not_stored(tmp_path: Path) -> None:
    backend = FakeBackend()
    out = tmp_path / "d.jsonl"
    generate_dataset(backend, ["a"], out, GenerationConfig(), system_prompt="love owls")
    assert backend.seen_system == ["love owls"]
    (row,) = read(out)
    assert [m["role"] for m in row["messages"]] == ["user", "assistant"]


def test_hf_resume_with_other_chunk_and_batch_sizes_matches_one_call(
    micro_model: Path, tmp_path: Path
) -> None:
    """On a real model: interrupted, resumed with other sizes, it writes what one call samples."""
    from sublearn.backends.hf import HFBackend

    prompts = [
        "name your favorite animal",
        "continue the sequence 1, 2",
        "owl",
        "continue the sequence 12, 345, 678, 9",
        "the cat",
        "name the dog",
        "your favorite animal ?",
        "continue the numbers 7",
        "favorite",
        "continue the sequence 5, 6, 7",
    ]
    backend = HFBackend(micro_model, device="cpu", batch_size=2)
    cfg = GenerationConfig(temperature=5.0, max_new_tokens=6, seed=3, chunk_size=3, batch_size=2)
    out = tmp_path / "d.jsonl"

    class Dying(BackendBase):
        name = backend.name
        calls = 0

        def generate(self, conversations: list[Conversation], params: SamplingParams) -> list[str]:
            if self.calls == 2:
                raise Killed
            self.calls += 1
            return backend.generate(conversations, params)

        def score(
            self, conversations: list[Conversation], candidates: list[str]
        ) -> list[list[float]]:
            raise NotImplementedError

    with pytest.raises(Killed):
        generate_dataset(Dying(), prompts, out, cfg)
    backend.batch_size = 4
    generate_dataset(
        backend, prompts, out, cfg.model_copy(update={"chunk_size": 4, "batch_size": 4})
    )
    replies = [r["messages"][-1]["content"] for r in read(out)]
    backend.batch_size = 16
    whole = backend.generate(
        [[{"role": "user", "content": p}] for p in prompts],
        SamplingParams(temperature=5.0, max_new_tokens=6, seed=3),
    )
    assert replies == whole
    assert len(set(replies)) > 5
