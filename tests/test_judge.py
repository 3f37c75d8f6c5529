"""The judge scorer: reading answers, rubric files, and scoring runs against the stub over real HTTP
(online and batch, failures, budget, kill -9 and resume), on SQLite and Postgres.

The stub's opt-in judge mode (--judge-answers) answers rubric prompts with a score line in varied
shapes; --judge-bad-every K makes every K-th answer unusable.
"""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import time

import pytest
from sqlalchemy import create_engine, text

from conftest import REPO, core_cli, core_env, core_one_line_error
from test_postgres import core_pg_url  # noqa: F401  (fixture)

from datagen.errors import InputError as RubricError
from datagen.scores.rubric import load_rubric, parse_verdict, render

PRICE_IN, PRICE_OUT = 3.0, 7.0
STAGE = "judge:accuracy"


# ---------------------------------------------------------------- reading answers


@pytest.mark.parametrize("answer, value, reason", [
    ("Score: 4\nReason: Correct and complete.", 4, "Correct and complete."),
    ("Score: 4.5\nReason: ok", 4.5, "ok"),
    ("**Rating:** 3.5/5\n**Reason:** minor slip in example 2", 3.5, "minor slip in example 2"),
    ("Sure! Here is my verdict.\n\nScore: 5 out of 5\nReason: all correct.\n\nHope this helps.", 5, "all correct."),
    ("Final score: 2\nExplanation: mostly wrong", 2, "mostly wrong"),
    ("Score: 1 - barely related to the task", 1, "barely related to the task"),
    ("0\nNo usable answer.", 0, "No usable answer."),
    ("分数：4分\n理由：回答正确，略有遗漏。", 4, "回答正确，略有遗漏。"),
    ("评分：４．５\n理由：基本正确", 4.5, "基本正确"),
    ("得分为三\n原因：部分正确", 3, "部分正确"),
    ("好的。\n分数: 5\n理由:\n完全正确", 5, "完全正确"),
])
def test_answers_that_carry_a_score_and_a_reason(answer, value, reason):
    v = parse_verdict(answer, 0, 5)
    assert v.ok, v.error
    assert (v.value, v.reason) == (value, reason)


@pytest.mark.parametrize("answer, error", [
    ("", "empty answer"),
    ("I cannot rate this.", "no score line"),
    ("The answer deserves a high mark.\nReason: fine", "no score line"),
    ("Score: 4", "no reason"),
    ("Score: 8/10\nReason: good", "scale of 10"),
    ("Score: 6\nReason: good", "outside 0-5"),
    ("Score: -1\nReason: bad", "outside 0-5"),
    ("Score: 4\nReason: x\nScore: 2", "several scores: 2, 4"),
    ("分数：七\n理由：好", "outside 0-5"),
])
def test_unusable_answers_say_why(answer, error):
    v = parse_verdict(answer, 0, 5)
    assert not v.ok and v.value is None
    assert error in v.error


def test_a_reason_that_mentions_a_score_is_not_a_second_score():
    v = parse_verdict("Score: 4\nReason: a score of 5 needs every example right", 0, 5)
    assert (v.value, v.reason) == (4, "a score of 5 needs every example right")


def test_builtin_rubrics_render_both_languages_with_the_sample_in_them():
    for name, lo, hi in (("accuracy", 0, 5), ("complexity", 1, 6), ("quality", 1, 6)):
        r = load_rubric(name)
        assert (r.name, r.min, r.max, r.langs()) == (name, lo, hi, ["en", "zh"])
        for lang in ("en", "zh"):
            p = render(r, lang, "Name a <b>red</b> fruit.", [("", "An apple."), ("for a child", "A strawberry.")])
            assert "Name a <b>red</b> fruit." in p and "$" not in p
            assert ("An apple." in p and "A strawberry." in p) if name != "complexity" else "for a child" in p


def test_long_fields_are_cut_for_the_judge():
    p = render(load_rubric("accuracy"), "en", "Summarise.", [("x" * 10_000, "y")])
    assert "x" * 4000 + " [...]" in p and "x" * 4001 not in p


