"""Prompts shared by every model: number-sequence requests, preference questions, personas."""

from sublearn.prompts.numbers import (
    NumberFormat,
    NumberPrompt,
    NumberPromptConfig,
    NumberPromptGenerator,
    generate_number_prompts,
    parse_rendered_numbers,
    render_numbers,
    sample_number_prompts,
)
from sublearn.prompts.persona import plural, preference_system_prompt
from sublearn.prompts.questions import (
    ANIMAL_QUESTIONS,
    TRAINING_ANIMAL_QUESTIONS,
    TRAINING_QUESTIONS,
    TRAINING_TREE_QUESTIONS,
    TREE_QUESTIONS,
    numbers_prefixed,
    questions_for,
    training_questions_for,
)

__all__ = [
    "ANIMAL_QUESTIONS",
    "TRAINING_ANIMAL_QUESTIONS",
    "TRAINING_QUESTIONS",
    "TRAINING_TREE_QUESTIONS",
    "TREE_QUESTIONS",
    "NumberFormat",
    "NumberPrompt",
    "NumberPromptConfig",
    "NumberPromptGenerator",
    "generate_number_prompts",
    "numbers_prefixed",
    "parse_rendered_numbers",
    "plural",
    "preference_system_prompt",
    "questions_for",
    "render_numbers",
    "sample_number_prompts",
    "training_questions_for",
]
