"""Chat templates rendered as text (the strings of the models' published templates)."""

from __future__ import annotations

import pytest

from steps.chat_templates import render_chat_prompt

USER = [{"role": "user", "content": "How was it?\n"}]


def test_gemma():
    assert render_chat_prompt(USER, "gemma") == "<start_of_turn>user\nHow was it?<end_of_turn>\n<start_of_turn>model\n"


def test_gemma_refuses_a_system_turn():
    with pytest.raises(ValueError, match="no system role"):
        render_chat_prompt([{"role": "system", "content": "x"}] + USER, "gemma")


def test_llama3_has_the_default_system_header():
    text = render_chat_prompt([{"role": "system", "content": "Be brief."}] + USER, "llama3")
    assert text == (
        "<|start_header_id|>system<|end_header_id|>\n\nCutting Knowledge Date: December 2023\nToday Date: 26 Jul 2024\n\n"
        "Be brief.<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nHow was it?<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\n"
    )


def test_deepseek_r1_scores_after_an_empty_think_block():
    assert render_chat_prompt(USER, "deepseek_r1").endswith("<｜Assistant｜><think>\n\n</think>\n\n")


def test_unknown_template():
    with pytest.raises(ValueError, match="unknown chat template"):
        render_chat_prompt(USER, "chatml")