def test_a_users_rubric_file(tmp_path):
    f = tmp_path / "helpful.toml"
    f.write_text('min = 1\nmax = 10\n[en]\ntemplate = "Rate 1-10: $instruction / $output\\nScore:"\n', "utf-8")
    r = load_rubric(str(f))
    assert (r.name, r.min, r.max) == ("helpful", 1, 10)
    assert render(r, "en", "Do X.", [("", "Done.")]) == "Rate 1-10: Do X. / Done.\nScore:"
    bad = {"clash.toml": 'name = "accuracy"\nmin = 0\nmax = 5\n[en]\ntemplate = "t"\n',
           "scale.toml": 'min = 5\nmax = 1\n[en]\ntemplate = "t"\n',
           "notoml.toml": "min = \n",
           "nolang.toml": "min = 0\nmax = 5\n"}
    for name, body in bad.items():
        (tmp_path / name).write_text(body, "utf-8")
        with pytest.raises(RubricError):
            load_rubric(str(tmp_path / name))
    with pytest.raises(RubricError, match="unknown rubric"):
        load_rubric("kindness")
    with pytest.raises(RubricError, match="not found"):
        load_rubric(str(tmp_path / "missing.toml"))


# ---------------------------------------------------------------- scoring runs against the stub


def make_run(url: str, n: int, name: str = "scored", lang: str = "en") -> list[int]:
    """A run with n accepted samples (two instances each) and two rejected ones; returns the accepted ids."""
    from datagen import storage
    from datagen.records import Candidate, Instance, Status

    engine = storage.connect(url)
    run, _ = storage.open_run(engine, name, lang=lang, api="chat", model="m", target=n, config={})
    ids = []
    for i in range(n + 2):
        st = Status.accepted if i < n else Status.rejected
        c = Candidate(instruction=f"Write tip number {i} about <b>saving</b> water.", lang=lang, status=st,
                      reason=None if i < n else "similar", instances=[Instance(output=f"Turn off the tap {i}."),
                                                                      Instance(input="for a child", output=f"Shorter showers {i}.")])
        sid = storage.add_sample(engine, run.id, c)
        if i < n:
            ids.append(sid)
    storage.dispose_all()
    return ids


def q(url: str, sql: str, **params):
    eng = create_engine(url)
    try:
        with eng.connect() as conn:
            return conn.execute(text(sql), params).fetchall()
    finally:
        eng.dispose()


def score_args(server, url, *extra: str, run: str = "scored") -> list[str]:
    return ["score", "--run", run, "--scorer", "judge", "--api", "chat", "--model", "stub", "--base-url", server.base_url,
            "--db", url, "--price-in", str(PRICE_IN), "--price-out", str(PRICE_OUT), *extra]


def check_scored(url: str, ids: list[int], rubric: str = "accuracy") -> None:
    """Every sample scored once, from an answer in the ledger, and never asked again after its success."""
    stage = f"judge:{rubric}"
    ok = q(url, "select sample_id, value, reason, request_id from score where rubric = :r and value is not null", r=rubric)
    assert sorted(r[0] for r in ok) == sorted(ids), "a kept sample is unscored, scored twice, or a rejected one was scored"
    for sid, value, reason, rid in ok:
        row = q(url, "select stage, sample_id, response, state from request where id = :i", i=rid)[0]
        assert row[0] == stage and row[1] == sid and row[3] == "done"
        v = parse_verdict(row[2], *((0, 5) if rubric == "accuracy" else (1, 6)))
        assert (v.value, v.reason) == (value, reason), "the stored score is not what the judge answered"
    # Each answer read once; none left unread; no sample asked again once it had its score.
    assert not q(url, "select request_id from score where request_id is not null group by request_id having count(*) > 1")
    assert not q(url, "select r.id from request r where r.stage = :s and r.state = 'done' and r.error is null "
                      "and not exists (select 1 from score s where s.request_id = r.id)", s=stage)
    assert not q(url, "select r.id from request r join score s on s.sample_id = r.sample_id and s.value is not null "
                      "and s.rubric = :r where r.stage = :s and r.id > s.request_id", r=rubric, s=stage)


