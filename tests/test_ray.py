"""`datagen generate --ray` for real: a two-node Ray cluster on 127.0.0.1, SmolLM2 replicas, the CLI as driver.

The cluster is Ray's own test cluster (two raylets, one CPU each, a small object store) so the
two replicas land on different nodes; the CLI joins it by address, as a driver on a head node does.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time

import pytest
import ray
from ray.cluster_utils import Cluster

from conftest import REPO, core_cli, core_env, core_one_line_error
from datagen.backends.ray_pool import NAMESPACE, replica_name

TARGET = 1  # small: each accepted sample costs this tiny model several 160-token requests on one core
# --threshold 1: the 135M model often copies seed tasks word for word, and rejecting them made this
# run's length a lottery (1 to 9 bootstrap rounds, 15-230 s); this test is about Ray, the filter has
# its own (test_similarity.py, test_client_faults.py).
SMALL = ["--api", "local", "--model", "smollm2", "--replicas", "2", "-n", str(TARGET), "--batch-size", "8",
         "--max-tokens", "160", "--new-per-prompt", "2", "--threshold", "1", "--no-progress"]


@pytest.fixture(scope="module")
def cluster():
    old = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = str(REPO)  # the raylets' workers import this checkout's datagen
    store = 80 * 2**20  # the replicas pass prompts and texts, kilobytes: keep shared memory small
    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "object_store_memory": store, "include_dashboard": False})
    try:
        c.add_node(num_cpus=1, object_store_memory=store)
        c.wait_for_nodes()
        yield c
    finally:
        if ray.is_initialized():
            ray.shutdown()
        c.shutdown()
        if old is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = old


def check_run(db, run: str) -> sqlite3.Connection:
    """The checks of a normal run: target exactly, no duplicate kept text, every accepted sample's requests logged."""
    con = sqlite3.connect(db)
    assert con.execute("select state, api from run where name = ?", (run,)).fetchone() == ("finished", "local")
    acc = con.execute("select id, instruction, request_id from sample where status = 'accepted'").fetchall()
    assert len(acc) == TARGET
    dupes = con.execute(
        "select lower(instruction), count(*) from sample where status in ('pending', 'accepted', 'approved') group by 1 having count(*) > 1"
    ).fetchall()
    assert dupes == []
    assert con.execute("select count(*) from sample where status = 'pending'").fetchone() == (0,)
    for sid, text, rid in acc:
        stage, error = con.execute("select stage, error from request where id = ?", (rid,)).fetchone()
        # A replica's batch may carry several stages at once; its row's stage is then e.g. "bootstrap+instances".
        assert "bootstrap" in stage.split("+") and error is None, f"accepted {text!r} has no successful bootstrap request"
        # A batch may mix stages ("classify+instances") and carry several prompts as a JSON array.
        quoted = json.dumps(text, ensure_ascii=False)[1:-1]
        for stage in ("classify", "instances"):
            n = con.execute(
                "select count(*) from request where instr(stage, ?) > 0 and state = 'done' and error is null"
                " and (instr(prompt, ?) > 0 or instr(prompt, ?) > 0)", (stage, text, quoted)
            ).fetchone()[0]
            assert n >= 1, f"no successful {stage} request for accepted {text!r}"
        assert con.execute("select count(*) from instance where sample_id = ?", (sid,)).fetchone()[0] >= 1
    return con


