"""Prompt templates and the parsers that read model output back."""

from __future__ import annotations

from importlib import resources

import pytest

from datagen.errors import InputError
from datagen.prompts import (
    bootstrap_prompt,
    classify_prompt,
    instances_prompt,
    load_prompts,
    parse_instances,
    parse_task_list,
    parse_yes_no,
)
from datagen.records import Instance, SeedTask

EN = load_prompts("en")
ZH = load_prompts("zh")


def tail(ps, output_first: bool) -> str:
    """What the pipeline passes as query_tail: the query after its "Task: ..." line."""
    q = (ps.instances_output_first if output_first else ps.instances_input_first).query
    return q.split("\n", 1)[1]


# ---------------------------------------------------------------- parse_task_list

NUMBERING = {
    "dot": "9. Write a poem about the sea.\n10. Explain how tides work.",
    "paren": "9) Write a poem about the sea.\n10) Explain how tides work.",
    "both_parens": "(9) Write a poem about the sea.\n(10) Explain how tides work.",
    "fullwidth_parens": "（9）Write a poem about the sea.\n（10）Explain how tides work.",
    "dunhao": "9、Write a poem about the sea.\n10、Explain how tides work.",
    "fullwidth_colon": "9：Write a poem about the sea.\n10：Explain how tides work.",
    "task_prefix": "Task 9: Write a poem about the sea.\nTask 10: Explain how tides work.",
    "di_tiao": "第9条：Write a poem about the sea.\n第10条：Explain how tides work.",
    "di_tiao_no_colon": "第9条 Write a poem about the sea.\n第10条 Explain how tides work.",
    "fullwidth_digits": "９．Write a poem about the sea.\n１０．Explain how tides work.",
    "dash_after": "9 - Write a poem about the sea.\n10 - Explain how tides work.",
    "markdown_list": "- 9. Write a poem about the sea.\n- 10. Explain how tides work.",
    "heading": "### 9. Write a poem about the sea.\n### 10. Explain how tides work.",
}


@pytest.mark.parametrize("text", NUMBERING.values(), ids=NUMBERING.keys())
def test_task_list_numbering_variants(text):
    assert parse_task_list(text, 9, truncated=False) == ["Write a poem about the sea.", "Explain how tides work."]


def test_task_list_continues_from_prompt_number():
    # A completion model continues after the prompt's "9." and numbers from 10 on.
    text = " Write a poem about the sea.\n10. Explain how tides work.\n11. List three fruits."
    assert parse_task_list(text, 9, truncated=False) == [
        "Write a poem about the sea.",
        "Explain how tides work.",
        "List three fruits.",
    ]


def test_task_list_chinese_punctuation():
    text = "写一首关于大海的诗。\n10、解释潮汐是怎么形成的？\n11．列出三种水果，并说明它们的产地。\n第12条：把下面的句子翻译成英文。"
    assert parse_task_list(text, 9, truncated=False) == [
        "写一首关于大海的诗。",
        "解释潮汐是怎么形成的？",
        "列出三种水果，并说明它们的产地。",
        "把下面的句子翻译成英文。",
    ]


def test_task_list_nested_numbers_kept_as_text_only():
    text = "9. 1. Write a poem about the sea.\n10. 2) Explain how tides work."
    assert parse_task_list(text, 9, truncated=False) == ["Write a poem about the sea.", "Explain how tides work."]


def test_task_list_markdown_bold():
    text = "**9.** Write a poem about the sea.\n**10. Explain how tides work.**\n**Task 11:** List three fruits."
    assert parse_task_list(text, 9, truncated=False) == [
        "Write a poem about the sea.",
        "Explain how tides work.",
        "List three fruits.",
    ]


def test_task_list_prefixes_and_quotes_removed():
    text = '9. New task: Write a poem about the sea.\n10. "Explain how tides work."\n11. 任务：写一首诗。\n12. “List three fruits.”'
    assert parse_task_list(text, 9, truncated=False) == [
        "Write a poem about the sea.",
        "Explain how tides work.",
        "写一首诗。",
        "List three fruits.",
    ]


