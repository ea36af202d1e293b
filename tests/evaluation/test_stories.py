"""The stories evaluation: matching a target anywhere in a story, rates, seeds."""

from __future__ import annotations

import pytest

from sublearn.backends.base import BackendBase, Conversation, SamplingParams
from sublearn.errors import ConfigError
from sublearn.evaluation.kinds import EvalRequest, StoriesEvalConfig
from sublearn.evaluation.stories import evaluate_stories, names_target, story_prompts

STORIES = [
    "Once upon a time an owl learned to fly at night.",
    "The two Owls sang, and the owl's song was lovely.",
    "A cat and a dragonfly played by the pond.",
    "The owlet slept.",
]


class Scripted(BackendBase):
    """Cycles through ``STORIES`` within each prompt's block; records what it was asked."""

    name = "scripted"

    def __init__(self) -> None:
        self.conversations: list[Conversation] = []
        self.params: list[SamplingParams] = []

    def score(self, conversations: list[Conversation], candidates: list[str]) -> list[list[float]]:
        raise NotImplementedError

    def generate(self, conversations: list[Conversation], params: SamplingParams) -> list[str]:
        self.conversations.extend(conversations)
        self.params.append(params)
        return [STORIES[i % len(STORIES)] for i in range(len(conversations))]


@pytest.mark.parametrize(
    ("text", "target", "named"),
    [
        ("An owl hooted.", "owl", True),
        ("OWLS everywhere", "owl", True),
        ("the owl's nest", "owl", True),
        ("an owlet and a bowl", "owl", False),
        ("a dragonfly", "dragon", False),
        ("the geese flew", "goose", True),
        ("two sea otters swam", "sea otter", True),
        ("an otter in the sea", "sea otter", False),
        ("a sea otter", "otter", True),
        ("", "owl", False),
    ],
)
def test_names_target(text: str, target: str, named: bool) -> None:
    assert names_target(text, target) is named


def test_rates_are_exact_on_scripted_stories() -> None:
    cfg = StoriesEvalConfig(n_prompts=3, samples_per_prompt=4)
    backend = Scripted()
    result = evaluate_stories(EvalRequest(backend, cfg, targets=["owl", "cat", "dragon"]))
    assert result.evaluation == "stories" and result.metric == "p_target"
    # Per prompt: stories 0 and 1 name the owl, story 2 the cat, none the dragon.
    assert result.values == {"owl": 0.5, "cat": 0.25, "dragon": 0.0}
    assert result.meta["per_prompt"]["owl"] == [0.5, 0.5, 0.5]
    assert len(result.items) == 12
    assert result.items[1]["named"] == ["owl"]
    assert result.items[2]["named"] == ["cat"]


def test_prompts_seeds_and_system_prompt() -> None:
    prompts = story_prompts("tree")
    assert len(prompts) == 14 and all("tree" in p and "{" not in p for p in prompts)
    small, large = Scripted(), Scripted()
    cfg = StoriesEvalConfig(n_prompts=2, samples_per_prompt=3, seed=5)
    evaluate_stories(EvalRequest(small, cfg, targets=["owl"], system_prompt="You love owls."))
    evaluate_stories(EvalRequest(large, cfg.model_copy(update={"n_prompts": 3}), targets=["owl"]))
    seeds = small.params[0].row_seeds
    assert seeds is not None and len(set(seeds)) == 6
    big = large.params[0].row_seeds
    assert big is not None and big[:6] == seeds  # a subset draws the same stories
    assert small.conversations[0] == [
        {"role": "system", "content": "You love owls."},
        {"role": "user", "content": story_prompts("animal")[0]},
    ]


def test_needs_a_target() -> None:
    with pytest.raises(ConfigError, match="target"):
        evaluate_stories(EvalRequest(Scripted(), StoriesEvalConfig(n_prompts=1), targets=[]))