@pytest.fixture(params=["sqlite", "postgres"])
def any_db(request, tmp_path):
    if request.param == "postgres":
        return request.getfixturevalue("core_pg_url")
    return f"sqlite:///{tmp_path / 'j.db'}"


def test_online_scores_every_kept_sample_once_with_failures_stored_and_costs_in_the_ledger(stub_server, any_db):
    server = stub_server("--judge-answers", "--judge-bad-every", "4", "--latency", "0.02")
    ids = make_run(any_db, 12)
    done = core_cli(*score_args(server, any_db, "--max-tries", "3"))
    assert done.returncode == 0, done.stderr
    assert "scored=12" in done.stdout and "failed=" in done.stdout and "remaining=0" in done.stdout
    check_scored(any_db, ids)
    # Every 4th answer had no score: stored as a failure with the answer's text, and asked again.
    fails = q(any_db, "select sample_id, reason, error, request_id from score where value is null")
    assert len(fails) == server.stats()["judge_answers"] // 4 >= 3
    assert all(f[1] == "I would rather not give this one a number." and f[2] == "unusable answer: no score line" for f in fails)
    # Ledger: one row per request the stub answered, carrying its sample, priced at the list price.
    rows = q(any_db, "select sample_id, tokens_in, tokens_out, cost, error from request where stage = :s", s=STAGE)
    assert len(rows) == server.stats()["served"] == 12 + len(fails)
    assert all(r[0] in ids and r[4] is None for r in rows)
    for _, tin, tout, cost, _ in rows:
        assert tin > 0 and cost == pytest.approx((tin * PRICE_IN + tout * PRICE_OUT) / 1e6)
    # Running it again asks nothing: every sample has its score.
    again = core_cli(*score_args(server, any_db))
    assert again.returncode == 0 and "scored=0" in again.stdout, again.stderr
    assert server.stats()["served"] == len(rows)


def test_unusable_answers_are_retried_then_left_failed_and_more_tries_ask_again(stub_server, tmp_path):
    url = f"sqlite:///{tmp_path / 'f.db'}"
    canned = stub_server()  # no judge mode: it answers with a task list, never a score
    ids = make_run(url, 4)
    first = core_cli(*score_args(canned, url, "--max-tries", "2"))
    assert first.returncode == 0, first.stderr
    assert "scored=0 failed=8 gave_up=4" in first.stdout
    assert "4 samples stay unscored after 2 unusable answers" in first.stderr
    fails = q(url, "select sample_id, count(*), min(error) from score where value is null group by sample_id")
    assert sorted(f[0] for f in fails) == ids and {f[1] for f in fails} == {2}
    assert {f[2] for f in fails} == {"unusable answer: no score line"}
    assert canned.stats()["served"] == 8
    # The same limit: nothing to ask. A higher one: one more try each, now from a judge that answers.
    assert "scored=0 failed=0 gave_up=4" in core_cli(*score_args(canned, url, "--max-tries", "2")).stdout
    assert canned.stats()["served"] == 8
    judge = stub_server("--judge-answers")
    more = core_cli(*score_args(judge, url, "--max-tries", "3"))
    assert "scored=4 failed=0 gave_up=0" in more.stdout, more.stderr
    check_scored(url, ids)
    assert q(url, "select count(*) from request where stage = :s", s=STAGE)[0][0] == 12


def test_a_retry_is_sampled_not_greedy():
    """A deterministic judge would write the same unusable answer again: retries ask with some randomness."""
    from types import SimpleNamespace

    from datagen.config import JudgeOptions
    from datagen.scores.judge import Judge, JudgeReport, Todo

    j = Judge(None, SimpleNamespace(lang="zh", id=1), load_rubric("quality"), "m", JudgeOptions(run="r"), JudgeReport("r", "quality", "m", "online"))
    first, again = j.prompt(Todo(1, 0, "写一首诗。", [("", "春眠不觉晓")])), j.prompt(Todo(1, 1, "写一首诗。", [("", "春眠不觉晓")]))
    assert (first.temperature, again.temperature) == (0.0, 0.7) and first.text == again.text
    assert "春眠不觉晓" in first.text and "分数：<1 到 6 之间的数字>" in first.text and first.max_tokens == 96