@pytest.mark.parametrize(
    "text",
    [
        "Here are 8 new tasks:\n\n9. Write a poem about the sea.\n10. Explain how tides work.",
        "Sure! Here are eight new tasks:\n9. Write a poem about the sea.\n10. Explain how tides work.",
        "Sure!\nHere are the tasks:\n\n9) Write a poem about the sea.\n10) Explain how tides work.",
        # SmolLM2-135M through the chat API numbers its list from 1 again.
        "Here are the 8 new tasks:\n\n1. Write a poem about the sea.\n2. Explain how tides work.",
    ],
)
def test_task_list_chat_preamble_is_not_a_task(text):
    assert parse_task_list(text, 9, truncated=False) == ["Write a poem about the sea.", "Explain how tides work."]


def test_task_list_chat_preamble_zh():
    text = "以下是新的任务：\n\n９．写一首关于大海的诗。\n10. 解释潮汐的成因。"
    assert parse_task_list(text, 9, truncated=False) == ["写一首关于大海的诗。", "解释潮汐的成因。"]


def test_task_list_closing_remark_after_blank_line_ends_list():
    text = " Write a poem about the sea.\n10. Explain how tides work.\n\nI hope these tasks are useful for your dataset!"
    assert parse_task_list(text, 9, truncated=False) == ["Write a poem about the sea.", "Explain how tides work."]


def test_task_list_blank_lines_between_items_do_not_end_it():
    text = " Write a poem about the sea.\n\n10. Explain how tides work.\n\n11. List three fruits."
    assert len(parse_task_list(text, 9, truncated=False)) == 3


def test_task_list_continuation_lines_join_the_item():
    text = " Write a poem\nabout the sea.\n10. Explain how\n   tides work."
    assert parse_task_list(text, 9, truncated=False) == ["Write a poem about the sea.", "Explain how tides work."]


def test_task_list_truncated_last_item_dropped_only_on_length():
    text = " Write a poem about the sea.\n10. Explain how tides work.\n11. List thr"
    assert parse_task_list(text, 9, truncated=True) == ["Write a poem about the sea.", "Explain how tides work."]
    assert parse_task_list(text, 9, truncated=False)[-1] == "List thr"


def test_task_list_crlf_and_empty():
    assert parse_task_list(" Write a poem.\r\n10. Explain tides.\r\n", 9, truncated=False) == ["Write a poem.", "Explain tides."]
    assert parse_task_list("", 9, truncated=False) == []
    assert parse_task_list(" Only one item", 9, truncated=True) == []


# ---------------------------------------------------------------- parse_instances


def test_instances_input_first_en_completion_style():
    text = " <noinput>\nOutput: A haiku about rain.\n\nExample 2\nInput: snow\nOutput: A haiku about snow."
    assert parse_instances(EN, text, False, False, tail(EN, False)) == [
        Instance(input="", output="A haiku about rain."),
        Instance(input="snow", output="A haiku about snow."),
    ]


def test_instances_input_first_en_chat_style_restates_labels():
    text = "**Example 1**\n**Input:** rain\n**Output:** Rain falls\nand keeps falling.\n\nExample 2:\nInput: N/A\nOutput: Sun shines."
    assert parse_instances(EN, text, False, False, tail(EN, False)) == [
        Instance(input="rain", output="Rain falls\nand keeps falling."),
        Instance(input="", output="Sun shines."),
    ]


def test_instances_output_first_en():
    completion = " Positive\nInput: I loved it.\n\nClass label: Negative\nInput: It broke after a day."
    chat = "Class label: Positive\nInput: I loved it.\nClass label: Negative\nInput: It broke after a day."
    want = [Instance(input="I loved it.", output="Positive"), Instance(input="It broke after a day.", output="Negative")]
    assert parse_instances(EN, completion, True, False, tail(EN, True)) == want
    assert parse_instances(EN, chat, True, False, tail(EN, True)) == want


def test_instances_input_first_zh():
    completion = "<无输入>\n输出：下雨了。\n\n示例 2\n输入：雪\n输出：下雪了。"
    chat = "示例 1\n输入：雨\n输出：下雨了。\n\n示例 2\n输入：无\n输出：晴天。"
    assert parse_instances(ZH, completion, False, False, tail(ZH, False)) == [
        Instance(input="", output="下雨了。"),
        Instance(input="雪", output="下雪了。"),
    ]
    assert parse_instances(ZH, chat, False, False, tail(ZH, False)) == [
        Instance(input="雨", output="下雨了。"),
        Instance(input="", output="晴天。"),
    ]


