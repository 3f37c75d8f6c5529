"""Heuristic instruction rules (en, zh) and instance rules, by their stable reason names."""

from __future__ import annotations

from importlib import resources

import pytest

from datagen.filters import InstructionFilter, filter_instances
from datagen.prompts import instruction_lines, load_prompts
from datagen.records import Instance

# As the pipeline builds them: with the bootstrap template's own lines, so echoes are caught.
EN = InstructionFilter("en", echo_lines=instruction_lines(load_prompts("en")))
ZH = InstructionFilter("zh", echo_lines=instruction_lines(load_prompts("zh")))


@pytest.mark.parametrize(
    "text, reason",
    [
        ("", "empty"),
        ("   \n", "empty"),
        ("Do it", "too_short"),
        ("Write " + "word " * 150, "too_long"),
        ("Describe the image below in detail.", "blacklist"),
        ("Draw a cat sitting on a mat.", "blacklist"),
        ("Go to the store and list the fruits.", "blacklist"),
        ("Summarize the attached report for me.", "blacklist"),
        ('"Write a poem about cats."', "leading_punctuation"),
        ("- Write a poem about cats.", "leading_punctuation"),
        ("Écrivez un poème sur les chats.", "non_english_start"),
        ("写 a short poem about cats.", "non_english_start"),
        ("Write a program that sorts numbers.", "write_a_program"),
        ("Say hello world hello world hello world hello world please.", "repetition"),
    ],
)
def test_en_rules(text, reason):
    got = EN.check(text)
    assert got is not None and got[0] == reason, got


@pytest.mark.parametrize(
    "text",
    [
        "Write a poem about the sea.",
        "Describe the imagery in this poem.",  # "image" is whole-word only
        "Explain how a mapping function works in Python.",
        "Write a short program description for a radio show.",
    ],
)
def test_en_good_instructions_pass(text):
    assert EN.check(text) is None


@pytest.mark.parametrize(
    "text, reason",
    [
        ("", "empty"),
        ("写诗", "too_short"),
        ("请" + "写" * 300, "too_long"),
        ("请描述这张图片的内容。", "blacklist"),
        ("请画出一只猫的样子。", "blacklist"),
        ("打开这个链接并总结内容。", "blacklist"),
        ("“请写一首关于秋天的诗。", "leading_punctuation"),
        ("《红楼梦》的主要人物有哪些？", "leading_punctuation"),
        ("Write a poem about autumn please.", "not_chinese"),
        ("哈哈哈哈哈哈哈哈哈哈哈哈哈哈哈哈哈哈", "repetition"),
    ],
)
def test_zh_rules(text, reason):
    got = ZH.check(text)
    assert got is not None and got[0] == reason, got


@pytest.mark.parametrize("text", ["请写一首关于秋天的诗。", "用Python写一个快速排序函数。", "解释一下光合作用的过程。"])
def test_zh_good_instructions_pass(text):
    assert ZH.check(text) is None


def test_length_units():
    # English counts words, Chinese counts non-space characters.
    assert EN.check("Name three birds.") is None
    assert EN.check("Name birds") == ("too_short", "2 < 3")
    assert ZH.check("列出三种鸟") is None
    assert ZH.check("列出 鸟") == ("too_short", "3 < 5")
    assert EN.check(" ".join(f"w{i}" for i in range(150))) is None


def test_blacklist_detail_names_the_word():
    assert EN.check("Explain the URL structure of a site.") == ("blacklist", "URL")
    assert ZH.check("请总结这个视频的要点。") == ("blacklist", "视频")


# ---------------------------------------------------------------- instances


def I(inp: str, out: str) -> Instance:  # noqa: E743
    return Instance(input=inp, output=out)


@pytest.mark.parametrize(
    "inst, reason",
    [
        (I("a", ""), "empty_output"),
        (I("a", "   "), "empty_output"),
        (I("same text", "same text"), "input_equals_output"),
        (I(" same ", "same"), "input_equals_output"),
        (I("q", "The answer is:"), "trailing_colon"),
        (I("q", "答案如下："), "trailing_colon"),
        (I("q", "x" * 4001), "output_too_long"),
    ],
)
def test_instance_rules(inst, reason):
    kept, reasons = filter_instances([inst, I("", "A fine answer.")])
    assert reasons == [reason]
    assert kept == [I("", "A fine answer.")]