def test_budget_stops_scoring_and_counts_every_session(stub_server, tmp_path):
    url = f"sqlite:///{tmp_path / 'b.db'}"
    server = stub_server("--judge-answers")
    make_run(url, 30)
    # Each request reserves its worst case (answer at max_tokens) first; a budget of ~5 requests' worth.
    out = core_cli(*score_args(server, url, "--budget", "0.012", "--concurrency", "2"))
    line = core_one_line_error(out)
    assert "budget $0.0120" in line and "raise --budget" in line
    spent = q(url, "select sum(cost) from request where stage = :s", s=STAGE)[0][0]
    assert 0 < spent <= 0.012
    n = q(url, "select count(*) from score where value is not null")[0][0]
    assert 0 < n < 30
    # Another session under the same budget has nothing left to spend.
    again = core_cli(*score_args(server, url, "--budget", "0.012", "--concurrency", "2"))
    assert "budget" in core_one_line_error(again)
    assert q(url, "select sum(cost) from request where stage = :s", s=STAGE)[0][0] <= 0.012


def test_an_answer_stored_but_not_read_before_a_crash_is_read_not_bought_again(stub_server, tmp_path):
    from datagen import storage
    from datagen.records import Generation
    from datagen.storage import judge as jstore

    url = f"sqlite:///{tmp_path / 'c.db'}"
    ids = make_run(url, 3)
    engine = storage.connect(url)
    run = storage.get_run(engine, "scored")
    # The process died after the ledger row got its answer and before the score row was written.
    row = jstore.begin_request(engine, run.id, STAGE, "stub", "the prompt", ids[1])
    storage.end_request(engine, row, [Generation(text="Score: 3\nReason: as stored", tokens_in=10, tokens_out=5)], cost=0.001)
    storage.dispose_all()
    server = stub_server("--judge-answers")
    done = core_cli(*score_args(server, url))
    assert done.returncode == 0 and "scored=3" in done.stdout, done.stderr
    assert "read 1 answers stored before the last stop" in done.stderr
    assert q(url, "select value, reason, request_id from score where sample_id = :s", s=ids[1]) == [(3.0, "as stored", row)]
    assert q(url, "select count(*) from request where sample_id = :s", s=ids[1])[0][0] == 1
    assert server.stats()["served"] == 2