def test_instances_output_first_zh():
    completion = "正面\n输入：我很喜欢这部电影。\n\n类别：负面\n输入：用了一天就坏了。"
    chat = "类别：正面\n输入：我很喜欢这部电影。\n类别：负面\n输入：用了一天就坏了。"
    want = [Instance(input="我很喜欢这部电影。", output="正面"), Instance(input="用了一天就坏了。", output="负面")]
    assert parse_instances(ZH, completion, True, False, tail(ZH, True)) == want
    assert parse_instances(ZH, chat, True, False, tail(ZH, True)) == want


@pytest.mark.parametrize("ps, word", [(EN, "<noinput>"), (EN, "none"), (ZH, "<无输入>"), (ZH, "无输入"), (ZH, "<noinput>")])
def test_instances_noinput_normalised(ps, word):
    label_in, label_out = ps.labels.input[0], ps.labels.output[0]
    text = f"{label_in}: {word}\n{label_out}: Something useful."
    assert parse_instances(ps, text, False, False, tail(ps, False)) == [Instance(input="", output="Something useful.")]


def test_instances_truncated_last_field_dropped():
    text = " rain\nOutput: Rain falls.\n\nExample 2\nInput: snow\nOutput: Snow fa"
    assert parse_instances(EN, text, False, True, tail(EN, False)) == [Instance(input="rain", output="Rain falls.")]
    assert len(parse_instances(EN, text, False, False, tail(EN, False))) == 2


def test_instances_stop_at_next_task_and_keep_code_braces():
    text = " rain\nOutput: def f():\n    return {1: 2}\n\nTask: Write more.\nExample 1\nInput: x\nOutput: y"
    assert parse_instances(EN, text, False, False, tail(EN, False)) == [
        Instance(input="rain", output="def f():\n    return {1: 2}")
    ]


# ---------------------------------------------------------------- parse_yes_no


@pytest.mark.parametrize(
    "ps, text, want",
    [
        (EN, " Yes", True),
        (EN, "yes.", True),
        (EN, "**Yes**", True),
        (EN, "No", False),
        (EN, " no, it is open-ended", False),
        (EN, "Maybe", None),
        (EN, "", None),
        (ZH, "是", True),
        (ZH, "否", False),
        (ZH, "：否", False),
        (ZH, "不确定", None),
        (EN, "Classification: Yes", True),
        (EN, "Classification: No", False),
        (ZH, "是否分类：否", False),
        (ZH, "是否分类：是", True),
    ],
)
def test_parse_yes_no(ps, text, want):
    assert parse_yes_no(ps, text) is want


# ---------------------------------------------------------------- load_prompts and templates


def one_line_prompt_error(path) -> str:
    with pytest.raises(InputError) as ei:
        load_prompts("en", path)
    msg = str(ei.value)
    assert msg and "\n" not in msg
    return msg


def test_load_prompts_missing_file(tmp_path):
    assert "not found" in one_line_prompt_error(tmp_path / "nope.toml")


def test_load_prompts_invalid_toml(tmp_path):
    p = tmp_path / "bad.toml"
    p.write_text("[bootstrap\ntemplate = 'x'\n", encoding="utf-8")
    assert "not valid TOML" in one_line_prompt_error(p)


def test_load_prompts_incomplete(tmp_path):
    p = tmp_path / "partial.toml"
    p.write_text('[bootstrap]\ntemplate = "$examples"\n', encoding="utf-8")
    assert "classify" in one_line_prompt_error(p)


def test_load_prompts_user_copy_roundtrip(tmp_path):
    p = tmp_path / "mine.toml"
    p.write_text((resources.files("datagen") / "prompts" / "en.toml").read_text("utf-8"), encoding="utf-8")
    assert load_prompts("en", p) == EN


def test_load_prompts_file_with_own_lang_key(tmp_path):
    p = tmp_path / "mine.toml"
    p.write_text('lang = "zh"\n' + (resources.files("datagen") / "prompts" / "en.toml").read_text("utf-8"), encoding="utf-8")
    assert load_prompts("en", p).classify.yes == "Yes"


def test_unknown_builtin_language():
    with pytest.raises(InputError):
        load_prompts("xx")