def test_two_replicas_on_two_nodes_reach_the_target_through_a_replica_killed_mid_run(cluster, tmp_path):
    """One run, the normal checks (check_run), the replicas on both nodes, and replica 0 SIGKILLed
    while a batch is in flight: every failed attempt is that replica's and is answered once on retry."""
    db = tmp_path / "kill.db"
    args = [sys.executable, "-m", "datagen.cli", "generate", *SMALL, "--ray", cluster.address, "--db", str(db),
            "--run", "ray-kill", "--seed", "5"]
    proc = subprocess.Popen(args, cwd=REPO, env=core_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    ray.init(address=cluster.address, logging_level="ERROR", log_to_driver=False)
    killed = None
    try:
        name = replica_name(0, pid=proc.pid, host=socket.gethostname())
        deadline = time.monotonic() + 600
        while killed is None and proc.poll() is None and time.monotonic() < deadline:
            try:
                info = ray.get(ray.get_actor(name, namespace=NAMESPACE).info.remote(), timeout=30)
            except (ValueError, ray.exceptions.RayError, TimeoutError):  # not created or not loaded yet
                time.sleep(0.5)
                continue
            if info["busy"]:  # a batch is in flight on it: SIGKILL, as the kernel's OOM killer would
                os.kill(info["pid"], signal.SIGKILL)
                killed = info["pid"]
            else:
                time.sleep(0.2)
        out, err = proc.communicate(timeout=1200)
    finally:
        if proc.poll() is None:
            proc.kill()
        ray.shutdown()
    assert killed, "replica 0 never had a batch in flight"
    assert proc.returncode == 0, err[-3000:]
    assert f"accepted={TARGET}" in out
    con = check_run(db, "ray-kill")
    # The run records where its replicas ran: one on each node, the transformers engine on the CPU.
    replicas = json.loads(con.execute("select config from run where name = 'ray-kill'").fetchone()[0])["ray_replicas"]
    assert len({r["node"] for r in replicas}) == 2, replicas
    assert {(r["engine"], r["loop"], r["device"]) for r in replicas} == {("transformers", "dynamic", "cpu")}
    failed = con.execute("select prompt_hash, stage, attempt, error from request where error is not null").fetchall()
    assert failed, "the kill left no failed attempt in the ledger"
    for h, stage, attempt, error in failed:
        assert error.startswith("replica 0 lost"), error
        # Retried, and answered once: one successful later attempt of the same prompt.
        ok = con.execute(
            "select count(*) from request where prompt_hash = ? and stage = ? and error is null and attempt > ?", (h, stage, attempt)
        ).fetchone()[0]
        assert ok == 1, f"{stage} prompt failed on the killed replica; {ok} successful retries"


def test_ray_flag_without_ray_installed_is_one_line_naming_the_extra(tmp_path):
    # A real import failure: `import ray` in this child raises ImportError (None in sys.modules).
    code = "import sys; sys.modules['ray'] = None; from datagen.cli import main; main()"
    r = subprocess.run(
        [sys.executable, "-c", code, "generate", "--api", "local", "--ray", "auto", "-n", "1", "--db", str(tmp_path / "x.db"), "--no-progress"],
        cwd=REPO, env=core_env(), capture_output=True, text=True, timeout=120,
    )
    line = core_one_line_error(r)
    assert "datagen[ray]" in line, line


def test_ray_flag_with_an_api_backend_is_refused(tmp_path):
    r = core_cli("generate", "--api", "chat", "--base-url", "http://127.0.0.1:9/v1", "--ray", "auto", "-n", "1",
                 "--db", str(tmp_path / "x.db"), "--no-progress")
    assert "--api local" in core_one_line_error(r)


def test_more_replicas_than_the_cluster_has_cpus_is_one_line_before_any_model_loads(cluster, tmp_path):
    r = core_cli("generate", "--api", "local", "--model", "smollm2", "--ray", cluster.address, "--replicas", "3",
                 "-n", "1", "--db", str(tmp_path / "x.db"), "--no-progress", timeout=300)
    line = core_one_line_error(r)
    assert "3 replicas need 3 CPUs and the Ray cluster has 2" in line, line


class _Engine:
    """Counts how many generate calls are inside it at once."""

    def __init__(self, continuous: bool):
        self.continuous, self.inside, self.most = continuous, 0, 0
        self.lock = threading.Lock()

    def load(self):
        pass

    def generate(self, prompts):
        with self.lock:
            self.inside += 1
            self.most = max(self.most, self.inside)
        deadline = time.monotonic() + 2  # long enough for the other call to arrive, if it may enter
        while time.monotonic() < deadline and self.most < 2:
            time.sleep(0.01)
        with self.lock:
            self.inside -= 1
        return prompts


@pytest.mark.parametrize("continuous", [True, False])
def test_a_continuous_engine_takes_a_replicas_calls_together_and_others_take_turns(continuous):
    from datagen.backends.ray_pool import Replica

    rep = Replica(lambda: _Engine(continuous))
    threads = [threading.Thread(target=rep.generate, args=([i],)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert rep._engine.most == (2 if continuous else 1)