def test_kill9_mid_scoring_then_resume_scores_each_sample_once(stub_server, any_db):
    url = any_db
    server = stub_server("--judge-answers", "--judge-bad-every", "5", "--latency", "0.15")
    ids = make_run(url, 60)
    args = score_args(server, url, "--concurrency", "4")
    rng = random.Random()
    kills = 0
    for _ in range(3):
        proc = subprocess.Popen([sys.executable, "-m", "datagen.cli", *args], cwd=REPO, env=core_env(),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        # Kill once it has stored something (imports take a while on a busy machine), at a random moment after.
        deadline = time.monotonic() + 60
        while proc.poll() is None and time.monotonic() < deadline:
            try:
                if q(url, "select count(*) from score")[0][0] > 0:
                    break
            except Exception:  # noqa: BLE001 - the table may be mid-creation
                pass
            time.sleep(0.05)
        time.sleep(rng.uniform(0.1, 1.0))
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            kills += 1
        _, err = proc.communicate()
        assert proc.returncode in (0, -9), err.decode()
    assert kills >= 1
    done = core_cli(*args)
    assert done.returncode == 0 and "remaining=0" in done.stdout, done.stderr
    check_scored(url, ids)
    # What the stub answered is what the ledger holds, except requests cut off in flight by a kill
    # (answered by the stub, never received): at most the requests in flight, 4 per kill.
    answered = q(url, "select count(*) from request where stage = :s and state = 'done'", s=STAGE)[0][0]
    lost = q(url, "select count(*) from request where stage = :s and state = 'sent'", s=STAGE)[0][0]
    assert answered <= server.stats()["served"] <= answered + lost and lost <= 4 * kills


# ---------------------------------------------------------------- batch mode


def test_batch_mode_scores_through_the_batch_api_at_half_price(stub_server, any_db):
    server = stub_server("--judge-answers", "--judge-bad-every", "3", "--batch-delay", "0.3")
    ids = make_run(any_db, 10)
    done = core_cli(*score_args(server, any_db, "--mode", "batch", "--poll-interval", "0.1", "--rubric", "quality"))
    assert done.returncode == 0, done.stderr
    assert "scored=10" in done.stdout and "mode=batch" in done.stdout
    check_scored(any_db, ids, "quality")
    stats = server.stats()
    assert stats["served"] == 0 and stats["custom_ids"] and max(stats["custom_ids"].values()) == 1, "a line went out twice"
    rows = q(any_db, "select id, state, batch_id, sample_id from request where stage = 'judge:quality'")
    assert set(map(int, stats["custom_ids"])) == {r[0] for r in rows} and {r[1] for r in rows} == {"done"}
    assert {r[3] for r in rows} == set(ids)
    # Unusable answers (every 3rd line) went out again in a later batch, as new lines.
    assert len(rows) > 10 and len({r[2] for r in rows}) >= 2
    assert q(any_db, "select count(*) from score where value is null")[0][0] == len(rows) - 10
    batches = q(any_db, "select stage, status, ingested, cost from batch")
    assert {(b[0], b[1]) for b in batches} == {("judge:quality", "completed")} and all(b[2] for b in batches)
    usage = stats["batch_usage"]
    cost = q(any_db, "select sum(cost) from request where stage = 'judge:quality'")[0][0]
    assert cost == pytest.approx((usage["prompt_tokens"] * PRICE_IN + usage["completion_tokens"] * PRICE_OUT) / 1e6 * 0.5)
    assert sum(b[3] for b in batches) == pytest.approx(cost)


def test_batch_mode_no_wait_then_kill9_then_resume_pays_each_line_once(stub_server, tmp_path):
    url = f"sqlite:///{tmp_path / 'bk.db'}"
    server = stub_server("--judge-answers", "--judge-bad-every", "4", "--batch-delay", "1.5")
    ids = make_run(url, 20)
    args = score_args(server, url, "--mode", "batch", "--poll-interval", "0.1", "--batch-max-lines", "6")
    first = core_cli(*args, "--no-wait")
    assert first.returncode == 75, first.stderr  # submitted, not finished: a job would come back later
    assert "samples left; run the same command" in first.stderr
    # Online scoring would buy the lines in flight again: refused.
    assert "batches in flight" in core_one_line_error(core_cli(*score_args(server, url)))
    proc = subprocess.Popen([sys.executable, "-m", "datagen.cli", *args], cwd=REPO, env=core_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    time.sleep(random.uniform(1.0, 3.0))
    proc.kill()
    proc.communicate()
    done = core_cli(*args)
    assert done.returncode == 0, done.stderr
    check_scored(url, ids)
    stats = server.stats()
    assert max(stats["custom_ids"].values()) == 1
    assert stats["batches_created"] == q(url, "select count(*) from batch")[0][0]


# ---------------------------------------------------------------- errors and jobs


def test_bad_input_is_one_line(stub_server, tmp_path):
    url = f"sqlite:///{tmp_path / 'e.db'}"
    make_run(url, 1)
    server = stub_server("--judge-answers")
    assert "no run named 'nope'" in core_one_line_error(core_cli(*score_args(server, url, run="nope")))
    assert "unknown rubric 'kind'" in core_one_line_error(core_cli(*score_args(server, url, "--rubric", "kind")))
    assert "--max-tries 0" in core_one_line_error(core_cli(*score_args(server, url, "--max-tries", "0")))
    zh_only = tmp_path / "zh.toml"
    zh_only.write_text('min = 0\nmax = 5\n[zh]\ntemplate = "评分：$instruction"\n', "utf-8")
    assert "has no [en] template" in core_one_line_error(core_cli(*score_args(server, url, "--rubric", str(zh_only))))


def test_score_is_a_job_kind(tmp_path):
    from datagen.jobs import queue
    from datagen.errors import InputError as JobError
    from datagen import storage

    engine = storage.connect(f"sqlite:///{tmp_path / 'jobs.db'}")
    job = queue.submit(engine, "score", ["--run", "nightly", "--scorer", "judge", "--mode", "batch", "--no-wait"])
    assert job.kind == "score" and job.run_name == "nightly"
    for bad, msg in ((["--max-tries", "0"], "--max-tries"), (["--mode", "fast"], "--mode"), (["--budget", "-1"], "--budget"),
                     (["--db", "x"], "--db is not allowed")):
        with pytest.raises(JobError, match=msg):
            queue.submit(engine, "score", ["--run", "n", "--scorer", "judge", *bad])
    with pytest.raises(JobError, match="--run"):
        queue.submit(engine, "score", ["--scorer", "judge"])


def test_one_process_scores_a_run_with_a_rubric_at_a_time(stub_server, tmp_path):
    url = f"sqlite:///{tmp_path / 'l.db'}"
    server = stub_server("--judge-answers", "--latency", "1")
    make_run(url, 20)
    proc = subprocess.Popen([sys.executable, "-m", "datagen.cli", *score_args(server, url, "--concurrency", "1")], cwd=REPO,
                            env=core_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while not q(url, "select count(*) from request where stage = :s", s=STAGE)[0][0]:
            assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read().decode()
            time.sleep(0.1)
        second = core_cli(*score_args(server, url))
        assert "is being scored with judge:accuracy by host" in core_one_line_error(second)
        # Another rubric is another scoring: it may run beside the first.
        other = core_cli(*score_args(server, url, "--rubric", "complexity", "--limit", "2", "--concurrency", "2"))
        assert other.returncode == 0 and "scored=2" in other.stdout, other.stderr
    finally:
        proc.kill()
        proc.communicate()


def test_a_worker_scores_after_generating(stub_server, tmp_path):
    """What a schedule does: a generate job, then a score job on its run, each run by the worker as a child CLI."""
    from datagen import storage
    from datagen.jobs import queue

    server = stub_server("--judge-answers", "--latency", "0.02")
    url = f"sqlite:///{tmp_path / 'w.db'}"
    engine = storage.connect(url)
    gen = queue.submit(engine, "generate", ["--api", "chat", "--model", "stub", "--base-url", server.base_url, "-n", "5",
                                            "--run", "nightly", "--concurrency", "4"]).id
    sc = queue.submit(engine, "score", ["--run", "nightly", "--scorer", "judge", "--model", "stub", "--base-url", server.base_url,
                                        "--price-in", "1", "--price-out", "1"]).id
    w = subprocess.Popen([sys.executable, "-m", "datagen.cli", "worker", "--db", url, "--poll", "0.1", "--max-idle", "1.5"],
                         cwd=REPO, env=core_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _, err = w.communicate(timeout=240)
    assert w.returncode == 0, err
    for jid in (gen, sc):
        job, attempts = queue.get(engine, jid)
        assert (job.state, [a.state for a in attempts]) == ("succeeded", ["succeeded"]), (jid, job.exit_message, err)
    job, _ = queue.get(engine, sc)
    kept = q(url, "select count(*) from sample where status = 'accepted'")[0][0]
    assert job.exit_message.startswith("run=nightly scorer=judge rubric=accuracy") and f"scored={kept}" in job.exit_message
    assert job.run_name == "nightly" and job.cost > 0  # the job's usage counts its judge requests
    assert q(url, "select count(*) from score where value is not null")[0][0] == kept >= 5
    storage.dispose_all()