def seed(instruction: str, inp: str, out: str, cls: bool = False) -> SeedTask:
    return SeedTask(id="s", name="n", instruction=instruction, instances=[Instance(input=inp, output=out)], is_classification=cls)


def test_bootstrap_prompt_renders_and_keeps_braces():
    examples = ["Format {name} as JSON: {\"a\": 1}", "Explain why $next and ${count} are shell variables.", "Write a\nhaiku."]
    text, nxt = bootstrap_prompt(EN, examples, 8)
    assert nxt == 4
    assert text.endswith("\n4.")
    assert "Write 8 new tasks, numbered from 4." in text
    assert '1. Format {name} as JSON: {"a": 1}' in text
    assert "2. Explain why $next and ${count} are shell variables." in text
    assert "3. Write a haiku." in text
    assert "$examples" not in text


def test_classify_prompt_renders():
    shots = [seed("Is this review positive? {x}", "", "Yes", cls=True), seed("Write a poem about $count.", "", "poem")]
    text = classify_prompt(ZH, shots, "判断下面的句子是不是问句。")
    assert "任务：Is this review positive? {x}\n是否分类：是" in text
    assert "任务：Write a poem about $count.\n是否分类：否" in text
    assert text.endswith("任务：判断下面的句子是不是问句。\n是否分类：")


def test_instances_prompt_renders_both_orders():
    shots = [seed("Turn {json} into YAML.", "", "a: 1"), seed("Price is $5; add tax.", "$5", "$5.40")]
    text = instances_prompt(EN, shots, "Sort the list {3, 1, 2}.", output_first=False, max_instances=3)
    assert "up to 3 examples" in text
    assert "Task: Turn {json} into YAML.\nExample 1\nInput: <noinput>\nOutput: a: 1" in text
    assert "Input: $5\nOutput: $5.40" in text
    assert text.endswith("Task: Sort the list {3, 1, 2}.\nExample 1\nInput:")
    text = instances_prompt(EN, [seed("Is it spam?", "Win $$$ now", "spam", cls=True)], "Is it rude?", output_first=True)
    assert "Class label: spam\nInput: Win $$$ now" in text
    assert text.endswith("Task: Is it rude?\nClass label:")


def test_input_first_answer_without_labels_becomes_a_no_input_instance():
    ps = load_prompts("en")
    got = parse_instances(ps, "A cinema club for retirees.\n\nExample 2\nInput:", False, False, "Example 1\nInput:")
    assert [(i.input, i.output) for i in got] == [("", "A cinema club for retirees.")]
    # A model that only wrote the no-input marker produced no answer at all.
    assert parse_instances(ps, " <noinput>\n", False, False, "Example 1\nInput:") == []


@pytest.mark.parametrize(
    "ps, text, want",
    [
        # SmolLM2 through llama.cpp wrote the label twice; "Your Input: ..." leaked into stored inputs.
        (EN, " Your Input: the price is 3 dollars\nOutput: Three dollars.", Instance(input="the price is 3 dollars", output="Three dollars.")),
        (EN, "Your Input: rain\nYour Output: Rain falls.", Instance(input="rain", output="Rain falls.")),
        (EN, " Input: rain\nOutput: Output: Rain falls.", Instance(input="rain", output="Rain falls.")),
        (ZH, "你的输入：下雨\n输出：输出：下雨了。", Instance(input="下雨", output="下雨了。")),
    ],
)
def test_instances_label_prefixes_stripped(ps, text, want):
    assert parse_instances(ps, text, False, False, tail(ps, False)) == [want]


def test_user_prompt_file_without_owner_labels_still_loads(tmp_path):
    text = resources.files("datagen").joinpath("prompts", "en.toml").read_text("utf-8")
    own = tmp_path / "p.toml"
    own.write_text("\n".join(ln for ln in text.splitlines() if not ln.startswith("owner")), "utf-8")
    assert load_prompts("en", own).labels.owner == []


def test_prompt_file_with_utf8_bom_loads(tmp_path):
    text = resources.files("datagen").joinpath("prompts", "en.toml").read_text("utf-8")
    own = tmp_path / "bom.toml"
    own.write_bytes(b"\xef\xbb\xbf" + text.encode("utf-8"))
    assert load_prompts("en", own).classify.yes == "Yes"