def test_empty_input_equal_output_is_not_input_equals_output():
    kept, reasons = filter_instances([I("", "Hello")])
    assert kept == [I("", "Hello")] and reasons == []


def test_conflicting_outputs_drop_every_instance_of_that_input():
    kept, reasons = filter_instances([I("2+2", "4"), I("2+2", "5"), I("3+3", "6"), I("2+2", "4")])
    assert kept == [I("3+3", "6")]
    assert reasons == ["conflicting_outputs"] * 3


def test_duplicates_kept_once_and_whitespace_normalised():
    kept, reasons = filter_instances([I("a", "b"), I(" a", "b "), I("c", "d")])
    assert kept == [I("a", "b"), I("c", "d")]
    assert reasons == ["duplicate_instance"]


def test_max_instances_caps_kept():
    kept, reasons = filter_instances([I(str(i), f"answer {i}") for i in range(8)], max_instances=5)
    assert [k.input for k in kept] == ["0", "1", "2", "3", "4"]
    assert reasons == []


def test_invisible_and_bidi_characters_are_a_finding():
    from datagen.filters import InstructionFilter, filter_instances, invisible_characters
    from datagen.records import Instance

    assert InstructionFilter("en").check("Explain what invoice\u202efdp.exe means to a user.") == ("invisible_characters", "U+202E")
    assert InstructionFilter("zh").check("请解释这个\u200b词语的意思。") == ("invisible_characters", "U+200B")
    for ch in "\u202a\u202d\u2066\u2069\u200d\u2060\ufeff\u200f":
        assert invisible_characters(f"a{ch}b") == f"U+{ord(ch):04X}"
    assert invisible_characters("Plain text, 中文, émigré — “quotes”.") is None
    kept, dropped = filter_instances([Instance(input="x", output="ok"), Instance(input="", output="hidden\u2067text")])
    assert len(kept) == 1 and dropped == ["invisible_characters"]


# ---------------------------------------------------------------- prompt echoes


@pytest.mark.parametrize(
    "text",
    [
        # Accepted by real SmolLM2 runs through llama.cpp and `make demo` before this rule.
        "Write 7 new tasks, numbered from 9 to 10.",
        "Here are eight new tasks, numbered from 7:",
        "Do not repeat the examples.",
        "You are writing a diverse set of tasks for training a helpful assistant.",
    ],
)
def test_en_prompt_echo_rejected(text):
    got = EN.check(text)
    assert got is not None and got[0] == "prompt_echo", got


@pytest.mark.parametrize("text", ["请从第9条开始，再写7条新任务。", "请从第12条开始再写5条新任务：", "不要重复下面的例子。"])
def test_zh_prompt_echo_rejected(text):
    got = ZH.check(text)
    assert got is not None and got[0] == "prompt_echo", got


@pytest.mark.parametrize(
    "text",
    [
        "Write five new slogans for a bakery that sells sourdough.",
        "List eight tasks a new employee should do on the first day.",
        "Number the steps of making tea from 1 to 5.",
    ],
)
def test_tasks_about_tasks_are_not_echoes(text):
    assert EN.check(text) is None


def test_echo_lines_come_from_the_template_file(tmp_path):
    # The rule reads the template; a user's own wording is what gets caught, not a copy in code.
    own = tmp_path / "p.toml"
    text = resources.files("datagen").joinpath("prompts", "en.toml").read_text("utf-8")
    own.write_text(text.replace("Write $count new tasks, numbered from $next.", "Invent $count more chores for a robot butler."), "utf-8")
    mine = InstructionFilter("en", echo_lines=instruction_lines(load_prompts("en", own)))
    assert mine.check("Invent 5 more chores for a robot butler.")[0] == "prompt_echo"
    assert mine.check("Write 7 new tasks, numbered from 9 to 10.") is None


def test_output_equal_to_instruction_rejected():
    task = "Explain how tides work."
    kept, reasons = filter_instances([I("", " explain how  tides work. "), I("", "The moon pulls the sea.")], instruction=task)
    assert reasons == ["output_equals_instruction"]
    assert kept == [I("", "The moon pulls the sea.")]
